"""How values are resolved from an environment: a variable's text when set (non-empty), else its
documented default (placeholders filled in, or derived from other settings), parsed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptoflow.settings.machinery import Getter, Setting
from cryptoflow.settings.table import _BY_FIELD

# What "{home}", "{state}" and "{pg_port}" in a documented default stand for.
_PLACEHOLDERS = {"{home}": "home", "{state}": "state_dir", "{pg_port}": "pg_port"}


def _default_text(setting: Setting, get: Getter) -> str:
    if setting.derive is not None:
        return setting.derive(get)
    text = setting.default
    for mark, name in _PLACEHOLDERS.items():
        if mark in text:
            text = text.replace(mark, str(get(name)))
    return text


def _resolve(
    env: Mapping[str, str], names: Iterable[str], known: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The values of the settings `names` (and of those their defaults depend on): the variable's
    text when set (non-empty), else the default, parsed."""
    values: dict[str, Any] = dict(known or {})

    def get(name: str) -> Any:
        if name not in values:
            setting = _BY_FIELD[name]
            values[name] = setting.parse(
                setting.env, env.get(setting.env) or _default_text(setting, get)
            )
        return values[name]

    for name in names:
        get(name)
    return values


def _locate(env: Mapping[str, str]) -> tuple[Path, Path]:
    """(home, state dir) of an environment: the two settings the stack file can't supply."""
    values = _resolve(env, ("home", "state_dir"))
    return values["home"], values["state_dir"]
