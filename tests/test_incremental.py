"""The change filter: the re-read window, its widening by the scan time, and its dedup set."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
from conftest import Target, assert_equals_emulator

from exa_source.emulator import Emulator, Fault, ImportStore
from exa_source.incremental import ChangeFilter
from exa_source.schema import TIMESTAMP

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def batch(*rows: tuple[str, float]) -> tuple[pa.Array, pa.Array]:
    ids = pa.array([r[0] for r in rows], pa.string())
    updated = pa.array([T0 + timedelta(seconds=r[1]) for r in rows], TIMESTAMP)
    return ids, updated


def test_first_run_takes_everything_and_remembers_the_window() -> None:
    f = ChangeFilter(None, EPOCH, lag_seconds=300, previous_scan_seconds=0, loaded_keys=[])
    assert f.select(*batch(("a", 0), ("b", 1000), ("c", 990))).to_pylist() == [0, 1, 2]
    keys = f.next_state(scan_seconds=5)["loaded_keys"]
    assert sorted(k.split("|")[0] for k in keys) == ["b", "c"]  # within 305 s of the max


def test_rerun_skips_unchanged_rows_in_the_window_but_not_late_commits() -> None:
    first = ChangeFilter(None, EPOCH, 300, 0, [])
    first.select(*batch(("a", 0), ("b", 1000), ("c", 990)))
    state = first.next_state(5)
    high = T0 + timedelta(seconds=1000)

    again = ChangeFilter(high, EPOCH, 300, state["scan_seconds"], state["loaded_keys"])
    # c was committed late with a new updatedAt still before the high-water mark
    picked = again.select(*batch(("a", 0), ("b", 1000), ("c", 995))).to_pylist()
    assert picked == [2]
    assert again.skipped == 1


def test_window_widens_by_the_previous_scan_time() -> None:
    high = T0 + timedelta(seconds=1000)
    narrow = ChangeFilter(high, EPOCH, lag_seconds=0, previous_scan_seconds=0, loaded_keys=[])
    wide = ChangeFilter(high, EPOCH, lag_seconds=0, previous_scan_seconds=60, loaded_keys=[])
    rows = batch(("changed during the last scan", 950))
    assert narrow.select(*rows).to_pylist() == []
    assert wide.select(*rows).to_pylist() == [0]


def test_backfill_start_is_a_floor() -> None:
    start = T0 + timedelta(seconds=500)
    f = ChangeFilter(None, start, 300, 0, [])
    assert f.select(*batch(("old", 100), ("new", 600))).to_pylist() == [1]


def test_change_during_a_scan_on_a_page_already_read_is_not_lost(
    target: Target, emulator: Emulator
) -> None:
    """Pages are newest-created first: an import on page 1 updated while page 3 is read is
    missed by that scan, and a later page may already carry a newer updatedAt. Even with no
    lag, the next run's window reaches back by the scan time and catches it."""
    target.load(emulator, lag_seconds=0)
    first, last = emulator.store.ids()[0], emulator.store.ids()[-1]

    def meanwhile(store: ImportStore) -> None:
        store.update(first, title="changed on a page already read")
        store.update(last, title="changed on a page not read yet")

    emulator.faults.add(Fault("mutate", skip=2, fn=meanwhile))
    during = target.load(emulator, lag_seconds=0)
    assert during.rows_loaded == 1  # only `last`
    after = target.load(emulator, lag_seconds=0)
    assert after.rows_loaded == 1  # `first`, thanks to the scan-time widening
    assert_equals_emulator(target, emulator)
