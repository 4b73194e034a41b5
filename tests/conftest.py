"""Shared fixtures: the emulator on a free port, and a fresh destination per test.

End-to-end tests take the ``target`` fixture, which runs them once on a temporary DuckDB file
and once on a fresh PostgreSQL schema (dropped afterwards). Under CI (``CI=true``) a missing
PostgreSQL server fails the run; elsewhere the PostgreSQL leg is skipped with a message.

The suite runs on 2 pytest-xdist workers by default (:func:`pytest_configure`); ``-n 0`` or
``-p no:xdist`` runs it in one process, ``-n N`` on N workers. Tests are safe to run in
parallel: every test has its own tmp_path, emulator port and PostgreSQL schema, and changes
environment variables only through ``monkeypatch``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")

import dlt

from exa_source.emulator import Emulator
from exa_source.pipeline import make_pipeline, run_load

KEY = "test-key-0123456789abcdef"
PG_DSN = os.environ.get("EXA_TEST_POSTGRES", "postgresql://postgres:unused@127.0.0.1:5432/test")


def keyless_env() -> dict[str, str]:
    """This process's environment without any Exa key or ``[sources.exa]`` setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "EXA_"))}


def printed_commands(out: str) -> list[str]:
    """The commands the demo prints under "Look further"."""
    tail = out.split("Look further", 1)[1].splitlines()[1:]
    return [line.strip() for line in tail if line.startswith("  ")]


def postgres_available() -> str | None:
    """Return None when the test PostgreSQL answers, else why not."""
    try:
        import psycopg2

        psycopg2.connect(PG_DSN, connect_timeout=3).close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


#: pytest-xdist workers when neither ``-n`` nor ``-p no:xdist`` is given: this machine and CI
#: have 2 cores, and most end-to-end tests wait on subprocesses, HTTP or a database.
DEFAULT_WORKERS = 2


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Run on :data:`DEFAULT_WORKERS` xdist workers unless told otherwise, with ``loadgroup``.

    Set here rather than as ``-n 2`` in ``addopts`` so that ``-p no:xdist`` still works (an
    ``-n`` in addopts would then be an unknown option). ``-n 0``, ``--pdb`` and ``-s`` (output
    of a test on the terminal) keep the run in one process. ``loadgroup`` keeps the tests of an
    ``xdist_group`` on one worker (see ``@pytest.mark.xdist_group`` in the test modules).
    """
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    option = config.option
    if option.numprocesses is None and not option.usepdb and option.capture != "no":
        option.numprocesses = DEFAULT_WORKERS
        option.tx = ["popen"] * DEFAULT_WORKERS
    if option.numprocesses and option.dist in ("no", "load"):
        option.dist = "loadgroup"


def _peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On an xdist worker: hand its peak RSS to the controller (printed in the summary)."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["peak_rss_mb"] = _peak_rss_mb()


_WORKER_RSS: dict[str, int] = {}


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown under -p no:xdist
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect a finished worker's peak RSS."""
    output = getattr(node, "workeroutput", None) or {}
    if "peak_rss_mb" in output:
        name = getattr(node, "workerinput", {}).get("workerid", "?")
        _WORKER_RSS[name] = output["peak_rss_mb"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the peak RSS of the pytest process(es): a growing number is a leak in a test.

    Child processes (the CLI, Airflow, emulators) are not counted: Linux reports a forked
    child's RSS before its ``exec`` as its own, so their peak would only repeat the parent's.
    """
    own = _peak_rss_mb()
    peak = max([own, *_WORKER_RSS.values()])
    workers = ", ".join(f"{name} {rss} MB" for name, rss in sorted(_WORKER_RSS.items()))
    detail = f"this process {own} MB" + (f", workers: {workers}" if workers else "")
    terminalreporter.write_line(f"pytest peak RSS: {peak} MB ({detail})")


#: Handler classes pytest itself puts on the root logger around each test phase.
_PYTEST_HANDLERS = ("LogCaptureHandler", "_LiveLoggingNullHandler", "_FileHandler")


def _loggers() -> list[logging.Logger]:
    found = logging.Logger.manager.loggerDict.values()
    return [logging.getLogger(), *(x for x in found if isinstance(x, logging.Logger))]


@contextmanager
def _logging_restored() -> Iterator[None]:
    """Take away the logging handlers added inside, and restore levels and ``propagate``."""
    root = logging.getLogger()
    before = {
        id(x): (list(x.handlers), x.level, x.propagate, x.disabled, list(x.filters))
        for x in _loggers()
    }
    try:
        yield
    finally:
        for logger in _loggers():
            handlers, level, propagate, disabled, filters = before.get(
                id(logger), ([], 0, True, False, [])
            )
            logger.filters[:] = filters  # e.g. the CLI's filter on dlt's logger
            for handler in list(logger.handlers):
                if handler in handlers or type(handler).__name__ in _PYTEST_HANDLERS:
                    continue
                logger.removeHandler(handler)
                handler.close()  # a StreamHandler leaves its stream open
            if logger is not root:  # pytest's log capture manages the root level
                logger.setLevel(level)
                logger.propagate, logger.disabled = propagate, disabled


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[Any]:
    """Each test leaves logging as it found it (handlers added in fixtures included)."""
    with _logging_restored():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[Any]:
    """Undo the test body's logging changes before its fixtures are torn down.

    ``exa_source.cli.main`` (called in-process by the CLI tests) adds a ``StreamHandler``
    bound to the ``sys.stderr`` of that moment, often the buffer of ``capsys``, closed when
    ``capsys`` is torn down; dlt's first pipeline in a process does the same for the ``dlt``
    logger. Left in place, every later record of these loggers (the emulator's teardown, the
    recovery warnings of test_crash, ...) printed ``--- Logging error --- ValueError: I/O
    operation on closed file`` and a 40-line stack, once per stale handler: the 55,871-line
    failure output of test_crash, kept in memory by the reports.
    """
    with _logging_restored():
        return (yield)


@pytest.fixture
def http(request: pytest.FixtureRequest) -> Iterator[requests.Session]:
    """A session that sends the test module's ``KEY`` (else this file's) as ``x-api-key``."""
    session = requests.Session()
    session.headers["x-api-key"] = getattr(request.module, "KEY", KEY)
    yield session
    session.close()


def page_all(
    http: requests.Session,
    url: str,
    limit: int | None = None,
    between: Any = None,
    strict_cursor: bool = False,
    **params: Any,
) -> list[dict[str, Any]]:
    """Follow ``nextCursor`` to the end of an emulator list, like a careful client.

    Each page's envelope is checked (``data``, ``hasMore``, ``nextCursor``) and its size against
    ``limit``; paging stops on ``hasMore`` false or a null cursor (the imports list's last page
    may say ``hasMore: true`` with no cursor). ``strict_cursor`` asserts instead that the cursor
    is set exactly when ``hasMore`` is. ``between(n, last_id)`` runs after page n. ``params``
    are sent with every request (a ``cursor`` among them starts there).
    """
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    for n in range(1, 100_000):
        query: dict[str, Any] = dict(params)
        if limit is not None:
            query["limit"] = limit
        if cursor:
            query["cursor"] = cursor
        r = http.get(url, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert list(body) == ["data", "hasMore", "nextCursor"]
        if limit is not None:
            assert len(body["data"]) <= limit
        out.extend(body["data"])
        cursor = body["nextCursor"]
        if strict_cursor:
            assert bool(cursor) == body["hasMore"]
        if not body["hasMore"] or not cursor:
            return out
        if between is not None:
            between(n, body["data"][-1]["id"])
    raise AssertionError("pagination did not end")


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """An emulator with 1,000 seeded imports on a free loopback port."""
    with Emulator(api_key=KEY, imports=1_000).start() as emu:
        yield emu


@dataclass
class Target:
    """Where a test loads: a destination name plus what a pipeline needs to reach it."""

    destination: str
    dataset: str
    duckdb_path: str | None
    pipelines_dir: str
    pipeline_name: str

    def pipeline(self, pipelines_dir: str | None = None) -> dlt.Pipeline:
        """Create (or attach to) the test's pipeline; a new ``pipelines_dir`` = a new worker."""
        return make_pipeline(
            self.destination,
            self.duckdb_path,
            self.dataset,
            pipeline_name=self.pipeline_name,
            pipelines_dir=pipelines_dir or self.pipelines_dir,
        )

    def load(self, emu: Emulator, **kwargs: Any) -> Any:
        """Run one load from ``emu`` into this target; returns the LoadSummary."""
        pipeline = kwargs.pop("pipeline", None) or self.pipeline()
        kwargs.setdefault("api_key", KEY)
        return run_load(pipeline, base_url=emu.base_url, **kwargs)

    def rows(self, sql: str = "select * from {table} order by id") -> list[dict[str, Any]]:
        """Query the dataset; ``{table}`` is the qualified imports table."""
        pipeline = self.pipeline()
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name("imports")
            with client.execute_query(sql.format(table=table)) as cursor:
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.fixture(params=["duckdb", "postgres"])
def target(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Target]:
    """A fresh destination: a temporary DuckDB file, or a new PostgreSQL schema."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    if request.param == "postgres":
        why = postgres_available()
        if why:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"PostgreSQL is required under CI and is not reachable: {why}")
            pytest.skip(
                f"PostgreSQL not reachable ({why}); start it or set EXA_TEST_POSTGRES to a DSN"
            )
        monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", PG_DSN)
        t = Target("postgres", name, None, str(tmp_path / "pipelines"), name)
        yield t
        import psycopg2

        with psycopg2.connect(PG_DSN) as conn, conn.cursor() as cur:
            cur.execute(f'drop schema if exists "{name}" cascade')
            cur.execute(f'drop schema if exists "{name}_staging" cascade')
        return
    yield Target(
        "duckdb", "exa_websets", str(tmp_path / "exa.duckdb"), str(tmp_path / "pipelines"), name
    )


def _ts(value: Any) -> str | None:
    """Render a timestamp (datetime or API string) as ISO UTC with milliseconds."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def canonical_api(record: dict[str, Any]) -> dict[str, Any]:
    """An API Import as a comparable row."""
    entity = record.get("entity") or {}
    return {
        "id": record["id"],
        "status": record["status"],
        "format": record["format"],
        "entity__type": entity.get("type"),
        "entity__description": entity.get("description"),
        "title": record["title"],
        "count": int(record["count"]) if record["count"] is not None else None,
        "metadata": record["metadata"],
        "failed_reason": record["failedReason"],
        "failed_message": record["failedMessage"],
        "failed_at": _ts(record["failedAt"]),
        "created_at": _ts(record["createdAt"]),
        "updated_at": _ts(record["updatedAt"]),
    }


def canonical_row(row: dict[str, Any]) -> dict[str, Any]:
    """A destination row as a comparable row."""
    return {
        "id": row["id"],
        "status": row["status"],
        "format": row["format"],
        "entity__type": row["entity__type"],
        "entity__description": row["entity__description"],
        "title": row["title"],
        "count": row["count"],
        "metadata": _json(row["metadata"]),
        "failed_reason": row["failed_reason"],
        "failed_message": row["failed_message"],
        "failed_at": _ts(row["failed_at"]),
        "created_at": _ts(row["created_at"]),
        "updated_at": _ts(row["updated_at"]),
    }


def assert_equals_emulator(target: Target, emu: Emulator) -> None:
    """The destination table holds exactly the emulator's imports, field for field."""
    expected = sorted((canonical_api(r) for r in emu.store.snapshot()), key=lambda r: r["id"])
    rows = target.rows()
    actual = [canonical_row(r) for r in rows if r["_exa_deleted_at"] is None]
    assert len(rows) == len({r["id"] for r in rows}), "duplicate ids in the destination"
    assert [r["id"] for r in actual] == [r["id"] for r in expected]
    assert actual == expected


def fingerprint(target: Target) -> tuple[int, str]:
    """Row count and a content hash of the whole imports table (every column but load ids)."""
    import hashlib

    rows = target.rows()
    skip = {"_dlt_load_id", "_dlt_id"}
    lines = sorted(
        json.dumps({k: v for k, v in r.items() if k not in skip}, sort_keys=True, default=str)
        for r in rows
    )
    return len(rows), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def poke(emu: Emulator, import_id: str, **fields: Any) -> None:
    """Set raw fields of one emulated import, as a misbehaving API would send them."""
    store = emu.store
    with store._lock:
        obj = store._load(import_id)
        obj.update(fields)
        store._save(obj)
