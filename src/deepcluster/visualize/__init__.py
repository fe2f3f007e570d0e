"""Pictures of a run: curves, cluster grids and plots, filter images, and the HTML report that gathers them."""
from .curves import plot_curves
from .filters import first_layer_kernels, gradient_ascent, sample_filters, tile_grid, top_images
from .grids import image_rows, pick_clusters, save_cluster_grid
from .plots import cluster_sizes_figure, confusion_figure, embedding_figure, tsne_map
from .report import build_report, write_report

__all__ = ["build_report", "cluster_sizes_figure", "confusion_figure", "embedding_figure", "first_layer_kernels",
           "gradient_ascent", "image_rows", "pick_clusters", "plot_curves", "sample_filters", "save_cluster_grid",
           "tile_grid", "top_images", "tsne_map", "write_report"]
