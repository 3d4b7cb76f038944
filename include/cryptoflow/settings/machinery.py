"""How a setting is declared and read: the Setting record, the parsers of a variable's text, and
the declaration helpers the sections use (a Settings field carrying its Setting)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value that can't be used; the message names the variable."""


# --- parsing: (variable name, text) -> value, a ConfigError naming the variable when it can't be used


def _text(name: str, raw: str) -> str:
    return raw


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid int") from None


def _real(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid float") from None


def _stripped(name: str, raw: str) -> str:
    return raw.strip()


def _words(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list, possibly empty."""
    return tuple(word.strip() for word in raw.split(",") if word.strip())


def _flag(name: str, raw: str) -> bool:
    """On when set to anything (non-empty), as the switches have always been read."""
    return bool(raw)


def _shown_flag(on: Any) -> str:
    return "1" if on else ""


def _port(name: str, raw: str) -> int:
    value = _integer(name, raw)
    if not 0 < value < 65536:
        raise ConfigError(f"{name}={value} is not a TCP port")
    return value


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _absolute_path(name: str, raw: str) -> Path:
    return Path(raw).resolve()


def _paths(name: str, raw: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in raw.split(os.pathsep) if p)


def _base_url(name: str, raw: str) -> str:
    return raw.rstrip("/")


def _mode(name: str, raw: str) -> str:
    mode = raw.strip().lower()
    if mode not in ("live", "replay"):
        raise ConfigError(f"{name}={mode!r}: expected live or replay")
    return mode


def _executor(name: str, raw: str) -> str:
    executor = raw.strip().lower()
    if executor not in ("local", "celery"):
        raise ConfigError(f"{name}={executor!r}: expected local or celery")
    return executor


def _symbols(name: str, raw: str) -> tuple[str, ...]:
    symbols = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
    if not symbols:
        raise ConfigError(f"{name} is empty")
    bad = [s for s in symbols if not s.isalnum()]
    if bad:
        raise ConfigError(f"{name} has invalid symbols: {bad}")
    return symbols


def _joined(separator: str) -> Callable[[Any], str]:
    return lambda values: separator.join(str(v) for v in values)


# What a computed default is given: the value of any other setting, by field name.
Getter = Callable[[str], Any]


@dataclass(frozen=True)
class Setting:
    """One CRYPTOFLOW_* variable: its name, documented default and meaning, and how its text is read.

    `default` is what docs/configuration.md shows; "{home}", "{state}" and "{pg_port}" in it stand for
    those settings' values. `derive`, when given, computes the default instead (from other settings).
    `record` says what the stack file keeps of it: "always", "changed" (only a value other than the
    default, so that it follows the settings it is derived from) or "never".
    """

    env: str
    default: str
    doc: str
    parse: Callable[[str, str], Any] = _text
    show: Callable[[Any], str] = str
    derive: Callable[[Getter], str] | None = None
    record: str = "always"
    section: str = "core"
    field: str = ""  # the attribute of Settings it is declared on (filled in by the table)

    @property
    def key(self) -> str:
        """Its name within its section (forecast_lookback -> lookback): the field of the section's users."""
        return self.field.removeprefix(self.section + "_")


def _setting(env: str, default: str, doc: str, **how: Any) -> Any:
    """The declaration of one setting: a Settings field carrying its Setting."""
    return field(metadata={"setting": Setting(env, default, doc, **how)})


def _in_section(section: str) -> Callable[..., Any]:
    """The declaration of a setting outside core, its variable named after its field (filled in with
    it). Never recorded in the stack file: these reach the stack's services through the environment."""

    def declare(default: str, doc: str, parse: Callable[[str, str], Any] = _text) -> Any:
        shows: dict[Callable[[str, str], Any], Callable[[Any], str]] = {
            _words: _joined(","),
            _flag: _shown_flag,
        }
        return _setting(
            "",
            default,
            doc,
            parse=parse,
            show=shows.get(parse, str),
            section=section,
            record="never",
        )

    return declare
