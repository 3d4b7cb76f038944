"""Keras architectures by name: `<CRYPTOFLOW_HOME>/models/<name>.py`, each with a `build()` function.

models/ is deliberately not an installed package: dropping a file there adds an architecture
without touching the DAG or this package. Names are restricted to identifiers so a configured
name can't point outside models/.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_cache: dict[Path, ModuleType] = {}


def models_dir() -> Path:
    from cryptoflow import settings

    return settings.load().models_dir


def available() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.py") if _NAME.fullmatch(p.stem))


def load(name: str) -> ModuleType:
    """The module models/<name>.py (imported once per process)."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"architecture name {name!r} must be a lowercase identifier (a file in models/)"
        )
    path = (models_dir() / f"{name}.py").resolve()
    if not path.is_file():
        raise ValueError(f"unknown architecture {name!r}: no {path}; available: {available()}")
    if path not in _cache:
        spec = importlib.util.spec_from_file_location(f"cryptoflow_models_{name}", path)
        assert (
            spec is not None and spec.loader is not None
        )  # a .py path always gets the source loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "build", None)):
            raise ValueError(f"{path} has no build(lookback, n_features, horizon) function")
        _cache[path] = module
    return _cache[path]


def build(name: str, lookback: int, n_features: int, horizon: int):
    return load(name).build(lookback, n_features, horizon)
