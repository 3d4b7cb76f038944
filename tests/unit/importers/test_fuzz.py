"""Fuzzing the CDD importer with files mangled the way spreadsheets and people mangle them.

A slice of a clean, gapless shared file (XRP: no exchange gaps) is re-saved with one date format
and one unix spelling for the whole file (scientific notation with few digits included), then rows
are mangled one by one: day and month swapped, seconds dropped, hours unpadded, the date or the
unix value shifted by hours, a unix value with even fewer digits. The importer must either
recover the exact time or quarantine the row (or refuse the file with a one-line reason): a
loaded candle is always the clean file's candle at that hour.

What the content can't tell is left out on purpose (layout module docstring): a date shifted into
a real gap, or three consecutive rows whose dates are wrong alike, with a unix too coarse to pin
the hour. Hence a gapless file, and no three consecutive rows with a wrong date.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cryptoflow.candles import REASONS
from cryptoflow.importers import ImportRefused, import_cdd_csv
from tests.conftest import SHARED_DATA
from tests.unit.importers.test_shapes import FORMATS, Stamp, clean_rows, sci, write_file

pytestmark = pytest.mark.quick

CLEAN = SHARED_DATA / "cryptodatadownload" / "Binance_XRPUSDT_1h.csv"
if not CLEAN.exists():  # as the shared_data fixture does, but the strategy needs the rows at import
    pytest.skip(f"shared data not found at {SHARED_DATA}", allow_module_level=True)
HEADER, ROWS = clean_rows(CLEAN)
BY_TIME = {c.open_time: c for c in import_cdd_csv(CLEAN).candles}
SLICE = 60
HOUR = 3_600_000

# Mutations that leave the date naming the wrong instant, and those that don't.
WRONG_DATE = ("swap_day_month", "shift_date")
MUTATIONS = WRONG_DATE + ("drop_seconds", "unpad_hour", "shift_unix", "coarse_unix")
SHIFTS = (-24, -3, -2, -1, 1, 2, 3, 24)


@st.composite
def mangled(draw):
    start = draw(st.integers(min_value=0, max_value=len(ROWS) - SLICE))
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    digits = draw(st.sampled_from([None, 3, 4, 5, 6, 7, 8]))  # None: exact ms, as CDD writes it
    mutations = draw(
        st.dictionaries(
            st.integers(min_value=0, max_value=SLICE - 1),
            st.tuples(
                st.sampled_from(MUTATIONS),
                st.sampled_from(SHIFTS),
                st.integers(min_value=2, max_value=5),
            ),
            max_size=12,
        )
    )
    # No three consecutive rows with a wrong date (see the module docstring).
    run: list[int] = []
    for i in sorted(i for i, (m, _, _) in mutations.items() if m in WRONG_DATE):
        run = run + [i] if run and i == run[-1] + 1 else [i]
        if len(run) == 3:
            del mutations[i]
            run = run[:2]
    return start, fmt, digits, mutations


def _row(r, fmt, digits, mutation):
    ms = int(r[0])
    kind, shift, few = mutation or (None, 0, 0)
    stamp = Stamp.of(ms + (shift * HOUR if kind == "shift_date" else 0))
    if kind == "swap_day_month":
        stamp = replace(stamp, mo=stamp.d, d=stamp.mo)
    if kind in ("drop_seconds", "unpad_hour"):
        stamp = replace(stamp, seconds=kind != "drop_seconds", padded=kind != "unpad_hour")
    unix_ms = ms + (shift * HOUR if kind == "shift_unix" else 0)
    unix = (
        sci(unix_ms, few)
        if kind == "coarse_unix"
        else r[0]
        if digits is None and kind != "shift_unix"
        else (str(unix_ms) if digits is None else sci(unix_ms, digits))
    )
    date, time = FORMATS[fmt](stamp)
    return [unix, date, *([] if time is None else [time]), *r[2:]]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mangled())
def test_mangled_files_never_load_a_shifted_candle(tmp_path_factory, case):
    start, fmt, digits, mutations = case
    part = ROWS[start : start + SLICE]
    rows = [_row(r, fmt, digits, mutations.get(i)) for i, r in enumerate(part)]
    header = (
        HEADER[:2]
        + (["time"] if FORMATS[fmt](Stamp(2021, 1, 1, 0))[1] is not None else [])
        + HEADER[2:]
    )
    path = write_file(tmp_path_factory.mktemp("mangled") / "renamed.csv", header, rows)
    try:
        res = import_cdd_csv(path)
    except ImportRefused as exc:
        assert "\n" not in str(exc)
        assert mutations, f"a file mangled only as a whole must load: {exc}"
        return
    assert res.balanced and res.counts["read"] == SLICE
    assert all(r.reason in REASONS for r in res.rejections)
    for c in res.candles:
        ref = BY_TIME[c.open_time]
        assert (c.key, c.values()) == (ref.key, ref.values()), (
            "a loaded candle is not the clean one at its hour"
        )
    if not mutations:
        assert res.counts["loaded"] == SLICE, (res.by_reason, res.notes)
