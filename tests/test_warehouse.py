"""Warehouse layer: BI views on DuckDB and PostgreSQL, the data dictionary, schema stability."""

from __future__ import annotations

import os
import statistics
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import KEY, PG_DSN, Target, assert_equals_emulator, postgres_available
from dlt.common.schema.exceptions import DataValidationError

from exa_source import ExaDataError
from exa_source.emulator import Emulator
from exa_source.emulator.store import SEED_ANCHOR
from exa_source.pipeline import make_pipeline, run_load
from exa_source.schema import COLUMNS
from exa_source.warehouse import (
    CURRENT_VIEW,
    DAILY_VIEW,
    DELETED_AT_COLUMN,
    DICTIONARY_END,
    DICTIONARY_START,
    STATUS_VIEW,
    VIEW_COLUMNS,
    check_readme,
    create_views,
    data_dictionary,
    format_table,
    readme_dictionary,
    summary,
    view_statements,
    visible,
)

ROOT = Path(__file__).resolve().parent.parent

#: information_schema types of the declared columns, per engine: the contract BI tools see.
DECLARED_TYPES = {
    "duckdb": {
        "text": "VARCHAR",
        "bigint": "BIGINT",
        "json": "JSON",
        "timestamp": "TIMESTAMP WITH TIME ZONE",
    },
    "postgres": {
        "text": "character varying",
        "bigint": "bigint",
        "json": "jsonb",
        "timestamp": "timestamp with time zone",
    },
}
#: information_schema types of the view columns, per engine.
VIEW_TYPES = {
    "duckdb": {"text": "VARCHAR", "bigint": "BIGINT", "date": "DATE", "numeric(18,4)": "DECIMAL"},
    "postgres": {
        "text": "character varying",
        "bigint": "bigint",
        "date": "date",
        "numeric(18,4)": "numeric",
    },
}


def _ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def _day(value: str) -> str:
    return value[:10]  # the API writes UTC with a Z: the text's date is the UTC day


def expected_views(records: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """The report rows computed in Python from API records: the oracle for both engines."""
    first = min(r["createdAt"] for r in records)
    last = max(r["updatedAt"] for r in records)
    current = [
        (len(records), len(records), _iso(first), _iso(last)),
    ]
    groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for r in records:
        groups[(r["status"], (r["entity"] or {}).get("type"))].append(int(r["count"]))
    status = [
        (s, e, len(counts), sum(counts))
        for (s, e), counts in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "~"))
    ]
    created: Counter[str] = Counter(_day(r["createdAt"]) for r in records)
    failed: Counter[str] = Counter(
        _day(r["failedAt"] or r["updatedAt"]) for r in records if r["status"] == "failed"
    )
    durations: dict[str, list[int]] = defaultdict(list)
    for r in records:
        if r["status"] == "completed":
            durations[_day(r["updatedAt"])].append(_ms(r["updatedAt"]) - _ms(r["createdAt"]))
    daily = []
    for day in sorted(set(created) | set(failed) | set(durations)):
        ms = durations.get(day)
        median = (
            (Decimal(str(statistics.median(ms))) / 1000).quantize(Decimal("0.0001")) if ms else None
        )
        daily.append((day, created[day], len(ms or []), failed[day], median))
    return {CURRENT_VIEW: current, STATUS_VIEW: status, DAILY_VIEW: daily}


def _iso(value: str) -> str:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc).isoformat()


def _rows(target: Target) -> dict[str, list[tuple[Any, ...]]]:
    return {name: result.rows for name, result in summary(target.pipeline()).items()}


def _set_fields(emu: Emulator, import_id: str, **fields: Any) -> None:
    """Change fields the public API cannot (a new or retyped field) and bump ``updatedAt``."""
    emu.store.update(import_id, title=f"edited {import_id[-4:]}")
    store = emu.store
    with store._lock:
        record = store._load(import_id)
        record.update(fields)
        store._save(record)


def _execute(target: Target, sql: str) -> None:
    """Run a statement without a result set; ``{table}`` is the qualified imports table."""
    with target.pipeline().sql_client() as client:
        client.execute_sql(sql.format(table=client.make_qualified_table_name("imports")))


def _columns(target: Target, table: str) -> list[tuple[str, str]]:
    schema = target.dataset
    return [
        (r["column_name"], r["data_type"])
        for r in target.rows(
            "select column_name, data_type from information_schema.columns"
            f" where table_schema = '{schema}' and table_name = '{table}'"
            " order by ordinal_position"
        )
    ]


# ------------------------------------------------------------------------------------ views


def test_views_match_the_api_full_and_incremental(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    assert _rows(target) == expected_views(emulator.store.snapshot())
    emulator.store.mutate(update=40, create=15, advance=30, seed=7)
    target.load(emulator)
    assert_equals_emulator(target, emulator)
    assert _rows(target) == expected_views(emulator.store.snapshot())


def test_view_columns_and_types_are_declared(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    types = VIEW_TYPES[target.destination]
    for view, declared in VIEW_COLUMNS.items():
        actual = _columns(target, view)
        assert [name for name, _ in actual] == [c.name for c in declared]
        assert [t.split("(")[0] for _, t in actual] == [types[c.type] for c in declared]
    # the data columns of the table, in order: dlt's own (_dlt_load_id) and the soft-delete
    # stamp are left out, and the types are the table's on both engines
    assert _columns(target, CURRENT_VIEW) == [
        (n, t)
        for n, t in _columns(target, "imports")
        if n != DELETED_AT_COLUMN and not n.startswith("_dlt_")
    ]


def test_imports_current_keeps_one_row_per_id(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    newest = emulator.store.snapshot()[0]["id"]
    _execute(  # an older duplicate of one import, as an append or a bad merge would leave
        target,
        "insert into {table} (id, status, created_at, updated_at) select id, 'pending',"
        f" created_at, created_at from {{table}} where id = '{newest}'",
    )
    assert target.rows(f"select count(*) as n from {{table}} where id = '{newest}'")[0]["n"] == 2
    (row,) = target.rows(
        f"select status from {target.dataset}.{CURRENT_VIEW} where id = '{newest}'"
    )
    assert row["status"] == emulator.store.get(newest)["status"]  # type: ignore[index]
    assert _rows(target) == expected_views(emulator.store.snapshot())


def test_imports_current_filters_soft_deleted_rows(target: Target, emulator: Emulator) -> None:
    """Rows stamped ``_exa_deleted_at`` leave every view; the newest row of an id decides."""
    target.load(emulator, deletions="off")
    gone = emulator.store.ids()[:25]
    quoted = ", ".join(f"'{i}'" for i in gone)
    _execute(
        target, f"update {{table}} set {DELETED_AT_COLUMN} = updated_at where id in ({quoted})"
    )
    create_views(target.pipeline())
    live = [r for r in emulator.store.snapshot() if r["id"] not in gone]
    assert _rows(target) == expected_views(live)


def test_view_sql_without_the_soft_delete_column() -> None:
    def quote(name: str) -> str:
        return f'"{name}"'

    without = view_statements(["id", "updated_at"], quote, quote, has_deleted_at=False)
    with_ = view_statements(["id", "updated_at"], quote, quote, has_deleted_at=True)
    assert DELETED_AT_COLUMN not in without[0]
    assert with_[0].endswith(f'where exa_row_in_id = 1\n  and "{DELETED_AT_COLUMN}" is null')
    assert without[1:] == with_[1:]  # the other views read imports_current


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_views_after_upstream_deletes(target: Target, emulator: Emulator, mode: str) -> None:
    target.load(emulator, deletions=mode)
    emulator.store.mutate(delete=30, update=10, seed=11)
    summary_ = target.load(emulator, deletions=mode)
    assert summary_.rows_deleted == 30
    assert _rows(target) == expected_views(emulator.store.snapshot())


def test_failed_load_keeps_the_views(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    before = _rows(target)
    victim = emulator.store.ids()[3]
    _set_fields(emulator, victim, count="many")
    with pytest.raises(ExaDataError, match="count"):
        target.load(emulator)
    assert _rows(target) == before


def test_full_refresh_with_views(target: Target, emulator: Emulator) -> None:
    """PostgreSQL: dlt's drop of ``imports`` must not be blocked by the views on it."""
    target.load(emulator)
    emulator.store.mutate(update=5, seed=3)
    summary_ = target.load(emulator, full_refresh=True)
    assert summary_.rows_loaded == len(emulator.store)
    assert _rows(target) == expected_views(emulator.store.snapshot())


def test_no_views_before_any_data(target: Target) -> None:
    with Emulator(api_key=KEY, imports=0).start() as emu:
        target.load(emu)
        assert create_views(target.pipeline()) == []
        emu.store.create({"type": "person"}, title="first", count=3)
        target.load(emu)
    rows = _rows(target)
    assert rows[CURRENT_VIEW][0][:2] == (1, 1)
    assert rows[STATUS_VIEW] == [("pending", "person", 1, 3)]


def _engine_pipeline(destination: str, tmp: Path, dataset: str) -> Any:
    return make_pipeline(
        destination,
        str(tmp / "x.duckdb"),
        dataset,
        pipeline_name=f"cross_{destination}",
        pipelines_dir=str(tmp / "pipelines"),
    )


@pytest.fixture
def postgres_dataset(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    why = postgres_available()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required under CI and is not reachable: {why}")
        pytest.skip(f"PostgreSQL not reachable ({why}); start it or set EXA_TEST_POSTGRES")
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", PG_DSN)
    name = f"x_{uuid.uuid4().hex[:10]}"
    yield name
    import psycopg2

    with psycopg2.connect(PG_DSN) as conn, conn.cursor() as cur:
        cur.execute(f'drop schema if exists "{name}" cascade')
        cur.execute(f'drop schema if exists "{name}_staging" cascade')


def test_views_identical_on_duckdb_and_postgres(postgres_dataset: str, tmp_path: Path) -> None:
    with Emulator(api_key=KEY, imports=3_000, seed=5).start() as emu:
        results = {}
        for destination in ("duckdb", "postgres"):
            pipeline = _engine_pipeline(destination, tmp_path, postgres_dataset)
            run_load(pipeline, api_key=KEY, base_url=emu.base_url)
            results[destination] = {n: (r.headers, r.rows) for n, r in summary(pipeline).items()}
    assert results["duckdb"] == results["postgres"]
    assert len(results["duckdb"][DAILY_VIEW][1]) > 300


# ------------------------------------------------------------------------- schema stability


def test_all_null_columns_exist_with_declared_types(target: Target) -> None:
    with Emulator(api_key=KEY, imports=0).start() as emu:
        for n in range(3):  # pending: every failure field null, no custom entity
            emu.store.create({"type": "company"}, title=f"t{n}", count=n)
        target.load(emu)
    types = DECLARED_TYPES[target.destination]
    pipeline = target.pipeline()
    naming = pipeline.default_schema.naming
    expected = [(naming.normalize_path(c.name), types[str(c.hints["data_type"])]) for c in COLUMNS]
    assert _columns(target, "imports") == expected
    nulls = target.rows(
        "select count(failed_at) as a, count(failed_reason) as b,"
        " count(entity__description) as c from {table}"
    )
    assert nulls == [{"a": 0, "b": 0, "c": 0}]


def test_new_api_field_is_added_as_a_column(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    before = _columns(target, "imports")
    ids = emulator.store.ids()
    _set_fields(emulator, ids[0], websetId="webset_01abc", priority=None)
    _set_fields(emulator, ids[1], priority=None)  # first seen all-null
    target.load(emulator)
    _set_fields(emulator, ids[2], priority=7)  # then typed by its first value
    target.load(emulator)
    after = _columns(target, "imports")
    assert after[: len(before)] == before  # nothing retyped, nothing reordered
    added = dict(after[len(before) :])
    assert set(added) == {"webset_id", "priority"}
    rows = target.rows("select id, webset_id, priority from {table} order by id")
    assert {r["id"]: r["webset_id"] for r in rows if r["webset_id"]} == {ids[0]: "webset_01abc"}
    assert {r["id"]: r["priority"] for r in rows if r["priority"] is not None} == {ids[2]: 7}
    assert "webset_id" in [n for n, _ in _columns(target, CURRENT_VIEW)]
    assert data_dictionary(target.pipeline().default_schema).count("Added by the API") == 2


def test_type_change_of_a_new_field_fails_loudly(target: Target, emulator: Emulator) -> None:
    ids = emulator.store.ids()
    _set_fields(emulator, ids[0], priority=1)
    target.load(emulator)
    _set_fields(emulator, ids[0], priority="high")
    for _ in range(2):  # fails at extract every time: no pending package, no retyped schema
        with pytest.raises(Exception, match="priority") as raised:
            target.load(emulator)
        cause: BaseException | None = raised.value
        while cause is not None and not isinstance(cause, DataValidationError):
            cause = cause.__cause__ or cause.__context__
        assert isinstance(cause, DataValidationError), raised.value
        assert "extract" in str(raised.value)
    column = target.pipeline().default_schema.tables["imports"]["columns"]["priority"]
    assert column["data_type"] == "bigint"
    assert target.rows(f"select priority from {{table}} where id = '{ids[0]}'") == [{"priority": 1}]
    assert not any(name.startswith("priority__") for name, _ in _columns(target, "imports"))


def test_type_change_of_a_declared_field_fails_loudly(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    _set_fields(emulator, emulator.store.ids()[0], count={"rows": 5})
    with pytest.raises(ExaDataError, match="changed the type of 'count'"):
        target.load(emulator)
    assert [n for n, _ in _columns(target, "imports") if n.startswith("count")] == ["count"]


# ------------------------------------------------------------------------------ dictionary


def test_dictionary_documents_every_declared_column() -> None:
    text = data_dictionary()
    assert "Added by the API" not in text
    for column in COLUMNS:
        assert column.meaning.replace("|", "\\|") in text
    assert "| `metadata` | json | JSON | jsonb | yes |" in text
    assert "| `updated_at` | timestamp (UTC) | TIMESTAMP WITH TIME ZONE |" in text
    for view, columns in VIEW_COLUMNS.items():
        assert f"### `{view}` (view)" in text
        for vc in columns:
            assert f"| `{vc.name}` | {vc.type} |" in text


def test_dictionary_equals_the_loaded_schema(target: Target) -> None:
    emu = Emulator(api_key=KEY, imports=50, websets=2, items_per_webset=5, monitors=2, webhooks=1)
    emu.store.clock.set(SEED_ANCHOR)  # the seeded events are within the API's 60 days
    with emu.start():
        target.load(emu)
    assert data_dictionary(target.pipeline().default_schema) == data_dictionary()


def test_check_readme_compares_the_marked_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    block = data_dictionary()
    readme.write_text(f"# x\n\n{DICTIONARY_START}\n{block}{DICTIONARY_END}\n\nmore\n")
    assert readme_dictionary(readme.read_text()) == block
    assert check_readme(readme)
    readme.write_text(readme.read_text().replace("| bigint | BIGINT |", "| text | VARCHAR |"))
    assert not check_readme(readme)
    readme.write_text("# no markers\n")
    assert not check_readme(readme)


def test_readme_dictionary_matches_the_schema() -> None:
    readme = ROOT / "README.md"
    assert readme.exists() and check_readme(readme), (
        f"{readme}: the block between {DICTIONARY_START} and {DICTIONARY_END} is missing or"
        " stale; paste the output of `exa-source dictionary`"
    )


def test_visible_escapes_every_control_character_and_keeps_the_rest() -> None:
    controls = [*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0))]
    shown = visible("".join(controls))
    assert shown == "".join(f"\\x{ord(c):02x}" for c in controls)
    assert shown.isprintable()
    assert visible("\x1b]0;pwned\x07") == r"\x1b]0;pwned\x07"
    text = "Acme GmbH: é ü 日本 🚀 \u00a0 \\ ~"  # printable Unicode (and backslashes) unchanged
    assert visible(text) == text


def test_format_table_escapes_cells_and_keeps_columns_aligned() -> None:
    table = format_table(["status", "type"], [("ok", "\x1b[2Jx"), ("failed", "y")])
    assert "\x1b" not in table
    lines = table.splitlines()
    assert lines[2] == r"ok      \x1b[2Jx"
    assert len({len(line) for line in lines}) == 1
