"""Exact change capture: every run compares the API with the destination table itself.

Unit tests of the record and its lookup, then end-to-end runs over real HTTP into DuckDB and
PostgreSQL for each way a table used to drift from the API while runs reported success: a bad
clock upstream, a timestamp before 1970, two destinations sharing one pipelines folder, a
restored backup, rows a user's filter dropped. Each ends with the table equal to the API after
one more normal run. Then deletions (soft, hard, off; only after a complete scan) and the state,
whose size does not grow with the number of imports or changes.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import KEY, PG_DSN, Target, assert_equals_emulator

from exa_source import ExaAPIError, exa_websets_source
from exa_source.emulator import Emulator, Fault
from exa_source.pipeline import run_load

GONE = "select id, _exa_deleted_at from {table} where _exa_deleted_at is not null order by id"
NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- the record
# (imported per test, so that the end-to-end tests below also run against older versions)


def _record(rows: list[tuple[str, int, bool]]) -> Any:
    from exa_source import sync

    ids = [r[0] for r in rows]
    return sync.Record.build(
        pa.array(ids, pa.string()),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=bool),
        sync._hash(pa.array(ids, pa.string())),
    )


def _changed(record: Any, rows: list[tuple[str, int]]) -> list[bool]:
    ids = [r[0] for r in rows]
    micros = np.array([r[1] for r in rows], dtype=np.int64)
    return record.changed(pa.array(ids, pa.string()), micros).tolist()


def test_a_row_is_loaded_when_absent_different_in_either_direction_or_coming_back() -> None:
    record = _record([("a", 100, False), ("b", 100, False), ("c", 100, False), ("d", 100, True)])
    picked = _changed(record, [("a", 100), ("b", 200), ("c", 50), ("d", 100), ("e", 1)])
    #                  same       later      earlier    soft-deleted  new
    assert picked == [False, True, True, True, True]
    assert record.gone(include_soft_deleted=False) == []
    assert record.gone(include_soft_deleted=True) == []


def test_gone_is_what_a_complete_scan_did_not_list() -> None:
    record = _record([("a", 1, False), ("b", 1, False), ("x", 1, True)])
    _changed(record, [("a", 1)])
    assert record.gone(include_soft_deleted=False) == ["b"]
    assert sorted(record.gone(include_soft_deleted=True)) == ["b", "x"]


def test_a_hash_collision_never_matches_two_different_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every id hashes to the same value: the lookup must still compare the ids themselves."""
    from exa_source import sync

    monkeypatch.setattr(sync, "_hash", lambda ids: np.zeros(len(ids), dtype=np.int64))
    ids = [f"import_{i:04d}" for i in range(50)]
    record = _record([(i, 7, False) for i in ids])
    wanted = [*ids[::-1], "import_9999"]
    found = record.positions(pa.array(wanted))
    assert found[-1] == -1
    assert [record.ids[int(p)].as_py() for p in found[:-1]] == ids[::-1]


def test_duplicate_ids_in_the_destination_are_refused_by_build() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        _record([("a", 1, False), ("a", 2, False)])


def test_lookup_of_a_batch_is_vectorised_and_exact_at_scale() -> None:
    ids = [f"import_{i:026d}" for i in range(200_000)]
    record = _record([(i, n, False) for n, i in enumerate(ids)])
    batch = [*ids[::7], "import_missing"]
    micros = np.array([n for n in range(0, 200_000, 7)] + [0], dtype=np.int64)
    micros[3] += 1  # one changed row
    changed = record.changed(pa.array(batch), micros)
    assert np.flatnonzero(changed).tolist() == [3, len(batch) - 1]
    assert len(record.gone(include_soft_deleted=False)) == 200_000 - (len(batch) - 1)


# --------------------------------------------------------------------------- end to end


def _make_bad_clock(emu: Emulator, victim: str) -> None:
    emu.store.touch(victim, at="9999-01-01T00:00:00Z")


def test_a_bad_clock_upstream_does_not_stop_later_changes(
    target: Target, emulator: Emulator
) -> None:
    """One import answered with updatedAt in year 9999, later corrected: every change made
    meanwhile, and the correction, are loaded."""
    target.load(emulator)
    victim, other = emulator.store.ids()[10], emulator.store.ids()[20]
    _make_bad_clock(emulator, victim)
    target.load(emulator)
    changed = emulator.store.mutate(update=15, create=5, seed=21)
    emulator.store.update(other, title="changed while the clock was wrong")
    target.load(emulator)
    assert_equals_emulator(target, emulator)

    emulator.store.touch(victim, at=NOW)  # Exa fixes its clock
    emulator.store.mutate(update=5, create=3, seed=22)
    summary = target.load(emulator)

    assert summary.tables["imports"]["rows_loaded"] == 1 + 5 + 3
    assert set(changed["created"]) <= {r["id"] for r in target.rows()}
    assert_equals_emulator(target, emulator)


def test_an_import_updated_before_1970_is_loaded(target: Target, emulator: Emulator) -> None:
    old = emulator.store.ids()[5]
    emulator.store.touch(old, at="1969-07-20T20:17:40Z")
    target.load(emulator)
    assert_equals_emulator(target, emulator)
    emulator.store.touch(old, at="1960-01-01T00:00:00Z")  # and changed again, earlier still
    assert target.load(emulator).rows_loaded == 1
    assert_equals_emulator(target, emulator)


def _second_target(target: Target, tmp_path: Path) -> Target:
    """Another destination of the same pipeline name, sharing the pipelines folder."""
    if target.destination == "duckdb":
        return Target(
            "duckdb",
            target.dataset,
            str(tmp_path / "second.duckdb"),
            target.pipelines_dir,
            target.pipeline_name,
        )
    return Target(
        "postgres",
        target.dataset + "_2",
        None,
        target.pipelines_dir,
        target.pipeline_name,
    )


def _drop_pg_schema(name: str) -> None:
    import psycopg2

    with psycopg2.connect(PG_DSN) as conn, conn.cursor() as cur:
        cur.execute(f'drop schema if exists "{name}" cascade')
        cur.execute(f'drop schema if exists "{name}_staging" cascade')


@pytest.mark.slow
def test_two_destinations_sharing_one_pipelines_folder_both_converge(
    target: Target, tmp_path: Path
) -> None:
    """``exa-source load`` by hand next to the DAG: same pipeline name and folder, two
    destinations, loads alternating with changes in between, 30,000 imports."""
    other = _second_target(target, tmp_path)
    try:
        with Emulator(api_key=KEY, imports=30_000).start() as emu:
            for step in range(4):
                for where in (target, other):
                    where.load(emu)
                    assert_equals_emulator(where, emu)
                    emu.store.mutate(update=300, create=50, delete=20, advance=50, seed=step)
            for where in (target, other):
                where.load(emu)
                assert_equals_emulator(where, emu)
    finally:
        if other.destination == "postgres":
            _drop_pg_schema(other.dataset)


def _backup(target: Target, tmp_path: Path) -> Any:
    """Copy the whole dataset (data, dlt state and schema tables) aside; return a restorer."""
    if target.destination == "duckdb":
        assert target.duckdb_path is not None
        saved = tmp_path / "backup.duckdb"
        shutil.copy(target.duckdb_path, saved)
        return lambda: shutil.copy(saved, str(target.duckdb_path))
    import psycopg2

    backup = target.dataset + "_bk"
    with psycopg2.connect(PG_DSN) as conn, conn.cursor() as cur:
        cur.execute(f'create schema "{backup}"')
        cur.execute(
            "select table_name from information_schema.tables where table_schema = %s"
            " and table_type = 'BASE TABLE'",
            (target.dataset,),
        )
        for (name,) in cur.fetchall():
            cur.execute(f'create table "{backup}"."{name}" as table "{target.dataset}"."{name}"')

    def restore() -> None:
        with psycopg2.connect(PG_DSN) as conn, conn.cursor() as cur:
            cur.execute(f'drop schema "{target.dataset}" cascade')
            cur.execute(f'alter schema "{backup}" rename to "{target.dataset}"')

    return restore


def test_a_destination_restored_from_a_backup_gets_what_it_lost(
    target: Target, emulator: Emulator, tmp_path: Path
) -> None:
    target.load(emulator)
    restore = _backup(target, tmp_path)
    emulator.store.mutate(update=40, create=10, delete=5, seed=31)
    target.load(emulator)
    restore()  # last night's backup: the pipelines folder is newer than the data

    target.load(emulator)

    assert_equals_emulator(target, emulator)


def test_rows_a_users_filter_dropped_are_loaded_by_the_next_plain_run(
    target: Target, emulator: Emulator
) -> None:
    """A dlt user's own script: one run with a filter, then plain runs."""
    victims = emulator.store.ids()[100:112]
    pipeline = target.pipeline()
    source = exa_websets_source(api_key=KEY, base_url=emulator.base_url)
    source.imports.add_map(lambda t: t.filter(pc.invert(pc.is_in(t["id"], pa.array(victims)))))
    pipeline.run(source)
    assert not {r["id"] for r in target.rows()} & set(victims)

    plain = target.load(emulator)

    assert plain.rows_loaded == len(victims)
    assert_equals_emulator(target, emulator)


def test_the_state_does_not_grow_with_imports_or_changes(target: Target) -> None:
    """The state describes the last scan only: a bulk update adds no keys to it."""

    def state_size() -> int:
        pipeline = target.pipeline()
        pipeline.sync_destination()
        return len(json.dumps(pipeline.state["sources"]["exa"]))

    with Emulator(api_key=KEY, imports=3_000).start() as emu:
        target.load(emu)
        first = state_size()
        emu.store.mutate(update=2_999, seed=41)
        assert target.load(emu).rows_loaded == 2_999
        assert abs(state_size() - first) < 64
        assert target.load(emu).rows_loaded == 0
        assert abs(state_size() - first) < 64
        assert_equals_emulator(target, emu)


# --------------------------------------------------------------------------- deletions


def _delete(emu: Emulator, n: int) -> list[str]:
    return sorted(emu.store.mutate(delete=n, seed=5)["deleted"])


def test_soft_delete_is_the_default_and_keeps_history(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    gone = _delete(emulator, 10)

    summary = target.load(emulator)

    assert summary.rows_deleted == 10
    assert [r["id"] for r in target.rows(GONE)] == gone
    assert len(target.rows()) == 1_000  # the rows are kept, stamped
    assert_equals_emulator(target, emulator)  # live rows == the API
    # nothing new is gone: the next run stamps nothing and keeps the first stamps
    stamps = target.rows(GONE)
    assert target.load(emulator).rows_deleted == 0
    assert target.rows(GONE) == stamps


def test_a_soft_deleted_import_listed_again_comes_back(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    back = emulator.store.get(emulator.store.ids()[3])
    assert back is not None
    emulator.store.delete(back["id"])
    assert target.load(emulator).rows_deleted == 1
    # the API lists it again, unchanged (e.g. a transient glitch hid it)
    emulator.store._insert(back["id"], json.dumps(back).encode())

    summary = target.load(emulator)

    assert summary.rows_loaded == 1
    assert not target.rows(GONE)
    assert_equals_emulator(target, emulator)


def test_hard_delete_removes_the_rows(target: Target, emulator: Emulator) -> None:
    target.load(emulator, deletions="hard")
    gone = _delete(emulator, 7)

    assert target.load(emulator, deletions="hard").rows_deleted == 7
    ids = {r["id"] for r in target.rows()}
    assert len(ids) == 993 and not ids & set(gone)
    assert_equals_emulator(target, emulator)


def test_switching_from_soft_to_hard_purges_soft_deleted_rows(
    target: Target, emulator: Emulator
) -> None:
    target.load(emulator)
    _delete(emulator, 4)
    target.load(emulator)
    assert len(target.rows(GONE)) == 4
    target.load(emulator, deletions="hard")
    assert len(target.rows()) == 996 and not target.rows(GONE)
    _delete(emulator, 2)  # and back to soft: the hint is switched off again
    assert target.load(emulator, deletions="soft").rows_deleted == 2
    assert len(target.rows(GONE)) == 2
    assert_equals_emulator(target, emulator)


def test_off_leaves_deleted_rows_alone(target: Target, emulator: Emulator) -> None:
    target.load(emulator, deletions="off")
    _delete(emulator, 3)
    assert target.load(emulator, deletions="off").rows_deleted == 0
    assert len(target.rows()) == 1_000 and not target.rows(GONE)


def test_a_failed_scan_never_deletes(
    target: Target, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("RUNTIME__REQUEST_BACKOFF_FACTOR", "0.01")
    target.load(emulator, deletions="hard")
    _delete(emulator, 20)
    emulator.faults.add(Fault("status", status=503, skip=2, times=10))  # dies on page 3 of 5

    with pytest.raises(ExaAPIError):
        target.load(emulator, deletions="hard")

    assert len(target.rows()) == 1_000
    emulator.faults.clear()
    assert target.load(emulator, deletions="hard").rows_deleted == 20
    assert_equals_emulator(target, emulator)


def test_plain_pipeline_run_applies_deletions_in_the_same_load(
    target: Target, emulator: Emulator
) -> None:
    """No separate step after the load: ``pipeline.run(source)`` alone applies them."""
    pipeline = target.pipeline()
    pipeline.run(exa_websets_source(api_key=KEY, base_url=emulator.base_url))
    gone = _delete(emulator, 4)

    info = pipeline.run(exa_websets_source(api_key=KEY, base_url=emulator.base_url))

    assert len(info.loads_ids) == 1
    assert [r["id"] for r in target.rows(GONE)] == gone
    loads = {r["_dlt_load_id"] for r in target.rows(GONE.replace("id, _exa", "_dlt_load_id, _exa"))}
    assert loads == set(info.loads_ids)  # committed with that load, atomically
    assert_equals_emulator(target, emulator)


def test_a_second_worker_with_an_empty_folder_sees_the_same_record(
    target: Target, emulator: Emulator, tmp_path: Path
) -> None:
    target.load(emulator)
    _delete(emulator, 3)
    emulator.store.mutate(update=10, seed=8)
    fresh = target.pipeline(pipelines_dir=str(tmp_path / "another_worker"))

    summary = run_load(fresh, api_key=KEY, base_url=emulator.base_url)

    assert (summary.rows_loaded, summary.rows_deleted) == (10, 3)
    assert_equals_emulator(target, emulator)


def test_a_table_dropped_by_hand_is_created_and_loaded_again(
    target: Target, emulator: Emulator
) -> None:
    target.load(emulator)
    pipeline = target.pipeline()
    with pipeline.sql_client() as client:  # by hand, behind dlt's back; the views stay
        client.execute_sql(f"drop table {client.make_qualified_table_name('imports')}")

    summary = target.load(emulator)

    assert summary.rows_loaded == 1_000
    assert_equals_emulator(target, emulator)


def test_the_source_iterated_outside_a_pipeline_yields_every_row() -> None:
    with Emulator(api_key=KEY, imports=30).start() as emu:
        tables = list(exa_websets_source(api_key=KEY, base_url=emu.base_url))
    assert sum(t.num_rows for t in tables) == 30


def _listed_twice(emu: Emulator, repeat: dict[str, Any]) -> Fault:
    """The real first page with one more record: ``repeat``, an import of a later page."""
    import orjson

    body = orjson.loads(emu.store.page(None, 200, emu.quirk_last_page).to_json())
    body["data"].append(repeat)
    return Fault("status", status=200, body=body)


def _staging_tables(target: Target) -> int:
    """Tables in the dataset's staging schema, where dlt copies rows to merge them."""
    with target.pipeline().sql_client() as client:
        rows = client.execute_sql(
            "select count(*) from information_schema.tables where table_schema = %s",
            f"{target.dataset}_staging",
        )
    return int(rows[0][0]) if rows else 0


def test_a_first_load_appends_into_the_empty_table_and_later_runs_merge(
    target: Target, emulator: Emulator
) -> None:
    """Nothing to merge with on a first load: the rows skip dlt's staging copy. The resource
    (reused here, as a user's script may) merges again on the next run."""
    pipeline = target.pipeline()
    source = exa_websets_source(api_key=KEY, base_url=emulator.base_url)
    hint = source.imports.write_disposition

    pipeline.run(source)

    assert _staging_tables(target) == 0
    assert source.imports.write_disposition == hint
    emulator.store.mutate(update=20, create=5, delete=3, seed=11)
    pipeline.run(source)
    assert _staging_tables(target) > 0
    assert pipeline.default_schema.get_table("imports")["write_disposition"] == "merge"
    assert len(target.rows(GONE)) == 3
    assert_equals_emulator(target, emulator)


def test_a_table_holding_an_import_twice_gets_one_row_again_on_the_next_run(
    target: Target, emulator: Emulator
) -> None:
    """Rows appended behind the merge (by hand, a user's append run) are written again once."""
    target.load(emulator)
    twice = sorted(emulator.store.ids())[:3]
    with target.pipeline().sql_client() as client:
        table = client.make_qualified_table_name("imports")
        marks = ", ".join(["%s"] * len(twice))
        copy = f"insert into {table} select * from {table} where id in ({marks})"
        client.execute_sql(copy, *twice)
    assert len(target.rows()) == 1_003

    summary = target.load(emulator)

    assert summary.rows_loaded == 3
    assert_equals_emulator(target, emulator)  # one row per id


def test_the_duckdb_memory_limit_is_back_after_the_record_is_read(
    tmp_path: Path, emulator: Emulator
) -> None:
    from exa_source import sync
    from exa_source.pipeline import make_pipeline

    pipeline = make_pipeline("duckdb", str(tmp_path / "exa.duckdb"), "exa_websets")
    run_load(pipeline, api_key=KEY, base_url=emulator.base_url)
    with pipeline.sql_client() as client:
        limit = "select current_setting('memory_limit')"
        before = client.execute_sql(limit)
        sync._evict_duckdb_cache(client)
        assert client.execute_sql(limit) == before == [("244.1 MiB",)]  # settings.py: 256MB


@pytest.mark.parametrize("when", ["first load", "rerun"])
def test_an_import_listed_twice_in_one_scan_is_stored_once(
    target: Target, emulator: Emulator, when: str
) -> None:
    """The source declares its rows deduplicated (no window over the staging table); a scan
    that meets an id twice makes its own load deduplicate, newest updatedAt first."""
    if when == "rerun":
        target.load(emulator)
    later = emulator.store.ids()[0]  # oldest created: on the last page
    emulator.store.update(later, title="newest version")
    stale = dict(emulator.store.get(later) or {})
    stale.update(title="an older copy", updatedAt="2020-01-01T00:00:00.000Z")
    emulator.faults.add(_listed_twice(emulator, stale))

    target.load(emulator)

    rows = target.rows("select id, title from {table} where id = '" + later + "'")
    assert rows == [{"id": later, "title": "newest version"}]
    assert_equals_emulator(target, emulator)
