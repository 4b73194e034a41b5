"""Tests of the emulator's searches, enrichments and driven steps (exa_source.emulator.websets)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import requests

from exa_source.emulator import SEED_ANCHOR, Emulator
from exa_source.emulator.websets import WebsetStore

KEY = "test-key"
WEBSETS = "/websets/v0/websets"
STEP = "/_emulator/websets/step"
SEARCH = {
    "query": "CTOs of fintech startups in Europe",
    "count": 25,
    "entity": {"type": "person"},
    "criteria": [{"description": "Is a CTO"}, {"description": "Is based in Europe"}],
    "behavior": "append",
    "metadata": {"campaign": "q3"},
}
ENRICHMENT = {
    "description": "Company stage",
    "format": "options",
    "options": [{"label": "Early"}, {"label": "Late"}],
    "metadata": {"k": "v"},
}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """Three seeded websets x 12 items, the clock frozen at the seed anchor."""
    with Emulator(api_key=KEY, websets=3, items_per_webset=12, seed=8) as e:
        e.store.clock.set(SEED_ANCHOR)
        e.store.clock.freeze()
        yield e


@pytest.fixture
def store() -> WebsetStore:
    """An empty store whose clock is frozen: every step falls in the same millisecond."""
    s = WebsetStore(seed=2)
    s.clock.set(SEED_ANCHOR)
    s.clock.freeze()
    return s


def items_of(store: WebsetStore, webset: str) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in store.items_page(webset, None, 100).items]


def new_event_types(store: WebsetStore, before: int) -> list[str]:
    """Types of the events emitted since the log held ``before`` events, oldest first."""
    return [e["type"] for e in reversed(store.events.all()[: len(store.events) - before])]


# ----------------------------------------------------------------------------- searches


def test_search_create_get_cancel(emu: Emulator, http: requests.Session) -> None:
    ws = http.post(emu.base_url + WEBSETS, json={"title": "T"}).json()
    assert ws["status"] == "idle"
    url = f"{emu.base_url}{WEBSETS}/{ws['id']}/searches"
    r = http.post(url, json=SEARCH)
    assert r.status_code == 201, r.text
    search = r.json()
    assert search["id"].startswith("wsearch_") and search["websetId"] == ws["id"]
    assert search["status"] == "created" and search["behavior"] == "append"
    assert search["progress"] == {"found": 0, "analyzed": 0, "completion": 0, "timeLeft": 0}
    assert search["metadata"] == {"campaign": "q3"} and search["count"] == 25
    now = http.get(f"{emu.base_url}{WEBSETS}/{ws['id']}").json()
    assert now["status"] == "running" and now["updatedAt"] > ws["updatedAt"]
    assert now["searches"] == [search]
    assert http.get(f"{url}/{search['id']}").json() == search
    events = emu.events.all()
    assert events[0]["type"] == "webset.search.created" and events[0]["data"] == search
    # by externalId too; a second search does not bump the already running webset
    http.post(f"{emu.base_url}{WEBSETS}/{ws['id']}", json={"title": "U"})
    before = http.get(f"{emu.base_url}{WEBSETS}/{ws['id']}").json()
    second = http.post(url, json={"query": "more", "count": 1}).json()
    assert second["behavior"] == "override" and second["entity"] == {"type": "company"}
    after = http.get(f"{emu.base_url}{WEBSETS}/{ws['id']}").json()
    assert after["updatedAt"] == before["updatedAt"] and len(after["searches"]) == 2

    r = http.post(f"{url}/{search['id']}/cancel")
    assert r.status_code == 200, r.text
    canceled = r.json()
    assert canceled["status"] == "canceled" and canceled["canceledReason"] == "webset_canceled"
    assert canceled["canceledAt"] == canceled["updatedAt"] > search["updatedAt"]
    assert http.get(f"{url}/{search['id']}").json() == canceled
    assert http.get(f"{emu.base_url}{WEBSETS}/{ws['id']}").json()["searches"][0] == canceled
    assert emu.events.all()[0]["type"] == "webset.search.canceled"
    assert emu.events.all()[0]["data"] == canceled
    count = len(emu.events)
    assert http.post(f"{url}/{search['id']}/cancel").json() == canceled  # idempotent
    assert len(emu.events) == count


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"count": 5}, "query must be a string"),
        ({"query": "q"}, "count must be a positive integer"),
        ({"query": "q", "count": 0}, "count must be a positive integer"),
        ({"query": "q", "count": 1, "entity": {"type": "planet"}}, "entity.type"),
        ({"query": "q", "count": 1, "criteria": ["x"]}, "criteria must be a list"),
        ({"query": "q", "count": 1, "behavior": "replace"}, "behavior must be one of"),
        ({"query": "q", "count": 1, "exclude": [{"source": "x", "id": "i"}]}, "exclude must"),
        ({"query": "q", "count": 1, "scope": "webset_1"}, "scope must be a list"),
        ({"query": "q", "count": 1, "metadata": {"k": 1}}, "metadata.k"),
        ({"query": "q", "count": 1, "bogus": 1}, "property bogus should not exist"),
        ([], "request body must be an object"),
    ],
)
def test_search_create_400(emu: Emulator, http: requests.Session, body: Any, fragment: str) -> None:
    wid = emu.websets.ids()[0]
    before = emu.websets.get(wid)
    r = http.post(f"{emu.base_url}{WEBSETS}/{wid}/searches", json=body)
    assert r.status_code == 400
    err = r.json()
    assert err["statusCode"] == 400 and err["error"] == "Bad Request"
    assert any(fragment in m for m in err["message"]), err
    assert emu.websets.get(wid) == before


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "description must be a non-empty string"),
        ({"description": "d", "format": "xml"}, "format must be one of"),
        ({"description": "d", "options": [{"name": "x"}]}, "options must be a list"),
        ({"description": "d", "metadata": []}, "metadata must be an object"),
        ({"description": "d", "extra": 1}, "property extra should not exist"),
        ("text", "request body must be an object"),
    ],
)
def test_enrichment_create_400(
    emu: Emulator, http: requests.Session, body: Any, fragment: str
) -> None:
    wid = emu.websets.ids()[0]
    before = emu.websets.get(wid)
    r = http.post(f"{emu.base_url}{WEBSETS}/{wid}/enrichments", json=body)
    assert r.status_code == 400
    assert any(fragment in m for m in r.json()["message"]), r.json()
    assert emu.websets.get(wid) == before


def test_unknown_ids_404(emu: Emulator, http: requests.Session) -> None:
    wid = emu.websets.ids()[0]
    ws = emu.websets.get(wid)
    sid, eid = ws["searches"][0]["id"], ws["enrichments"][0]["id"]
    other = emu.websets.ids()[1]
    cases = [
        ("POST", f"{WEBSETS}/webset_nope/searches", "Webset not found"),
        ("GET", f"{WEBSETS}/webset_nope/searches/{sid}", "Webset not found"),
        ("POST", f"{WEBSETS}/webset_nope/enrichments", "Webset not found"),
        ("GET", f"{WEBSETS}/{wid}/searches/wsearch_nope", "Search not found"),
        ("POST", f"{WEBSETS}/{wid}/searches/wsearch_nope/cancel", "Search not found"),
        ("GET", f"{WEBSETS}/{other}/searches/{sid}", "Search not found"),
        ("GET", f"{WEBSETS}/{wid}/enrichments/wenrich_nope", "Enrichment not found"),
        ("DELETE", f"{WEBSETS}/{wid}/enrichments/wenrich_nope", "Enrichment not found"),
        ("POST", f"{WEBSETS}/{wid}/enrichments/wenrich_nope/cancel", "Enrichment not found"),
        ("GET", f"{WEBSETS}/{other}/enrichments/{eid}", "Enrichment not found"),
        ("GET", f"{WEBSETS}/{wid}/searches", f"Cannot GET /v0/websets/{wid}/searches"),
        ("DELETE", f"{WEBSETS}/{wid}/searches/{sid}", "Cannot DELETE"),
        ("PATCH", f"{WEBSETS}/{wid}/enrichments/{eid}/cancel", "Cannot PATCH"),
    ]
    for method, path, message in cases:
        body = {"query": "q", "count": 1} if path.endswith("searches") else {"description": "d"}
        r = http.request(method, emu.base_url + path, json=body if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"] == "Not Found" and r.json()["message"].startswith(message)
        assert r.json()["path"] == path.removeprefix("/websets")
    assert emu.websets.get(wid) == ws


def test_routes_need_the_key_and_are_counted(emu: Emulator, http: requests.Session) -> None:
    wid = emu.websets.ids()[0]
    url = f"{emu.base_url}{WEBSETS}/{wid}/searches"
    assert requests.post(url, json={"query": "q", "count": 1}).status_code == 401
    sid = http.post(url, json={"query": "q", "count": 1}).json()["id"]
    http.get(f"{url}/{sid}")
    http.post(f"{url}/{sid}/cancel")
    eid = emu.websets.get(wid)["enrichments"][0]["id"]
    http.get(f"{emu.base_url}{WEBSETS}/{wid}/enrichments/{eid}")
    http.post(emu.base_url + STEP, json={})
    counted = emu.stats.as_dict()["requests"]
    assert counted["POST /websets/v0/websets/{id}/searches"] == 2
    assert counted["GET /websets/v0/websets/{id}/searches/{search}"] == 1
    assert counted["POST /websets/v0/websets/{id}/searches/{search}/cancel"] == 1
    assert counted["GET /websets/v0/websets/{id}/enrichments/{enrichment}"] == 1
    assert counted["POST " + STEP] == 1


# ----------------------------------------------------------------------------- enrichments


def test_enrichment_create_marks_every_item_pending(emu: Emulator, http: requests.Session) -> None:
    wid = emu.websets.ids()[0]
    before = emu.websets.get(wid)
    old_items = {i["id"]: i for i in items_of(emu.websets, wid)}
    events = len(emu.events)
    r = http.post(f"{emu.base_url}{WEBSETS}/{before['externalId']}/enrichments", json=ENRICHMENT)
    assert r.status_code == 201, r.text
    enrichment = r.json()
    assert enrichment["id"].startswith("wenrich_") and enrichment["status"] == "pending"
    assert enrichment["options"] == [{"label": "Early"}, {"label": "Late"}]
    assert enrichment["metadata"] == {"k": "v"} and enrichment["websetId"] == wid
    ws = emu.websets.get(wid)
    assert ws["enrichments"][-1] == enrichment and len(ws["enrichments"]) == 2
    assert ws["status"] == "running" and ws["updatedAt"] > before["updatedAt"]
    url = f"{emu.base_url}{WEBSETS}/{wid}/enrichments/{enrichment['id']}"
    assert http.get(url).json() == enrichment
    for item in items_of(emu.websets, wid):
        old = old_items[item["id"]]
        assert item["updatedAt"] > old["updatedAt"]
        assert item["enrichments"][:-1] == old["enrichments"]
        assert item["enrichments"][-1] == {
            "object": "enrichment_result",
            "status": "pending",
            "format": "options",
            "result": None,
            "reasoning": None,
            "references": [],
            "enrichmentId": enrichment["id"],
        }
    assert len(emu.events) == events  # no enrichment event type in the API


def test_enrichment_fill_cancel_delete(store: WebsetStore) -> None:
    store.seed(1, 30)
    wid = store.ids()[0]
    enrichment = store.create_enrichment(wid, ENRICHMENT)
    eid = enrichment["id"]
    before = len(store.events)
    touched = store.step(enrich=12)
    assert touched["items_created"] == [] and touched["searches"] == []
    assert touched["items_enriched"] == store.item_ids(wid)[:12]
    assert touched["enrichments"] == [eid]
    assert new_event_types(store, before) == ["webset.item.enriched"] * 12
    filled = store.get_enrichment(wid, eid)
    assert filled["status"] == "pending" and filled["updatedAt"] == enrichment["updatedAt"]
    results = [item["enrichments"][-1] for item in items_of(store, wid)]
    assert [r["status"] for r in results] == ["completed"] * 12 + ["pending"] * 18
    for r in results[:12]:
        assert r["result"] is None or r["result"][0] in ("Early", "Late")
    events = store.events.all()[:12]
    assert [e["data"] for e in reversed(events)] == items_of(store, wid)[:12]

    canceled = store.cancel_enrichment(wid, eid)
    assert canceled["status"] == "canceled" and canceled["updatedAt"] > filled["updatedAt"]
    results = [item["enrichments"][-1] for item in items_of(store, wid)]
    assert [r["status"] for r in results] == ["completed"] * 12 + ["canceled"] * 18
    before = len(store.events)
    assert store.step()["items_enriched"] == []
    assert store.get(wid)["status"] == "idle"
    assert new_event_types(store, before) == ["webset.idle"]

    old = {i["id"]: i for i in items_of(store, wid)}
    gone = store.delete_enrichment(wid, eid)
    assert gone == canceled
    seeded = store.get(wid)["enrichments"]
    assert len(seeded) == 1 and seeded[0]["id"] != eid
    for item in items_of(store, wid):
        assert [r["enrichmentId"] for r in item["enrichments"]] == [seeded[0]["id"]]
        assert item["updatedAt"] > old[item["id"]]["updatedAt"]
    with pytest.raises(KeyError):
        store.get_enrichment(wid, eid)


# ----------------------------------------------------------------------------- steps


def test_nothing_moves_without_a_step(emu: Emulator, http: requests.Session) -> None:
    ws = http.post(
        emu.base_url + WEBSETS, json={"search": SEARCH, "enrichments": [ENRICHMENT]}
    ).json()
    http.post(f"{emu.base_url}{WEBSETS}/{ws['id']}/enrichments", json={"description": "d"})
    snapshot = emu.websets.get(ws["id"], expand_items=True)
    events = len(emu.events)
    emu.store.clock.advance(3600)
    for _ in range(3):
        assert emu.websets.get(ws["id"], expand_items=True) == snapshot
        http.get(f"{emu.base_url}{WEBSETS}/{ws['id']}/items")
    assert snapshot["items"] == [] and len(emu.events) == events


def test_step_drives_a_search_to_completion(store: WebsetStore) -> None:
    ws = store.create({"title": "T", "search": SEARCH, "enrichments": [{"description": "Email"}]})
    wid = ws["id"]
    sid, eid = ws["searches"][0]["id"], ws["enrichments"][0]["id"]
    before = len(store.events)
    first = store.step(items=10, enrich=4)
    assert len(first["items_created"]) == 10 and first["searches"] == [sid]
    assert first["items_enriched"] == first["items_created"][:4] and first["enrichments"] == [eid]
    assert store.item_ids(wid) == first["items_created"]
    search = store.get_search(wid, sid)
    assert search["status"] == "running" and search["updatedAt"] > ws["searches"][0]["updatedAt"]
    assert search["progress"]["found"] == 10 and search["progress"]["completion"] == 40
    assert search["progress"]["analyzed"] >= 10 and search["progress"]["timeLeft"] == 15
    assert all(0 <= c["successRate"] <= 100 for c in search["criteria"])
    assert store.get(wid)["searches"] == [search]
    assert new_event_types(store, before) == [
        *["webset.item.created"] * 10,
        "webset.search.updated",
        *["webset.item.enriched"] * 4,
    ]
    item_events = store.events.all()[4:15]
    assert item_events[0]["data"] == search
    for item in items_of(store, wid):
        assert item["source"] == "search" and item["sourceId"] == sid
        assert item["websetId"] == wid and item["properties"]["type"] == "person"
        assert [e["criterion"] for e in item["evaluations"]] == ["Is a CTO", "Is based in Europe"]
        assert all(
            e["references"][0]["url"] == item["properties"]["url"] for e in item["evaluations"]
        )
        (result,) = item["enrichments"]
        assert result["enrichmentId"] == eid and result["format"] == "text"
    created_events = [e for e in store.events.all() if e["type"] == "webset.item.created"]
    assert all(e["data"]["enrichments"][0]["status"] == "pending" for e in created_events)
    assert store.get(wid)["status"] == "running"
    assert store.get(wid)["updatedAt"] == ws["updatedAt"]  # only the webset's own changes

    stamps = [search["updatedAt"]]
    second = store.step(items=10, enrich=0)
    assert len(second["items_created"]) == 10 and second["items_enriched"] == []
    stamps.append(store.get_search(wid, sid)["updatedAt"])
    before = len(store.events)
    third = store.step(items=10)
    assert len(third["items_created"]) == 5  # up to count
    done = store.get_search(wid, sid)
    stamps.append(done["updatedAt"])
    assert stamps == sorted(set(stamps))  # strictly increasing in one frozen millisecond
    assert done["status"] == "completed" and done["progress"]["completion"] == 100
    assert done["progress"]["found"] == 25 and done["progress"]["timeLeft"] is None
    assert len(third["items_enriched"]) == 21 and store.get_enrichment(wid, eid)["status"] == (
        "completed"
    )
    final = store.get(wid)
    assert final["status"] == "idle" and final["updatedAt"] > ws["updatedAt"]
    assert Counter(new_event_types(store, before)) == {
        "webset.item.created": 5,
        "webset.search.completed": 1,
        "webset.item.enriched": 21,
        "webset.idle": 1,
    }
    assert store.events.all()[0]["data"] == final
    assert all(i["enrichments"][0]["status"] == "completed" for i in items_of(store, wid))
    before = len(store.events)
    assert store.step() == {
        "items_created": [],
        "items_enriched": [],
        "searches": [],
        "enrichments": [],
    }
    assert len(store.events) == before and store.get(wid) == final


def test_step_zero_items_starts_searches_and_new_items_reopen_enrichments(
    store: WebsetStore,
) -> None:
    ws = store.create({"enrichments": [{"description": "Stage", "format": "number"}]})
    wid = ws["id"]
    assert ws["status"] == "idle"
    store.step()
    assert store.get(wid)["enrichments"][0]["status"] == "completed"  # no items to enrich
    search = store.create_search(wid, {"query": "q", "count": 3, "entity": {"type": "custom"}})
    assert store.get(wid)["status"] == "running"
    touched = store.step(items=0)
    assert touched["searches"] == [search["id"]] and touched["items_created"] == []
    assert store.get_search(wid, search["id"])["status"] == "running"
    assert store.step(items=0)["searches"] == []  # already running, nothing found: no change
    touched = store.step(items=2, enrich=1)
    enrichment = store.get(wid)["enrichments"][0]
    assert enrichment["status"] == "pending" and touched["enrichments"] == [enrichment["id"]]
    assert [i["properties"]["type"] for i in items_of(store, wid)] == ["custom", "custom"]
    store.step(webset=ws["id"], items=1)
    assert store.get(wid)["status"] == "idle"
    assert store.get(wid)["enrichments"][0]["status"] == "completed"
    assert store.item_count() == 3


def test_step_one_webset_only_and_cancel_settles_on_next_step(store: WebsetStore) -> None:
    a = store.create({"externalId": "a", "search": {"query": "q", "count": 50}})
    b = store.create({"search": {"query": "q", "count": 50}})
    assert len(store.step(webset="a", items=3)["items_created"]) == 3
    assert store.item_ids(b["id"]) == []
    store.cancel_search(a["id"], a["searches"][0]["id"])
    assert store.get(a["id"])["status"] == "running"
    touched = store.step(webset="a")
    assert touched["items_created"] == [] and store.get(a["id"])["status"] == "idle"
    with pytest.raises(KeyError):
        store.step(webset="nope")


def test_step_route(emu: Emulator, http: requests.Session) -> None:
    ws = http.post(emu.base_url + WEBSETS, json={"externalId": "x", "search": SEARCH}).json()
    r = requests.post(emu.base_url + STEP, json={"webset": "x", "items": 4, "enrich": 0})
    assert r.status_code == 200, r.text  # no API key, like the other control routes
    body = r.json()
    assert list(body) == ["items_created", "items_enriched", "searches", "enrichments"]
    assert len(body["items_created"]) == 4 and body["searches"] == [ws["searches"][0]["id"]]
    assert requests.post(emu.base_url + STEP).json()["items_created"] != []  # default: all
    for bad in ({"items": -1}, {"items": "3"}, {"enrich": True}, {"webset": 5}, {"x": 1}):
        r = requests.post(emu.base_url + STEP, json=bad)
        assert r.status_code == 400 and r.json()["statusCode"] == 400, bad
    r = requests.post(emu.base_url + STEP, json={"webset": "nope"})
    assert r.status_code == 404 and r.json()["message"] == "Webset not found"
    assert requests.get(emu.base_url + STEP).status_code == 404


# ----------------------------------------------------------------------------- official SDK


def test_exa_py_parses_searches_enrichments_items_and_events(emu: Emulator) -> None:
    exa_py = pytest.importorskip("exa_py")
    types_mod = pytest.importorskip("exa_py.websets.types")
    exa = exa_py.Exa(api_key=KEY, base_url=emu.base_url)
    websets = exa.websets
    ws = websets.create({"title": "SDK", "externalId": "sdk"})
    search = websets.searches.create(ws.id, SEARCH)
    assert search.id.startswith("wsearch_") and search.status == "created"
    assert search.behavior == "append" and search.progress.found == 0
    enrichment = websets.enrichments.create(ws.id, ENRICHMENT)
    assert enrichment.status == "pending" and enrichment.format == "options"
    other = websets.enrichments.create(ws.id, {"description": "Phone", "format": "phone"})
    for _ in range(2):
        emu.websets.step(items=10)
    got = websets.searches.get(ws.id, search.id)
    assert got.status == "running" and got.progress.found == 20
    assert got.updated_at > search.updated_at and got.criteria[0].success_rate >= 0
    items = list(websets.items.list_all(ws.id, limit=7))
    assert [i.id for i in items] == emu.websets.item_ids(ws.id) and len(items) == 20
    for item in items:
        assert item.source_id == search.id and item.properties.type == "person"
        assert {r.enrichment_id for r in item.enrichments} == {enrichment.id, other.id}
    one = websets.items.get("sdk", items[0].id)
    assert one.id == items[0].id and one.webset_id == ws.id
    assert all(r.result is None or r.result for r in one.enrichments)
    assert not hasattr(type(one.enrichments[0]), "status")  # exa-py models no result status
    assert websets.enrichments.get(ws.id, enrichment.id).status == "completed"
    canceled_search = websets.searches.cancel(ws.id, search.id)
    assert canceled_search.status == "canceled" and canceled_search.canceled_at is not None
    assert canceled_search.canceled_reason == "webset_canceled"
    canceled = websets.enrichments.cancel(ws.id, enrichment.id)
    assert canceled.status == "canceled"
    deleted = websets.enrichments.delete(ws.id, other.id)
    assert deleted.id == other.id
    with pytest.raises(ValueError, match="404"):
        websets.enrichments.get(ws.id, other.id)
    emu.websets.step()
    assert websets.get("sdk").status == "idle"
    classes = {
        "webset.created": "WebsetCreatedEvent",
        "webset.idle": "WebsetIdleEvent",
        "webset.search.created": "WebsetSearchCreatedEvent",
        "webset.search.updated": "WebsetSearchUpdatedEvent",
        "webset.search.canceled": "WebsetSearchCanceledEvent",
        "webset.search.completed": "WebsetSearchCompletedEvent",
        "webset.item.created": "WebsetItemCreatedEvent",
        "webset.item.enriched": "WebsetItemEnrichedEvent",
    }
    listed = list(websets.events.list_all(limit=50))
    assert [e.id for e in listed] == [e["id"] for e in emu.events.all()]
    mine = {
        "webset.search.created",
        "webset.search.updated",
        "webset.search.canceled",
        "webset.item.created",
        "webset.item.enriched",
        "webset.idle",
    }
    assert mine <= {e.type for e in listed}
    for event in listed:
        assert isinstance(event, getattr(types_mod, classes[event.type])), event.type
    page = websets.events.list(limit=3, types=["webset.search.updated"])
    assert [e.type for e in page.data] == ["webset.search.updated"] * 2
