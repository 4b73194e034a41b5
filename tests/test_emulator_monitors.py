"""Tests of the emulator's monitors, runs, webhooks and attempts (exa_source.emulator.monitors)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import page_all

from exa_source.emulator import SEED_ANCHOR, Emulator, InvalidTransitionError, MonitorStore
from exa_source.emulator.store import to_ms

KEY = "test-key"
MONITORS = "/websets/v0/monitors"
WEBHOOKS = "/websets/v0/webhooks"
MSTEP = "/_emulator/monitors/step"
WSTEP = "/_emulator/webhooks/step"
DAY = 86_400_000
BEHAVIOR = {
    "type": "search",
    "config": {
        "query": "new fintech startups",
        "criteria": [{"description": "Raised a seed round"}],
        "entity": {"type": "company"},
        "count": 10,
    },
}
HOOK = {"events": ["monitor.run.completed", "monitor.created"], "url": "https://h.example/x"}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """Two websets, four monitors, two webhooks; the clock frozen at the seed anchor."""
    with Emulator(api_key=KEY, websets=2, items_per_webset=3, monitors=4, webhooks=2, seed=5) as e:
        e.store.clock.set(SEED_ANCHOR)
        e.store.clock.freeze()
        yield e


@pytest.fixture
def bare() -> Iterator[Emulator]:
    """One webset and nothing else; the clock frozen at the seed anchor."""
    with Emulator(api_key=KEY, websets=1, items_per_webset=1, seed=3) as e:
        e.store.clock.set(SEED_ANCHOR)
        e.store.clock.freeze()
        yield e


def monitor_body(emu: Emulator, **extra: Any) -> dict[str, Any]:
    return {
        "websetId": emu.websets.ids()[0],
        "cadence": {"cron": "0 9 * * *"},
        "behavior": BEHAVIOR,
        **extra,
    }


def event_types(emu: Emulator, since: int) -> list[str]:
    """Types of the events emitted since ``emu.events.all()`` held ``since``, oldest first."""
    retained = emu.events.all()
    return [e["type"] for e in reversed(retained[: len(retained) - since])]


# ----------------------------------------------------------------------------- monitors


def test_monitor_crud_and_events(bare: Emulator, http: requests.Session) -> None:
    base = bare.base_url + MONITORS
    before = len(bare.events.all())
    r = http.post(base, json=monitor_body(bare, metadata={"k": "v"}))
    assert r.status_code == 201, r.text
    mon = r.json()
    assert re.fullmatch(r"monitor_[0-9a-z]{26}", mon["id"])
    assert mon["object"] == "monitor" and mon["status"] == "enabled"
    assert mon["cadence"] == {"cron": "0 9 * * *", "timezone": "Etc/UTC"}
    assert mon["behavior"]["config"]["behavior"] == "append"  # the default
    assert mon["behavior"]["config"]["query"] == "new fintech startups"
    assert mon["lastRun"] is None and mon["metadata"] == {"k": "v"}
    assert mon["createdAt"] == mon["updatedAt"] == "2026-10-01T00:00:00.000Z"
    assert mon["nextRunAt"] == "2026-10-02T00:00:00.000Z"
    assert http.get(f"{base}/{mon['id']}").json() == mon
    patch = {"cadence": {"cron": "30 6 * * 1", "timezone": "Europe/Paris"}, "metadata": {}}
    upd = http.patch(f"{base}/{mon['id']}", json=patch).json()
    assert upd["cadence"] == patch["cadence"] and upd["metadata"] == {}
    assert upd["updatedAt"] > mon["updatedAt"]
    off = http.patch(f"{base}/{mon['id']}", json={"status": "disabled"}).json()
    assert off["status"] == "disabled" and off["nextRunAt"] is None
    beh = {"type": "search", "config": {"count": 3, "behavior": "override"}}
    on = http.patch(f"{base}/{mon['id']}", json={"status": "enabled", "behavior": beh}).json()
    assert on["status"] == "enabled" and on["nextRunAt"] is not None
    assert on["behavior"] == beh and on["updatedAt"] > off["updatedAt"]
    gone = http.delete(f"{base}/{mon['id']}")
    assert gone.status_code == 200 and gone.json() == on
    assert http.get(f"{base}/{mon['id']}").status_code == 404
    assert event_types(bare, before) == [
        "monitor.created",
        "monitor.updated",
        "monitor.updated",
        "monitor.updated",
        "monitor.deleted",
    ]
    (created,) = [e for e in bare.events.all() if e["type"] == "monitor.created"]
    assert created["data"] == mon and created["createdAt"] == mon["createdAt"]


def test_monitor_create_accepts_external_id(bare: Emulator, http: requests.Session) -> None:
    ws = bare.websets.get(bare.websets.ids()[0])
    body = monitor_body(bare, websetId=ws["externalId"])
    mon = http.post(bare.base_url + MONITORS, json=body).json()
    assert mon["websetId"] == ws["id"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"cadence": {"cron": "0 9 * * *"}, "behavior": BEHAVIOR}, "websetId must be"),
        ({"websetId": "w", "behavior": BEHAVIOR}, "cadence must be an object"),
        ({"websetId": "w", "cadence": {"cron": "0 9 * *"}, "behavior": BEHAVIOR}, "5 fields"),
        ({"websetId": "w", "cadence": {"cron": "*/5 * * * *"}, "behavior": BEHAVIOR}, "once per"),
        (
            {"websetId": "w", "cadence": {"cron": "0 9 * * *", "timezone": "Mars/Olympus"}},
            "timezone",
        ),
        ({"websetId": "w", "cadence": {"cron": "0 9 * * *"}}, "behavior must be an object"),
        (
            {"websetId": "w", "cadence": {"cron": "0 9 * * *"}, "behavior": {"type": "search"}},
            "behavior.config must be an object",
        ),
        (
            {
                "websetId": "w",
                "cadence": {"cron": "0 9 * * *"},
                "behavior": {"type": "refresh", "config": {"count": 1}},
            },
            "behavior.type must be one of the following values: search",
        ),
        (
            {
                "websetId": "w",
                "cadence": {"cron": "0 9 * * *"},
                "behavior": {"type": "search", "config": {"count": 0}},
            },
            "behavior.config.count must be a positive integer",
        ),
        (
            {
                "websetId": "w",
                "cadence": {"cron": "0 9 * * *"},
                "behavior": {"type": "search", "config": {"count": 1, "query": "x"}},
            },
            "behavior.config.query",
        ),
        (
            {
                "websetId": "w",
                "cadence": {"cron": "0 9 * * *"},
                "behavior": {
                    "type": "search",
                    "config": {"count": 1, "criteria": [{"description": "c"}] * 6},
                },
            },
            "at most 5",
        ),
        (
            {
                "websetId": "w",
                "cadence": {"cron": "0 9 * * *"},
                "behavior": {"type": "search", "config": {"count": 1, "behavior": "merge"}},
            },
            "behavior.config.behavior",
        ),
        ({**{"websetId": "w", "cadence": {"cron": "0 9 * * *"}}, "x": 1}, "property x should"),
        (
            {
                "websetId": "w",
                "cadence": {"cron": "0 9 * * *"},
                "behavior": BEHAVIOR,
                "metadata": {"k": 1},
            },
            "metadata.k",
        ),
        ([1], "request body must be an object"),
    ],
)
def test_monitor_create_validation(
    bare: Emulator, http: requests.Session, body: Any, message: str
) -> None:
    r = http.post(bare.base_url + MONITORS, json=body)
    assert r.status_code == 400, r.text
    reply = r.json()
    assert reply["statusCode"] == 400 and reply["error"] == "Bad Request"
    assert any(message in m for m in reply["message"]), reply["message"]
    assert bare.monitors.monitor_count() == 0


def test_monitor_unknown_webset_and_ids_404(bare: Emulator, http: requests.Session) -> None:
    base = bare.base_url + MONITORS
    r = http.post(base, json=monitor_body(bare, websetId="webset_nope"))
    assert r.status_code == 404 and r.json()["message"] == "Webset not found"
    for method in ("GET", "PATCH", "DELETE"):
        r = http.request(method, f"{base}/monitor_nope", json={})
        assert r.status_code == 404, method
        body = r.json()
        assert (
            body["message"] == "Monitor not found" and body["path"] == "/v0/monitors/monitor_nope"
        )
    assert http.get(f"{base}/monitor_nope/runs").status_code == 404
    mon = http.post(base, json=monitor_body(bare)).json()
    r = http.get(f"{base}/{mon['id']}/runs/monitor_run_nope")
    assert r.status_code == 404 and r.json()["message"] == "Monitor run not found"
    assert http.put(f"{base}/{mon['id']}").status_code == 404
    bad = http.patch(f"{base}/{mon['id']}", json={"status": "paused", "x": 1})
    assert bad.status_code == 400
    assert set(bad.json()["message"]) == {
        "property x should not exist",
        "status must be one of the following values: enabled, disabled",
    }
    assert requests.get(base, timeout=5).status_code == 401  # same auth as everything


def test_monitor_list_filter_and_pagination(emu: Emulator, http: requests.Session) -> None:
    base = emu.base_url + MONITORS
    for _ in range(3):
        http.post(base, json=monitor_body(emu))
    everything = page_all(http, base, limit=2, strict_cursor=True)
    assert [m["id"] for m in everything] == emu.monitors.monitor_ids()
    assert len(everything) == 7
    stamps = [m["createdAt"] for m in everything]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    default = http.get(base).json()
    assert len(default["data"]) == 7 and not default["hasMore"] and default["nextCursor"] is None
    for wid in emu.websets.ids():
        only = page_all(http, base, limit=1, websetId=wid)
        assert only and all(m["websetId"] == wid for m in only)
    assert sum(len(page_all(http, base, websetId=w)) for w in emu.websets.ids()) == 7
    assert http.get(base, params={"websetId": "webset_none"}).json()["data"] == []
    for bad in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"cursor": "nope"}):
        assert http.get(base, params=bad).status_code == 400, bad
    assert http.get(base, params={"limit": 200}).status_code == 200


# ----------------------------------------------------------------------------- runs


def test_step_monitors_every_status(bare: Emulator, http: requests.Session) -> None:
    base = bare.base_url + MONITORS
    mon = http.post(base, json=monitor_body(bare)).json()
    before = len(bare.events.all())
    clock = bare.store.clock
    runs = {}
    for status in ("created", "running", "completed", "canceled", "failed"):
        clock.advance(60)
        r = requests.post(bare.base_url + MSTEP, json={"status": status}, timeout=5)
        assert r.status_code == 200, r.text
        (run,) = r.json()
        runs[status] = run
        now = bare.store.clock.now_ms()
        assert run["status"] == status and run["monitorId"] == mon["id"]
        assert re.fullmatch(r"monitor_run_[0-9a-z]{26}", run["id"])
        assert run["object"] == "monitor_run" and run["type"] == "search"
        assert to_ms(run["createdAt"]) == to_ms(run["updatedAt"]) == now
        assert run["completedAt"] == (run["createdAt"] if status == "completed" else None)
        assert run["failedAt"] == (run["createdAt"] if status == "failed" else None)
        assert run["canceledAt"] == (run["createdAt"] if status == "canceled" else None)
        assert (run["failedReason"] is not None) == (status == "failed")
        got = http.get(base + "/" + mon["id"]).json()
        assert got["lastRun"] == run and to_ms(got["nextRunAt"]) == now + DAY
        assert to_ms(got["updatedAt"]) == now
        assert http.get(f"{base}/{mon['id']}/runs/{run['id']}").json() == run
    listed = http.get(f"{base}/{mon['id']}/runs").json()
    assert [r["id"] for r in listed["data"]] == [r["id"] for r in reversed(runs.values())]
    assert event_types(bare, before) == ["monitor.run.created"] * 3 + [
        "monitor.run.completed",
        "monitor.run.created",
        "monitor.run.created",
    ]
    created_event = bare.events.all()[3]  # the completed run's monitor.run.created
    assert created_event["data"]["status"] == "created"
    assert created_event["data"]["id"] == runs["completed"]["id"]


def test_step_monitors_python_targets_and_disabled(bare: Emulator) -> None:
    store = bare.monitors
    ws = bare.websets.ids()[0]
    body = {"websetId": ws, "cadence": {"cron": "0 1 * * *"}, "behavior": BEHAVIOR}
    a = store.create_monitor(body)
    b = store.create_monitor(body)
    store.update_monitor(b["id"], {"status": "disabled"})
    runs = store.step_monitors()
    assert [r["monitorId"] for r in runs] == [a["id"]]  # disabled monitors do not run
    forced = store.step_monitors(monitor=b["id"], status="failed")
    assert [r["monitorId"] for r in forced] == [b["id"]]
    assert store.get_monitor(b["id"])["nextRunAt"] is None
    assert store.run_count() == 2
    with pytest.raises(ValueError, match="status"):
        store.step_monitors(status="exploded")
    r = requests.post(bare.base_url + MSTEP, json={"monitor": "monitor_nope"}, timeout=5)
    assert r.status_code == 404 and r.json()["message"] == "Monitor not found"
    for bad in ({"status": "done"}, {"monitor": 1}, {"x": 1}, {"monitor": a["id"], "run": "r"}):
        assert requests.post(bare.base_url + MSTEP, json=bad, timeout=5).status_code == 400


def test_advance_run(bare: Emulator, http: requests.Session) -> None:
    store = bare.monitors
    mon = http.post(bare.base_url + MONITORS, json=monitor_body(bare)).json()
    (run,) = store.step_monitors(status="created")
    before = len(bare.events.all())
    bare.store.clock.advance(5)
    running = store.advance_run(run["id"], "running")
    assert running["status"] == "running" and running["updatedAt"] > run["updatedAt"]
    assert running["createdAt"] == run["createdAt"]
    bare.store.clock.advance(5)
    r = requests.post(
        bare.base_url + MSTEP, json={"run": run["id"], "status": "completed"}, timeout=5
    )
    assert r.status_code == 200, r.text
    (done,) = r.json()
    assert done["status"] == "completed" and done["completedAt"] == done["updatedAt"]
    assert done["updatedAt"] > running["updatedAt"]
    monitor = store.get_monitor(mon["id"])
    assert monitor["lastRun"] == done and monitor["updatedAt"] == done["updatedAt"]
    assert event_types(bare, before) == ["monitor.run.completed"]
    with pytest.raises(InvalidTransitionError):
        store.advance_run(run["id"], "failed")
    r = requests.post(bare.base_url + MSTEP, json={"run": run["id"], "status": "failed"}, timeout=5)
    assert r.status_code == 409
    r = requests.post(bare.base_url + MSTEP, json={"run": "monitor_run_x"}, timeout=5)
    assert r.status_code == 404 and r.json()["message"] == "Monitor run not found"
    (other,) = store.step_monitors(status="running")
    failed = store.advance_run(other["id"], "failed")
    assert failed["failedAt"] == failed["updatedAt"] and failed["failedReason"]
    with pytest.raises(InvalidTransitionError):
        store.advance_run(store.step_monitors(status="running")[0]["id"], "created")


def test_runs_pagination(bare: Emulator, http: requests.Session) -> None:
    mon = http.post(bare.base_url + MONITORS, json=monitor_body(bare)).json()
    made = [bare.monitors.step_monitors()[0]["id"] for _ in range(30)]
    url = f"{bare.base_url}{MONITORS}/{mon['id']}/runs"
    first = http.get(url).json()  # no params, as exa-py sends it: default limit 25
    assert len(first["data"]) == 25 and first["hasMore"] and first["nextCursor"]
    runs = page_all(http, url, limit=7, strict_cursor=True)
    assert [r["id"] for r in runs] == made[::-1]
    assert http.get(url, params={"limit": 201}).status_code == 400
    assert http.get(url, params={"cursor": "x"}).status_code == 400


# ----------------------------------------------------------------------------- webhooks


def test_webhook_crud_secret_only_on_create(bare: Emulator, http: requests.Session) -> None:
    base = bare.base_url + WEBHOOKS
    before = len(bare.events.all())
    r = http.post(base, json={**HOOK, "metadata": {"env": "test"}})
    assert r.status_code == 201, r.text
    hook = r.json()
    assert re.fullmatch(r"webhook_[0-9a-z]{26}", hook["id"])
    assert re.fullmatch(r"whsec_[0-9a-f]{32}", hook["secret"])
    assert hook["object"] == "webhook" and hook["status"] == "active"
    assert hook["events"] == HOOK["events"] and hook["url"] == HOOK["url"]
    assert hook["metadata"] == {"env": "test"} and hook["createdAt"] == hook["updatedAt"]
    got = http.get(f"{base}/{hook['id']}").json()
    assert got == {**hook, "secret": None}
    assert http.get(base).json()["data"] == [got]
    upd = http.patch(
        f"{base}/{hook['id']}",
        json={"events": ["webset.created"], "url": "https://x.example/y", "status": "inactive"},
    ).json()
    assert upd["events"] == ["webset.created"] and upd["url"] == "https://x.example/y"
    assert upd["status"] == "inactive" and upd["secret"] is None
    assert upd["updatedAt"] > hook["updatedAt"] and upd["metadata"] == {"env": "test"}
    gone = http.delete(f"{base}/{hook['id']}")
    assert gone.status_code == 200 and gone.json() == upd
    for method in ("GET", "PATCH", "DELETE"):
        r = http.request(method, f"{base}/{hook['id']}", json={})
        assert r.status_code == 404 and r.json()["message"] == "Webhook not found"
    assert http.get(f"{base}/{hook['id']}/attempts").status_code == 404
    assert len(bare.events.all()) == before  # webhooks have no event types
    second = http.post(base, json=HOOK).json()
    assert second["secret"] != hook["secret"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "https://h.example"}, "events must contain at least 1 elements"),
        ({"events": [], "url": "https://h.example"}, "events must contain at least 1 elements"),
        ({"events": ["nope"], "url": "https://h.example"}, "each value in events"),
        ({"events": ["webset.created"]}, "url must be a URL address"),
        ({"events": ["webset.created"], "url": "ftp://h.example"}, "url must be a URL address"),
        ({"events": ["webset.created"], "url": "https://h", "secret": "s"}, "property secret"),
        ({"events": ["webset.created"], "url": "https://h", "metadata": []}, "metadata must"),
    ],
)
def test_webhook_validation(
    bare: Emulator, http: requests.Session, body: dict[str, Any], message: str
) -> None:
    r = http.post(bare.base_url + WEBHOOKS, json=body)
    assert r.status_code == 400, r.text
    assert any(message in m for m in r.json()["message"]), r.json()
    hook = http.post(bare.base_url + WEBHOOKS, json=HOOK).json()
    r = http.patch(f"{bare.base_url}{WEBHOOKS}/{hook['id']}", json={"status": "on"})
    assert r.status_code == 400


def test_webhook_list_pagination(bare: Emulator, http: requests.Session) -> None:
    base = bare.base_url + WEBHOOKS
    ids = [http.post(base, json=HOOK).json()["id"] for _ in range(5)]
    assert [h["id"] for h in page_all(http, base, limit=2, strict_cursor=True)] == ids[::-1]
    assert bare.monitors.webhook_ids() == ids[::-1]
    assert http.get(base, params={"limit": 0}).status_code == 400


def test_step_webhooks_and_attempt_filters(bare: Emulator, http: requests.Session) -> None:
    base = bare.base_url + WEBHOOKS
    store = bare.monitors
    hook = http.post(base, json=HOOK).json()
    idle = http.post(base, json={"events": ["import.created"], "url": "https://i.example"}).json()
    http.patch(f"{base}/{idle['id']}", json={"status": "inactive"})
    # no monitor event yet: a synthetic event id of the first subscribed type
    (synthetic,) = store.step_webhooks()
    assert synthetic["webhookId"] == hook["id"] and synthetic["eventType"] == HOOK["events"][0]
    assert synthetic["eventId"].startswith("event_") and synthetic["attempt"] == 1
    mon = http.post(bare.base_url + MONITORS, json=monitor_body(bare)).json()
    newest = bare.events.all()[0]
    assert newest["type"] == "monitor.created"
    bare.store.clock.advance(1)
    r = requests.post(bare.base_url + WSTEP, json={"successful": False}, timeout=5)
    assert r.status_code == 200, r.text
    (failed,) = r.json()
    assert failed["eventId"] == newest["id"] and failed["eventType"] == "monitor.created"
    assert failed["successful"] is False and failed["responseStatusCode"] == 500
    assert failed["responseBody"] and failed["attempt"] == 1
    assert failed["attemptedAt"] == "2026-10-01T00:00:01.000Z"
    assert all(isinstance(v, str) for v in failed["responseHeaders"].values())
    assert set(failed) == {
        "id",
        "object",
        "eventId",
        "eventType",
        "webhookId",
        "url",
        "successful",
        "responseHeaders",
        "responseBody",
        "responseStatusCode",
        "attempt",
        "attemptedAt",
    }
    (retry,) = requests.post(bare.base_url + WSTEP, json={"webhook": hook["id"]}, timeout=5).json()
    assert retry["eventId"] == newest["id"] and retry["attempt"] == 2
    assert retry["successful"] is True and retry["responseStatusCode"] == 200
    assert retry["responseBody"] == "ok"
    # a given webhook gets an attempt even when inactive
    (forced,) = store.step_webhooks(webhook=idle["id"], successful=False)
    assert forced["webhookId"] == idle["id"] and forced["eventType"] == "import.created"
    store.step_monitors(monitor=mon["id"])
    (on_run,) = store.step_webhooks()
    assert on_run["eventType"] == "monitor.run.completed" and on_run["attempt"] == 1

    url = f"{base}/{hook['id']}/attempts"
    everything = page_all(http, url, limit=2, strict_cursor=True)
    assert [a["id"] for a in everything] == [
        on_run["id"],
        retry["id"],
        failed["id"],
        synthetic["id"],
    ]
    for value, expected in (("false", [failed]), ("False", [failed]), ("true", None)):
        got = page_all(http, url, successful=value)
        if expected is not None:
            assert got == expected
        else:
            assert [a["id"] for a in got] == [on_run["id"], retry["id"], synthetic["id"]]
    created = page_all(http, url, limit=1, eventType="monitor.created")
    assert [a["id"] for a in created] == [retry["id"], failed["id"]]
    runs = page_all(http, url, limit=1, eventType="monitor.run.completed", successful="true")
    assert [a["id"] for a in runs] == [on_run["id"], synthetic["id"]]
    both = page_all(http, url, eventType="monitor.created", successful="false")
    assert both == [failed]
    for bad in ({"successful": "yes"}, {"eventType": "nope"}, {"limit": 201}, {"cursor": "z"}):
        assert http.get(url, params=bad).status_code == 400, bad
    r = requests.post(bare.base_url + WSTEP, json={"webhook": "webhook_nope"}, timeout=5)
    assert r.status_code == 404 and r.json()["message"] == "Webhook not found"
    for bad_body in ({"successful": "yes"}, {"webhook": 3}, {"x": 1}):
        assert requests.post(bare.base_url + WSTEP, json=bad_body, timeout=5).status_code == 400


# ----------------------------------------------------------------------------- seeding


def test_seeding_counts_statuses_and_window(emu: Emulator, http: requests.Session) -> None:
    store = emu.monitors
    assert store.monitor_count() == 4 and store.run_count() == 20
    assert store.webhook_count() == 2 and store.attempt_count() == 6
    anchor = to_ms(SEED_ANCHOR)
    monitors = page_all(http, emu.base_url + MONITORS)
    assert Counter(m["websetId"] for m in monitors) == {w: 2 for w in emu.websets.ids()}
    for mon in monitors:
        runs = page_all(http, f"{emu.base_url}{MONITORS}/{mon['id']}/runs")
        assert [r["status"] for r in runs] == [
            "created",
            "running",
            "canceled",
            "failed",
            "completed",
        ]
        assert mon["lastRun"] == runs[0]
        assert to_ms(mon["nextRunAt"]) == to_ms(runs[0]["createdAt"]) + DAY
        stamps = [to_ms(mon["createdAt"])] + [to_ms(r["updatedAt"]) for r in runs]
        assert all(anchor - 7 * DAY <= s < anchor for s in stamps)
        assert runs[4]["completedAt"] and runs[3]["failedAt"] and runs[2]["canceledAt"]
        assert runs[1]["updatedAt"] > runs[1]["createdAt"]
    for hook in page_all(http, emu.base_url + WEBHOOKS):
        assert hook["secret"] is None
        assert anchor - 7 * DAY <= to_ms(hook["createdAt"]) < anchor
        attempts = page_all(http, f"{emu.base_url}{WEBHOOKS}/{hook['id']}/attempts")
        assert sorted((a["successful"], a["attempt"]) for a in attempts) == [
            (False, 1),
            (True, 1),
            (True, 2),
        ]
        ids = {e["id"]: e for e in emu.events.all()}
        for a in attempts:  # real seeded events, of a subscribed type, before the attempt
            event = ids[a["eventId"]]
            assert event["type"] == a["eventType"] and a["eventType"] in hook["events"]
            assert event["createdAt"] < a["attemptedAt"]
    kinds = Counter(e["type"] for e in emu.events.all() if e["type"].startswith("monitor"))
    assert kinds == {"monitor.created": 4, "monitor.run.created": 20, "monitor.run.completed": 4}


def test_seeding_is_deterministic_and_needs_websets() -> None:
    def snapshot(seed: int) -> list[Any]:
        emu = Emulator(
            api_key=KEY, websets=2, items_per_webset=1, monitors=3, webhooks=2, seed=seed
        )
        m = emu.monitors
        return [
            [m.get_monitor(i) for i in m.monitor_ids()],
            [m.get_webhook(i) for i in m.webhook_ids()],
            [m.attempts_page(i, None, 200).items for i in m.webhook_ids()],
        ]

    assert snapshot(4) == snapshot(4)
    assert snapshot(4) != snapshot(5)
    with pytest.raises(ValueError, match="websets"):
        Emulator(api_key=KEY, monitors=1)
    only_hooks = Emulator(api_key=KEY, webhooks=3)  # synthetic event ids, still 3 attempts each
    assert only_hooks.monitors.attempt_count() == 9
    store = MonitorStore(only_hooks.websets, seed=1)
    store.seed(0, 1)
    assert store.webhook_count() == 1


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "exa_source.emulator"],
        [str(Path(sys.executable).parent / "exa-source"), "emulator"],
    ],
    ids=["python-m", "exa-source"],
)
def test_main_seeds_monitors_and_webhooks(command: list[str]) -> None:
    args = ["--websets", "2", "--monitors", "3", "--webhooks", "2", "--seed", "9"]
    proc = subprocess.Popen(
        [*command, *args, "--api-key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        headers = {"x-api-key": KEY}
        monitors = requests.get(base + MONITORS, headers=headers, timeout=10).json()["data"]
        hooks = requests.get(base + WEBHOOKS, headers=headers, timeout=10).json()["data"]
        expected = Emulator(api_key=KEY, websets=2, monitors=3, webhooks=2, seed=9).monitors
        assert [m["id"] for m in monitors] == expected.monitor_ids()
        assert [h["id"] for h in hooks] == expected.webhook_ids()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_stats_count_routes(bare: Emulator, http: requests.Session) -> None:
    mon = http.post(bare.base_url + MONITORS, json=monitor_body(bare)).json()
    run = bare.monitors.step_monitors()[0]
    hook = http.post(bare.base_url + WEBHOOKS, json=HOOK).json()
    http.get(f"{bare.base_url}{MONITORS}/{mon['id']}/runs/{run['id']}")
    http.get(f"{bare.base_url}{WEBHOOKS}/{hook['id']}/attempts")
    counted = requests.get(bare.base_url + "/_emulator/stats", timeout=5).json()["requests"]
    assert counted["POST /websets/v0/monitors"] == 1
    assert counted["GET /websets/v0/monitors/{id}/runs/{run}"] == 1
    assert counted["POST /websets/v0/webhooks"] == 1
    assert counted["GET /websets/v0/webhooks/{id}/attempts"] == 1


# ----------------------------------------------------------------------------- official SDK


def test_exa_py_monitors_runs_webhooks_attempts_events(emu: Emulator) -> None:
    exa_py = pytest.importorskip("exa_py")
    types_mod = pytest.importorskip("exa_py.websets.types")
    exa = exa_py.Exa(api_key=KEY, base_url=emu.base_url)
    ws = emu.websets.ids()[0]
    monitors = exa.websets.monitors
    created = monitors.create(
        {
            "websetId": ws,
            "cadence": {"cron": "0 8 * * *", "timezone": "Etc/UTC"},
            "behavior": BEHAVIOR,
            "metadata": {"k": "v"},
        }
    )
    assert created.id.startswith("monitor_") and created.webset_id == ws
    assert created.last_run is None and created.next_run_at is not None
    assert monitors.get(created.id).id == created.id
    page = monitors.list(limit=2)
    assert len(page.data) == 2 and page.has_more and page.next_cursor
    assert [m.id for m in monitors.list_all(limit=2)] == emu.monitors.monitor_ids()
    assert {m.id for m in monitors.list_all(webset_id=ws)} >= {created.id}
    updated = monitors.update(created.id, {"status": "disabled", "metadata": {"k": "w"}})
    assert getattr(updated.status, "value", updated.status) == "disabled"
    assert updated.metadata == {"k": "w"}
    runs = emu.monitors.step_monitors(monitor=created.id, status="completed")
    listed = monitors.runs.list(created.id)
    assert [r.id for r in listed.data] == [runs[0]["id"]] and not listed.has_more
    run = monitors.runs.get(created.id, runs[0]["id"])
    assert getattr(run.status, "value", run.status) == "completed" and run.completed_at
    assert monitors.get(created.id).last_run.id == run.id  # type: ignore[union-attr]
    seeded = emu.monitors.monitor_ids()[-1]
    statuses = {getattr(r.status, "value", r.status) for r in monitors.runs.list(seeded).data}
    assert statuses == {"created", "running", "completed", "canceled", "failed"}

    hooks = exa.websets.webhooks
    hook = hooks.create(
        {"events": ["monitor.created", "monitor.run.completed"], "url": HOOK["url"]}
    )
    assert hook.secret and hook.secret.startswith("whsec_")
    assert hooks.get(hook.id).secret is None
    assert [h.id for h in hooks.list_all(limit=1)] == emu.monitors.webhook_ids()
    assert hooks.list(limit=1).has_more
    changed = hooks.update(hook.id, {"events": ["monitor.run.completed"]})
    assert [getattr(e, "value", e) for e in changed.events] == ["monitor.run.completed"]
    emu.monitors.step_webhooks(webhook=hook.id, successful=False)
    emu.monitors.step_webhooks(webhook=hook.id)
    attempts = hooks.attempts.list(hook.id, limit=1)
    assert len(attempts.data) == 1 and attempts.has_more
    everything = list(hooks.list_all_attempts(hook.id, limit=1))
    assert [a.attempt for a in everything] == [2, 1]
    assert everything[0].event_id == run_completed_event_id(emu, run.id)
    failed = hooks.attempts.list(hook.id, successful=False)
    assert [a.successful for a in failed.data] == [False]
    ok = hooks.get_all_attempts(hook.id, event_type="monitor.run.completed", successful=True)
    assert [a.response_status_code for a in ok] == [200]
    seeded_hook = emu.monitors.webhook_ids()[-1]
    assert len(list(hooks.list_all_attempts(seeded_hook))) == 3
    assert hooks.delete(hook.id).id == hook.id
    with pytest.raises(ValueError, match="404"):
        hooks.get(hook.id)
    gone = monitors.delete(created.id)
    assert gone.id == created.id
    with pytest.raises(ValueError, match="404"):
        monitors.get(created.id)

    classes = {
        "monitor.created": types_mod.MonitorCreatedEvent,
        "monitor.updated": types_mod.MonitorUpdatedEvent,
        "monitor.deleted": types_mod.MonitorDeletedEvent,
        "monitor.run.created": types_mod.MonitorRunCreatedEvent,
        "monitor.run.completed": types_mod.MonitorRunCompletedEvent,
    }
    events = list(exa.websets.events.list_all(types=list(classes), limit=50))
    assert Counter(e.type for e in events) == {
        "monitor.created": 5,
        "monitor.updated": 1,
        "monitor.deleted": 1,
        "monitor.run.created": 21,
        "monitor.run.completed": 5,
    }
    for event in events:
        assert isinstance(event, classes[event.type]), (event.type, type(event))
        again = exa.websets.events.get(event.id)
        assert isinstance(again, classes[event.type]) and again.id == event.id


def run_completed_event_id(emu: Emulator, run_id: str) -> str:
    """The id of the ``monitor.run.completed`` event of a run."""
    (event,) = [
        e
        for e in emu.events.all()
        if e["type"] == "monitor.run.completed" and e["data"]["id"] == run_id
    ]
    return str(event["id"])
