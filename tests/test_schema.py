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
