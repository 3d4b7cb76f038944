"""Reading the settings: `load()` and the narrower reads (one section, the shared data, what is set)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptoflow.settings.core import STACK_FILE_NAME
from cryptoflow.settings.resolve import _locate, _resolve
from cryptoflow.settings.stack_env import read_stack_file
from cryptoflow.settings.table import _BY_FIELD, SETTINGS, Settings


def load(environ: Mapping[str, str] | None = None, *, stack_file: bool | None = None) -> Settings:
    """Read the settings from `environ` (default os.environ), filling documented defaults.

    With `stack_file` (default: when reading os.environ, i.e. `environ` is None), the values
    `cryptoflow up` recorded in <state>/stack.env come beneath the environment: a variable set
    (non-empty) in the environment always wins, a missing file changes nothing. An explicit
    `environ` is read alone unless `stack_file=True`; `cryptoflow up` itself reads without it.

    Passwords of the local cluster come from the generated credentials file when the DSNs are
    not set explicitly; a DSN can't be built before `cryptoflow up` has written that file.
    """
    return Settings(**_resolve(_environment(environ, stack_file), _BY_FIELD))


def _environment(environ: Mapping[str, str] | None, stack_file: bool | None) -> dict[str, str]:
    """The variables `load()` reads: `environ` (default os.environ), over the stack file when asked."""
    env = dict(os.environ if environ is None else environ)
    if (environ is None) if stack_file is None else stack_file:
        recorded = read_stack_file(_locate(env)[1] / STACK_FILE_NAME)
        if recorded:
            env = {**recorded, **{k: v for k, v in env.items() if v}}
    return env


def section_values(
    section: str, environ: Mapping[str, str] | None = None, texts: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One section's values by key (forecast_lookback -> "lookback"), read as `load()` reads them;
    `texts` (by key) come over the environment, parsed as the variable would be."""
    env = _environment(environ, None)
    declared = {s.key: s for s in SETTINGS if s.section == section}
    env.update({declared[key].env: text for key, text in (texts or {}).items()})
    values = _resolve(env, [s.field for s in declared.values()])
    return {key: values[s.field] for key, s in declared.items()}


def shared_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The shared data (replay history, test fixtures): the `shared_data` setting, for code that
    needs no other setting (benchmarks, test fixtures)."""
    path: Path = _resolve(_environment(environ, None), ("shared_data",))["shared_data"]
    return path


def given(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings set explicitly (non-empty) in `environ` (default os.environ), by field name, as
    their text: what a command may treat differently from a default (no stack file beneath)."""
    env = os.environ if environ is None else environ
    return {s.field: env[s.env] for s in SETTINGS if env.get(s.env)}
