"""Websets, searches, enrichments and items end to end (exa_source.items, the source's resources).

Every test runs the real connector over HTTP against the emulator and loads into a temporary
DuckDB file or a fresh PostgreSQL schema (the ``target`` fixture). The truth each table is
compared with is the emulator as exa-py lists it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
from conftest import KEY, Target

from exa_source import ExaAPIError
from exa_source.emulator import Emulator, Fault
from exa_source.emulator.store import SEED_ANCHOR
from exa_source.items import EMPTY, combine
from exa_source.pipeline import scan_state

exa_py = pytest.importorskip("exa_py")

WEBSETS_FAMILY = ("websets", "webset_searches", "webset_enrichments", "webset_items")
ITEMS_ROUTE = "GET /websets/v0/websets/{id}/items"
ITEMS_PREFIX = "/websets/v0/websets/"


def _emulator(websets: int, items: int) -> Emulator:
    emu = Emulator(api_key=KEY, websets=websets, items_per_webset=items, seed=11)
    # the seeded data ends shortly before SEED_ANCHOR; a frozen clock makes steps deterministic
    emu.store.clock.set(SEED_ANCHOR)
    emu.store.clock.freeze()
    return emu


@pytest.fixture
def small() -> Iterator[Emulator]:
    """6 websets x 150 items (every entity type), on a free port."""
    with _emulator(6, 150) as emu:
        yield emu


@pytest.fixture(params=[(6, 150), (50, 2_000)], ids=["6x150", "50x2000"])
def sized(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """The issue's must-show size (50 websets x 2,000 items) and a small one."""
    websets, items = request.param
    with _emulator(websets, items) as emu:
        yield emu


def _ms(value: Any) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def api_truth(emu: Emulator) -> dict[str, dict[str, tuple[Any, ...]]]:
    """Every table as exa-py lists it: ``{table: {id: (updatedAt, status or parent, ...)}}``."""
    exa = exa_py.Exa(api_key=KEY, base_url=emu.base_url)
    truth: dict[str, dict[str, tuple[Any, ...]]] = {t: {} for t in WEBSETS_FAMILY}
    for webset in exa.websets.list_all():
        truth["websets"][webset.id] = (_ms(webset.updated_at), webset.status, webset.title)
        for s in webset.searches:
            truth["webset_searches"][s.id] = (_ms(s.updated_at), s.status, webset.id)
        for e in webset.enrichments:
            truth["webset_enrichments"][e.id] = (_ms(e.updated_at), e.status, webset.id)
        for item in exa.websets.items.list_all(webset.id, limit=100):
            results = sorted(
                (r.enrichment_id, tuple(r.result or ())) for r in item.enrichments or []
            )
            truth["webset_items"][item.id] = (
                _ms(item.updated_at),
                str(item.properties.type),
                webset.id,
                tuple(results),
            )
    return truth


def table_truth(target: Target) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The live rows of every table in the destination, in the shape of :func:`api_truth`."""
    pipeline = target.pipeline()
    out: dict[str, dict[str, tuple[Any, ...]]] = {t: {} for t in WEBSETS_FAMILY}
    with pipeline.sql_client() as client:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            with client.execute_query(sql) as cursor:
                return list(cursor.fetchall())

        q = client.make_qualified_table_name
        live = "where _exa_deleted_at is null"
        for row in rows(f"select id, updated_at, status, title from {q('websets')} {live}"):
            out["websets"][row[0]] = (_ms(row[1]), row[2], row[3])
        for table in ("webset_searches", "webset_enrichments"):
            for row in rows(f"select id, updated_at, status, webset_id from {q(table)} {live}"):
                out[table][row[0]] = (_ms(row[1]), row[2], row[3])
        sql = f"select id, updated_at, entity_type, webset_id, enrichments from {q('webset_items')}"
        for row in rows(f"{sql} {live}"):
            raw = orjson.loads(row[4]) if isinstance(row[4], str | bytes) else row[4]
            results = sorted((r["enrichmentId"], tuple(r["result"] or ())) for r in raw or [])
            out["webset_items"][row[0]] = (_ms(row[1]), row[2], row[3], tuple(results))
    return out


def assert_equal(target: Target, emu: Emulator) -> dict[str, int]:
    """Every table equals the API, row for row; returns the row counts."""
    api, table = api_truth(emu), table_truth(target)
    for name in WEBSETS_FAMILY:
        missing = api[name].keys() - table[name].keys()
        extra = table[name].keys() - api[name].keys()
        differ = [
            k for k in api[name].keys() & table[name].keys() if api[name][k] != table[name][k]
        ]
        assert not missing and not extra and not differ, (
            f"{name}: {len(missing)} missing, {len(extra)} extra, {len(differ)} differ,"
            f" e.g. {sorted(missing)[:2]} {sorted(extra)[:2]} {differ[:2]}"
        )
    return {name: len(api[name]) for name in WEBSETS_FAMILY}


def items_requests(emu: Emulator) -> int:
    return int(emu.stats.as_dict()["requests"].get(ITEMS_ROUTE, 0))


def load(target: Target, emu: Emulator, **kwargs: Any) -> Any:
    emu.reset_stats()
    kwargs.setdefault("resources", WEBSETS_FAMILY)
    return target.load(emu, **kwargs)


def make_changes(emu: Emulator, http_base: str) -> tuple[set[str], dict[str, int]]:
    """Creates, deletions, new search results and new enrichment results, via the API.

    Returns the websets touched, and how many items of each were deleted with no other change
    (only a reconcile finds those).
    """
    import requests

    session = requests.Session()
    session.headers["x-api-key"] = KEY
    api = f"{http_base}/websets/v0/websets"
    ids = emu.websets.ids()
    a, b, c, d = ids[0], ids[1], ids[2], ids[3]
    # a: a new search finds items over two steps; an enrichment fills results on them
    session.post(
        f"{api}/{a}/searches", json={"query": "more companies", "count": 15}
    ).raise_for_status()
    session.post(f"{api}/{a}/enrichments", json={"description": "CEO name"}).raise_for_status()
    emu.websets.step(webset=a, items=10)
    emu.websets.step(webset=a, items=10)
    # b: one item deleted (no event announces it) and an enrichment deleted (changes every item)
    b_items = emu.websets.item_ids(b)
    session.delete(f"{api}/{b}/items/{b_items[0]}").raise_for_status()
    enrichment = session.get(f"{api}/{b}").json()["enrichments"][0]["id"]
    session.delete(f"{api}/{b}/enrichments/{enrichment}").raise_for_status()
    # c: deleted with all its items
    session.delete(f"{api}/{c}").raise_for_status()
    # d: two items deleted and nothing else: found by the reconcile only
    for item in emu.websets.item_ids(d)[:2]:
        session.delete(f"{api}/{d}/items/{item}").raise_for_status()
    # a new webset with a search that finds items
    new = session.post(
        api, json={"title": "New", "search": {"query": "new people", "count": 12}}
    ).json()["id"]
    emu.websets.step(webset=new, items=12)
    return {a, b, c, new}, {d: 2}


def test_load_change_rerun_equal_to_the_api(target: Target, sized: Emulator) -> None:
    """The issue's must-show: load, compare with exa-py, change everything, rerun, compare."""
    small = sized
    websets = len(small.websets.ids())
    per = len(small.websets.item_ids(small.websets.ids()[0]))
    first = load(target, small)
    first_requests = sum(small.stats.as_dict()["requests"].values())
    assert items_requests(small) == websets * math.ceil(per / 100)
    counts = assert_equal(target, small)
    assert counts["webset_items"] == websets * per and counts["websets"] == websets
    assert first.tables["webset_items"]["rows_loaded"] == websets * per

    # a no-change rerun reads no item: the websets list and one event page
    again = load(target, small)
    assert items_requests(small) == 0 and again.rows_loaded == 0
    # the websets list (one page, shared by the four resources) and one events page
    assert again.requests == 2 == sum(small.stats.as_dict()["requests"].values())
    print(
        f"\n{target.destination} {websets}x{per}: first load {first_requests} requests,"
        f" no-change rerun {again.requests} requests, {first.seconds:.1f} s / {again.seconds:.1f} s"
    )

    touched, only_deleted = make_changes(small, small.base_url)
    after = load(target, small)
    state = scan_state(target.pipeline(), "webset_items")
    # the deleted webset has nothing to read: its items are marked deleted from the table
    assert state["websets_read"] == len(touched) - 1
    print(
        f"{target.destination}: after changes in {len(touched)} websets: {after.requests}"
        f" requests, {state['websets_read']} websets read, {after.rows_loaded} rows written,"
        f" {after.rows_deleted} deleted"
    )
    # the emulator's own ids here (exa-py lists everything at the start and the end)
    live = {i for w in small.websets.ids() for i in small.websets.item_ids(w)}
    table = table_truth(target)
    # every change is in, except the items deleted in a webset nothing else changed
    (quiet,) = only_deleted
    assert live - table["webset_items"].keys() == set()
    stale = table["webset_items"].keys() - live
    assert len(stale) == only_deleted[quiet] and all(
        table["webset_items"][i][2] == quiet for i in stale
    )
    assert after.rows_deleted >= per + 1  # webset c's items, b's deleted item, c itself...

    # a reconcile (due after items_reconcile_days; 0 forces it) finds them
    load(target, small, items_reconcile_days=0)
    assert items_requests(small) == sum(
        math.ceil(len(small.websets.item_ids(w)) / 100) for w in small.websets.ids()
    )
    assert_equal(target, small)


def test_changes_in_two_websets_reread_only_those(target: Target, small: Emulator) -> None:
    load(target, small)
    ids = small.websets.ids()
    for wid in ids[:2]:
        small.websets.create_search(wid, {"query": "more", "count": 5})
        small.websets.step(webset=wid, items=5)
    load(target, small)
    state = scan_state(target.pipeline(), "webset_items")
    assert state["websets_read"] == 2
    assert items_requests(small) == sum(
        math.ceil(len(small.websets.item_ids(w)) / 100) for w in ids[:2]
    )
    assert_equal(target, small)


def test_a_table_changed_behind_the_connector_is_read_again(
    target: Target, small: Emulator
) -> None:
    """Rows deleted by hand break the webset's fingerprint: that webset is read whole."""
    load(target, small)
    victim = small.websets.ids()[3]
    pipeline = target.pipeline()
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name("webset_items")
        client.execute_sql(
            f"delete from {table} where webset_id = '{victim}' and id in"
            f" (select id from {table} where webset_id = '{victim}' limit 7)"
        )
    load(target, small)
    state = scan_state(target.pipeline(), "webset_items")
    assert state["websets_read"] == 1 and state["changed"] == 7
    assert_equal(target, small)


def test_views_on_items(target: Target, small: Emulator) -> None:
    load(target, small)
    pipeline = target.pipeline()
    with pipeline.sql_client() as client:
        q = client.make_qualified_table_name

        def one(sql: str) -> tuple[Any, ...]:
            with client.execute_query(sql) as cursor:
                return tuple(cursor.fetchall()[0])

        assert one(f"select count(*), count(webset_title) from {q('webset_items_current')}") == (
            900,
            900,
        )
        enriched = one(
            f"select count(*), count(distinct item_id), count(title), count(result)"
            f" from {q('webset_item_enrichments')}"
        )
        assert enriched[:3] == (900, 900, 900) and 0 < enriched[3] < 900
        assert one(f"select count(*) from {q('webset_item_evaluations')}") == (1800,)


def test_fingerprints_combine() -> None:
    assert combine(EMPTY, "3:0000000000000005") == "3:0000000000000005"
    assert combine("1:ffffffffffffffff", "1:0000000000000002") == "2:0000000000000001"


def test_a_dropped_items_table_is_loaded_again(target: Target, small: Emulator) -> None:
    """``drop table webset_items`` works with the views in place (PostgreSQL tracks view
    dependencies: the views read the table through a function), and the next run reloads it."""
    load(target, small)
    pipeline = target.pipeline()
    with pipeline.sql_client() as client:
        client.execute_sql(f"drop table {client.make_qualified_table_name('webset_items')}")
    again = load(target, small)
    assert again.tables["webset_items"]["rows_loaded"] == 900
    assert_equal(target, small)


def test_429_on_concurrent_item_chains_is_retried_after_retry_after(
    target: Target, small: Emulator
) -> None:
    """Four websets read at once; two 429s with Retry-After on the items routes are retried."""
    small.faults.add(
        Fault("status", status=429, headers={"Retry-After": "1"}, path=ITEMS_PREFIX, times=2)
    )
    done = load(target, small, concurrency=4)
    assert done.tables["webset_items"]["retried"] == 2
    assert done.tables["webset_items"]["rows_loaded"] == 900
    assert_equal(target, small)


def test_a_failing_item_chain_fails_the_run_and_commits_nothing(
    target: Target, small: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("RUNTIME__REQUEST_BACKOFF_FACTOR", "0")
    load(target, small)
    before = table_truth(target)
    wid = small.websets.ids()[2]
    small.websets.create_search(wid, {"query": "more", "count": 5})
    small.websets.step(webset=wid, items=5)
    small.faults.add(Fault("status", status=503, path=f"{ITEMS_PREFIX}{wid}/items", times=50))
    with pytest.raises(ExaAPIError, match="kept failing"):
        load(target, small)
    assert table_truth(target) == before  # nothing of the failed run was committed
    small.faults.clear()
    load(target, small)  # the next normal run converges
    assert_equal(target, small)
