"""The declared ``imports`` columns and the page-to-Arrow conversion."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pytest

from exa_source import ExaDataError
from exa_source.schema import COLUMNS, column_hints, page_to_table


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "import_01karvd35zwwmej8ee444tpcbp",
        "object": "import",
        "status": "completed",
        "format": "csv",
        "entity": {"type": "custom", "description": "Climate startups"},
        "title": "Accounts",
        "count": 10,
        "metadata": {"team": "growth"},
        "failedReason": None,
        "failedMessage": None,
        "failedAt": None,
        "createdAt": "2025-11-23T17:16:04.201Z",
        "updatedAt": "2025-11-23T17:16:04.403Z",
    }
    base.update(overrides)
    return base


def test_every_declared_column_exists_with_its_type_even_when_null() -> None:
    table = page_to_table([record(entity={"type": "company"}, metadata={})])
    assert table.column_names == [c.name for c in COLUMNS]
    assert table.schema.field("updatedAt").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("count").type == pa.int64()
    assert table.column("failedAt").null_count == 1
    assert table.column("entity__description").to_pylist() == [None]
    assert column_hints()["metadata"]["data_type"] == "json"
    assert column_hints()["id"]["primary_key"] is True
    assert column_hints()["_exa_deleted_at"]["hard_delete"] is False
    assert column_hints(hard_delete=True)["_exa_deleted_at"]["hard_delete"] is True


def test_values_are_converted() -> None:
    row = page_to_table([record()]).to_pylist()[0]
    assert row["entity__type"] == "custom"
    assert row["entity__description"] == "Climate startups"
    assert json.loads(row["metadata"]) == {"team": "growth"}
    assert row["updatedAt"] == datetime(2025, 11, 23, 17, 16, 4, 403000, tzinfo=timezone.utc)


def test_mixed_timestamp_forms_compare_as_instants() -> None:
    """Text comparison of Z vs +00:00 forms lost rows in dlt; here they are instants."""
    forms = [
        "2025-11-23T17:16:04.403Z",
        "2025-11-23T17:16:04.403+00:00",
        "2025-11-23T19:16:04.403+02:00",
        "2025-11-23T17:16:04.403000Z",
    ]
    table = page_to_table([record(id=f"import_{i}", updatedAt=f) for i, f in enumerate(forms)])
    assert len(set(table.column("updatedAt").to_pylist())) == 1


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-45T00:00:00Z"])
def test_unparseable_updated_at_names_the_import(bad: str) -> None:
    rows = [record(id="import_good"), record(id="import_bad", updatedAt=bad)]
    with pytest.raises(ExaDataError, match=r"import_bad.*updatedAt"):
        page_to_table(rows)


def test_missing_updated_at_names_the_import() -> None:
    row = record(id="import_nocursor")
    del row["updatedAt"]
    with pytest.raises(ExaDataError, match=r"import_nocursor.*no updatedAt"):
        page_to_table([record(), row])


def test_new_fields_are_added_and_types_changes_fail_loudly() -> None:
    table = page_to_table([record(websetId="webset_1", extra={"a": 1}), record()])
    assert table.column("websetId").to_pylist() == ["webset_1", None]
    assert json.loads(table.column("extra")[0].as_py()) == {"a": 1}
    with pytest.raises(ExaDataError, match="changed the type of 'count'"):
        page_to_table([record(count="ten")])


def test_unknown_enum_values_and_null_entity_pass_through() -> None:
    table = page_to_table([record(status="archived", entity=None), record(entity={"type": "x"})])
    assert table.column("status").to_pylist() == ["archived", "completed"]
    assert table.column("entity__type").to_pylist() == [None, "x"]


@pytest.mark.parametrize(
    ("form", "instant"),
    [
        ("2025-11-23T17:16:04.123456789Z", "2025-11-23T17:16:04.123456+00:00"),  # truncated
        ("2025-11-23T17:16:04", "2025-11-23T17:16:04+00:00"),  # naive = UTC
        ("2025-11-23", "2025-11-23T00:00:00+00:00"),  # date only = midnight UTC
        ("2025-11-23T19:16:04.1234567+0200", "2025-11-23T17:16:04.123456+00:00"),
        ("20251123T171604Z", "2025-11-23T17:16:04+00:00"),  # basic form
        ("2025-11-23 17:16:04,5+01", "2025-11-23T16:16:04.500000+00:00"),
    ],
)
def test_every_iso_8601_form_loads_with_a_documented_interpretation(
    form: str, instant: str
) -> None:
    table = page_to_table([record(updatedAt=form, createdAt=form, failedAt=form)])
    expected = datetime.fromisoformat(instant)
    for name in ("updatedAt", "createdAt", "failedAt"):
        assert table.column(name)[0].as_py() == expected


def test_an_id_that_is_not_a_string_names_itself() -> None:
    with pytest.raises(ExaDataError, match=r"id that is not a string: 12345 \(int\)"):
        page_to_table([record(), record(id=12345)])


def test_nul_characters_are_replaced_in_text_and_json() -> None:
    row = record(
        id="import_\x00nul",
        title="a\x00b",
        entity={"type": "custom", "description": "d\x00"},
        metadata={"k\x00": "v\x00", "ok": "\\u0000 is text"},
        websetNote="n\x00",
        extra={"deep": ["x\x00"]},
    )
    table = page_to_table([row, record()])
    got = table.to_pylist()[0]
    assert got["id"] == "import_\ufffdnul"
    assert got["title"] == "a\ufffdb"
    assert got["entity__description"] == "d\ufffd"
    assert json.loads(got["metadata"]) == {"k\ufffd": "v\ufffd", "ok": "\\u0000 is text"}
    assert got["websetNote"] == "n\ufffd"
    assert json.loads(got["extra"]) == {"deep": ["x\ufffd"]}
    assert "\x00" not in json.dumps(table.to_pylist(), default=str)


def test_api_fields_never_write_dlt_or_connector_columns() -> None:
    row = record(
        _dlt_load_id="9999999999.999",
        _dlt_id="forged",
        _dltLoadId="camel",
        _exa_deleted_at="2020-01-01T00:00:00Z",
        updated_at="snake twin of updatedAt",
    )
    table = page_to_table([row])
    got = table.to_pylist()[0]
    assert got["_dlt_load_id"] is None  # stamped by the scan, never by the API
    assert got["_exa_deleted_at"] is None
    assert "_dlt_id" not in got
    assert got["api_dlt_id"] == "forged"
    assert got["api_exa_deleted_at"] == "2020-01-01T00:00:00Z"
    assert got["api_updated_at"] == "snake twin of updatedAt"
    assert got["api_dlt_load_id"] == "camel"  # _dltLoadId sorts first; its twin is skipped


# ------------------------------------------------------------------ websets, searches, items


def item(**overrides: Any) -> dict[str, Any]:
    """A WebsetItem as the API sends it (docs/exa-api.md §4.3)."""
    base: dict[str, Any] = {
        "id": "witem_01",
        "object": "webset_item",
        "source": "search",
        "sourceId": "wsearch_01",
        "websetId": "webset_01",
        "properties": {
            "type": "person",
            "url": "https://example.com/ada",
            "description": "CTO",
            "person": {
                "name": "Ada",
                "position": "CTO",
                "location": "Berlin",
                "company": {"name": "Nova", "location": None},
            },
        },
        "evaluations": [{"criterion": "c", "satisfied": "yes", "references": []}],
        "enrichments": None,
        "createdAt": "2025-11-23T17:16:04.201Z",
        "updatedAt": "2025-11-23T17:16:04.403Z",
    }
    base.update(overrides)
    return base


def test_items_properties_are_typed_per_entity_and_kept_whole() -> None:
    from exa_source.schema import ITEMS

    company = item(
        id="witem_02",
        properties={"type": "company", "url": "u", "company": {"name": "Nova", "employees": 12}},
    )
    rows = ITEMS.to_table([item(), company]).to_pylist()
    assert (rows[0]["entity_type"], rows[0]["name"], rows[0]["company_name"]) == (
        "person",
        "Ada",
        "Nova",
    )
    assert (rows[1]["name"], rows[1]["employees"], rows[1]["company_name"]) == ("Nova", 12, None)
    assert json.loads(rows[0]["properties"])["person"]["position"] == "CTO"
    assert rows[0]["enrichments"] is None and json.loads(rows[0]["evaluations"])[0]["criterion"]


def test_a_derived_field_of_another_type_is_null_not_a_failed_load() -> None:
    """A typed copy of a properties field never fails the load: the JSON column has it."""
    from exa_source.schema import ITEMS

    odd = item(properties={"type": "company", "company": {"name": "X", "employees": "about 10"}})
    row = ITEMS.to_table([odd]).to_pylist()[0]
    assert row["employees"] is None
    assert json.loads(row["properties"])["company"]["employees"] == "about 10"


def test_a_stored_row_converts_back_like_the_listed_one() -> None:
    """Deletion marks rebuild the API object from the stored row (nested fields included)."""
    from exa_source.schema import ITEMS, SEARCHES

    search = {
        "id": "wsearch_01",
        "websetId": "webset_01",
        "status": "running",
        "query": "q",
        "entity": {"type": "company"},
        "progress": {"found": 3, "analyzed": 9, "completion": 30.0, "timeLeft": None},
        "createdAt": "2025-11-23T17:16:04.201Z",
        "updatedAt": "2025-11-23T17:16:04.403Z",
    }
    for spec, obj in ((ITEMS, item()), (SEARCHES, search)):
        listed = spec.to_table([obj])
        stored = {
            spec_name: value
            for spec_name, value in zip(
                [c for c in spec.stored_columns()], listed.to_pylist()[0].values(), strict=True
            )
        }
        again = spec.to_table([spec.to_api(stored)])
        assert again.to_pylist() == listed.to_pylist()


def test_unknown_fields_become_columns_without_taking_owned_names() -> None:
    from exa_source.schema import ITEMS

    table = ITEMS.to_table([item(scopeId="s1", entity_type="clash")])
    assert table.column("scopeId").to_pylist() == ["s1"]
    assert table.column("api_entity_type").to_pylist() == ["clash"]


def test_monitor_webhook_and_event_rows_convert_with_nul_and_no_secret() -> None:
    """The new tables: typed columns, NUL replaced, a webhook secret dropped even if sent."""
    from exa_source.schema import EVENTS, MONITORS, WEBHOOK_ATTEMPTS, WEBHOOKS

    at = "2026-12-05T09:04:10.123Z"
    attempt = {
        "id": "webhook_attempt_1",
        "object": "webhook_attempt",
        "eventId": "event_1",
        "eventType": "monitor.run.completed",
        "webhookId": "webhook_1",
        "url": "https://h.io/x",
        "successful": False,
        "responseHeaders": {"x": "y\x00"},
        "responseBody": "boom\x00",
        "responseStatusCode": 503,
        "attempt": 2,
        "attemptedAt": at,
    }
    got = WEBHOOK_ATTEMPTS.to_table([attempt]).to_pylist()[0]
    assert got["responseBody"] == "boom\ufffd" and json.loads(got["responseHeaders"]) == {
        "x": "y\ufffd"
    }
    assert got["successful"] is False and got["responseStatusCode"] == 503
    _, versions = WEBHOOK_ATTEMPTS.keys([attempt])
    assert versions[0].as_py() == datetime(2026, 12, 5, 9, 4, 10, 123000, tzinfo=timezone.utc)

    hook = {"id": "webhook_1", "status": "active", "events": ["monitor.created"], "url": "u"}
    hook |= {"secret": "whsec_leak", "createdAt": at, "updatedAt": at}
    table = WEBHOOKS.to_table([hook])
    assert "secret" not in table.column_names and "whsec_leak" not in str(table.to_pylist())

    monitor = {"id": "monitor_1", "status": "enabled", "websetId": "webset_1"}
    monitor |= {"cadence": {"cron": "0 9 * * *", "timezone": "Etc/UTC"}, "metadata": {}}
    monitor |= {"behavior": {"type": "search", "config": {"query": "q", "count": 5}}}
    monitor |= {"lastRun": {"id": "monitor_run_1", "status": "failed"}, "nextRunAt": None}
    monitor |= {"createdAt": at, "updatedAt": at}
    row = MONITORS.to_table([monitor]).to_pylist()[0]
    assert row["cadence__cron"] == "0 9 * * *" and row["last_run_status"] == "failed"
    assert json.loads(row["behavior__config"]) == {"query": "q", "count": 5}

    event = {"id": "event_1", "object": "event", "type": "webset.item.created", "createdAt": at}
    event["data"] = {"id": "witem_1", "object": "webset_item", "websetId": "w\x00"}
    row = EVENTS.to_table([event]).to_pylist()[0]
    assert (row["subject_id"], row["subject_object"], row["webset_id"]) == (
        "witem_1",
        "webset_item",
        "w\ufffd",
    )
    with pytest.raises(ExaDataError, match="createdAt"):
        EVENTS.to_table([{**event, "createdAt": "not a time"}])
