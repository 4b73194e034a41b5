"""Exactly once under faults: every fault the emulator can inject, over real HTTP, both engines.

Each case: a clean first load, a few upstream changes, then a run with the fault injected.
Afterwards (or after the failure plus one clean rerun) the destination equals the emulator, and
the committed state describes what landed:

* a run that succeeds records a complete scan whose highest ``updatedAt`` is the table's;
* a run that fails leaves the table and the committed state exactly as they were.

Retries are kept fast with ``RUNTIME__REQUEST_*`` settings, which the tests also check are
honoured: attempt counts seen by the emulator, and the waits the retry policy sleeps (recorded
from tenacity's sleep, so no assertion depends on how fast this machine is).
"""

from __future__ import annotations

import math
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import formatdate
from typing import Any

import orjson
import pytest
import tenacity.nap
from conftest import KEY, Target, _ts, assert_equals_emulator

from exa_source import ExaAPIError, ExaConfigError, ExaDataError, exa_websets_source
from exa_source.emulator import Emulator, Fault
from exa_source.pipeline import make_pipeline, run_load

LIST = ("GET", "/websets/v0/imports")
IMPORTS = 450
#: seeded imports plus the 5 the upstream change creates: 3 pages of 200
PAGES = math.ceil((IMPORTS + 5) / 200)
MAX_ATTEMPTS = 3

FAST_RETRIES = {
    "RUNTIME__REQUEST_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "RUNTIME__REQUEST_BACKOFF_FACTOR": "0.01",
    "RUNTIME__REQUEST_MAX_RETRY_DELAY": "1",
    "RUNTIME__REQUEST_TIMEOUT": "5",
}


def _first_page(emu: Emulator, edit: Callable[[list[dict[str, Any]]], None]) -> Fault:
    """A 200 reply carrying the real first page (real cursor) with its records edited."""
    page = emu.store.page(None, 200, emu.quirk_last_page)
    body = orjson.loads(page.to_json())
    edit(body["data"])
    return Fault("status", status=200, body=body)


def _drop_updated_at(rows: list[dict[str, Any]]) -> None:
    del rows[7]["updatedAt"]


def _bad_updated_at(rows: list[dict[str, Any]]) -> None:
    rows[7]["updatedAt"] = "2026-13-45T99:00:00Z"


def _new_fields(rows: list[dict[str, Any]]) -> None:
    for row in rows[:3]:
        row["priority"] = 7
        row["webhook"] = {"url": "https://example.com/hook", "events": ["import.completed"]}


def _http_date(seconds: float) -> str:
    return formatdate(time.time() + seconds, usegmt=True)


@dataclass(frozen=True)
class Case:
    """One fault scenario.

    Attributes:
        faults: builds the faults to inject (called after the upstream change).
        env: settings on top of :data:`FAST_RETRIES`.
        error: expected error type and message regex when the faulted run must fail.
        extra_requests: list requests the emulator sees beyond one per page.
        waits: check of the seconds the retry policy slept, in order (``None``: not checked).
        upstream: extra store changes before the faulted run.
        check: extra assertion after the faulted run.
    """

    faults: Callable[[Emulator], list[Fault]]
    env: dict[str, str] = field(default_factory=dict)
    error: tuple[type[Exception], str] | None = None
    extra_requests: int | None = 0
    waits: Callable[[list[float]], bool] | None = None
    upstream: Callable[[Emulator], None] | None = None
    check: Callable[[Target, Emulator], None] | None = None


def _new_column_check(target: Target, emu: Emulator) -> None:
    rows = {r["id"]: r for r in target.rows()}
    first = [r["id"] for r in emu.store.snapshot()[:3]]
    assert [rows[i]["priority"] for i in first] == [7, 7, 7]
    assert orjson.loads(rows[first[0]]["webhook"]) == {
        "url": "https://example.com/hook",
        "events": ["import.completed"],
    }
    assert sum(r["priority"] is not None for r in rows.values()) == 3


def _new_enums(emu: Emulator) -> None:
    live = [r["id"] for r in emu.store.snapshot() if r["status"] in ("pending", "processing")]
    emu.store.advance(live[0], "canceled")
    emu.store.create({"type": "organization"}, title="entity type not in the docs", count=3)


def _new_enums_check(target: Target, emu: Emulator) -> None:
    rows = target.rows()
    assert "organization" in {r["entity__type"] for r in rows}
    assert "canceled" in {r["status"] for r in rows}


CASES: dict[str, Case] = {
    "429 Retry-After seconds": Case(
        lambda e: [Fault("status", status=429, headers={"Retry-After": "1"}, skip=1)],
        env={"RUNTIME__REQUEST_MAX_RETRY_DELAY": "5"},
        extra_requests=1,
        waits=lambda w: w == [1.0],
    ),
    # an HTTP date an hour ahead, capped to 2 s: the date was read (without it: 0.01 s backoff)
    "429 Retry-After HTTP date": Case(
        lambda e: [Fault("status", status=429, headers={"Retry-After": _http_date(3600)})],
        env={"RUNTIME__REQUEST_MAX_RETRY_DELAY": "2"},
        extra_requests=1,
        waits=lambda w: w == [2.0],
    ),
    "429 Retry-After capped by max_retry_delay": Case(
        lambda e: [Fault("status", status=429, headers={"Retry-After": "120"})],
        extra_requests=1,
        waits=lambda w: w == [1.0],
    ),
    "429 without Retry-After": Case(
        lambda e: [Fault("status", status=429, times=MAX_ATTEMPTS - 1)],
        extra_requests=MAX_ATTEMPTS - 1,
        # the configured backoff (factor 0.01); dlt's default (factor 1) would wait 1 + 2 s
        waits=lambda w: len(w) == MAX_ATTEMPTS - 1 and sum(w) < 0.5,
    ),
    "500 burst < budget": Case(
        lambda e: [Fault("status", status=500, skip=1, times=MAX_ATTEMPTS - 1)],
        extra_requests=MAX_ATTEMPTS - 1,
    ),
    "502 burst < budget": Case(
        lambda e: [Fault("status", status=502, times=MAX_ATTEMPTS - 1)],
        extra_requests=MAX_ATTEMPTS - 1,
    ),
    "503 burst < budget": Case(
        lambda e: [Fault("status", status=503, skip=2, times=MAX_ATTEMPTS - 1)],
        extra_requests=MAX_ATTEMPTS - 1,
    ),
    "500 burst > budget": Case(
        lambda e: [Fault("status", status=500, skip=1, times=MAX_ATTEMPTS)],
        error=(ExaAPIError, f"kept failing after {MAX_ATTEMPTS} attempts.*500"),
        extra_requests=None,
    ),
    "502 burst > budget": Case(
        lambda e: [Fault("status", status=502, skip=2, times=50)],
        error=(ExaAPIError, f"kept failing after {MAX_ATTEMPTS} attempts.*502"),
        extra_requests=None,
    ),
    "503 burst > budget (5 attempts)": Case(
        lambda e: [Fault("status", status=503, times=5)],
        env={"RUNTIME__REQUEST_MAX_ATTEMPTS": "5"},
        error=(ExaAPIError, "kept failing after 5 attempts.*503"),
        extra_requests=None,
    ),
    "connection reset mid-body": Case(
        lambda e: [Fault("reset", skip=1)],
        extra_requests=1,
    ),
    "connection reset > budget": Case(
        lambda e: [Fault("reset", skip=1, times=MAX_ATTEMPTS)],
        error=(ExaAPIError, f"after {MAX_ATTEMPTS} attempts"),
        extra_requests=None,
    ),
    # the timeout leaves a busy machine 1.5 s for each normal page; the slow reply takes 4 s
    "slower than the timeout": Case(
        lambda e: [Fault("slow", delay=4.0, skip=1)],
        env={"RUNTIME__REQUEST_TIMEOUT": "1.5"},
        extra_requests=1,
        waits=lambda w: len(w) == 1,
    ),
    "slower than the timeout > budget": Case(
        lambda e: [Fault("slow", delay=4.0, times=MAX_ATTEMPTS)],
        env={"RUNTIME__REQUEST_TIMEOUT": "1.5"},
        error=(ExaAPIError, f"after {MAX_ATTEMPTS} attempts: ReadTimeout"),
        extra_requests=None,
    ),
    "malformed JSON (200, truncated)": Case(
        lambda e: [Fault("malformed", skip=2)],
        extra_requests=1,
    ),
    "malformed JSON > budget": Case(
        lambda e: [Fault("malformed", skip=1, times=MAX_ATTEMPTS)],
        error=(ExaAPIError, f"after {MAX_ATTEMPTS} attempts: MalformedResponseError"),
        extra_requests=None,
    ),
    "gateway HTML 502": Case(lambda e: [Fault("html", skip=1)], extra_requests=1),
    # a complete 200 body that is not JSON (a captive portal, a wrong base URL) answers the
    # same way every time: failing at once beats five identical attempts
    "gateway HTML with 200": Case(
        lambda e: [Fault("html", status=200)],
        error=(ExaAPIError, "with a body that is not JSON .*not retried"),
        extra_requests=None,
    ),
    "record without updatedAt": Case(
        lambda e: [_first_page(e, _drop_updated_at)],
        error=(ExaDataError, r"import 'import_\w+' has no updatedAt"),
        extra_requests=None,
    ),
    "record with unparseable updatedAt": Case(
        lambda e: [_first_page(e, _bad_updated_at)],
        error=(ExaDataError, r"import 'import_\w+' has an unparseable updatedAt: '2026-13-45"),
        extra_requests=None,
    ),
    "unknown new fields": Case(lambda e: [_first_page(e, _new_fields)], check=_new_column_check),
    "new enum values (canceled, unknown entity type)": Case(
        lambda e: [], upstream=_new_enums, check=_new_enums_check
    ),
}


def _cursor(target: Target) -> dict[str, Any]:
    """The last scan's description as committed in the destination (synced into a fresh
    pipeline)."""
    pipeline = target.pipeline()
    pipeline.sync_destination()
    state: dict[str, Any] = pipeline.state["sources"]["exa"]["resources"]["imports"]
    return dict(state["last_scan"])


def _assert_cursor_matches_table(target: Target) -> None:
    """The committed scan is complete and its newest updatedAt is the newest live row's."""
    scan = _cursor(target)
    landed = max(r["updated_at"] for r in target.rows() if r["_exa_deleted_at"] is None)
    assert scan["complete"] is True
    assert _ts(datetime.fromisoformat(scan["max_updated_at"])) == _ts(landed)


def _record_retry_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record every wait of dlt's retrying session (tenacity's default sleep), then sleep it."""
    waits: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        waits.append(round(seconds, 3))
        real_sleep(seconds)

    monkeypatch.setattr(tenacity.nap, "time", types.SimpleNamespace(sleep=sleep))
    return waits


@pytest.mark.parametrize("name", list(CASES))
def test_fault_matrix(name: str, target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    for key, value in {**FAST_RETRIES, **case.env}.items():
        monkeypatch.setenv(key, value)
    waits = _record_retry_waits(monkeypatch)
    with Emulator(api_key=KEY, imports=IMPORTS).start() as emu:
        target.load(emu)
        emu.store.mutate(update=20, create=5, advance=5, seed=11)
        if case.upstream:
            case.upstream(emu)
        before_rows, before_cursor = target.rows(), _cursor(target)
        for fault in case.faults(emu):
            emu.faults.add(fault)
        emu.reset_stats()
        waits.clear()

        if case.error:
            error, message = case.error
            with pytest.raises(error, match=message) as info:
                target.load(emu)
            assert KEY not in str(info.value)
            # nothing landed and the cursor did not move
            assert target.rows() == before_rows
            assert _cursor(target) == before_cursor
            emu.faults.clear()
            target.load(emu)
        else:
            target.load(emu)
            assert not emu.faults.pending(), "the fault never fired"
            if case.extra_requests is not None:
                assert emu.stats.requests[LIST] == PAGES + case.extra_requests
            if case.waits is not None:
                assert case.waits(waits), waits
        if case.check:
            case.check(target, emu)
        assert_equals_emulator(target, emu)
        _assert_cursor_matches_table(target)


def test_change_during_paging_loses_nothing(target: Target) -> None:
    """Imports are created, updated and deleted while a run pages through the list."""
    with Emulator(api_key=KEY, imports=1_000).start() as emu:
        target.load(emu)
        read_first = set(emu.store.ids()[:400])  # pages 1-2, read before the churn
        changed: dict[str, list[str]] = {}

        def churn(store: Any) -> None:
            changed.update(store.mutate(update=40, create=15, delete=10, advance=10, seed=5))

        emu.faults.add(Fault("mutate", skip=2, fn=churn))  # before the 3rd of 5 pages
        during = target.load(emu)
        assert changed, "the mutate fault never fired"
        # new imports sort first (newest first): not seen; deletions ahead of the scan: gone
        unread_deleted = [i for i in changed["deleted"] if i not in read_first]
        assert during.tables["imports"]["rows"] == 1_000 - len(unread_deleted)
        after = target.load(emu)
        assert after.tables["imports"]["rows"] == 1_000 + 15 - 10
        # the live rows equal the emulator; the deleted ones are kept, soft-deleted
        assert_equals_emulator(target, emu)
        rows = {r["id"]: r for r in target.rows()}
        assert all(rows[i]["_exa_deleted_at"] is not None for i in changed["deleted"])
        assert all(i in rows for i in changed["created"])
        _assert_cursor_matches_table(target)


# --- validation: a bad option fails before the first request --------------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("page_size", 0, "outside 1-200"),
        ("page_size", 201, "outside 1-200"),
        ("page_size", "200", "must be an integer"),
        ("base_url", "http://exa.example.com", "non-loopback"),
        ("initial_updated_at", "2025-02-30", "not an ISO-8601"),
        ("deletions", "sometimes", "must be one of"),
    ],
)
def test_bad_options_send_no_request(
    tmp_path: Any, emulator: Emulator, option: str, value: Any, message: str
) -> None:
    pipeline = make_pipeline(
        "duckdb", str(tmp_path / "x.duckdb"), pipeline_name="v", pipelines_dir=str(tmp_path)
    )
    options: dict[str, Any] = {"api_key": KEY, "base_url": emulator.base_url, option: value}
    with pytest.raises(ExaConfigError, match=message):
        run_load(pipeline, **options)
    assert sum(emulator.stats.requests.values()) == 0
    assert not (tmp_path / "x.duckdb").exists()


def test_unknown_destination_sends_no_request(emulator: Emulator) -> None:
    with pytest.raises(ExaConfigError, match="unknown destination"):
        make_pipeline("nosuchdb")
    assert sum(emulator.stats.requests.values()) == 0


def test_plain_http_is_allowed_only_on_loopback() -> None:
    for url in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9", "https://x.io"):
        exa_websets_source(api_key=KEY, base_url=url)
    with pytest.raises(ExaConfigError, match="non-loopback"):
        exa_websets_source(api_key=KEY, base_url="http://10.0.0.1:8080")
