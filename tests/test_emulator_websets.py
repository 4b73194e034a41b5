"""Tests of the emulator's Websets and Items routes (exa_source.emulator.websets)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from conftest import page_all

from exa_source.emulator import Emulator, iso_ms
from exa_source.emulator.websets import WebsetStore

KEY = "test-key"
WEBSETS = "/websets/v0/websets"
ITEM_ID_RE = re.compile(r"^witem_[0-9a-hjkmnp-tv-z]{26}$")
WEBSET_KEYS = [
    "id",
    "object",
    "status",
    "externalId",
    "title",
    "dashboardUrl",
    "searches",
    "imports",
    "enrichments",
    "monitors",
    "excludes",
    "metadata",
    "createdAt",
    "updatedAt",
]
ITEM_KEYS = [
    "id",
    "object",
    "source",
    "sourceId",
    "websetId",
    "properties",
    "evaluations",
    "enrichments",
    "createdAt",
    "updatedAt",
]
CREATE = {
    "title": "Fintech CTOs",
    "externalId": "crm-42",
    "search": {
        "query": "CTOs of fintech startups in Europe",
        "count": 25,
        "entity": {"type": "person"},
        "criteria": [{"description": "Is a CTO"}],
    },
    "enrichments": [{"description": "Work email", "format": "email"}],
    "metadata": {"team": "growth"},
}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api_key=KEY, websets=7, items_per_webset=45, seed=3) as e:
        yield e


# ----------------------------------------------------------------------------- seeding


def test_seed_is_deterministic_and_complete() -> None:
    a, b, c = WebsetStore(seed=1), WebsetStore(seed=1), WebsetStore(seed=2)
    for store in (a, b, c):
        store.seed(5, 30)
    assert a.ids() == b.ids() != c.ids()
    assert [a.get(i) for i in a.ids()] == [b.get(i) for i in b.ids()]
    assert len(a) == 5 and a.item_count() == 150
    types = set()
    for wid in a.ids():
        ws = a.get(wid)
        assert list(ws) == WEBSET_KEYS and ws["status"] == "idle"
        (search,) = ws["searches"]
        (enrichment,) = ws["enrichments"]
        assert search["status"] == "completed" and search["progress"]["found"] == 30
        assert enrichment["status"] == "completed"
        page = a.items_page(wid, None, 100)
        assert len(page.items) == 30 and not page.has_more
        for raw in page.items:
            item = orjson.loads(raw)
            assert list(item) == ITEM_KEYS
            assert item["websetId"] == wid and item["sourceId"] == search["id"]
            assert item["properties"]["type"] == search["entity"]["type"]
            assert item["createdAt"] >= ws["createdAt"] and item["updatedAt"] > item["createdAt"]
            (result,) = item["enrichments"]
            assert result["enrichmentId"] == enrichment["id"]
            assert result["format"] == enrichment["format"]
            assert len(item["evaluations"]) == 2
            assert all(e["references"] for e in item["evaluations"])
            types.add(item["properties"]["type"])
    assert {"company", "person", "article", "research_paper"} <= types


def test_second_seed_keeps_ids_in_created_order() -> None:
    store = WebsetStore(seed=4)
    store.seed(3, 2)
    store.seed(3, 2)  # goes back in time: same 365-day window
    websets = [store.get(i) for i in store.ids()]
    assert len(websets) == 6
    created = [w["createdAt"] for w in websets]
    assert created == sorted(created, reverse=True) and len(set(created)) == 6
    for ws in websets:
        ulid_ms = decode_time(ws["id"])
        assert iso_ms(ulid_ms) == ws["createdAt"]
        for raw in store.items_page(ws["id"], None, 100).items:
            item = orjson.loads(raw)
            assert iso_ms(decode_time(item["id"])) == item["createdAt"]


def decode_time(id_: str) -> int:
    """The 48-bit ms time part of ``<prefix>_<ulid>``."""
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    value = 0
    for ch in id_.split("_", 1)[1][:10]:
        value = value * 32 + alphabet.index(ch)
    return value


def test_seed_50_by_2000_is_fast() -> None:
    started = time.perf_counter()
    store = WebsetStore(seed=0)
    store.seed(50, 2000)
    elapsed = time.perf_counter() - started
    assert store.item_count() == 100_000
    assert elapsed < 20, elapsed  # ~1.45 s with its 200,200 events on a quiet 2-core machine


# ----------------------------------------------------------------------------- websets


def test_create_get_by_id_and_external_id(emu: Emulator, http: requests.Session) -> None:
    r = http.post(emu.base_url + WEBSETS, json=CREATE)
    assert r.status_code == 201, r.text
    ws = r.json()
    assert list(ws) == WEBSET_KEYS
    assert ws["id"].startswith("webset_") and ws["externalId"] == "crm-42"
    assert ws["status"] == "running" and ws["metadata"] == {"team": "growth"}
    assert ws["dashboardUrl"].endswith(ws["id"])
    (search,) = ws["searches"]
    assert search["id"].startswith("wsearch_") and search["websetId"] == ws["id"]
    assert search["status"] == "created" and search["entity"] == {"type": "person"}
    assert search["criteria"] == [{"description": "Is a CTO", "successRate": 0}]
    (enrichment,) = ws["enrichments"]
    assert enrichment["id"].startswith("wenrich_") and enrichment["format"] == "email"
    assert ws["createdAt"] == ws["updatedAt"]
    for ref in (ws["id"], "crm-42"):
        got = http.get(f"{emu.base_url}{WEBSETS}/{ref}")
        assert got.status_code == 200 and got.json() == ws
    expanded = http.get(f"{emu.base_url}{WEBSETS}/crm-42", params={"expand": "items"}).json()
    assert expanded["items"] == [] and {k: v for k, v in expanded.items() if k != "items"} == ws
    # newest first: the created webset heads the list
    assert http.get(emu.base_url + WEBSETS).json()["data"][0]["id"] == ws["id"]


def test_create_without_search_is_idle(emu: Emulator, http: requests.Session) -> None:
    ws = http.post(emu.base_url + WEBSETS, json={}).json()
    assert ws["status"] == "idle" and ws["searches"] == [] and ws["enrichments"] == []
    assert ws["externalId"] is None and ws["title"] is None and ws["metadata"] == {}


def test_duplicate_external_id_is_409(emu: Emulator, http: requests.Session) -> None:
    assert http.post(emu.base_url + WEBSETS, json={"externalId": "x"}).status_code == 201
    r = http.post(emu.base_url + WEBSETS, json={"externalId": "x"})
    assert r.status_code == 409
    body = r.json()
    assert body["statusCode"] == 409 and body["error"] == "Conflict"
    assert body["path"] == "/v0/websets"
    assert len(emu.websets) == 8


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"bogus": 1}, "property bogus should not exist"),
        ({"search": {"query": ""}}, "search.query"),
        ({"search": {"query": "q", "count": 0}}, "search.count"),
        ({"search": {"query": "q", "entity": {"type": "planet"}}}, "search.entity.type"),
        ({"enrichments": [{"description": "d", "format": "xml"}]}, "enrichments.0.format"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"title": 5}, "title must be a string"),
        ([], "request body must be an object"),
    ],
)
def test_create_validation_400(
    emu: Emulator, http: requests.Session, body: Any, fragment: str
) -> None:
    r = http.post(emu.base_url + WEBSETS, json=body)
    assert r.status_code == 400
    err = r.json()
    assert err["statusCode"] == 400 and err["error"] == "Bad Request"
    assert any(fragment in m for m in err["message"]), err
    assert len(emu.websets) == 7


def test_list_pagination_newest_first(emu: Emulator, http: requests.Session) -> None:
    everything = page_all(http, emu.base_url + WEBSETS, limit=2)
    ids = [w["id"] for w in everything]
    assert ids == emu.websets.ids() and len(ids) == 7
    created = [w["createdAt"] for w in everything]
    assert created == sorted(created, reverse=True)
    assert page_all(http, emu.base_url + WEBSETS, limit=100) == everything
    first = http.get(emu.base_url + WEBSETS, params={"limit": 3}).json()
    assert first["hasMore"] and first["nextCursor"] == ids[2].removeprefix("webset_")
    exact = http.get(emu.base_url + WEBSETS, params={"limit": 7}).json()
    assert len(exact["data"]) == 7 and not exact["hasMore"] and exact["nextCursor"] is None
    assert len(http.get(emu.base_url + WEBSETS).json()["data"]) == 7  # default 25


def test_list_cursor_survives_deletion(emu: Emulator, http: requests.Session) -> None:
    first = http.get(emu.base_url + WEBSETS, params={"limit": 3}).json()
    last = first["data"][-1]["id"]
    assert http.delete(f"{emu.base_url}{WEBSETS}/{last}").status_code == 200
    rest = http.get(emu.base_url + WEBSETS, params={"limit": 100, "cursor": first["nextCursor"]})
    assert [w["id"] for w in rest.json()["data"]] == emu.websets.ids()[2:]


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=abc", "limit=-1", "cursor=", "cursor=not-a-ulid"],
)
def test_list_bad_query_400(emu: Emulator, http: requests.Session, query: str) -> None:
    for url in (WEBSETS, f"{WEBSETS}/{emu.websets.ids()[0]}/items"):
        r = http.get(f"{emu.base_url}{url}?{query}")
        assert r.status_code == 400, (url, query)
        assert r.json()["statusCode"] == 400


def test_update_is_post_and_replaces_metadata(emu: Emulator, http: requests.Session) -> None:
    wid = emu.websets.ids()[0]
    before = emu.websets.get(wid)
    r = http.post(f"{emu.base_url}{WEBSETS}/{wid}", json={"title": "T", "metadata": {"a": "b"}})
    assert r.status_code == 200, r.text
    ws = r.json()
    assert ws["title"] == "T" and ws["metadata"] == {"a": "b"}
    assert ws["updatedAt"] > before["updatedAt"] and ws["createdAt"] == before["createdAt"]
    assert emu.websets.get(wid) == ws
    assert http.post(f"{emu.base_url}{WEBSETS}/{wid}", json={"status": "x"}).status_code == 400
    assert http.patch(f"{emu.base_url}{WEBSETS}/{wid}", json={"title": "T"}).status_code == 404


def test_delete_then_404(emu: Emulator, http: requests.Session) -> None:
    wid = emu.websets.ids()[-1]
    ext = emu.websets.get(wid)["externalId"]
    r = http.delete(f"{emu.base_url}{WEBSETS}/{ext}")
    assert r.status_code == 200 and r.json()["id"] == wid
    for ref in (wid, ext):
        for method in ("GET", "DELETE"):
            r = http.request(method, f"{emu.base_url}{WEBSETS}/{ref}")
            assert r.status_code == 404
            body = r.json()
            assert body["message"] == "Webset not found"
            assert body["path"] == f"/v0/websets/{ref}"
        assert http.get(f"{emu.base_url}{WEBSETS}/{ref}/items").status_code == 404
    assert len(emu.websets) == 6 and wid not in emu.websets.ids()
    # the externalId is free again
    assert http.post(emu.base_url + WEBSETS, json={"externalId": ext}).status_code == 201


def test_unknown_ids_404(emu: Emulator, http: requests.Session) -> None:
    wid = emu.websets.ids()[0]
    for method, path in [
        ("GET", f"{WEBSETS}/webset_nope"),
        ("POST", f"{WEBSETS}/webset_nope"),
        ("DELETE", f"{WEBSETS}/webset_nope"),
        ("GET", f"{WEBSETS}/webset_nope/items"),
        ("GET", f"{WEBSETS}/{wid}/items/witem_nope"),
        ("DELETE", f"{WEBSETS}/{wid}/items/witem_nope"),
    ]:
        r = http.request(method, emu.base_url + path, json={} if method == "POST" else None)
        assert r.status_code == 404, (method, path)
        assert r.json()["error"] == "Not Found"


def test_auth_like_imports(emu: Emulator) -> None:
    url = emu.base_url + WEBSETS
    assert requests.get(url).status_code == 401
    bad = requests.get(url, headers={"x-api-key": "wrong"})
    assert bad.status_code == 400 and bad.json()["error"] == "x-api-key header is invalid"
    assert requests.get(url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    items = f"{url}/{emu.websets.ids()[0]}/items"
    assert requests.get(items).status_code == 401
    assert requests.post(url, json={}).status_code == 401
    assert len(emu.websets) == 7


# ----------------------------------------------------------------------------- items


def test_items_pagination_oldest_first(emu: Emulator, http: requests.Session) -> None:
    wid = emu.websets.ids()[2]
    url = f"{emu.base_url}{WEBSETS}/{wid}/items"
    default = http.get(url).json()
    assert len(default["data"]) == 20 and default["hasMore"]  # default limit 20
    for limit in (1, 7, 45, 100):
        items = page_all(http, url, limit=limit)
        assert [i["id"] for i in items] == emu.websets.item_ids(wid)
    assert len(items) == 45 and all(ITEM_ID_RE.match(i["id"]) for i in items)
    created = [i["createdAt"] for i in items]
    assert created == sorted(created)
    exact = http.get(url, params={"limit": 45}).json()
    assert not exact["hasMore"] and exact["nextCursor"] is None
    # by externalId too
    ext = emu.websets.get(wid)["externalId"]
    by_ext = page_all(http, f"{emu.base_url}{WEBSETS}/{ext}/items", limit=100)
    assert by_ext == items


def test_items_source_id_filter(emu: Emulator, http: requests.Session) -> None:
    wid = emu.websets.ids()[1]
    url = f"{emu.base_url}{WEBSETS}/{wid}/items"
    sid = emu.websets.get(wid)["searches"][0]["id"]
    assert page_all(http, url, limit=10, sourceId=sid) == page_all(http, url, limit=10)
    none = http.get(url, params={"sourceId": "wsearch_other"}).json()
    assert none == {"data": [], "hasMore": False, "nextCursor": None}


def test_item_get_delete_and_expand(emu: Emulator, http: requests.Session) -> None:
    wid = emu.websets.ids()[0]
    ext = emu.websets.get(wid)["externalId"]
    ids = emu.websets.item_ids(wid)
    url = f"{emu.base_url}{WEBSETS}/{wid}/items/{ids[3]}"
    item = http.get(url).json()
    assert list(item) == ITEM_KEYS and item["id"] == ids[3]
    assert http.get(f"{emu.base_url}{WEBSETS}/{ext}/items/{ids[3]}").json() == item
    other = emu.websets.ids()[1]
    assert http.get(f"{emu.base_url}{WEBSETS}/{other}/items/{ids[3]}").status_code == 404
    expanded = http.get(f"{emu.base_url}{WEBSETS}/{wid}", params={"expand": "items"}).json()
    assert [i["id"] for i in expanded["items"]] == ids
    assert http.get(f"{emu.base_url}{WEBSETS}/{wid}?expand=nope").status_code == 400
    # a cursor naming a deleted item stays valid
    page = http.get(f"{emu.base_url}{WEBSETS}/{wid}/items", params={"limit": 4}).json()
    r = http.delete(url)
    assert r.status_code == 200 and r.json() == item
    assert http.get(url).status_code == 404 and http.delete(url).status_code == 404
    rest = http.get(
        f"{emu.base_url}{WEBSETS}/{wid}/items", params={"cursor": page["nextCursor"]}
    ).json()
    assert rest["data"][0]["id"] == ids[4]
    assert emu.websets.item_ids(wid) == ids[:3] + ids[4:]


def test_stats_name_the_routes(emu: Emulator, http: requests.Session) -> None:
    wid = emu.websets.ids()[0]
    http.get(emu.base_url + WEBSETS)
    http.get(f"{emu.base_url}{WEBSETS}/{wid}/items")
    requests_ = emu.stats.as_dict()["requests"]
    assert requests_["GET /websets/v0/websets"] == 1
    assert requests_["GET /websets/v0/websets/{id}/items"] == 1
    assert emu.stats.as_dict()["list_pages"] == 0  # import pages only


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "exa_source.emulator"],
        [str(Path(sys.executable).parent / "exa-source"), "emulator"],
    ],
    ids=["python-m", "exa-source"],
)
def test_main_seeds_websets(command: list[str]) -> None:
    proc = subprocess.Popen(
        [
            *command,
            "--websets",
            "3",
            "--items-per-webset",
            "5",
            "--seed",
            "9",
            "--api-key",
            KEY,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        body = requests.get(base + WEBSETS, headers={"x-api-key": KEY}, timeout=10).json()
        assert len(body["data"]) == 3
        store = WebsetStore(seed=9)
        store.seed(3, 5)
        assert [w["id"] for w in body["data"]] == store.ids()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


# ----------------------------------------------------------------------------- official SDK


def test_exa_py_accepts_websets_and_items(emu: Emulator) -> None:
    exa_py = pytest.importorskip("exa_py")
    exa = exa_py.Exa(api_key=KEY, base_url=emu.base_url)
    websets = exa.websets
    created = websets.create(CREATE)
    assert created.id.startswith("webset_") and created.external_id == "crm-42"
    assert created.searches[0].query == CREATE["search"]["query"]  # type: ignore[index]
    fmt = created.enrichments[0].format
    assert getattr(fmt, "value", fmt) == "email"  # enum or plain str (open union)
    assert websets.get("crm-42").id == created.id
    everything = list(websets.list_all(limit=3))
    assert [w.id for w in everything] == emu.websets.ids() and len(everything) == 8
    updated = websets.update(created.id, {"title": "Renamed", "metadata": {"k": "v"}})
    assert updated.title == "Renamed" and updated.metadata == {"k": "v"}
    seeded = emu.websets.ids()[-1]
    expanded = websets.get(seeded, expand=["items"])
    assert len(expanded.items or []) == 45
    items = list(websets.items.list_all(seeded, limit=10))
    assert [i.id for i in items] == emu.websets.item_ids(seeded)
    types = set()
    for wid in emu.websets.ids()[1:]:
        for item in websets.items.list_all(wid, limit=100):
            types.add(item.properties.type)
            assert item.evaluations and item.enrichments[0].enrichment_id
    assert types == {"company", "person", "article", "research_paper", "custom"}
    sid = emu.websets.get(seeded)["searches"][0]["id"]
    assert len(list(websets.items.list_all(seeded, source_id=sid))) == 45
    one = websets.items.get(seeded, items[0].id)
    assert one.id == items[0].id and one.webset_id == seeded
    gone = websets.delete(created.id)
    assert gone.id == created.id
    with pytest.raises(ValueError, match="404"):
        websets.get(created.id)
