"""Pipeline helpers: destinations, dlt's errors, and what one run guards against: hostile
values, a permanent load failure, a recovered package, a second run, readers of the file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import KEY, Target, assert_equals_emulator, fingerprint, poke

from exa_source import (
    ExaAuthError,
    ExaConfigError,
    ExaError,
    exa_websets_source,
    schema,
)
from exa_source.emulator import Emulator
from exa_source.pipeline import make_destination, make_pipeline, run_load, unwrap


def test_duckdb_gets_an_explicit_absolute_path(tmp_path: Path) -> None:
    destination = make_destination("duckdb", str(tmp_path / "sub" / "x.duckdb"))
    assert destination.destination_name == "duckdb"
    assert (tmp_path / "sub").is_dir()


def test_duckdb_file_named_like_the_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExaConfigError, match="Ambiguous"):
        make_destination("duckdb", str(tmp_path / "exa_websets.duckdb"))


def test_unknown_destination_is_refused() -> None:
    with pytest.raises(ExaConfigError, match="unknown destination"):
        make_destination("nosuchdb")


def test_unwrap_finds_the_exa_error_behind_dlt_wrappers() -> None:
    inner = ExaAuthError("rejected")
    try:
        try:
            raise inner
        except ExaAuthError as exc:
            raise RuntimeError("step failed") from exc
    except RuntimeError as outer:
        assert unwrap(outer) is inner
    plain = ValueError("x")
    assert unwrap(plain) is plain


# --------------------------------------------------------------------------- hostile values


def test_nul_characters_load_on_every_engine_and_compare_stably(
    target: Target, emulator: Emulator
) -> None:
    """PostgreSQL rejects U+0000 in text and jsonb; before, one NUL blocked every later run."""
    victim = emulator.store.ids()[7]
    poke(emulator, victim, title="a\x00b", metadata={"k": "v\x00"}, note="n\x00")
    assert target.load(emulator).rows_loaded == 1000
    row = next(r for r in target.rows() if r["id"] == victim)
    assert row["title"] == "a\ufffdb"
    metadata = row["metadata"]
    assert (json.loads(metadata) if isinstance(metadata, str) else metadata) == {"k": "v\ufffd"}
    assert row["note"] == "n\ufffd"
    assert target.load(emulator).rows_loaded == 0  # the stored value compares equal


def test_a_load_no_retry_can_fix_is_aborted_with_one_line_and_loses_nothing(
    target: Target, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value the database refuses for good (here: NUL on PostgreSQL, with the cleaning
    switched off) used to leave a pending package that every later run retried first."""
    if target.destination != "postgres":
        pytest.skip("DuckDB stores NUL; the permanent failure is PostgreSQL's")
    target.load(emulator)
    before = fingerprint(target)
    victim = emulator.store.ids()[3]
    poke(emulator, victim, title="a\x00b", updatedAt="2026-01-01T00:00:00.000Z")
    pipeline = target.pipeline()
    # only the cleaning is undone afterwards (the target fixture's settings stay)
    with monkeypatch.context() as patched, pytest.raises(ExaError) as failed:
        patched.setattr(schema, "clean_text", lambda array: array)
        target.load(emulator, pipeline=pipeline)
    message = str(failed.value)
    assert "\n" not in message
    assert "loading table imports failed" in message
    assert "CharacterNotInRepertoire" in message
    assert not pipeline.has_pending_data
    assert fingerprint(target) == before

    # the next normal run
    assert target.load(emulator).rows_loaded == 1
    assert next(r for r in target.rows() if r["id"] == victim)["title"] == "a\ufffdb"


def test_a_merge_the_database_refuses_is_aborted_and_the_next_runs_read_the_api(
    target: Target, emulator: Emulator
) -> None:
    """A CHECK constraint a DBA added fails dlt's merge step (``LoadClientJobTerminalRetry``),
    which kept the package pending for every later run, even after Exa fixed the value."""
    if target.destination != "postgres":
        pytest.skip("a CHECK constraint on the loaded table: PostgreSQL")
    target.load(emulator)
    with target.pipeline().sql_client() as client:
        table = client.make_qualified_table_name("imports")
        client.execute_sql(f'alter table {table} add constraint count_ok check ("count" >= 0)')
    before = fingerprint(target)
    victim = emulator.store.ids()[5]
    poke(emulator, victim, count=-5, updatedAt="2026-01-01T00:00:00.000Z")
    for _ in range(2):  # every run reads the API again and fails the same way, in one line
        emulator.reset_stats()
        pipeline = target.pipeline()
        with pytest.raises(ExaError) as failed:
            target.load(emulator, pipeline=pipeline)
        message = str(failed.value)
        assert "\n" not in message and "count_ok" in message, message
        assert "loading table imports failed" in message
        assert emulator.stats.requests[("GET", "/websets/v0/imports")] > 0
        assert not pipeline.has_pending_data
        assert fingerprint(target) == before

    poke(emulator, victim, count=5, updatedAt="2026-01-02T00:00:00.000Z")  # Exa fixed it
    assert target.load(emulator).rows_loaded == 1
    assert_equals_emulator(target, emulator)


def test_the_summary_counts_what_a_recovered_package_loaded(
    target: Target, emulator: Emulator
) -> None:
    """A run killed after normalize leaves a package; the next run loads it first, and its
    summary said "Loaded 0" before."""
    imports = ("imports",)
    target.load(emulator, resources=imports)
    emulator.store.mutate(update=30, create=20, seed=5)
    pipeline = target.pipeline()
    source = exa_websets_source(api_key=KEY, base_url=emulator.base_url)
    pipeline.extract(source.with_resources(*imports))
    pipeline.normalize()  # killed here: normalized, not loaded
    emulator.store.mutate(update=7, seed=6)

    summary = target.load(emulator, pipeline=target.pipeline(), resources=imports)
    assert summary.rows_recovered == 50
    assert summary.rows_loaded == 50 + 7
    assert_equals_emulator(target, emulator)


@contextmanager
def _holding(code: str) -> Iterator[int]:
    """Run ``code`` in another process that then holds on; yield its pid once it has run."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"{code}\nimport time; print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_second_run_on_the_same_folder_is_refused_naming_the_first(
    tmp_path: Path, emulator: Emulator
) -> None:
    pipeline = make_pipeline(
        duckdb_path=str(tmp_path / "x.duckdb"), pipelines_dir=str(tmp_path / "p")
    )
    from exa_source.pipeline import RUN_LOCK_FILE

    lock = Path(pipeline.working_dir) / RUN_LOCK_FILE
    hold = (
        "import fcntl, os\n"
        f"f = open({str(lock)!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.write(str(os.getpid())); f.flush()"
    )
    with _holding(hold) as pid, pytest.raises(ExaError, match=rf"another run \(pid {pid}\)"):
        run_load(pipeline, api_key=KEY, base_url=emulator.base_url)
    assert run_load(pipeline, api_key=KEY, base_url=emulator.base_url).rows_loaded == 1000


_POLLER = """
import sys, time, duckdb
path, flag = sys.argv[1], sys.argv[2]
opened = 0
while True:
    try:
        con = duckdb.connect(path, read_only=True)
        con.execute("select count(*) from exa_websets.imports").fetchall()
        con.close()
        opened += 1
        if opened == 3:
            open(flag, "w").close()
    except duckdb.Error:
        pass
    time.sleep(0.05)
"""


def test_a_bi_tool_polling_the_duckdb_file_does_not_fail_loads(
    tmp_path: Path, emulator: Emulator
) -> None:
    """Before: with a reader opening the file read-only every 50 ms, 3 of 5 loads failed."""
    path, flag = tmp_path / "exa.duckdb", tmp_path / "reader-is-reading"
    pipeline = make_pipeline(duckdb_path=str(path), pipelines_dir=str(tmp_path / "p"))
    run_load(pipeline, api_key=KEY, base_url=emulator.base_url)
    reader = subprocess.Popen([sys.executable, "-c", _POLLER, str(path), str(flag)])
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert time.monotonic() < deadline, "the reader never opened the file"
            time.sleep(0.05)
        for seed in range(5):
            emulator.store.mutate(update=10, seed=100 + seed)
            assert run_load(pipeline, api_key=KEY, base_url=emulator.base_url).rows_loaded == 10
    finally:
        reader.kill()
        reader.wait()


def test_a_writer_that_never_lets_go_fails_the_run_naming_it(
    tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "exa.duckdb"
    pipeline = make_pipeline(duckdb_path=str(path), pipelines_dir=str(tmp_path / "p"))
    run_load(pipeline, api_key=KEY, base_url=emulator.base_url)
    monkeypatch.setenv("EXA_DUCKDB_LOCK_WAIT_SECONDS", "1")
    hold = f"import duckdb; c = duckdb.connect({str(path)!r})"
    with _holding(hold) as pid, pytest.raises(ExaError, match=rf"held by .*\(PID {pid}\)"):
        run_load(pipeline, api_key=KEY, base_url=emulator.base_url)
    emulator.store.mutate(update=3, seed=9)
    assert run_load(pipeline, api_key=KEY, base_url=emulator.base_url).rows_loaded == 3


def test_valid_iso_8601_forms_load_and_compare_stably(target: Target, emulator: Emulator) -> None:
    """Nanoseconds, naive and date-only values failed every run before."""
    ids = emulator.store.ids()
    poke(emulator, ids[1], updatedAt="2026-03-01T10:00:00.123456789Z")
    poke(emulator, ids[2], updatedAt="2026-03-01T10:00:00", failedAt="2026-03-01")
    assert target.load(emulator).rows_loaded == 1000
    rows = {r["id"]: r for r in target.rows()}
    assert rows[ids[1]]["updated_at"].isoformat() == "2026-03-01T10:00:00.123456+00:00"
    assert rows[ids[2]]["updated_at"].isoformat() == "2026-03-01T10:00:00+00:00"
    assert rows[ids[2]]["failed_at"].isoformat() == "2026-03-01T00:00:00+00:00"
    assert target.load(emulator).rows_loaded == 0  # truncated values compare equal


def test_api_fields_named_like_dlt_columns_cannot_write_them(
    target: Target, emulator: Emulator
) -> None:
    """Before, an API field ``_dlt_load_id`` was stored as the row's load id."""
    victim = emulator.store.ids()[4]
    poke(emulator, victim, _dlt_load_id="9999999999.999", _dlt_id="forged")
    summary = target.load(emulator)
    row = next(r for r in target.rows() if r["id"] == victim)
    assert row["_dlt_load_id"] == summary.load_id
    assert row["api_dlt_load_id"] == "9999999999.999"
    assert row["api_dlt_id"] == "forged"
    assert target.load(emulator).rows_loaded == 0
