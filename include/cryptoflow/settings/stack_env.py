"""The stack file, <state>/stack.env: the settings `cryptoflow up` ran the stack's services with,
which `load()` of the process environment takes as defaults beneath it (no passwords)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptoflow.settings.core import STACK_FILE_NAME
from cryptoflow.settings.connections import read_credentials
from cryptoflow.settings.resolve import _default_text, _locate
from cryptoflow.settings.table import SETTINGS, Settings


def _has_password(value: str) -> bool:
    try:
        return urlsplit(value).password is not None
    except ValueError:
        return False


def stack_file_values(settings: Settings) -> dict[str, str]:
    """What the stack file records of `settings`: every setting but those recorded "never" (home,
    state dir, DSNs), and nothing that carries a password. Those recorded "changed" (the Binance
    URLs, the directories under the checkout) only when they differ from their default, so that
    overriding CRYPTOFLOW_BINANCE_MODE (or _HOME) later still picks the matching values."""

    def get(name: str) -> Any:
        return getattr(settings, name)

    out = {}
    for s in SETTINGS:
        value = s.show(get(s.field))
        if s.record == "never" or _has_password(value):
            continue
        if s.record == "changed" and value == s.show(s.parse(s.env, _default_text(s, get))):
            continue
        out[s.env] = value
    return out


def write_stack_file(settings: Settings) -> Path:
    """Record the settings the stack's services run with in <state>/stack.env (KEY=VALUE lines)."""
    path = settings.stack_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"# The settings the local stack's services run with, written by `cryptoflow up` at {now}.",
        "# Defaults beneath the environment for every `cryptoflow` command; no passwords (see credentials.env).",
        *(f"{key}={value}" for key, value in stack_file_values(settings).items()),
    ]
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def read_stack_file(path: Path) -> dict[str, str]:
    """The recorded settings of a stack file (missing file: empty); only keys it may carry."""
    known = {s.env for s in SETTINGS if s.record != "never"}
    return {k: v for k, v in read_credentials(path).items() if k in known}


def stack_defaults(environ: dict | None = None) -> tuple[Path, dict[str, str]]:
    """(path, values) of the stack file in the state dir of `environ` (default os.environ): what
    `load()` takes as defaults; values are empty when there is no such file."""
    _, state = _locate(dict(os.environ if environ is None else environ))
    path = state / STACK_FILE_NAME
    return path, read_stack_file(path)
