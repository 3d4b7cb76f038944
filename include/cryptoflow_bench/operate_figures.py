"""The operation benchmark's figures (operate.py), computed from what it sampled: freshness
percentiles, snapshot lags, the forecast tally, RSS/PSS start/peak/end and DAG runs by state.

Pure functions of the samples and rows (no stack, no clock): unit-tested in
tests/unit/bench/test_operate.py through cryptoflow_bench.operate, which re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

MINUTE = timedelta(minutes=1)
WINDOW = timedelta(minutes=10)
HOUR = timedelta(hours=1)
FRESHNESS_MAX_TARGET_MIN = 12.0


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between order statistics; None if empty."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def freshness_minutes(now: datetime, newest_open: datetime | None) -> float | None:
    """Minutes since the newest 1m candle closed (its open + 1 minute); None without a candle."""
    if newest_open is None:
        return None
    return (now - (newest_open + MINUTE)).total_seconds() / 60.0


def floor_to(t: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return t - (t - epoch) % step


def ceil_to(t: datetime, step: timedelta) -> datetime:
    f = floor_to(t, step)
    return f if f == t else f + step


@dataclass
class Sample:
    at: datetime
    newest_1m: dict[str, datetime | None]  # coin -> newest stored 1m open time
    rss_kb: dict[str, int] = field(default_factory=dict)  # service -> summed VmRSS
    pss_kb_total: int | None = None
    mem_available_kb: int | None = None
    error: str | None = None

    def freshness(self) -> dict[str, float | None]:
        return {s: freshness_minutes(self.at, t) for s, t in self.newest_1m.items()}

    def to_json(self) -> dict:
        return {
            "at": self.at.isoformat(),
            "newest_1m": {s: t.isoformat() if t else None for s, t in self.newest_1m.items()},
            "freshness_1m_minutes": {
                s: None if f is None else round(f, 2) for s, f in self.freshness().items()
            },
            "rss_mb": {k: round(v / 1024, 1) for k, v in self.rss_kb.items()},
            "rss_mb_total": round(sum(self.rss_kb.values()) / 1024, 1),
            "pss_mb_total": None
            if self.pss_kb_total is None
            else round(self.pss_kb_total / 1024, 1),
            "mem_available_mb": None
            if self.mem_available_kb is None
            else round(self.mem_available_kb / 1024, 1),
            **({"error": self.error} if self.error else {}),
        }


def freshness_figures(
    samples: Sequence[Sample],
    symbols: Sequence[str],
    warmup_until: datetime,
    target: float = FRESHNESS_MAX_TARGET_MIN,
) -> dict:
    """p50/p95/max of freshness over every (sample, coin) at or after `warmup_until`.

    A coin without any 1m candle in a sample counts as infinitely stale: the max is then None and
    the target is missed (`freshness_1m_no_data_samples` says how often).
    """
    values: list[tuple[float, str]] = []
    no_data = 0
    used = [s for s in samples if s.at >= warmup_until and s.error is None]
    for s in used:
        fresh = s.freshness()
        for sym in symbols:
            f = fresh.get(sym)
            if f is None:
                no_data += 1
            else:
                values.append((f, sym))
    nums = [v for v, _ in values]
    worst = max(values) if values else None
    mx = None if no_data or worst is None else worst[0]
    return {
        "samples_after_warmup": len(used),
        "freshness_1m_p50_minutes": _round(percentile(nums, 50)),
        "freshness_1m_p95_minutes": _round(percentile(nums, 95)),
        "freshness_1m_max_minutes": _round(mx),
        "freshness_1m_max_minutes_target": target,
        "freshness_1m_max_minutes_met": mx is not None and mx <= target,
        "freshness_1m_stalest_coin": worst[1] if worst else None,
        "freshness_1m_no_data_samples": no_data,
    }


def snapshot_lags(
    samples: Sequence[tuple[datetime, Mapping[str, datetime | None]]], symbols: Sequence[str]
) -> tuple[dict[datetime, float], dict[datetime, float]]:
    """Lag of each 10-minute window [T, T+10m) that ends within the samples, in minutes.

    A window is in the warehouse at the first sample where every coin's newest 1m open time is
    >= T+9m; its lag is that sample's time minus T+10m (coarse: an upper bound, at most one sample
    interval above the true lag). Only windows ending at or after the first sample count (an older
    one may have arrived long before it). Returns (lags of the windows that arrived, {window still
    missing at the last sample: minutes since it ended}).
    """
    samples = sorted(samples, key=lambda s: s[0])
    if not samples or not symbols:
        return {}, {}
    first, last = samples[0][0], samples[-1][0]
    arrived: dict[datetime, float] = {}
    pending: dict[datetime, float] = {}
    t = (
        ceil_to(first, WINDOW) - WINDOW
    )  # the window ending at the first 10-minute boundary >= first
    while t + WINDOW <= last:
        end, need = t + WINDOW, t + WINDOW - MINUTE
        for at, newest in samples:
            if all((seen := newest.get(sym)) is not None and seen >= need for sym in symbols):
                arrived[t] = (at - end).total_seconds() / 60.0
                break
        else:
            pending[t] = (last - end).total_seconds() / 60.0
        t += WINDOW
    return arrived, pending


def lag_figures(samples: Sequence[Sample], symbols: Sequence[str], sample_s: float) -> dict:
    ok = [(s.at, s.newest_1m) for s in samples if s.error is None]
    arrived, pending = snapshot_lags(ok, symbols)
    lags = list(arrived.values())
    return {
        "snapshots_observed": len(arrived),
        "snapshot_lag_minutes_p50": _round(percentile(lags, 50)),
        "snapshot_lag_minutes_max": _round(max(lags) if lags else None),
        "snapshot_lag_resolution_minutes": round(sample_s / 60.0, 2),
        "snapshots_missing_at_end": len(pending),
        "snapshot_missing_oldest_minutes": _round(max(pending.values()) if pending else None),
    }


def forecast_hours(start: datetime, end: datetime) -> list[datetime]:
    """The whole hours inside [start, end]: H with start <= H and H + 1h <= end."""
    out, h = [], ceil_to(start, HOUR)
    while h + HOUR <= end:
        out.append(h)
        h += HOUR
    return out


def tally_forecasts(
    hours: Sequence[datetime], rows: Iterable[tuple[str, datetime]], symbols: Sequence[str]
) -> dict:
    """Per hour, how many configured coins have a live forecast for it; min/mean over the hours."""
    wanted = set(symbols)
    per_hour: dict[datetime, set[str]] = {h: set() for h in hours}
    for sym, target in rows:
        if target in per_hour and sym in wanted:
            per_hour[target].add(sym)
    counts = [len(per_hour[h]) for h in hours]
    return {
        "forecast_hours_observed": len(hours),
        "forecasts_per_hour_min": min(counts) if counts else None,
        "forecasts_per_hour_mean": _round(sum(counts) / len(counts) if counts else None),
        "hours_with_every_coin_forecast": sum(1 for c in counts if c == len(wanted)),
        "forecast_hours_missing_coins": {
            h.strftime("%m-%dT%H:%MZ"): sorted(wanted - per_hour[h])
            for h in hours
            if len(per_hour[h]) < len(wanted)
        },
    }


def rss_figures(samples: Sequence[Sample]) -> dict:
    """start/peak/end MiB per service (in the order first seen) and of the total, RSS and PSS."""
    used = [s for s in samples if s.rss_kb]
    if not used:
        return {}
    names: list[str] = []
    for s in used:
        names += [n for n in s.rss_kb if n not in names]
    out: dict = {}

    def put(label: str, values: Sequence[float | None]):
        series = [v for v in values if v is not None]
        if series:
            out[f"{label}_start"] = round(series[0] / 1024, 1)
            out[f"{label}_peak"] = round(max(series) / 1024, 1)
            out[f"{label}_end"] = round(series[-1] / 1024, 1)

    put("rss_mb_total", [sum(s.rss_kb.values()) for s in used])
    put("pss_mb_total", [s.pss_kb_total for s in used])
    for name in names:
        put(f"rss_mb_{name.replace('-', '_')}", [s.rss_kb.get(name, 0) for s in used])
    avail = [s.mem_available_kb for s in used if s.mem_available_kb is not None]
    if avail:
        out["mem_available_mb_min"] = round(min(avail) / 1024, 1)
    return out


def dag_run_figures(runs: Iterable[Mapping]) -> dict:
    """Runs by DAG and state (flat: dag_runs_<dag>_<state>), failed total and the failed runs' ids."""
    by: dict[tuple[str, str], int] = {}
    failed = []
    for r in runs:
        state = r.get("state") or "none"
        by[(r["dag_id"], state)] = by.get((r["dag_id"], state), 0) + 1
        if state == "failed":
            failed.append(f"{r['dag_id']}/{r['dag_run_id']}")
    out: dict = {"dag_runs_failed_in_period": len(failed), "dag_runs_failed_ids": failed[:10]}
    for (dag, state), n in sorted(by.items()):
        out[f"dag_runs_{dag}_{state}"] = n
    return out


def _round(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)
