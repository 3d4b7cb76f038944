"""What every importer shares: the result type, the refusal of a whole file, the duplicate/validation pass."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from cryptoflow.candles import Candle, Rejection, check, reject

PROGRESS_EVERY = 10_000  # rows between an importer's progress callbacks
Progress = Callable[[str, int, int], None]  # (stage, rows done, rows in the file)


class ImportRefused(ValueError):
    """The whole file is refused (nothing loaded, nothing quarantined): its layout or meaning can't
    be read safely (no symbol, no interval, day/month order ambiguous, checksum mismatch...).
    str() is the one-line reason, without the file name."""


@dataclass
class ImportResult:
    candles: list[Candle]  # valid, deduplicated, oldest first
    rejections: list[Rejection]  # one per quarantined input row
    counts: dict[str, int] = field(
        default_factory=dict
    )  # read, loaded, quarantined, duplicates_collapsed
    notes: list[str] = field(
        default_factory=list
    )  # what was inferred or not verified, one line each
    symbol: str | None = None  # the file's symbol and interval, as read from its content
    interval: str | None = None

    @property
    def by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.rejections).items()))

    @property
    def balanced(self) -> bool:
        c = self.counts
        return c["read"] == c["loaded"] + c["quarantined"] + c["duplicates_collapsed"]


def finish(
    read: int,
    parsed: Iterable[tuple[Candle, str]],
    rejections: list[Rejection],
    symbols=None,
    allow_missing_trades: bool = True,
    *,
    notes: list[str] | None = None,
    symbol: str | None = None,
    interval: str | None = None,
) -> ImportResult:
    """From parsed rows (candle, raw line) and row-level rejections to an ImportResult.

    Duplicates first, because which copy is "the" candle must be settled before judging it:
    - copies of one key with equal values (numerically: "18060" == "18060.00000000") collapse to
      the first copy, counted in duplicates_collapsed;
    - copies with different values are ALL quarantined as conflicting_duplicate: the source
      contradicts itself about that hour and picking one would be a guess.
    Then each remaining candle goes through the one set of RULES (cryptoflow.candles.check).
    `allow_missing_trades=False` quarantines candles without a trade count (missing_trade_count).
    """
    groups = _by_key(parsed)  # first: parsing may still add row-level rejections
    rejections = list(rejections)
    loaded: list[Candle] = []
    collapsed = 0
    for copies in groups.values():
        first, raw = copies[0]
        if len(copies) > 1:
            variants = {c.values() for c, _ in copies}
            if len(variants) > 1:
                rejections.extend(_conflicting_duplicates(copies, len(variants)))
                continue
            collapsed += len(copies) - 1
        if first.trades is None and not allow_missing_trades:
            rejections.append(_missing_trade_count(first, raw))
            continue
        rejection = check(first, raw, symbols)
        if rejection is not None:
            rejections.append(rejection)
        else:
            loaded.append(first)
    return _accounted(read, loaded, rejections, collapsed, notes, symbol, interval)


def _by_key(parsed: Iterable[tuple[Candle, str]]) -> dict[tuple, list[tuple[Candle, str]]]:
    """The parsed rows (candle, raw line) grouped by candle key, keys in the order first seen."""
    groups: dict[tuple, list[tuple[Candle, str]]] = {}
    for candle, raw in parsed:
        groups.setdefault(candle.key, []).append((candle, raw))
    return groups


def _conflicting_duplicates(copies: list[tuple[Candle, str]], variants: int) -> list[Rejection]:
    """Every copy of a key whose copies disagree, each quarantined as conflicting_duplicate."""
    return [
        reject(
            "conflicting_duplicate",
            f"{len(copies)} rows for {c.symbol} {c.interval} open_time={c.open_time} "
            f"with {variants} different sets of values",
            r,
            c.source,
            c.symbol,
            c.interval,
            c.open_time,
        )
        for c, r in copies
    ]


def _missing_trade_count(candle: Candle, raw: str) -> Rejection:
    return reject(
        "missing_trade_count",
        "trade count is NULL",
        raw,
        candle.source,
        candle.symbol,
        candle.interval,
        candle.open_time,
    )


def _accounted(
    read: int,
    loaded: list[Candle],
    rejections: list[Rejection],
    collapsed: int,
    notes: list[str] | None,
    symbol: str | None,
    interval: str | None,
) -> ImportResult:
    """The ImportResult of a file, its candles oldest first; every row read must be accounted for."""
    loaded.sort(key=lambda c: c.key)
    counts = {
        "read": read,
        "loaded": len(loaded),
        "quarantined": len(rejections),
        "duplicates_collapsed": collapsed,
    }
    result = ImportResult(loaded, rejections, counts, list(notes or []), symbol, interval)
    assert result.balanced, counts  # every row is accounted for, or this is a bug
    return result
