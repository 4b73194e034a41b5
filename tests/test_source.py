"""End to end: the ``exa`` source over real HTTP against the emulator, into DuckDB and Postgres."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import KEY, Target, assert_equals_emulator

from exa_source import (
    ExaAPIError,
    ExaAuthError,
    ExaConfigError,
    ExaCreditsError,
    exa_websets_source,
)
from exa_source.emulator import Emulator, Fault, parse_time
from exa_source.settings import DEFAULT_LAG_SECONDS

LIST = ("GET", "/websets/v0/imports")


def _max_updated(emu: Emulator) -> datetime:
    return max(parse_time(r["updatedAt"]) for r in emu.store.snapshot())


def _in_window(emu: Emulator, since: datetime) -> set[str]:
    """Ids whose updatedAt is at or after ``since`` (what a lag window re-reads)."""
    return {r["id"] for r in emu.store.snapshot() if parse_time(r["updatedAt"]) >= since}


def _state(target: Target) -> Any:
    pipeline = target.pipeline()
    pipeline.sync_destination()
    return pipeline.state["sources"]["exa"]["resources"]["imports"]["incremental"]["updatedAt"]


def test_first_load_equals_emulator(target: Target, emulator: Emulator) -> None:
    summary = target.load(emulator)

    assert summary.rows_loaded == 1_000
    assert summary.rows_read == 1_000
    assert_equals_emulator(target, emulator)
    # 1,000 imports at 200 a page: exactly 5 requests, limit=200, no empty cursor ever sent
    assert summary.pages == summary.requests == math.ceil(1_000 / 200)
    queries = emulator.stats.list_queries
    assert len(queries) == 5 and all("limit=200" in q for q in queries)
    assert "cursor" not in queries[0]
    assert not any(part == "cursor=" for q in queries for part in q.split("&"))


def test_next_run_loads_only_changes(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    window = _in_window(emulator, _max_updated(emulator) - timedelta(seconds=DEFAULT_LAG_SECONDS))
    assert window  # the default 300 s window re-reads some seeded imports...
    changed = emulator.store.mutate(update=30, create=7, advance=12, seed=3)
    touched = {i for ids in changed.values() for i in ids}

    summary = target.load(emulator)

    # ...but only rows whose (id, updatedAt) was not loaded before are loaded again
    assert summary.rows_loaded == len(touched) == 49
    assert summary.rows_read == 1_007
    assert_equals_emulator(target, emulator)


@pytest.mark.parametrize("lag", [None, 0, 3600])
def test_rerun_without_change_loads_no_import_rows(
    target: Target, emulator: Emulator, lag: float | None
) -> None:
    target.load(emulator, lag_seconds=lag)
    again = target.load(emulator, lag_seconds=lag)
    assert again.rows_loaded == 0
    assert again.rows_read == 1_000
    assert_equals_emulator(target, emulator)


def test_ties_at_the_last_updated_at(target: Target, emulator: Emulator) -> None:
    """A change stamped exactly at the previous high-water mark is loaded, without duplicates."""
    ids = emulator.store.ids()
    high = _max_updated(emulator) + timedelta(seconds=1)
    for import_id in ids[:3]:
        emulator.store.update(import_id, title="tied", at=high)
    target.load(emulator, lag_seconds=0)
    # a fourth import gets the very same updatedAt after the run: closed start keeps it
    emulator.store.update(ids[3], title="tied late", at=high)

    summary = target.load(emulator, lag_seconds=0)

    assert summary.rows_loaded >= 1
    assert_equals_emulator(target, emulator)


def test_late_commit_is_caught_by_the_lag_window(target: Target, emulator: Emulator) -> None:
    """An update stamped before the last run's maximum but written after it."""
    target.load(emulator, lag_seconds=0)
    late = _max_updated(emulator) - timedelta(seconds=60)
    victim = emulator.store.ids()[-1]
    emulator.store.update(victim, title="late commit", at=late)

    missed = target.load(emulator, lag_seconds=0)
    assert missed.rows_loaded == 0  # without a lag the late commit is lost
    caught = target.load(emulator)  # default lag: 300 s
    assert caught.rows_loaded >= 1
    assert_equals_emulator(target, emulator)


@pytest.mark.parametrize("quirk", [True, False])
def test_last_page_quirk(target: Target, quirk: bool) -> None:
    """The real API said hasMore: true with nextCursor: null on a last page: stop there."""
    with Emulator(api_key=KEY, imports=450, quirk_last_page=quirk).start() as emu:
        summary = target.load(emu)
        assert summary.rows_loaded == 450
        assert summary.requests == 3
        assert emu.stats.requests[LIST] == 3
        assert_equals_emulator(target, emu)


def test_initial_updated_at_is_a_backfill_start(target: Target, emulator: Emulator) -> None:
    since = datetime(2026, 7, 1, tzinfo=timezone.utc)
    expected = _in_window(emulator, since)
    assert 0 < len(expected) < 1_000
    summary = target.load(emulator, initial_updated_at="2026-07-01T00:00:00Z")
    assert summary.rows_loaded == len(expected)
    assert {r["id"] for r in target.rows()} == expected


def test_full_refresh_reloads_everything(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    assert target.load(emulator, full_refresh=True).rows_loaded == 1_000
    assert_equals_emulator(target, emulator)


# --- errors: a clear message, and nothing changes in the destination or the state ---------


def test_no_key_fails_before_any_request(
    target: Target, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCES__EXA__API_KEY", raising=False)
    monkeypatch.delenv("EXA_API_KEY", raising=False)
    with pytest.raises(ExaConfigError, match="SOURCES__EXA__API_KEY"):
        target.load(emulator, api_key=None)
    assert sum(emulator.stats.requests.values()) == 0


@pytest.mark.parametrize(
    ("emu_kwargs", "key", "error", "message"),
    [
        ({}, "wrong-key", ExaAuthError, "Exa rejected the API key"),
        ({"no_credits_keys": ["broke"]}, "broke", ExaCreditsError, "out of credits"),
    ],
)
def test_rejected_key_and_no_credits_are_not_retried(
    target: Target, emu_kwargs: dict[str, Any], key: str, error: type, message: str
) -> None:
    with Emulator(api_key=KEY, imports=10, **emu_kwargs).start() as emu:
        with pytest.raises(error, match=message) as info:
            target.load(emu, api_key=key)
        assert key not in str(info.value)
        assert emu.stats.requests[LIST] == 1


def test_other_4xx_reports_the_api_message(target: Target, emulator: Emulator) -> None:
    emulator.faults.add(Fault("status", status=404, body={"statusCode": 404, "message": "gone"}))
    with pytest.raises(ExaAPIError, match=r"404.*gone"):
        target.load(emulator)
    assert emulator.stats.requests[LIST] == 1


def test_429_with_retry_after_is_retried(target: Target, emulator: Emulator) -> None:
    emulator.faults.add(Fault("status", status=429, headers={"Retry-After": "1"}, skip=2))
    summary = target.load(emulator)
    assert summary.retried == 1
    assert summary.requests == 6
    assert_equals_emulator(target, emulator)


def test_5xx_beyond_the_retry_budget_changes_nothing(
    target: Target, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("RUNTIME__REQUEST_BACKOFF_FACTOR", "0.01")
    target.load(emulator)
    before_rows, before_state = target.rows(), _state(target)
    emulator.store.mutate(update=50, seed=9)
    emulator.faults.add(Fault("status", status=503, skip=3, times=100))

    with pytest.raises(ExaAPIError, match="kept failing after 3 attempts"):
        target.load(emulator)

    assert target.rows() == before_rows
    assert _state(target) == before_state
    emulator.faults.clear()
    target.load(emulator)
    assert_equals_emulator(target, emulator)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("page_size", 0, "outside 1-200"),
        ("page_size", 201, "outside 1-200"),
        ("base_url", "http://api.example.com", "non-loopback"),
        ("base_url", "ftp://x", "not an http"),
        ("initial_updated_at", "yesterday", "not an ISO-8601"),
        ("lag_seconds", -1, "0 or more"),
    ],
)
def test_bad_options_fail_before_any_request(option: str, value: Any, message: str) -> None:
    options: dict[str, Any] = {"api_key": KEY, "base_url": "http://127.0.0.1:9", option: value}
    with pytest.raises(ExaConfigError, match=message):
        exa_websets_source(**options)
