"""Tests of the Exa Websets Imports emulator (exa_source.emulator)."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest
import requests
from conftest import page_all

import exa_source.emulator.server as emulator_server
from exa_source.emulator import (
    Clock,
    Emulator,
    Fault,
    ImportNotFoundError,
    ImportStore,
    InvalidTransitionError,
    encode_ulid,
    parse_time,
)

KEY = "test-key"
LIST = "/websets/v0/imports"
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ID_RE = re.compile(r"^import_[0-9a-hjkmnp-tv-z]{26}$")
KEYS = [
    "id",
    "object",
    "status",
    "format",
    "entity",
    "title",
    "count",
    "metadata",
    "failedReason",
    "failedMessage",
    "failedAt",
    "createdAt",
    "updatedAt",
]
CSV = "url\nhttps://a.com\nhttps://b.com\n"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api_key=KEY, imports=237, seed=0, no_credits_keys={"broke"}) as e:
        yield e


def nest_400(r: requests.Response) -> list[str]:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["statusCode"] == 400
    assert body["error"] == "Bad Request"
    assert isinstance(body["message"], list) and body["message"]
    return list(body["message"])


def create_import(http: requests.Session, base: str, **over: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "size": len(CSV),
        "count": 2,
        "format": "csv",
        "entity": {"type": "company"},
        "title": "T",
    }
    params.update(over)
    r = http.post(base + LIST, json=params)
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


# ----------------------------------------------------------------------------- store basics


def test_ulid_encoding_matches_spec_example() -> None:
    value = int(
        "01ARZ3NDEKTSV4RRFFQ69G5FAV".translate(str.maketrans("JKMNPQRSTVWXYZ", "IJKLMNOPQRSTUV")),
        32,
    )
    assert encode_ulid(value) == "01arz3ndektsv4rrffq69g5fav"
    assert encode_ulid(0) == "0" * 26
    assert encode_ulid(2**128 - 1) == "7" + "z" * 25


def test_import_shape_and_id_time_part() -> None:
    store = ImportStore(seed=3, imports=50)
    for obj in store.snapshot():
        assert list(obj) == KEYS
        assert ID_RE.match(obj["id"])
        assert obj["object"] == "import"
        assert ISO_RE.match(obj["createdAt"]) and ISO_RE.match(obj["updatedAt"])
        assert obj["updatedAt"] >= obj["createdAt"]
        # 48-bit time part of the ULID == createdAt in ms
        ms = int(
            obj["id"][7:17].translate(
                str.maketrans(
                    "0123456789abcdefghjkmnpqrstvwxyz", "0123456789abcdefghijklmnopqrstuv"
                )
            ),
            32,
        )
        assert ms == int(parse_time(obj["createdAt"]).timestamp() * 1000 + 0.5)


def test_seeding_is_deterministic_and_varied() -> None:
    a = ImportStore(seed=0, imports=2000)
    b = ImportStore(seed=0)
    b.seed(2000)
    assert a.snapshot_json() == b.snapshot_json()
    assert a.page(None, 200).to_json() == b.page(None, 200).to_json()
    assert ImportStore(seed=1, imports=2000).snapshot_json() != a.snapshot_json()
    snap = a.snapshot()
    statuses = {o["status"] for o in snap}
    assert statuses == {"pending", "processing", "completed", "failed", "canceled"}
    assert sum(o["status"] == "completed" for o in snap) > len(snap) / 2
    assert {o["entity"]["type"] for o in snap} == {
        "company",
        "person",
        "article",
        "research_paper",
        "custom",
    }
    for o in snap:
        if o["entity"]["type"] == "custom":
            assert 2 <= len(o["entity"]["description"]) <= 200
        failed = o["status"] == "failed"
        assert (o["failedReason"] is not None) == failed
        assert (o["failedMessage"] is not None) == failed
        assert (o["failedAt"] is not None) == failed
        assert 0 <= len(o["metadata"]) <= 3
    assert any(o["metadata"] for o in snap) and any(not o["metadata"] for o in snap)
    assert {o["format"] for o in snap} == {"csv", "webset"}
    # newest first, all before the anchor
    created = [o["createdAt"] for o in snap]
    assert created == sorted(created, reverse=True)
    assert created[0] < "2026-10-01T00:00:00.000Z"


def test_updated_at_strictly_increases_with_frozen_clock() -> None:
    store = ImportStore(seed=0)
    store.clock.freeze()
    obj = store.create({"type": "person"})
    assert obj["status"] == "pending" and obj["createdAt"] == obj["updatedAt"]
    stamps = [obj["updatedAt"]]
    stamps.append(store.advance(obj["id"])["updatedAt"])  # processing
    stamps.append(store.update(obj["id"], title="x")["updatedAt"])
    done = store.advance(obj["id"])  # completed
    stamps.append(done["updatedAt"])
    assert done["status"] == "completed"
    assert stamps == sorted(set(stamps))
    with pytest.raises(InvalidTransitionError):
        store.advance(obj["id"])
    with pytest.raises(ImportNotFoundError):
        store.update("import_nope")


def test_advance_failed_canceled_and_touch() -> None:
    store = ImportStore(seed=0)
    a = store.create({"type": "company"})
    f = store.advance(a["id"], status="failed", failed_reason="missing_identifier")
    assert f["failedReason"] == "missing_identifier"
    assert f["failedAt"] == f["updatedAt"] and f["failedMessage"]
    b = store.create({"type": "company"})
    assert store.advance(b["id"], status="canceled")["status"] == "canceled"
    c = store.create({"type": "company"})
    hw = store.advance(c["id"])["updatedAt"]
    late = parse_time(hw) - timedelta(milliseconds=5)
    t = store.touch(c["id"], at=late)
    assert t["updatedAt"] < hw
    # explicit at= on create sets createdAt and the id time part
    d = store.create({"type": "company"}, at="2026-01-02T03:04:05.678Z")
    assert d["createdAt"] == "2026-01-02T03:04:05.678Z"


def test_clock_set_advance_freeze() -> None:
    clock = Clock()
    clock.set(datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert abs(clock.now() - datetime(2030, 1, 1, tzinfo=timezone.utc)) < timedelta(seconds=5)
    clock.freeze()
    before = clock.now_ms()
    clock.advance(10)
    assert clock.now_ms() == before + 10_000
    clock.unfreeze()
    assert clock.now_ms() >= before + 10_000


# ----------------------------------------------------------------------------- listing


def test_list_pages_equal_snapshot(emu: Emulator, http: requests.Session) -> None:
    items = page_all(http, emu.base_url + LIST, limit=50)
    assert items == emu.store.snapshot()
    assert len(items) == 237
    created = [(o["createdAt"], o["id"]) for o in items]
    assert created == sorted(created, reverse=True)
    queries = emu.stats.list_queries
    assert len(queries) == math.ceil(237 / 50) == emu.stats.list_pages
    assert not any("cursor=&" in q or q.endswith("cursor=") for q in queries)


def test_default_limit_is_25_and_cursor_is_last_ulid(emu: Emulator, http: requests.Session) -> None:
    body = http.get(emu.base_url + LIST).json()
    assert len(body["data"]) == 25
    assert body["hasMore"] is True
    assert body["nextCursor"] == body["data"][-1]["id"].removeprefix("import_")
    assert len(page_all(http, emu.base_url + LIST)) == 237
    assert emu.stats.requests[("GET", LIST)] == 1 + math.ceil(237 / 25)


def test_last_page_quirk_on_and_off(http: requests.Session) -> None:
    with Emulator(api_key=KEY, imports=30) as emu:
        last = http.get(emu.base_url + LIST, params={"limit": 200}).json()
        assert len(last["data"]) == 30
        assert last["hasMore"] is True and last["nextCursor"] is None
    with Emulator(api_key=KEY, imports=30, quirk_last_page=False) as emu:
        last = http.get(emu.base_url + LIST, params={"limit": 200}).json()
        assert last["hasMore"] is False and last["nextCursor"] is None
        first = http.get(emu.base_url + LIST, params={"limit": 29}).json()
        assert first["hasMore"] is True and first["nextCursor"]
        rest = http.get(emu.base_url + LIST, params={"limit": 29, "cursor": first["nextCursor"]})
        assert len(rest.json()["data"]) == 1 and rest.json()["hasMore"] is False
    with Emulator(api_key=KEY, imports=0) as emu:
        empty = http.get(emu.base_url + LIST).json()
        assert empty == {"data": [], "hasMore": True, "nextCursor": None}


def test_pagination_survives_changes_between_pages(emu: Emulator, http: requests.Session) -> None:
    before = {o["id"] for o in emu.store.snapshot()}
    deleted: set[str] = set()
    store = emu.store

    def between(n: int, last_id: str) -> None:
        ids = store.ids()
        # create newer imports, update some, delete unseen ones and the cursor item itself
        for _ in range(3):
            store.create({"type": "company"})
        for i in ids[::17]:
            store.update(i, title=f"changed {n}")
        victim = ids[-1 - n]  # an old, not yet seen import
        store.delete(victim)
        deleted.add(victim)
        if n == 2:
            store.delete(last_id)  # the import the next cursor names
            deleted.add(last_id)

    items = page_all(http, emu.base_url + LIST, limit=40, between=between)
    seen = [o["id"] for o in items]
    assert len(emu.stats.list_queries) >= 6
    assert len(seen) == len(set(seen)), "an import was repeated"
    throughout = before - deleted
    assert throughout <= set(seen), "an import that existed throughout was skipped"
    assert len(emu.store) == 237 - len(deleted) + 3 * (len(emu.stats.list_queries) - 1)


def test_keyset_cursor_naming_deleted_import(emu: Emulator, http: requests.Session) -> None:
    first = http.get(emu.base_url + LIST, params={"limit": 10}).json()
    expected = http.get(
        emu.base_url + LIST, params={"limit": 10, "cursor": first["nextCursor"]}
    ).json()
    emu.store.delete(first["data"][-1]["id"])
    again = http.get(emu.base_url + LIST, params={"limit": 10, "cursor": first["nextCursor"]})
    assert again.json() == expected


def test_mutate_fault_between_pages(emu: Emulator, http: requests.Session) -> None:
    before = {o["id"] for o in emu.store.snapshot()}
    emu.inject("mutate", fn=lambda s: s.mutate(update=5, create=2, seed=1), skip=1, times=3)
    items = page_all(http, emu.base_url + LIST, limit=100)
    ids = [o["id"] for o in items]
    assert len(ids) == len(set(ids))
    assert before <= set(ids)
    assert len(emu.store) == 237 + 4  # 3 pages: the 2nd and 3rd requests mutated
    assert len(emu.faults) == 1  # one of the three hits is still pending


def test_limit_and_cursor_validation(emu: Emulator, http: requests.Session) -> None:
    for bad in ("0", "201", "abc", "1.5", "-1", ""):
        r = http.get(emu.base_url + LIST, params={"limit": bad})
        nest_400(r)
    assert http.get(emu.base_url + LIST, params={"limit": "200"}).status_code == 200
    assert http.get(emu.base_url + LIST, params={"limit": "1"}).status_code == 200
    assert "longer than or equal to 1" in nest_400(http.get(emu.base_url + LIST + "?cursor="))[0]
    for garbled in (
        "abc",
        "import_01karvd35zwwmej8ee444tpcbp",
        "01karvd35zwwmej8ee444tpcbu",
        "8" * 26,
    ):
        nest_400(http.get(emu.base_url + LIST, params={"cursor": garbled}))
    # a well-formed cursor naming nothing works (keyset)
    r = http.get(emu.base_url + LIST, params={"cursor": "01karvd35zwwmej8ee444tpcbp"})
    assert r.status_code == 200


# ----------------------------------------------------------------------------- auth, errors


def test_auth(emu: Emulator) -> None:
    url = emu.base_url + LIST
    r = requests.get(url)
    assert r.status_code == 401
    body = r.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["requestId"]) and body["tag"] == "INVALID_API_KEY"
    r = requests.get(url, headers={"x-api-key": "wrong"})
    assert r.status_code == 400
    assert list(r.json()) == ["requestId", "error"]
    assert r.json()["error"] == "x-api-key header is invalid"
    r = requests.get(url, headers={"X-Api-Key": "broke"})
    assert r.status_code == 402 and r.json()["tag"] == "NO_MORE_CREDITS"
    assert requests.get(url, headers={"X-API-KEY": KEY}).status_code == 200
    assert requests.get(url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert requests.get(url, headers={"Authorization": "Bearer nope"}).status_code == 400
    # uploads and control endpoints need no key
    assert requests.get(emu.base_url + "/_emulator/stats").status_code == 200


def test_404_shapes_and_headers(emu: Emulator, http: requests.Session) -> None:
    r = http.get(emu.base_url + LIST + "/import_nonexistent_12345")
    assert r.status_code == 404
    body = r.json()
    assert list(body) == ["statusCode", "timestamp", "message", "error", "path"]
    assert body["message"] == "Import not found" and body["error"] == "Not Found"
    assert body["path"] == "/v0/imports/import_nonexistent_12345"
    assert ISO_RE.match(body["timestamp"])
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "X-Request-Id" not in r.headers
    r = http.get(emu.base_url + "/websets/v0/xyz")
    assert r.status_code == 404 and r.json()["message"] == "Cannot GET /v0/xyz"
    assert http.patch(emu.base_url + LIST + "/import_x", json={}).status_code == 404
    assert http.delete(emu.base_url + LIST + "/import_x").status_code == 404
    ok = http.get(emu.base_url + LIST)
    assert int(ok.headers["Content-Length"]) == len(ok.content)


# ----------------------------------------------------------------------------- create/upload


def test_create_upload_completed(emu: Emulator, http: requests.Session) -> None:
    created = create_import(http, emu.base_url, metadata={"a": "b"}, csv={"identifier": 0})
    assert list(created)[:13] == KEYS and list(created)[13:] == ["uploadUrl", "uploadValidUntil"]
    assert created["status"] == "pending" and created["createdAt"] == created["updatedAt"]
    assert parse_time(created["uploadValidUntil"]) - parse_time(created["createdAt"]) == timedelta(
        hours=1
    )
    assert created["uploadUrl"].startswith(emu.base_url + "/_uploads/")
    # newest first: the created import heads the list
    assert http.get(emu.base_url + LIST).json()["data"][0]["id"] == created["id"]
    put = requests.put(
        created["uploadUrl"], data=CSV.encode(), headers={"Content-Type": "text/csv"}
    )
    assert put.status_code == 200 and put.content == b""
    done = http.get(emu.base_url + LIST + "/" + created["id"]).json()
    assert done["status"] == "completed" and done["count"] == 2
    assert done["updatedAt"] > created["updatedAt"]
    assert done["metadata"] == {"a": "b"} and done["title"] == "T"
    assert done["failedReason"] is None
    assert emu.store.get(created["id"]) == done


def test_default_title(emu: Emulator, http: requests.Session) -> None:
    params = {"size": 1, "count": 1, "format": "csv", "entity": {"type": "person"}}
    created = http.post(emu.base_url + LIST, json=params).json()
    assert created["title"] == "Import " + created["createdAt"][:10]


@pytest.mark.parametrize(
    ("content", "over", "reason"),
    [
        (b"", {}, "invalid_file_content"),
        (b"url\n", {}, "invalid_file_content"),
        (b"url\n\xff\xfe\x00bad\n", {}, "invalid_file_content"),
        (b"url,name\nhttps://a.com\n", {}, "invalid_format"),
        (b"url\nhttps://a.com\n", {"csv": {"identifier": 3}}, "missing_identifier"),
        (b"foo\nbar\n", {}, "missing_identifier"),
    ],
)
def test_upload_bad_file_fails(
    emu: Emulator, http: requests.Session, content: bytes, over: dict[str, Any], reason: str
) -> None:
    created = create_import(http, emu.base_url, **over)
    assert requests.put(created["uploadUrl"], data=content).status_code == 200
    obj = http.get(emu.base_url + LIST + "/" + created["id"]).json()
    assert obj["status"] == "failed"
    assert obj["failedReason"] == reason and obj["failedMessage"]
    assert obj["failedAt"] == obj["updatedAt"] > created["updatedAt"]


def test_upload_signature_and_expiry(emu: Emulator, http: requests.Session) -> None:
    created = create_import(http, emu.base_url)
    bad = re.sub(r"X-Amz-Signature=[0-9a-f]+", "X-Amz-Signature=deadbeef", created["uploadUrl"])
    r = requests.put(bad, data=CSV)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    nosig = created["uploadUrl"].split("?")[0]
    assert requests.put(nosig, data=CSV).status_code == 403
    emu.store.clock.advance(3601)
    r = requests.put(created["uploadUrl"], data=CSV)
    assert r.status_code == 403 and b"expired" in r.content
    assert emu.store.get(created["id"])["status"] == "pending"  # type: ignore[index]


def test_create_validation(emu: Emulator, http: requests.Session) -> None:
    base = {"size": 10, "count": 1, "format": "csv", "entity": {"type": "company"}}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "format": "webset"}, "format must be one of"),
        ({k: v for k, v in base.items() if k != "size"}, "size"),
        ({**base, "size": 50_000_001}, "size must not be greater than 50000000"),
        ({**base, "size": "10"}, "size must be a number"),
        ({**base, "entity": {"type": "custom"}}, "entity.description"),
        ({**base, "entity": {"type": "custom", "description": "x"}}, "entity.description"),
        ({**base, "entity": {"type": "custom", "description": "x" * 201}}, "entity.description"),
        ({**base, "entity": {"type": "planet"}}, "entity.type"),
        ({**base, "bogus": 1}, "property bogus should not exist"),
        ({**base, "metadata": {"k": "v" * 1001}}, "metadata.k"),
        ({**base, "metadata": {"k": 1}}, "metadata.k must be a string"),
        ({**base, "csv": {"identifier": -1}}, "csv.identifier"),
    ]
    for body, expected in cases:
        messages = nest_400(http.post(emu.base_url + LIST, json=body))
        assert any(expected in m for m in messages), (body, messages)
    r = http.post(emu.base_url + LIST, data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["statusCode"] == 400
    ok = {
        **base,
        "size": 50_000_000,
        "entity": {"type": "custom", "description": "ab"},
        "title": None,
    }
    assert http.post(emu.base_url + LIST, json=ok).status_code == 201


def test_patch_and_delete(emu: Emulator, http: requests.Session) -> None:
    target = emu.store.ids()[5]
    before = emu.store.get(target)
    assert before is not None
    r = http.patch(
        emu.base_url + LIST + "/" + target, json={"title": "After", "metadata": {"s": "f"}}
    )
    assert r.status_code == 200
    after = r.json()
    assert after["title"] == "After" and after["metadata"] == {"s": "f"}  # replaced, not merged
    assert after["status"] == before["status"] and after["updatedAt"] > before["updatedAt"]
    r2 = http.patch(emu.base_url + LIST + "/" + target, json={"metadata": {"x": "y"}})
    assert r2.json()["metadata"] == {"x": "y"} and r2.json()["title"] == "After"
    assert r2.json()["updatedAt"] > after["updatedAt"]
    assert "property status should not exist" in nest_400(
        http.patch(emu.base_url + LIST + "/" + target, json={"status": "completed"})
    )
    r = http.delete(emu.base_url + LIST + "/" + target)
    assert r.status_code == 200 and r.json() == r2.json()
    assert http.get(emu.base_url + LIST + "/" + target).status_code == 404
    assert target not in {o["id"] for o in page_all(http, emu.base_url + LIST, limit=200)}
    assert http.delete(emu.base_url + LIST + "/" + target).status_code == 404


# ----------------------------------------------------------------------------- faults


def test_fault_status_with_retry_after_and_skip(emu: Emulator, http: requests.Session) -> None:
    emu.faults.add(Fault("status", status=429, headers={"Retry-After": "2"}, skip=1, times=2))
    url = emu.base_url + LIST
    assert http.get(url).status_code == 200
    for _ in range(2):
        r = http.get(url)
        assert r.status_code == 429 and r.headers["Retry-After"] == "2"
        assert "rate limit" in r.json()["error"]
    assert http.get(url).status_code == 200
    # other routes are not matched by the default (list route) fault
    emu.inject("status", status=503)
    assert http.get(url + "/" + emu.store.ids()[0]).status_code == 200
    r = http.get(url)
    assert r.status_code == 503 and r.json()["statusCode"] == 503
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    emu.inject(
        "status",
        status=503,
        headers={"Retry-After": date},
        body="oops",
        method=None,
        path="/websets/v0/imports/",
    )
    r = http.delete(url + "/import_x")
    assert r.status_code == 503 and r.headers["Retry-After"] == date and r.text == "oops"


def test_fault_html(emu: Emulator, http: requests.Session) -> None:
    emu.inject("html")
    r = http.get(emu.base_url + LIST)
    assert r.status_code == 502 and r.headers["Content-Type"] == "text/html"
    assert "Bad gateway" in r.text and "cloudflare" in r.text.lower()


def test_fault_slow(emu: Emulator, http: requests.Session) -> None:
    fault = emu.inject("slow", delay=0.3)
    with pytest.raises(requests.exceptions.Timeout):
        http.get(emu.base_url + LIST, timeout=0.1)
    assert http.get(emu.base_url + LIST).status_code == 200
    # the fault slowed the first request only
    assert fault.hits == 1 and not emu.faults.pending()


def test_fault_reset(emu: Emulator, http: requests.Session) -> None:
    emu.inject("reset")
    with pytest.raises(requests.exceptions.RequestException):
        http.get(emu.base_url + LIST).json()
    assert http.get(emu.base_url + LIST).status_code == 200


def test_fault_malformed(emu: Emulator, http: requests.Session) -> None:
    emu.inject("malformed")
    r = http.get(emu.base_url + LIST)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert http.get(emu.base_url + LIST).json()["data"]


# ----------------------------------------------------------------------------- control


def test_control_endpoints(emu: Emulator, http: requests.Session) -> None:
    base = emu.base_url
    snap = requests.get(base + "/_emulator/imports").json()
    assert snap == emu.store.snapshot()
    r = requests.post(
        base + "/_emulator/faults", json={"kind": "status", "status": 500, "times": 1}
    )
    assert r.status_code == 200 and r.json()["kind"] == "status"
    assert requests.get(base + "/_emulator/faults").json()[0]["times"] == 1
    assert http.get(base + LIST).status_code == 500
    requests.post(base + "/_emulator/faults", json={"kind": "html", "times": 5})
    assert requests.delete(base + "/_emulator/faults").status_code == 200
    assert http.get(base + LIST).status_code == 200
    assert requests.post(base + "/_emulator/faults", json={"kind": "mutate"}).status_code == 400
    stats = requests.get(base + "/_emulator/stats").json()
    assert stats["requests"][f"GET {LIST}"] == 2 and stats["list_pages"] == 1
    m1 = requests.post(
        base + "/_emulator/mutate",
        json={"update": 3, "delete": 2, "create": 4, "advance": 1, "seed": 7},
    ).json()
    assert [len(m1[k]) for k in ("updated", "deleted", "created", "advanced")] == [3, 2, 4, 1]
    assert len(emu.store) == 237 + 2
    for i in m1["updated"]:
        assert emu.store.get(i)["metadata"] == {"mutation": "7"}  # type: ignore[index]
    now = requests.post(base + "/_emulator/clock", json={"set": "2031-01-01T00:00:00Z"}).json()[
        "now"
    ]
    assert now.startswith("2031-01-01T00:00:0")
    later = requests.post(base + "/_emulator/clock", json={"advance": 86400}).json()["now"]
    assert later.startswith("2031-01-02")
    created = create_import(http, base)
    assert created["createdAt"].startswith("2031-01-02")
    requests.delete(base + "/_emulator/stats")
    assert requests.get(base + "/_emulator/stats").json()["list_pages"] == 0
    emu.reset_stats()
    assert emu.stats.list_pages == 0 and not emu.stats.list_queries


def test_mutate_is_deterministic() -> None:
    a, b = ImportStore(seed=0, imports=500), ImportStore(seed=0, imports=500)
    for s in (a, b):
        s.clock.freeze()  # then set: set-then-freeze let a millisecond pass in between
        s.clock.set("2026-11-01T00:00:00Z")
    ra = a.mutate(update=5, delete=5, advance=3, seed=2)
    rb = b.mutate(update=5, delete=5, advance=3, seed=2)
    assert ra == rb and a.snapshot_json() == b.snapshot_json()


# ----------------------------------------------------------------------------- process


def test_main_subprocess_serves_and_stops_on_sigterm() -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exa_source.emulator",
            "--port",
            "0",
            "--api-key",
            "kk",
            "--imports",
            "12",
            "--no-quirk",
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and not url.endswith(":0")
        r = requests.get(url + LIST, headers={"x-api-key": "kk"}, timeout=5)
        assert r.status_code == 200 and len(r.json()["data"]) == 12 and r.json()["hasMore"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""  # exactly one line on stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- official SDK


def test_exa_py_round_trip(emu: Emulator) -> None:
    exa_py = pytest.importorskip("exa_py")
    exa = exa_py.Exa(api_key=KEY, base_url=emu.base_url)
    imports = exa.websets.imports
    imp = imports.create(
        {"format": "csv", "entity": {"type": "company"}, "title": "SDK"},
        csv_data="url\nhttps://a.com\nhttps://b.com\n",
    )
    assert imp.status == "completed" and imp.count == 2 and imp.title == "SDK"
    raw = imports.create(
        {
            "format": "csv",
            "entity": {"type": "custom", "description": "Blogs"},
            "size": 10,
            "count": 1,
        }
    )
    assert raw.upload_url and raw.upload_valid_until
    got = imports.get(imp.id)
    assert got.id == imp.id
    page = imports.list(limit=10)
    assert len(page.data) == 10 and page.has_more and page.next_cursor
    assert page.data[0].id == raw.id
    everything = list(imports.list_all(limit=50))
    assert [i.id for i in everything] == emu.store.ids()
    assert len(everything) == 239
    upd = imports.update(imp.id, {"title": "Renamed", "metadata": {"k": "v"}})
    assert upd.title == "Renamed" and upd.metadata == {"k": "v"}
    gone = imports.delete(imp.id)
    assert gone.id == imp.id
    with pytest.raises(ValueError, match="404"):
        imports.get(imp.id)
    assert orjson.loads(emu.store.snapshot_json())[0]["id"] == raw.id
    # the SDK sends no cursor on the first page, never an empty one
    assert all(
        "cursor" not in parse_qs(q) or parse_qs(q)["cursor"][0] for q in emu.stats.list_queries
    )


# ----------------------------------------------------------------------------- hostile input


def _raw(emu: Emulator, timeout: float = 5.0) -> socket.socket:
    """A plain TCP connection to the emulator (loopback, whatever host it is bound to)."""
    return socket.create_connection(("127.0.0.1", emu.port), timeout=timeout)


def _read_reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 reply from a raw socket: status, lower-cased headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)  # the socket timeout is the deadline
        assert chunk, f"connection closed before a reply: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the reply body"
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def _wait_closed(sock: socket.socket, within: float, drip: bytes = b"") -> float:
    """Seconds until the server closes `sock`; fails after `within` seconds.

    While waiting, sends `drip` one byte at a time, one byte per 0.2 s of silence.
    """
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < within:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if drip:
                try:
                    sock.sendall(drip[:1])
                except OSError:
                    return time.monotonic() - start
                drip = drip[1:]
            continue
        except ConnectionResetError:
            return time.monotonic() - start
        if not chunk:
            return time.monotonic() - start
    pytest.fail(f"the server kept the connection open for {within} s")


def _head(method: str, path: str, *headers: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: emulator\r\n" + "".join(f"{h}\r\n" for h in headers)


def test_oversized_and_unframed_bodies_are_refused_without_reading(
    emu: Emulator, http: requests.Session
) -> None:
    limit = emulator_server.MAX_BODY_BYTES
    upload_limit = emulator_server.MAX_UPLOAD_BYTES
    assert limit == 1 << 20 and upload_limit >= limit
    imp = create_import(http, emu.base_url)
    upload = imp["uploadUrl"].removeprefix(emu.base_url)
    cases = [
        # (request head without the blank line, status, JSON body expected)
        (_head("POST", LIST, f"x-api-key: {KEY}", f"Content-Length: {limit + 1}"), 413, True),
        (
            _head(
                "POST",
                LIST,
                f"x-api-key: {KEY}",
                f"Content-Length: {limit + 1}",
                "Expect: 100-continue",
            ),
            413,
            True,
        ),
        (_head("POST", "/_emulator/clock", f"Content-Length: {10**40}"), 413, True),
        (_head("PUT", upload, f"Content-Length: {upload_limit + 1}"), 413, False),
        (_head("POST", LIST, f"x-api-key: {KEY}", "Transfer-Encoding: chunked"), 411, True),
        (_head("PATCH", LIST + "/x", f"x-api-key: {KEY}", "Content-Length: -1"), 400, True),
        (_head("POST", LIST, f"x-api-key: {KEY}", "Content-Length: 12abc"), 400, True),
        (
            _head("POST", LIST, f"x-api-key: {KEY}", "Content-Length: 2", "Content-Length: 3"),
            400,
            True,
        ),
    ]
    for head, status, is_json in cases:
        with _raw(emu) as sock:
            sock.sendall(head.encode() + b"\r\n")  # headers only: the body never comes
            got, headers, body = _read_reply(sock)
            assert got == status, (head, body)
            assert headers["connection"] == "close"
            if is_json:
                err = orjson.loads(body)
                phrase = {413: "Payload Too Large", 411: "Length Required", 400: "Bad Request"}
                assert err["statusCode"] == status and err["error"] == phrase[status]
                assert ("Content-Length" in err["message"]) == (status != 413)
            else:
                assert b"<Code>EntityTooLarge</Code>" in body
            assert _wait_closed(sock, 5) < 5
    # a body of exactly the bound is read and served
    params = orjson.dumps(
        {"size": 3, "count": 1, "format": "csv", "entity": {"type": "company"}, "title": "big"}
    )
    r = http.post(emu.base_url + LIST, data=params.ljust(limit), timeout=10)
    assert r.status_code == 201 and r.json()["title"] == "big"
    assert http.get(emu.base_url + LIST, timeout=5).status_code == 200


def test_idle_and_drip_feeding_clients_are_disconnected() -> None:
    assert Emulator().idle_timeout == emulator_server.IDLE_TIMEOUT_S == 30
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="idle_timeout"):
            Emulator(idle_timeout=bad)
    with Emulator(api_key=KEY, imports=5, idle_timeout=1.0) as emu:
        idle, drip, half_body = _raw(emu), _raw(emu), _raw(emu)
        half_body.sendall(_head("POST", LIST, f"x-api-key: {KEY}", "Content-Length: 100").encode())
        half_body.sendall(b'\r\n{"size": 3')
        with requests.Session() as other:  # the server still answers others meanwhile
            other.headers["x-api-key"] = KEY
            for _ in range(3):
                assert other.get(emu.base_url + LIST, timeout=5).status_code == 200
        line = _head("GET", LIST, f"x-api-key: {KEY}").encode() + b"X-Slow: " + b"a" * 200
        assert 0.5 < _wait_closed(drip, 6, drip=line) < 6
        assert _wait_closed(idle, 6) < 6
        assert _wait_closed(half_body, 6) < 6
        assert requests.get(emu.base_url + LIST, headers={"x-api-key": KEY}, timeout=5).ok


BAD_CLOCK_BODIES: list[Any] = [
    {"advance": "abc"},
    {"advance": "10"},
    {"advance": None},
    {"advance": True},
    {"advance": [1]},
    {"advance": 1e308},
    {"advance": 1e15},
    {"advance": -1e15},
    {"advance": -(10**18)},
    {"set": 12345},
    {"set": None},
    {"set": "yesterday"},
    {"set": "2026-13-01T00:00:00Z"},
    {"set": "0001-01-01T00:00:00+01:00"},
    {"set": "0001-01-01T00:00:00Z"},
    {"set": "1969-12-31T23:59:59Z"},
    {"set": "9999-12-31T23:59:59.999Z"},
    {"sett": "2026-01-01T00:00:00Z"},
    {"set": "2030-01-01T00:00:00Z", "advance": "x"},
    ["advance", 1],
]


@pytest.mark.parametrize("body", BAD_CLOCK_BODIES, ids=lambda b: orjson.dumps(b).decode())
def test_clock_control_rejects_values_that_would_break_it(
    emu: Emulator, http: requests.Session, body: Any
) -> None:
    url = emu.base_url + "/_emulator/clock"
    before = parse_time(requests.get(url, timeout=5).json()["now"])
    messages = nest_400(requests.post(url, json=body, timeout=5))
    assert any(word in " ".join(messages) for word in ("advance", "set", "object", "sett"))
    after = parse_time(requests.get(url, timeout=5).json()["now"])
    assert timedelta(0) <= after - before < timedelta(seconds=5)  # nothing applied
    create_import(http, emu.base_url)  # and the store still stamps


def test_clock_edges_that_stay_valid(emu: Emulator, http: requests.Session) -> None:
    url = emu.base_url + "/_emulator/clock"
    far = requests.post(url, json={"set": "9999-01-01T00:00:00Z"}, timeout=5)
    assert far.status_code == 200 and far.json()["now"].startswith("9999-01-01T00:00:0")
    imp = create_import(http, emu.base_url)
    assert imp["createdAt"].startswith("9999-01-01") and imp["uploadValidUntil"] > imp["createdAt"]
    both = requests.post(url, json={"set": "1970-01-01T00:00:00Z", "advance": 60}, timeout=5)
    assert both.json()["now"].startswith("1970-01-01T00:01:0")  # set, then advance
    nest_400(requests.post(url, json={"advance": -120}, timeout=5))  # would be before 1970
    # the store still writes odd-but-valid stamps for connector tests, and reads them back
    other = emu.store.ids()[0]
    for stamp in ("9999-01-01T00:00:00.000Z", "1960-01-01T00:00:00.000Z"):
        assert emu.store.touch(other, at=stamp)["updatedAt"] == stamp
        assert http.get(f"{emu.base_url}{LIST}/{other}", timeout=5).json()["updatedAt"] == stamp
    assert emu.store.touch(other, at="0001-01-01T00:00:00Z")["updatedAt"] == (
        "0001-01-01T00:00:00.000Z"
    )


def test_store_rejects_unrepresentable_times() -> None:
    store = ImportStore(seed=0, imports=3)
    victim = store.ids()[0]
    before = store.get(victim)
    for at in (10**20, -(10**20), "10000-01-01T00:00:00Z"):
        with pytest.raises(ValueError):
            store.touch(victim, at=at)
    with pytest.raises(ValueError, match="1970"):
        store.create({"type": "company"}, at="1969-12-31T23:59:59Z")  # ULID time is unsigned
    with pytest.raises(ValueError):
        store.create({"type": "company"}, at="9999-12-31T23:30:00Z")  # uploadValidUntil
    store.touch(victim, at="9999-12-31T23:59:59.999Z")
    with pytest.raises(ValueError, match="9999"):
        store.update(victim, title="one more millisecond")
    assert store.get(victim)["title"] == before["title"]  # type: ignore[index]
    clock = Clock()
    for seconds in (math.nan, math.inf, -math.inf, 1e300, -(10**30)):
        with pytest.raises(ValueError):
            clock.advance(seconds)
    for when in (10**20, -1, "1969-12-31T23:59:59Z", "9999-12-31T00:00:00Z"):
        with pytest.raises(ValueError):
            clock.set(when)
    before = time.time_ns() // 1_000_000
    assert before <= clock.now_ms() <= time.time_ns() // 1_000_000  # unchanged: still real time
    assert store.create({"type": "company"})["status"] == "pending"


def test_out_of_range_stamp_over_http_is_400_not_500(emu: Emulator, http: requests.Session) -> None:
    victim = emu.store.ids()[0]
    emu.store.touch(victim, at="9999-12-31T23:59:59.999Z")
    r = http.patch(f"{emu.base_url}{LIST}/{victim}", json={"title": "x"}, timeout=5)
    assert "9999" in " ".join(nest_400(r))
    assert http.get(f"{emu.base_url}{LIST}/{victim}", timeout=5).json()["title"] != "x"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_emulator/mutate", {"update": -1}),
        ("/_emulator/mutate", {"advance": -1}),
        ("/_emulator/mutate", {"create": True}),
        ("/_emulator/mutate", {"create": 10**7}),
        ("/_emulator/mutate", {"seed": 1.5}),
        ("/_emulator/faults", {"kind": "slow", "delay": -1}),
        ("/_emulator/faults", {"kind": "slow", "delay": 1e308}),
        ("/_emulator/faults", {"kind": "slow", "delay": 10**9}),
        ("/_emulator/faults", {"kind": "status", "status": 99}),
        ("/_emulator/faults", {"kind": "status", "status": 1000}),
        ("/_emulator/faults", {"kind": "status", "method": 5}),
        ("/_emulator/faults", {"kind": "status", "headers": ["a"]}),
        ("/_emulator/faults", {"kind": "status", "headers": {"X-A": "1\r\nX-B: 2"}}),
        ("/_emulator/faults", {"kind": "status", "times": -1}),
    ],
)
def test_control_numbers_that_would_break_it_get_400(
    emu: Emulator, http: requests.Session, path: str, body: dict[str, Any]
) -> None:
    nest_400(requests.post(emu.base_url + path, json=body, timeout=5))
    assert requests.get(emu.base_url + "/_emulator/faults", timeout=5).json() == []
    assert http.get(emu.base_url + LIST, timeout=5).status_code == 200
    assert len(emu.store) == 237


def test_non_loopback_bind_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exa_source.emulator")
    for host in ("127.0.0.1", "localhost"):
        with Emulator(api_key=KEY, host=host):
            pass
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with Emulator(api_key=KEY, imports=2, host="0.0.0.0") as emu:
        r = requests.get(f"http://127.0.0.1:{emu.port}{LIST}", headers={"x-api-key": KEY})
        assert r.status_code == 200
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    text = warnings[0].getMessage()
    assert "0.0.0.0" in text and "reachable from the network" in text
    assert "authentication" in text


def test_main_idle_timeout_flag_and_non_loopback_warning() -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exa_source.emulator",
            "--host",
            "0.0.0.0",
            "--idle-timeout",
            "1",
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        match = re.fullmatch(r"http://0\.0\.0\.0:(\d+)", url)
        assert match, url
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=5) as idle:
            assert _wait_closed(idle, 6) < 6
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "WARNING" in err and "reachable from the network" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
