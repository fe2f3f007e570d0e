"""Pictures of a run: curves over epochs and image grids of clusters."""
from .curves import plot_curves
from .grids import cluster_grid, save_cluster_grid

__all__ = ["cluster_grid", "plot_curves", "save_cluster_grid"]
