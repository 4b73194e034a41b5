"""Monitors, monitor runs, webhooks, webhook attempts and the event log, end to end.

The real connector loads over HTTP from the emulator into a temporary DuckDB file or a fresh
PostgreSQL schema (the ``target`` fixture); each table is compared with the API as a careful
client pages it, and the two health views with figures computed here from the same API data.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from conftest import KEY, Target, page_all

from exa_source import settings
from exa_source.emulator import Emulator
from exa_source.emulator.store import SEED_ANCHOR
from exa_source.pipeline import scan_state
from exa_source.schema import EVENTS
from exa_source.sync import plan_for, read_record

FAMILY = ("monitors", "monitor_runs", "webhooks", "webhook_attempts", "events")
RUN_STATUSES = ("created", "running", "completed", "canceled", "failed")
MONITOR_EVENTS = (
    "monitor.created",
    "monitor.updated",
    "monitor.deleted",
    "monitor.run.created",
    "monitor.run.completed",
)
API = "/websets/v0"


def _emulator(**kwargs: Any) -> Emulator:
    emu = Emulator(api_key=KEY, seed=21, **kwargs)
    # frozen first, then set: exactly the anchor (set-then-freeze keeps the ms that passed
    # between them, and the test data would differ from run to run)
    emu.store.clock.freeze()
    emu.store.clock.set(SEED_ANCHOR)
    return emu


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """3 websets x 10 items, 5 monitors (a run in every status each), 3 webhooks."""
    with _emulator(websets=3, items_per_webset=10, monitors=5, webhooks=3) as e:
        yield e


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.headers["x-api-key"] = KEY
    yield session
    session.close()


def _ms(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return str(value.astimezone(timezone.utc).isoformat(timespec="milliseconds"))


# ----------------------------------------------------------------------------- the API's truth


def api_objects(emu: Emulator, http: requests.Session) -> dict[str, list[dict[str, Any]]]:
    """Every object of the five tables, as the API lists them."""
    base = emu.base_url + API
    monitors = page_all(http, f"{base}/monitors", limit=200)
    webhooks = page_all(http, f"{base}/webhooks", limit=200)
    runs = [r for m in monitors for r in page_all(http, f"{base}/monitors/{m['id']}/runs")]
    attempts = [
        a for w in webhooks for a in page_all(http, f"{base}/webhooks/{w['id']}/attempts", 200)
    ]
    events = page_all(http, f"{base}/events", limit=200)
    return {
        "monitors": monitors,
        "monitor_runs": runs,
        "webhooks": webhooks,
        "webhook_attempts": attempts,
        "events": events,
    }


def api_truth(objects: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, tuple[Any, ...]]]:
    """``{table: {id: (version, ...)}}`` from :func:`api_objects`."""
    return {
        "monitors": {
            m["id"]: (
                _ms(m["updatedAt"]),
                m["status"],
                m["websetId"],
                (m.get("lastRun") or {}).get("status"),
            )
            for m in objects["monitors"]
        },
        "monitor_runs": {
            r["id"]: (_ms(r["updatedAt"]), r["status"], r["monitorId"], r["failedReason"])
            for r in objects["monitor_runs"]
        },
        "webhooks": {
            w["id"]: (_ms(w["updatedAt"]), w["status"], w["url"]) for w in objects["webhooks"]
        },
        "webhook_attempts": {
            a["id"]: (
                _ms(a["attemptedAt"]),
                a["successful"],
                a["responseStatusCode"],
                a["webhookId"],
            )
            for a in objects["webhook_attempts"]
        },
        "events": {
            e["id"]: (_ms(e["createdAt"]), e["type"], e["data"]["id"]) for e in objects["events"]
        },
    }


def _rows(target: Target, sql: str) -> list[tuple[Any, ...]]:
    pipeline = target.pipeline()
    with pipeline.sql_client() as client:
        q = client.make_qualified_table_name
        names = {t: q(t) for t in (*FAMILY, "monitor_run_health", "webhook_delivery_health")}
        with client.execute_query(sql.format(**names)) as cursor:
            return [tuple(r) for r in cursor.fetchall()]


def table_truth(target: Target) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The live rows of the five tables in the shape of :func:`api_truth`."""
    live = "where _exa_deleted_at is null"
    out: dict[str, dict[str, tuple[Any, ...]]] = {}
    out["monitors"] = {
        r[0]: (_ms(r[1]), r[2], r[3], r[4])
        for r in _rows(
            target,
            f"select id, updated_at, status, webset_id, last_run_status from {{monitors}} {live}",
        )
    }
    out["monitor_runs"] = {
        r[0]: (_ms(r[1]), r[2], r[3], r[4])
        for r in _rows(
            target,
            "select id, updated_at, status, monitor_id, failed_reason"
            f" from {{monitor_runs}} {live}",
        )
    }
    out["webhooks"] = {
        r[0]: (_ms(r[1]), r[2], r[3])
        for r in _rows(target, f"select id, updated_at, status, url from {{webhooks}} {live}")
    }
    out["webhook_attempts"] = {
        r[0]: (_ms(r[1]), r[2], r[3], r[4])
        for r in _rows(
            target,
            "select id, attempted_at, successful, response_status_code, webhook_id"
            f" from {{webhook_attempts}} {live}",
        )
    }
    # the event log keeps every event it loaded: compared whole (the API still has them all)
    out["events"] = {
        r[0]: (_ms(r[1]), r[2], r[3])
        for r in _rows(target, "select id, created_at, type, subject_id from {events}")
    }
    return out


def assert_equal(target: Target, truth: dict[str, dict[str, tuple[Any, ...]]]) -> None:
    table = table_truth(target)
    for name in FAMILY:
        api, got = truth[name], table[name]
        missing, extra = api.keys() - got.keys(), got.keys() - api.keys()
        differ = [k for k in api.keys() & got.keys() if api[k] != got[k]]
        assert not missing and not extra and not differ, (
            f"{name}: {len(missing)} missing, {len(extra)} extra, {len(differ)} differ, e.g."
            f" {sorted(missing)[:2]} {sorted(extra)[:2]} {[(api[k], got[k]) for k in differ[:2]]}"
        )


def assert_no_duplicates(target: Target) -> dict[str, int]:
    """Every row of the append-style tables is one id (deleted rows included)."""
    counts = {}
    for table in ("events", "webhook_attempts", "monitor_runs"):
        total, distinct = _rows(target, f"select count(*), count(distinct id) from {{{table}}}")[0]
        assert total == distinct, f"{table}: {total} rows for {distinct} ids"
        counts[table] = int(total)
    return counts


# ----------------------------------------------------------------------- the views' figures


def _day(value: str) -> str:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()


def expected_monitor_health(objects: dict[str, list[dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """``monitor_run_health`` computed in Python from the API's monitors and runs."""
    rows: list[tuple[Any, ...]] = []
    for m in objects["monitors"]:
        runs = [r for r in objects["monitor_runs"] if r["monitorId"] == m["id"]]
        failed = [r for r in runs if r["status"] == "failed"]
        last = max(
            failed,
            key=lambda r: (_ms(r["failedAt"] or r["updatedAt"]), r["id"]),
            default=None,
        )
        tail = (
            _ms(last["failedAt"] or last["updatedAt"]) if last else None,
            last["failedReason"] if last else None,
        )
        head = (m["id"], m["websetId"], m["status"], m["cadence"]["cron"])
        days = Counter(_day(r["createdAt"]) for r in runs)
        if not days:
            rows.append((*head, None, 0, 0, 0, 0, 0, 0, *tail))
        for day in days:
            of_day = Counter(r["status"] for r in runs if _day(r["createdAt"]) == day)
            counts = tuple(of_day[s] for s in RUN_STATUSES)
            rows.append((*head, day, days[day], *counts, *tail))
    return sorted(rows, key=repr)


def expected_webhook_health(objects: dict[str, list[dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """``webhook_delivery_health`` computed in Python from the API's webhooks and attempts."""
    rows: list[tuple[Any, ...]] = []
    for w in objects["webhooks"]:
        attempts = [a for a in objects["webhook_attempts"] if a["webhookId"] == w["id"]]
        failed = [a for a in attempts if not a["successful"]]
        last = max(failed, key=lambda a: (_ms(a["attemptedAt"]), a["id"]), default=None)
        codes = Counter(a["responseStatusCode"] for a in attempts)
        succeeded = max(
            (_ms(a["attemptedAt"]) or "" for a in attempts if a["successful"]), default=""
        )
        in_a_row = [a for a in failed if (_ms(a["attemptedAt"]) or "") > succeeded]
        rows.append(
            (
                w["id"],
                w["url"],
                w["status"],
                len(attempts),
                len(failed),
                len(failed) / len(attempts) if attempts else None,
                len(in_a_row),
                max((_ms(a["attemptedAt"]) for a in attempts), default=None),
                max((_ms(a["attemptedAt"]) for a in attempts if a["successful"]), default=None),
                _ms(last["attemptedAt"]) if last else None,
                last["responseStatusCode"] if last else None,
                (last["responseBody"] or "")[:200] if last else None,
                ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())) or None,
            )
        )
    return sorted(rows, key=repr)


def view_figures(target: Target) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Both health views' rows, values normalized (timestamps as ISO UTC, days as ISO)."""

    def norm(v: Any) -> Any:
        if isinstance(v, datetime):
            return _ms(v)
        if hasattr(v, "isoformat"):
            return v.isoformat()
        return v

    monitors = _rows(target, "select * from {monitor_run_health}")
    webhooks = _rows(target, "select * from {webhook_delivery_health}")
    return (
        sorted((tuple(norm(v) for v in r) for r in monitors), key=repr),
        sorted((tuple(norm(v) for v in r) for r in webhooks), key=repr),
    )


def _digest(rows: Any) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ the activity


def activity(emu: Emulator, http: requests.Session, round_: int) -> None:
    """More of everything: runs in every status, attempts, monitors and webhooks made, changed
    and deleted, webset, search, item and import events."""
    base = emu.base_url + API
    emu.store.clock.advance(120)  # less than the events overlap: the boundary is re-read
    ids = emu.monitors.monitor_ids()
    emu.monitors.step_monitors(status=RUN_STATUSES[round_ % 5])
    emu.monitors.step_monitors(monitor=ids[-1], status="failed")
    for run in page_all(http, f"{base}/monitors/{ids[0]}/runs"):
        if run["status"] in ("created", "running"):
            emu.monitors.advance_run(run["id"], "completed" if round_ % 2 else "failed")
            break
    hooks = emu.monitors.webhook_ids()
    emu.monitors.step_webhooks(successful=bool(round_ % 2))
    emu.monitors.step_webhooks(webhook=hooks[-1], successful=False)
    websets = emu.websets.ids()
    if round_ == 1:
        made = http.post(
            f"{base}/monitors",
            json={
                "websetId": websets[0],
                "cadence": {"cron": "0 9 * * *"},
                "behavior": {"type": "search", "config": {"query": "new CTOs", "count": 5}},
            },
        )
        made.raise_for_status()
        http.post(
            f"{base}/webhooks", json={"events": ["monitor.run.completed"], "url": "https://h.io/x"}
        ).raise_for_status()
        new = http.post(
            f"{base}/websets", json={"title": "Round 1", "search": {"query": "CFOs", "count": 6}}
        )
        new.raise_for_status()
        emu.websets.step(webset=new.json()["id"], items=6)
    elif round_ == 2:
        http.patch(f"{base}/monitors/{ids[1]}", json={"status": "disabled"}).raise_for_status()
        http.patch(f"{base}/webhooks/{hooks[0]}", json={"status": "inactive"}).raise_for_status()
        http.post(
            f"{base}/websets/{websets[1]}/enrichments", json={"description": "CEO name"}
        ).raise_for_status()
        emu.websets.step(webset=websets[1], items=2)
    elif round_ == 3:
        http.delete(f"{base}/monitors/{ids[2]}").raise_for_status()
        http.post(
            f"{base}/imports",
            json={
                "format": "csv",
                "entity": {"type": "company"},
                "count": 3,
                "size": 100,
                "title": "round 3",
            },
        ).raise_for_status()
    elif round_ == 4:
        http.delete(f"{base}/webhooks/{hooks[1]}").raise_for_status()
    emu.store.clock.advance(60)


def load(target: Target, emu: Emulator) -> Any:
    emu.reset_stats()
    return target.load(emu, resources=FAMILY)


def test_five_incremental_runs_equal_the_api_with_no_duplicates(
    target: Target, emu: Emulator, http: requests.Session
) -> None:
    """The issue's must-show, on both engines: load, more of each, rerun, equal, five times."""
    objects = api_objects(emu, http)
    statuses = Counter(r["status"] for r in objects["monitor_runs"])
    assert set(statuses) == set(RUN_STATUSES)
    assert {a["successful"] for a in objects["webhook_attempts"]} == {True, False}
    first = load(target, emu)
    assert_equal(target, api_truth(objects))
    assert first.tables["events"]["rows_loaded"] == len(objects["events"])
    lines = [f"first load: {first.sentence()}"]
    for round_ in range(1, 6):
        activity(emu, http, round_)
        objects = api_objects(emu, http)
        summary = load(target, emu)
        assert_equal(target, api_truth(objects))
        counts = assert_no_duplicates(target)
        events = summary.tables["events"]
        # the read starts before the newest stored event: some are listed again, none written
        assert events["rows"] > events["rows_loaded"] > 0
        lines.append(
            f"run {round_}: {summary.rows_loaded} rows written, {summary.rows_deleted} deleted,"
            f" {summary.requests} requests; events read {events['rows']} / written"
            f" {events['rows_loaded']}; table rows {counts}"
        )
    types = {e["type"] for e in objects["events"]}
    assert set(MONITOR_EVENTS) <= types
    table_types = {r[0] for r in _rows(target, "select distinct type from {events}")}
    assert table_types == types
    statuses = Counter(r["status"] for r in objects["monitor_runs"])
    assert set(statuses) == set(RUN_STATUSES)

    # a rerun with nothing new writes nothing
    quiet = load(target, emu)
    assert quiet.rows_loaded == 0 and quiet.rows_deleted == 0

    monitor_rows, webhook_rows = view_figures(target)
    assert monitor_rows == expected_monitor_health(objects)
    assert webhook_rows == expected_webhook_health(objects)
    print(
        f"\n{target.destination}: " + "\n  ".join(lines) + f"\n  event types: {sorted(types)}"
        f"\n  monitor_run_health: {len(monitor_rows)} rows, digest {_digest(monitor_rows)}"
        f"\n  webhook_delivery_health: {len(webhook_rows)} rows, digest {_digest(webhook_rows)}"
    )
    for row in webhook_rows:
        print(f"  {row}")


def test_attempts_are_read_back_only_to_what_the_table_holds(
    tmp_path: Any, http: requests.Session
) -> None:
    """A webhook with 3 pages of attempts: a rerun reads one page; a table emptied by hand is
    read back whole (the table is the mark, not local state)."""
    from conftest import Target as T

    target = T("duckdb", "exa_websets", str(tmp_path / "exa.duckdb"), str(tmp_path / "p"), "t")
    with _emulator(websets=1, items_per_webset=2, monitors=1, webhooks=1) as emu:
        hook = emu.monitors.webhook_ids()[0]
        for i in range(450):  # 10 s apart: a page of 200 spans more than the 600 s overlap
            emu.store.clock.advance(10)
            emu.monitors.step_webhooks(webhook=hook, successful=i % 3 != 0)
        load(target, emu)
        route = "GET /websets/v0/webhooks/{id}/attempts"
        first = emu.stats.as_dict()["requests"]
        assert first.get(route, 0) == 3, first
        for _ in range(5):
            emu.store.clock.advance(1)
            emu.monitors.step_webhooks(webhook=hook, successful=False)
        again = load(target, emu)
        assert emu.stats.as_dict()["requests"].get(route, 0) == 1
        assert again.tables["webhook_attempts"]["rows_loaded"] == 5
        state = scan_state(target.pipeline(), "webhook_attempts")
        assert state["complete"] is True

        # rows deleted by hand (a restored backup): read back further, the table is whole again
        pipeline = target.pipeline()
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name("webhook_attempts")
            client.execute_sql(
                f"delete from {table} where id in (select id from {table}"
                " order by attempted_at desc, id desc limit 300)"
            )
        healed = load(target, emu)
        assert healed.tables["webhook_attempts"]["rows_loaded"] == 300
        objects = api_objects(emu, http)
        assert_equal(target, api_truth(objects))
        assert assert_no_duplicates(target)["webhook_attempts"] == len(objects["webhook_attempts"])
        assert len(objects["webhook_attempts"]) == 455 + 3  # the seeded webhook's own 3


def test_events_beyond_the_retention_are_kept_and_the_gap_is_named(
    tmp_path: Any, http: requests.Session
) -> None:
    """The table keeps what the API dropped; a run after more than 60 days names the gap."""
    from conftest import Target as T

    target = T("duckdb", "exa_websets", str(tmp_path / "exa.duckdb"), str(tmp_path / "p"), "t")
    with _emulator(websets=1, items_per_webset=2, monitors=2, webhooks=1) as emu:
        first = load(target, emu)
        assert not first.warnings
        kept = first.tables["events"]["rows_loaded"]
        assert kept > 0
        emu.store.clock.advance(30 * 86_400)
        emu.monitors.step_monitors(status="completed")
        within = load(target, emu)
        assert not within.warnings and within.tables["events"]["rows_loaded"] == 4
        emu.store.clock.advance(61 * 86_400)
        emu.monitors.step_monitors(status="failed")
        late = load(target, emu)
        assert len(late.warnings) == 1, late.warnings
        warning = late.warnings[0]
        last_read = (SEED_ANCHOR + timedelta(days=30)).date().isoformat()
        assert last_read in warning and "may be missing" in warning, warning
        assert "WARNING: events created between" in late.sentence()
        # every event ever loaded is still in the table, though the API lists only the new ones
        listed = page_all(http, f"{emu.base_url}{API}/events", limit=200)
        assert len(listed) == 2
        total = _rows(target, "select count(*), count(distinct id) from {events}")[0]
        assert total == (kept + 4 + 2, kept + 4 + 2)
        print(f"\n{warning}")
        # the record of the append-only table holds only the newest day, not every event
        plan = plan_for(None, None, "soft", EVENTS)
        record = read_record(target.pipeline(), plan)
        assert 0 < len(record) < total[0] and record.newest() is not None
        assert EVENTS.window is not None and EVENTS.window > settings.EVENT_OVERLAP_SECONDS
        # the next run read everything since: no gap any more
        assert not load(target, emu).warnings


def test_a_bad_clock_upstream_stops_no_later_event_or_attempt(
    tmp_path: Any, http: requests.Session
) -> None:
    """An event and an attempt stamped in year 9999: later ones are still all loaded."""
    from conftest import Target as T

    target = T("duckdb", "exa_websets", str(tmp_path / "exa.duckdb"), str(tmp_path / "p"), "t")
    with _emulator(websets=1, items_per_webset=2, monitors=1, webhooks=1) as emu:
        hook = emu.monitors.webhook_ids()[0]
        future = int(datetime(9999, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
        emu.events.emit("monitor.updated", b'{"id":"monitor_bogus","object":"monitor"}', future)
        bogus = emu.monitors.step_webhooks(webhook=hook)[0]["id"]
        emu.monitors._attempts[bogus]["attemptedAt"] = "9999-01-01T00:00:00.000Z"
        load(target, emu)
        # then more than a page of real attempts and events, 10 s apart
        for _ in range(450):
            emu.store.clock.advance(10)
            emu.monitors.step_webhooks(webhook=hook, successful=False)
        for _ in range(3):
            emu.store.clock.advance(60)
            emu.monitors.step_monitors(status="completed")
        later = load(target, emu)
        assert later.tables["webhook_attempts"]["rows_loaded"] == 450
        assert later.tables["events"]["rows_loaded"] == 6
        assert_equal(target, api_truth(api_objects(emu, http)))
        assert assert_no_duplicates(target)


def test_dropped_tables_are_loaded_again_with_the_views_in_place(
    target: Target, emu: Emulator, http: requests.Session
) -> None:
    """``drop table`` of the child tables and the event log works with the health views in
    place (on PostgreSQL they read through functions), and the next run loads them whole."""
    load(target, emu)
    pipeline = target.pipeline()
    with pipeline.sql_client() as client:
        for table in ("monitor_runs", "webhook_attempts", "events"):
            client.execute_sql(f"drop table {client.make_qualified_table_name(table)}")
    again = load(target, emu)
    objects = api_objects(emu, http)
    assert again.tables["events"]["rows_loaded"] == len(objects["events"])
    assert again.tables["webhook_attempts"]["rows_loaded"] == len(objects["webhook_attempts"])
    assert not again.warnings  # every event it had loaded was still in the API
    assert_equal(target, api_truth(objects))
    assert view_figures(target)[1] == expected_webhook_health(objects)


def test_event_types_choose_what_the_event_log_keeps(
    tmp_path: Any, emu: Emulator, http: requests.Session
) -> None:
    """``event_types`` loads only those types; widening it reads the retained events once."""
    from conftest import Target as T

    from exa_source import ExaAPIError, ExaConfigError

    target = T("duckdb", "exa_websets", str(tmp_path / "exa.duckdb"), str(tmp_path / "p"), "t")
    runs = "monitor.run.completed,monitor.run.created"
    first = target.load(emu, resources=("events",), event_types=runs)
    stored = _rows(target, "select type, count(*) from {events} group by type order by type")
    assert [t for t, _ in stored] == runs.split(",")
    assert first.tables["events"]["rows_loaded"] == sum(n for _, n in stored)
    emu.store.clock.advance(60)
    emu.monitors.step_monitors(status="completed")
    narrow = target.load(emu, resources=("events",), event_types=runs.split(","))
    assert narrow.tables["events"]["rows_loaded"] == 2 * len(emu.monitors.monitor_ids())
    wide = target.load(emu, resources=("events",))
    objects = api_objects(emu, http)
    assert wide.tables["events"]["rows"] == len(objects["events"])
    events = _rows(target, "select id, created_at, type, subject_id from {events}")
    assert {r[0]: (_ms(r[1]), r[2], r[3]) for r in events} == api_truth(objects)["events"]
    assert len(events) == len(objects["events"])  # one row per id

    with pytest.raises(ExaConfigError, match="is not an event type"):
        target.load(emu, resources=("events",), event_types="monitor run")
    with pytest.raises(ExaAPIError, match="400"):  # the API names the valid types
        target.load(emu, resources=("events",), event_types="monitor.exploded")
