"""What a finished run gives back: its clusters by file (:mod:`.table`, :mod:`.folders`), new images placed in
them (:mod:`.assign`), features of any folder (:mod:`.embed`), near duplicates (:mod:`.duplicates`) and
representatives (:mod:`.sample`). Each reads the run through :func:`deepcluster.session.open_run` and its saved
clustering (:class:`deepcluster.state.RunClustering`), and refuses to replace an output that exists."""
from .table import cluster_rows, write_rows

__all__ = ["cluster_rows", "write_rows"]
