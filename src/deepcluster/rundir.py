"""The run directory: what a run writes, written so that a crash at any moment leaves every file whole.

Files are replaced atomically (temporary file + ``os.replace``); ``metrics.jsonl`` is appended a whole line at a
time and trimmed on resume to the epochs the checkpoint holds.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from .config import Config, ConfigError, DeepClusterError

# The resume rules, from the settings' metadata (deepcluster.config._opt): what may change when a run is resumed
# (how or how far it computes, not what), what a supervised run never reads, and what the settings added since a run
# was written were then (such a run resumes as it was trained).
RESUMABLE_CHANGES = Config.settings(resumable=True)
CLUSTERING_ONLY = Config.settings(clustering_only=True)
LEGACY_SETTINGS = {f.name: f.metadata["legacy"] for f in dataclasses.fields(Config) if f.metadata["legacy"] is not None}


def with_legacy(cfg: Config) -> Config:
    """``cfg``, a saved run's config, with the settings it leaves unset (written before they existed) at their
    values of then."""
    for name, value in LEGACY_SETTINGS.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)
    return cfg
EPOCH_CLUSTERS = "clusters"  # the cluster log: clusters/epoch-0001.npy, ... (each epoch's pseudo-labels)
FEATURES = "features.npy"  # the trained network's features of every training image, in the clustering space
GROUPS = "groups"  # other numbers of groups drawn from FEATURES (deepcluster.export.groups), kept for next time
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", "assignments.npy", "eval.json", "curves.png",
             "clusters.png", "report/index.html", "timing.json", FEATURES)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, flush it to disk, then move it over ``path`` in one step."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, quota, permissions: the previous file, if any, is still whole
        kept = "the previous version is intact" if path.exists() else "nothing was written"
        raise DeepClusterError(f"could not write {path} ({e.strerror or e}); {kept}: free disk space or fix the "
                               f"folder's permissions, then --resume") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: Path(p).write_text(text))


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def open(self, cfg: Config, resume: bool, overwrite: bool) -> bool:
        """Check the folder against the config before anything is written. Returns True when an existing run
        is to be continued. Refuses a folder that holds another run unless ``resume`` (same config) or
        ``overwrite`` (the run's own files are removed; nothing else is touched)."""
        saved_cfg = self.path / "config.yaml"
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file, not a folder: choose another --out")
        if saved_cfg.exists() and not overwrite:
            if not resume:
                raise ConfigError(f"{self.path} already holds a run: pass --resume to continue it or "
                                  f"--overwrite to replace it")
            old = self.saved_config().to_dict()
            new = with_legacy(dataclasses.replace(cfg)).to_dict()  # unset reads as the saved run's would
            ignored = RESUMABLE_CHANGES + (CLUSTERING_ONLY if new["supervised"] else ())
            diff = [k for k in new if k not in ignored and old.get(k) != new[k]]
            if diff:
                changes = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff)
                raise ConfigError(f"{self.path} holds a run with another config ({changes}): use the same "
                                  f"settings to resume, or another --out")
            self._remove_stale_temporaries()
            return True
        if not saved_cfg.exists() and self.path.is_dir() and any(self.path.iterdir()) and not (resume or overwrite):
            raise ConfigError(f"{self.path} is not empty and holds no deepcluster run: choose an empty or new "
                              f"--out (or pass --overwrite to write into it)")
        self._remove_stale_temporaries()
        if overwrite:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            for folder in ("tensorboard", EPOCH_CLUSTERS, GROUPS):  # the replaced run's event files, cluster log
                shutil.rmtree(self.path / folder, ignore_errors=True)
        return False

    def _remove_stale_temporaries(self) -> None:
        """Delete the half-written temporaries of a process killed while writing (the files they were to
        replace are whole: they are replaced only once a temporary is complete)."""
        for stale in [*self.path.glob(".*.tmp[0-9]*"), *self.path.glob("report/.*.tmp[0-9]*"),
                      *self.path.glob(f"{EPOCH_CLUSTERS}/.*.tmp[0-9]*"), *self.path.glob(f"{GROUPS}/.*.tmp[0-9]*")]:
            stale.unlink()

    def saved_config(self) -> Config | None:
        """The config of the run held here (settings added since it was written take their values of then), or
        None when the folder holds no run."""
        path = self.path / "config.yaml"
        if not path.is_file():
            return None
        return with_legacy(Config.from_yaml(path))

    def write_config(self, cfg: Config) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", cfg.to_yaml())

    def read_metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        rows = []
        for line in p.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash: it and anything after are dropped
        return rows

    def keep_metrics(self, last_epoch: int) -> list[dict]:
        """Rewrite ``metrics.jsonl`` keeping only epochs ``<= last_epoch`` (those the checkpoint holds)."""
        rows = [r for r in self.read_metrics() if r.get("epoch", 0) <= last_epoch]
        atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        return rows

    def append_metrics(self, row: dict) -> None:
        path = self.path / "metrics.jsonl"
        try:
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a line cut short, if any, is dropped on resume (keep_metrics)
            raise DeepClusterError(f"could not write {path} ({e.strerror or e}); the earlier epochs' rows are "
                                   f"intact: free disk space or fix the folder's permissions, then --resume") from None

    def write_json(self, name: str, obj) -> None:
        (self.path / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / name, json.dumps(obj, indent=2) + "\n")

    def save_epoch_clusters(self, epoch: int, assignment) -> None:
        """Keep epoch ``epoch``'s pseudo-labels in the cluster log, in the smallest unsigned integer type that
        holds them (2 bytes an image for k <= 65,536), as the reference code's cluster log did."""
        import numpy as np

        a = np.asarray(assignment)
        (self.path / EPOCH_CLUSTERS).mkdir(exist_ok=True)
        self.save_array(f"{EPOCH_CLUSTERS}/epoch-{epoch:04d}.npy", a.astype(np.min_scalar_type(max(int(a.max()), 0))))

    def epoch_clusters(self, last_epoch: int | None = None) -> dict:
        """``{epoch: pseudo-labels (N,)}`` from the cluster log (memory-mapped, in their stored integer type), for
        the epochs up to ``last_epoch`` (those the checkpoint holds: a process killed between the two leaves one
        more)."""
        import numpy as np

        found = {}
        for f in sorted((self.path / EPOCH_CLUSTERS).glob("epoch-[0-9][0-9][0-9][0-9].npy")):
            epoch = int(f.stem[6:])
            if last_epoch is None or epoch <= last_epoch:
                found[epoch] = np.load(f, mmap_mode="r")
        return found

    def save_features(self, x) -> None:
        """Keep the final features ``(N, d)``; the groups drawn from older ones go (they would no longer match)."""
        shutil.rmtree(self.path / GROUPS, ignore_errors=True)
        self.save_array(FEATURES, x)

    def save_array(self, name: str, arr) -> None:
        import numpy as np

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a temporary name
                np.save(f, arr)

        atomic_write(self.path / name, write)
