"""Optional TensorBoard logging of a run (``--tensorboard``): every epoch's numbers as scalars and a grid of
cluster images, and the closing evaluation. Needs the ``tensorboard`` package."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..settings import ConfigError
from .grids import cluster_rows, image_rows, pick_clusters


def check_tensorboard() -> None:
    """Fail early, before a run writes anything, when TensorBoard logging was asked for but cannot work."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'deepcluster[tensorboard]' "
                          "(or drop --tensorboard)") from None


class TensorBoardLog:
    """Scalars under ``deepcluster/<metric>`` and ``eval/<features> <pre-processing>/<score>``, images under
    ``clusters``, written to ``RUN_DIR/tensorboard``. A resumed run starts at ``first_epoch``: TensorBoard then
    hides what an interrupted attempt logged for later epochs."""

    def __init__(self, run_dir: str | Path, first_epoch: int = 1):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=first_epoch)

    def epoch(self, row: dict, dataset=None, assignment: Optional[np.ndarray] = None, seed: int = 0) -> None:
        step = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"deepcluster/{key}", value, step)
        if dataset is not None and assignment is not None:
            targets = getattr(dataset, "targets", None)
            ids = [j for _, group in pick_clusters(assignment, targets, seed=seed) for j in group]
            grid = image_rows(*cluster_rows(dataset, assignment, ids, 12, seed))
            self.writer.add_image("clusters", np.asarray(grid), step, dataformats="HWC")
        self.writer.flush()

    def evaluation(self, evaluation: dict, step: int) -> None:
        for r in evaluation.get("results", []):
            for score in ("nmi", "ari", "acc"):
                self.writer.add_scalar(f"eval/{r['features']} {r['preprocessing']}/{score}", r[score], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
