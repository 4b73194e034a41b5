"""End to end: the ``exa`` source over real HTTP against the emulator, into DuckDB and Postgres."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dlt
import pytest
from conftest import KEY, Target, assert_equals_emulator

from exa_source import (
    ExaAPIError,
    ExaAuthError,
    ExaConfigError,
    ExaCreditsError,
    exa_websets_source,
    settings,
)
from exa_source.emulator import Emulator, Fault, parse_time

LIST = ("GET", "/websets/v0/imports")


def _max_updated(emu: Emulator) -> datetime:
    return max(parse_time(r["updatedAt"]) for r in emu.store.snapshot())


def _updated_since(emu: Emulator, since: datetime) -> set[str]:
    """Ids whose updatedAt is at or after ``since``."""
    return {r["id"] for r in emu.store.snapshot() if parse_time(r["updatedAt"]) >= since}


def _state(target: Target) -> Any:
    """The committed description of the last scan (synced into a fresh pipeline)."""
    pipeline = target.pipeline()
    pipeline.sync_destination()
    return pipeline.state["sources"]["exa"]["resources"]["imports"]["last_scan"]


def test_first_load_equals_emulator(target: Target, emulator: Emulator) -> None:
    summary = target.load(emulator)

    assert summary.rows_loaded == 1_000
    assert summary.rows_read == 1_000
    assert_equals_emulator(target, emulator)
    # 1,000 imports at 200 a page: exactly 5 requests, limit=200, no empty cursor ever sent
    imports = summary.tables["imports"]
    assert imports["pages"] == imports["requests"] == math.ceil(1_000 / 200)
    # the other resources: one websets page (shared by four tables), one events page for the
    # items, the monitors and webhooks lists (no monitor, no webhook) and the event log
    assert summary.requests == imports["requests"] + 5
    queries = emulator.stats.list_queries
    assert len(queries) == 5 and all("limit=200" in q for q in queries)
    assert "cursor" not in queries[0]
    assert not any(part == "cursor=" for q in queries for part in q.split("&"))


def test_next_run_loads_only_changes(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    changed = emulator.store.mutate(update=30, create=7, advance=12, seed=3)
    touched = {i for ids in changed.values() for i in ids}

    summary = target.load(emulator)

    imports = summary.tables["imports"]
    assert imports["rows_loaded"] == len(touched) == 49
    assert imports["rows"] == 1_007
    assert_equals_emulator(target, emulator)


def test_rerun_without_change_loads_no_import_rows(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    again = target.load(emulator)
    assert again.rows_loaded == 0
    assert again.rows_read == 1_000
    assert_equals_emulator(target, emulator)


def test_a_change_stamped_at_or_before_the_newest_loaded_time_is_loaded(
    target: Target, emulator: Emulator
) -> None:
    """No high-water mark: a change is loaded whatever its updatedAt, ties and late commits
    included (an update stamped before the newest loaded updatedAt but written after)."""
    newest = _max_updated(emulator)
    ids = [r["id"] for r in emulator.store.snapshot() if parse_time(r["updatedAt"]) < newest]
    target.load(emulator)
    emulator.store.update(ids[0], title="tied", at=newest)
    emulator.store.update(ids[1], title="late commit", at=newest - timedelta(seconds=600))

    summary = target.load(emulator)

    assert summary.rows_loaded == 2
    assert_equals_emulator(target, emulator)


@pytest.mark.parametrize("quirk", [True, False])
def test_last_page_quirk(target: Target, quirk: bool) -> None:
    """The real API said hasMore: true with nextCursor: null on a last page: stop there."""
    with Emulator(api_key=KEY, imports=450, quirk_last_page=quirk).start() as emu:
        summary = target.load(emu)
        assert summary.rows_loaded == 450
        assert summary.tables["imports"]["requests"] == 3
        assert emu.stats.requests[LIST] == 3
        assert_equals_emulator(target, emu)


def test_initial_updated_at_is_a_backfill_start(target: Target, emulator: Emulator) -> None:
    since = datetime(2026, 7, 1, tzinfo=timezone.utc)
    expected = _updated_since(emulator, since)
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
    assert summary.tables["imports"]["requests"] == 6
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


# --- a dlt user's own script: the source composes with dlt's own tools ----------------------


def _user_pipeline(target: Target) -> dlt.Pipeline:
    return target.pipeline()


def _source(emu: Emulator, **options: Any) -> Any:
    return exa_websets_source(api_key=KEY, base_url=emu.base_url, **options)


def _live_ids(target: Target, table: str = "imports") -> set[str]:
    pipeline = target.pipeline()
    with pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name(table)
        rows = client.execute_sql(f"select id from {qualified} where _exa_deleted_at is null")
    return {r[0] for r in rows or []}


def _api_ids(emu: Emulator) -> set[str]:
    return set(emu.store.ids())


def test_add_filter_for_one_run_then_plain_runs(target: Target, emulator: Emulator) -> None:
    pipeline = _user_pipeline(target)
    filtered = _source(emulator)
    filtered.imports.add_filter(lambda table: False)  # this run writes nothing
    pipeline.run(filtered)
    assert pipeline.last_trace.last_normalize_info.row_counts.get("imports", 0) == 0

    pipeline.run(_source(emulator))

    assert_equals_emulator(target, emulator)


def test_add_limit_stops_the_scan_early_and_deletes_nothing(
    target: Target, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "ROWS_PER_TABLE", 200)  # 5 Arrow tables for 1,000 imports
    pipeline = _user_pipeline(target)
    pipeline.run(_source(emulator))
    # enough changes that the first two batches both yield a table: the limit is reached
    gone = set(emulator.store.mutate(delete=10, update=600, seed=2)["deleted"])
    limited = _source(emulator)
    limited.imports.add_limit(2)  # counts yielded Arrow tables, not pages or rows

    pipeline.run(limited)

    assert not target.rows(GONE_IDS)
    scan = pipeline.state["sources"]["exa"]["resources"]["imports"]["last_scan"]
    assert scan["complete"] is False and scan["deleted"] == 0
    pipeline.run(_source(emulator))  # the next complete scan deletes
    assert {r["id"] for r in target.rows(GONE_IDS)} == gone
    assert_equals_emulator(target, emulator)


GONE_IDS = "select id from {table} where _exa_deleted_at is not null"


def test_a_renamed_table_gets_changes_and_deletions(target: Target, emulator: Emulator) -> None:
    pipeline = _user_pipeline(target)

    def renamed() -> Any:
        source = _source(emulator)
        source.imports.apply_hints(table_name="exa_imports")
        return source

    pipeline.run(renamed())
    changed = emulator.store.mutate(update=10, create=4, delete=3, seed=4)
    pipeline.run(renamed())

    assert _live_ids(target, "exa_imports") == _api_ids(emulator)
    scan = pipeline.state["sources"]["exa"]["resources"]["imports"]["last_scan"]
    assert (scan["table"], scan["changed"], scan["deleted"]) == ("exa_imports", 14, 3)
    assert set(changed["deleted"]).isdisjoint(_live_ids(target, "exa_imports"))


def test_scd2_keeps_history_and_its_current_rows_equal_the_api(
    target: Target, emulator: Emulator
) -> None:
    pipeline = _user_pipeline(target)

    def scd2() -> Any:
        source = _source(emulator)
        source.imports.apply_hints(write_disposition={"disposition": "merge", "strategy": "scd2"})
        return source

    pipeline.run(scd2())
    changed = emulator.store.mutate(update=10, create=4, delete=3, seed=6)
    pipeline.run(scd2())
    pipeline.run(scd2())  # nothing changed: no new versions

    rows = target.rows()
    current = [r for r in rows if r["_dlt_valid_to"] is None]
    retired = [r for r in rows if r["_dlt_valid_to"] is not None]
    assert {r["id"] for r in current} == _api_ids(emulator)
    assert len(current) == len({r["id"] for r in current})
    assert {r["id"] for r in retired} == set(changed["updated"]) | set(changed["deleted"])
    assert len(rows) == 1_000 + 10 + 4
    from conftest import canonical_api, canonical_row

    api = sorted((canonical_api(r) for r in emulator.store.snapshot()), key=lambda r: r["id"])
    assert sorted((canonical_row(r) for r in current), key=lambda r: r["id"]) == api


def test_every_row_carries_its_load_id(target: Target, emulator: Emulator) -> None:
    pipeline = _user_pipeline(target)
    first = pipeline.run(_source(emulator)).loads_ids[-1]
    emulator.store.mutate(update=5, delete=2, seed=7)
    second = pipeline.run(_source(emulator)).loads_ids[-1]
    counts = {
        r["_dlt_load_id"]: r["n"]
        for r in target.rows("select _dlt_load_id, count(*) as n from {table} group by 1")
    }
    assert counts == {first: 993, second: 7}
    loads = pipeline.dataset()._dlt_loads.df()
    assert sorted(loads["load_id"]) == sorted([first, second])  # one row per load, no others


def test_pipeline_dataset_reads_the_table(target: Target, emulator: Emulator) -> None:
    pipeline = _user_pipeline(target)
    pipeline.run(_source(emulator))
    dataset = pipeline.dataset()
    assert dataset.imports.arrow().num_rows == 1_000
    frame = dataset.imports.df()
    assert len(frame) == 1_000 and frame["id"].is_unique
    assert dataset("select count(*) from imports").fetchall() == [(1_000,)]


def test_with_resources_and_a_users_own_incremental(target: Target, emulator: Emulator) -> None:
    """``apply_hints(incremental=...)`` works as dlt documents it: on top of the comparison,
    dlt drops rows not newer than its cursor."""
    pipeline = _user_pipeline(target)

    def incremental() -> Any:
        source = _source(emulator).with_resources("imports")
        source.imports.apply_hints(incremental=dlt.sources.incremental("updatedAt"))
        return source

    pipeline.run(incremental())
    assert len(target.rows()) == 1_000
    emulator.store.mutate(update=6, create=2, seed=9)
    info = pipeline.run(incremental())
    assert info.has_failed_jobs is False
    assert pipeline.last_trace.last_normalize_info.row_counts["imports"] == 8
    assert_equals_emulator(target, emulator)


def test_dlt_pipeline_drop_imports_then_a_normal_run(
    target: Target, emulator: Emulator, tmp_path: Path
) -> None:
    """``dlt pipeline <name> drop imports`` is not blocked by the BI views (PostgreSQL tracks
    view dependencies), and the next run loads everything again."""
    target.load(emulator)  # run_load also creates the BI views
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}
    if target.duckdb_path:  # dlt's CLI does not know the file the pipeline was given
        env["DESTINATION__DUCKDB__CREDENTIALS"] = target.duckdb_path
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "dlt"),
            "-y",
            "pipeline",
            "--pipelines-dir",
            target.pipelines_dir,
            target.pipeline_name,
            "drop",
            "imports",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with target.pipeline().sql_client() as client:
        assert not client.execute_sql(
            "select 1 from information_schema.tables where table_schema = %s"
            " and table_name = 'imports'",
            client.dataset_name if target.destination == "postgres" else target.dataset,
        )

    summary = target.load(emulator)

    assert summary.rows_loaded == 1_000
    assert_equals_emulator(target, emulator)
