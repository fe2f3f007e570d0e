"""One typed configuration for a DeepCluster run, validated in one place: the six sections of
:mod:`deepcluster.settings` in one flat object.

Every field is a command-line option (``--field-name``) and a key of the YAML config file; the resolved config is
printed at start and saved as ``RUN_DIR/config.yaml`` and inside every checkpoint.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .settings import (  # noqa: F401 - the errors and names users import from here
    ARCHS,
    DECODES,
    DEVICES,
    EXTRACT_PRECISIONS,
    METHODS,
    PRECISIONS,
    RECIPES,
    SECTIONS,
    ClusteringSettings,
    ConfigError,
    DataSettings,
    DeepClusterError,
    ModelSettings,
    OptimisationSettings,
    OutputSettings,
    RuntimeSettings,
    TrainingError,
    _need,
)


@dataclass
class Config(OutputSettings, RuntimeSettings, OptimisationSettings, ClusteringSettings, ModelSettings, DataSettings):
    """Every setting of a run, the sections' fields in their order (data, model, clustering, optimisation,
    runtime, output). ``section(name)`` gives one section on its own."""

    def validate(self) -> "Config":
        """Raise ConfigError on the first bad setting, as its metadata says (:func:`_opt`: each value's checks,
        then what a value other than the default needs); return self. A setting left unset (None) is checked
        once chosen (by the recipe)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                _need("Optional" in str(f.type), f"{f.name} needs a value (--{f.name.replace('_', '-')})")
                continue
            for ok, message in f.metadata["check"]:
                _need(ok(value), message.format(v=value))
        for f in dataclasses.fields(self):
            if f.metadata["needs"] is not None and getattr(self, f.name) != f.default:
                wanted, message = f.metadata["needs"]
                _need(all(getattr(self, k) == v for k, v in wanted.items()), message)
        return self

    def section(self, name: str):
        """The settings of section ``name`` (:data:`~deepcluster.settings.SECTIONS`), as that section's object."""
        kind = SECTIONS[name]
        return kind(**{f.name: getattr(self, f.name) for f in dataclasses.fields(kind)})

    @classmethod
    def settings(cls, **meta) -> tuple[str, ...]:
        """The names of the settings whose metadata has these values, in order: ``settings(recipe=True)``, the
        ones the recipe chooses; ``settings(section="runtime")``..."""
        return tuple(f.name for f in dataclasses.fields(cls) if all(f.metadata[k] == v for k, v in meta.items()))

    def check_data(self, n: int, labelled: bool, name: str = "the training images") -> "Config":
        """The rules the training images (``name``: ``n`` of them, with labels or not) set, checked once before
        training: the supervised baseline needs labels, and no clustering asks for more clusters than images."""
        if self.supervised:
            if not labelled:
                raise ConfigError(f"--supervised needs labels, and {name} has none: put the images in one subfolder "
                                  f"per class")
            return self
        if self.k > n and self.clustering == "kmeans":
            raise ConfigError(f"k = {self.k} clusters but only {n} images: lower --k to at most {n}")
        if any(k > n for k in self.overcluster_ks):
            raise ConfigError(f"--overcluster {self.overcluster} asks for more clusters than the {n} images: keep "
                              f"every k at most {n}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; "
                              f"known ones are listed by 'deepcluster train --help'")
        cfg = cls(**d)
        for f in dataclasses.fields(cls):  # YAML may give ints for floats and the like: coerce once, here
            v = getattr(cfg, f.name)
            typ = f.type.replace("Optional[", "").rstrip("]")
            if v is None or typ == "str":
                continue
            try:
                setattr(cfg, f.name, {"int": int, "float": float, "bool": _to_bool}[typ](v))
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: '{f.name}' should be {typ}, got {v!r}") from None
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: check the path given to --config")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path} must hold a mapping of setting: value")
        return cls.from_dict(d, source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return v.lower() in ("true", "yes", "1", "on")
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError(v)
