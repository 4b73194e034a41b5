"""Tests of the emulator's event log (``GET /websets/v0/events``, exa_source.emulator.events)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
import requests
from conftest import page_all

from exa_source.emulator import RETENTION_MS, SEED_ANCHOR, Emulator, iso_ms
from exa_source.emulator.websets import WebsetStore

KEY = "test-key"
EVENTS = "/websets/v0/events"
WEBSETS = "/websets/v0/websets"
IMPORTS = "/websets/v0/imports"
EVENT_KEYS = ["id", "object", "type", "data", "createdAt"]
SEEDED_TYPES = {
    "webset.created",
    "webset.search.created",
    "webset.item.created",
    "webset.item.enriched",
    "webset.search.completed",
    "webset.idle",
}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """Seven seeded websets x 20 items, the clock frozen at the seed anchor.

    Only the newest webset is recent enough (60 days) for its events to be listed.
    """
    with Emulator(api_key=KEY, websets=7, items_per_webset=20, seed=5) as e:
        e.store.clock.set(SEED_ANCHOR)
        e.store.clock.freeze()
        yield e


@pytest.fixture
def empty() -> Iterator[Emulator]:
    """No seeded data, the clock frozen at the seed anchor."""
    with Emulator(api_key=KEY) as e:
        e.store.clock.set(SEED_ANCHOR)
        e.store.clock.freeze()
        yield e


def list_all(http: requests.Session, base: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every event page from ``base``; the cursor is set exactly when ``hasMore`` is."""
    return page_all(http, base + EVENTS, limit, strict_cursor=True, **params)


def make_websets(emu: Emulator, n: int) -> list[dict[str, Any]]:
    return [emu.websets.create({"title": f"w{i}"}) for i in range(n)]


# ----------------------------------------------------------------------------- shape


def test_event_shape_and_get(emu: Emulator, http: requests.Session) -> None:
    body = http.get(emu.base_url + EVENTS).json()
    assert len(body["data"]) == 25 and body["hasMore"]  # default limit
    for event in body["data"]:
        assert list(event) == EVENT_KEYS and event["object"] == "event"
        assert event["id"].startswith("event_")
        one = http.get(f"{emu.base_url}{EVENTS}/{event['id']}")
        assert one.status_code == 200 and one.json() == event
    created = [e["createdAt"] for e in body["data"]]
    assert created == sorted(created, reverse=True)  # newest first
    ids = [e["id"] for e in body["data"]]
    assert ids == sorted(ids, reverse=True)


def test_unknown_event_404(emu: Emulator, http: requests.Session) -> None:
    r = http.get(f"{emu.base_url}{EVENTS}/event_nope")
    assert r.status_code == 404
    assert r.json()["message"] == "Event not found"
    assert r.json()["path"] == "/v0/events/event_nope"
    assert http.post(emu.base_url + EVENTS, json={}).status_code == 404


def test_auth_like_other_routes(emu: Emulator) -> None:
    url = emu.base_url + EVENTS
    event_id = emu.events.all()[0]["id"]
    for target in (url, f"{url}/{event_id}"):
        assert requests.get(target).status_code == 401
        bad = requests.get(target, headers={"x-api-key": "wrong"})
        assert bad.status_code == 400 and bad.json()["error"] == "x-api-key header is invalid"
        assert requests.get(target, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_stats_name_the_routes(emu: Emulator, http: requests.Session) -> None:
    event_id = emu.events.all()[0]["id"]
    http.get(emu.base_url + EVENTS)
    http.get(f"{emu.base_url}{EVENTS}/{event_id}")
    counted = emu.stats.as_dict()["requests"]
    assert counted["GET /websets/v0/events"] == 1
    assert counted["GET /websets/v0/events/{id}"] == 1


# ----------------------------------------------------------------------------- pagination


@pytest.mark.parametrize("limit", [1, 7, 25, 200])
def test_pagination_walks_everything_once(
    emu: Emulator, http: requests.Session, limit: int
) -> None:
    events = list_all(http, emu.base_url, limit)
    assert [e["id"] for e in events] == [e["id"] for e in emu.events.all()]
    assert len({e["id"] for e in events}) == len(events) > 30


def test_exact_fit_last_page(empty: Emulator, http: requests.Session) -> None:
    make_websets(empty, 6)
    first = http.get(empty.base_url + EVENTS, params={"limit": 3}).json()
    assert len(first["data"]) == 3 and first["hasMore"] and first["nextCursor"]
    assert first["nextCursor"] == first["data"][-1]["id"].removeprefix("event_")
    last = http.get(
        empty.base_url + EVENTS, params={"limit": 3, "cursor": first["nextCursor"]}
    ).json()
    assert len(last["data"]) == 3
    assert last["hasMore"] is False and last["nextCursor"] is None
    whole = http.get(empty.base_url + EVENTS, params={"limit": 6}).json()
    assert len(whole["data"]) == 6 and whole["hasMore"] is False
    titles = [e["data"]["title"] for e in whole["data"]]
    assert titles == [f"w{i}" for i in reversed(range(6))]


def test_cursor_sees_only_older_events(empty: Emulator, http: requests.Session) -> None:
    make_websets(empty, 4)
    first = http.get(empty.base_url + EVENTS, params={"limit": 2}).json()
    make_websets(empty, 2)  # newer events do not shift the next page
    rest = list_all(http, empty.base_url, 2, cursor=first["nextCursor"])
    assert [e["data"]["title"] for e in rest] == ["w1", "w0"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=x",
        "cursor=",
        "cursor=nope",
        "types=webset.nope",
        "types=",
        "createdAfter=yesterday",
        "createdBefore=2026-13-01T00:00:00Z",
        "createdAfter=2026-01-01T00:00:00Z&createdAfter=2026-01-02T00:00:00Z",
    ],
)
def test_bad_query_400(emu: Emulator, http: requests.Session, query: str) -> None:
    r = http.get(f"{emu.base_url}{EVENTS}?{query}")
    assert r.status_code == 400, query
    assert r.json()["statusCode"] == 400


# ----------------------------------------------------------------------------- filters


def test_types_filter_one_and_several(emu: Emulator, http: requests.Session) -> None:
    everything = emu.events.all()
    counts = Counter(e["type"] for e in everything)
    assert set(counts) == SEEDED_TYPES
    one = list_all(http, emu.base_url, 4, types="webset.created")
    assert len(one) == counts["webset.created"] and {e["type"] for e in one} == {"webset.created"}
    wanted = ["webset.idle", "webset.item.enriched"]
    several = list_all(http, emu.base_url, 5, types=wanted)  # types=a&types=b
    expected = [e["id"] for e in everything if e["type"] in wanted]
    assert [e["id"] for e in several] == expected
    brackets = list_all(http, emu.base_url, 5, **{"types[]": wanted})
    assert [e["id"] for e in brackets] == expected
    none = http.get(emu.base_url + EVENTS, params={"types": "monitor.created"}).json()
    assert none == {"data": [], "hasMore": False, "nextCursor": None}


def test_created_after_and_before_are_inclusive(emu: Emulator, http: requests.Session) -> None:
    everything = emu.events.all()
    stamps = sorted({e["createdAt"] for e in everything})
    low, high = stamps[3], stamps[-4]
    window = list_all(http, emu.base_url, 9, createdAfter=low, createdBefore=high)
    expected = [e["id"] for e in everything if low <= e["createdAt"] <= high]
    assert [e["id"] for e in window] == expected
    assert window[-1]["createdAt"] == low and window[0]["createdAt"] == high
    after = list_all(http, emu.base_url, 50, createdAfter=stamps[-1])
    assert after and {e["createdAt"] for e in after} == {stamps[-1]}
    # offsets are accepted and read as UTC
    shifted = (SEED_ANCHOR + timedelta(hours=2)).isoformat().replace("+00:00", "+02:00")
    assert list_all(http, emu.base_url, 200, createdBefore=shifted) == list_all(
        http, emu.base_url, 200
    )
    typed = list_all(http, emu.base_url, 3, createdAfter=low, types="webset.idle")
    assert [e["id"] for e in typed] == [
        e["id"] for e in everything if e["createdAt"] >= low and e["type"] == "webset.idle"
    ]


def test_retention_sixty_days(empty: Emulator, http: requests.Session) -> None:
    (webset,) = make_websets(empty, 1)
    (event,) = empty.events.all()
    empty.store.clock.advance(RETENTION_MS / 1000 - 0.001)
    assert http.get(f"{empty.base_url}{EVENTS}/{event['id']}").status_code == 200
    assert len(http.get(empty.base_url + EVENTS).json()["data"]) == 1
    empty.store.clock.advance(0.002)  # now more than 60 days old
    assert http.get(f"{empty.base_url}{EVENTS}/{event['id']}").status_code == 404
    assert http.get(empty.base_url + EVENTS).json()["data"] == []
    old = http.get(empty.base_url + EVENTS, params={"createdAfter": "2000-01-01T00:00:00Z"})
    assert old.json()["data"] == []
    assert http.get(f"{empty.base_url}{WEBSETS}/{webset['id']}").status_code == 200


def test_seeded_events_older_than_retention_are_gone() -> None:
    store = WebsetStore(seed=2)
    store.clock.set(SEED_ANCHOR)
    store.clock.freeze()
    store.seed(7, 3)
    listed = store.events.all()
    assert 0 < len(listed) < len(store.events) == 7 * (4 + 2 * 3)
    cutoff = iso_ms(store.clock.now_ms() - RETENTION_MS)
    assert min(e["createdAt"] for e in listed) >= cutoff


# ----------------------------------------------------------------------------- emitted


def test_webset_create_and_delete_emit(empty: Emulator, http: requests.Session) -> None:
    body = {"title": "T", "search": {"query": "fintech CTOs", "count": 5}}
    created = http.post(empty.base_url + WEBSETS, json=body).json()
    events = list_all(http, empty.base_url, 10)
    assert [e["type"] for e in events] == ["webset.search.created", "webset.created"]
    search_event, webset_event = events
    assert webset_event["data"] == created
    assert webset_event["createdAt"] == created["createdAt"]
    assert search_event["data"] == created["searches"][0]
    assert search_event["data"]["status"] == "created"
    http.post(f"{empty.base_url}{WEBSETS}/{created['id']}", json={"title": "U"})  # no event
    gone = http.delete(f"{empty.base_url}{WEBSETS}/{created['id']}").json()
    events = list_all(http, empty.base_url, 10)
    assert [e["type"] for e in events] == [
        "webset.deleted",
        "webset.search.created",
        "webset.created",
    ]
    assert events[0]["data"] == gone and events[0]["data"]["title"] == "U"
    assert events[0]["createdAt"] > created["createdAt"]


def test_import_create_and_completion_emit(empty: Emulator, http: requests.Session) -> None:
    spec = {"format": "csv", "entity": {"type": "company"}, "size": 30, "count": 2}
    good = http.post(empty.base_url + IMPORTS, json=spec).json()
    events = list_all(http, empty.base_url, 10)
    assert [e["type"] for e in events] == ["import.created"]
    assert events[0]["data"] == empty.store.get(good["id"])
    assert events[0]["data"]["status"] == "pending" and "uploadUrl" not in events[0]["data"]
    csv = b"name,url\nAcme,https://acme.example\nBeta,https://beta.example\n"
    assert requests.put(good["uploadUrl"], data=csv).status_code == 200
    bad = http.post(empty.base_url + IMPORTS, json=spec).json()
    assert requests.put(bad["uploadUrl"], data=b"").status_code == 200  # fails: no event
    assert empty.store.get(bad["id"])["status"] == "failed"  # type: ignore[index]
    events = list_all(http, empty.base_url, 10)
    assert [e["type"] for e in events] == ["import.created", "import.completed", "import.created"]
    completed = events[1]["data"]
    assert completed == empty.store.get(good["id"]) and completed["status"] == "completed"
    assert events[1]["createdAt"] == completed["updatedAt"]
    done = empty.store.advance(empty.store.create()["id"], "completed")
    assert empty.events.all()[0]["data"] == done


def test_seeded_webset_events_tell_its_story() -> None:
    store = WebsetStore(seed=1)
    store.clock.freeze()
    store.seed(2, 4)
    wid = store.ids()[0]  # the newest: its events are within the retention of _everything
    webset = store.get(wid)
    raw = [e for e in _everything(store) if (e["data"].get("websetId") or e["data"]["id"]) == wid]
    story = [e["type"] for e in reversed(raw)]
    assert story[:2] == ["webset.created", "webset.search.created"]
    assert story[-2:] == ["webset.search.completed", "webset.idle"]
    assert Counter(story) == {
        "webset.created": 1,
        "webset.search.created": 1,
        "webset.item.created": 4,
        "webset.item.enriched": 4,
        "webset.search.completed": 1,
        "webset.idle": 1,
    }
    first = raw[-1]["data"]
    assert first["status"] == "running"
    assert first["searches"][0]["status"] == "created"
    assert raw[-1]["createdAt"] == webset["createdAt"]
    assert raw[0]["data"] == webset
    items = {e["data"]["id"]: e for e in raw if e["type"] == "webset.item.created"}
    assert sorted(items) == store.item_ids(wid)
    for item_id, event in items.items():
        assert event["createdAt"] == event["data"]["createdAt"]
        assert event["data"] == orjson_item(store, wid, item_id)


def _everything(store: WebsetStore) -> list[dict[str, Any]]:
    """All events of a store, ignoring retention (the clock put just after the newest)."""
    newest = max(e.created for e in store.events._events.values())
    store.events.clock.set(newest)
    return store.events.all()


def orjson_item(store: WebsetStore, webset: str, item_id: str) -> Any:
    return orjson.loads(store.get_item_bytes(webset, item_id))


def test_seed_emits_w_by_m_item_events() -> None:
    store = WebsetStore(seed=0)
    store.seed(5, 40)
    assert len(store.events) == 5 * (2 * 40 + 4)


# ----------------------------------------------------------------------------- official SDK


def test_exa_py_parses_every_emitted_event(emu: Emulator) -> None:
    exa_py = pytest.importorskip("exa_py")
    types_mod = pytest.importorskip("exa_py.websets.types")
    exa = exa_py.Exa(api_key=KEY, base_url=emu.base_url)
    created = exa.websets.create({"title": "T", "search": {"query": "fintech CTOs", "count": 3}})
    exa.websets.delete(created.id)
    spec = {"format": "csv", "entity": {"type": "company"}, "size": 30, "count": 2}
    imp = exa.websets.imports.create(spec, csv_data="name,url\nAcme,https://acme.example\n")
    assert getattr(imp.status, "value", imp.status) == "completed"  # enum or plain str

    expected = {
        *SEEDED_TYPES,
        "webset.deleted",
        "import.created",
        "import.completed",
    }
    truth = emu.events.all()
    assert {e["type"] for e in truth} == expected
    page = exa.websets.events.list(limit=5)
    assert len(page.data) == 5 and page.has_more and page.next_cursor
    listed = list(exa.websets.events.list_all(limit=7))
    assert [e.id for e in listed] == [e["id"] for e in truth]
    classes = {
        "webset.created": "WebsetCreatedEvent",
        "webset.deleted": "WebsetDeletedEvent",
        "webset.idle": "WebsetIdleEvent",
        "webset.search.created": "WebsetSearchCreatedEvent",
        "webset.search.completed": "WebsetSearchCompletedEvent",
        "webset.item.created": "WebsetItemCreatedEvent",
        "webset.item.enriched": "WebsetItemEnrichedEvent",
        "import.created": "ImportCreatedEvent",
        "import.completed": "ImportCompletedEvent",
    }
    seen = set()
    for event in listed:
        cls = getattr(types_mod, classes[event.type])
        assert isinstance(event, cls), (event.type, type(event))  # not UnknownEvent
        if event.type not in seen:
            seen.add(event.type)
            again = exa.websets.events.get(event.id)
            assert isinstance(again, cls) and again.id == event.id
            assert again.created_at == event.created_at
    assert seen == expected
    only = list(exa.websets.events.list_all(types=["import.created", "webset.deleted"]))
    assert sorted(e.type for e in only) == ["import.created", "webset.deleted"]
    since = exa.websets.events.list(limit=200, extra_query={"createdAfter": truth[2]["createdAt"]})
    assert [e.id for e in since.data] == [
        e["id"] for e in truth if e["createdAt"] >= truth[2]["createdAt"]
    ]
    with pytest.raises(ValueError, match="404"):
        exa.websets.events.get("event_nope")
