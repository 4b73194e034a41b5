"""The ``imports`` table: declared columns, their meaning, and the page-to-Arrow conversion.

The table's shape is declared here, not inferred from the first page, so that it never changes
under a BI tool: every column exists from the first load even when all its values are null, and
timestamps are ``timestamp with time zone`` everywhere. Each page of the API becomes one Arrow
table: dlt loads Arrow tables as Parquet without touching rows one by one, which is what makes
the default path fast (see ``docs/dlt-behaviour.md`` "Speed").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.schema.typing import TColumnSchema, TTableSchemaColumns

from exa_source import settings
from exa_source.exceptions import ExaDataError

TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    """One declared column of the ``imports`` table.

    Attributes:
        name: the API's field name (dlt normalizes it to snake_case in the destination).
        arrow: the Arrow type the page is converted to.
        hints: dlt column hints (type, nullability, merge role).
        meaning: one line for the data dictionary.
        example: an example value for the data dictionary.
    """

    name: str
    arrow: pa.DataType
    hints: TColumnSchema
    meaning: str
    example: str


def _text(meaning: str, example: str, name: str, nullable: bool = True) -> Column:
    return Column(name, pa.string(), {"data_type": "text", "nullable": nullable}, meaning, example)


def _ts(meaning: str, example: str, name: str, nullable: bool = True) -> Column:
    hints: TColumnSchema = {"data_type": "timestamp", "timezone": True, "nullable": nullable}
    return Column(name, TIMESTAMP, hints, meaning, example)


#: The columns in the API's key order (``docs/exa-api.md`` §3.3), ``entity`` split into two columns.
COLUMNS: tuple[Column, ...] = (
    Column(
        "id",
        pa.string(),
        {"data_type": "text", "nullable": False, "primary_key": True},
        "Import id: `import_` + a ULID whose time part is the creation time.",
        "import_01karvd35zwwmej8ee444tpcbp",
    ),
    _text("Object type, always `import`.", "import", "object"),
    _text("Lifecycle: pending, processing, completed, failed or canceled.", "completed", "status"),
    _text("Source format: `csv` (or `webset`).", "csv", "format"),
    _text(
        "Entity type of the rows: company, person, article, research_paper or custom.",
        "company",
        "entity__type",
    ),
    _text(
        "Description of a `custom` entity; null for the other types.",
        "Seed-stage climate startups",
        "entity__description",
    ),
    _text("Title of the import.", "Q3 target accounts", "title"),
    Column(
        "count",
        pa.int64(),
        {"data_type": "bigint", "nullable": True},
        "Number of records in the imported file.",
        "91",
    ),
    Column(
        "metadata",
        pa.string(),
        {"data_type": "json", "nullable": True},
        "Free-form string-to-string map set by the user, as one JSON value.",
        '{"team": "growth"}',
    ),
    _text(
        "Why the import failed: invalid_format, invalid_file_content or missing_identifier.",
        "invalid_file_content",
        "failedReason",
    ),
    _text("Human-readable failure message.", "The file has no data rows", "failedMessage"),
    _ts("When the import failed.", "2025-11-23 17:16:09.512+00", "failedAt"),
    _ts("When the import was created.", "2025-11-23 17:16:04.201+00", "createdAt", False),
    _ts(
        "Last change; compared with the stored value on every run to find what changed.",
        "2025-11-23 17:16:04.403+00",
        "updatedAt",
        False,
    ),
    _ts(
        "When exa-source found the import gone from the API (soft delete); null while it exists.",
        "2026-11-28 16:40:00.000+00",
        settings.DELETED_AT_COLUMN,
    ),
    _text(
        "The dlt load that wrote this row: join `_dlt_loads.load_id` for its time and status;"
        " the key for dbt incremental models and lineage.",
        "1795902089.9450753",
        settings.LOAD_ID_COLUMN,
    ),
)


def column_hints(hard_delete: bool = False) -> TTableSchemaColumns:
    """Dlt column hints for the resource, keyed by the API's field names.

    Args:
        hard_delete: mark ``_exa_deleted_at`` as dlt's ``hard_delete`` column, so that a row
            yielded with it set deletes the stored row instead of being written (``hard``
            deletion policy). Set explicitly to False otherwise, so that switching back to
            ``soft`` overrides the hint stored in the schema.
    """
    hints: TTableSchemaColumns = {c.name: {"name": c.name, **c.hints} for c in COLUMNS}
    hints[settings.DELETED_AT_COLUMN]["hard_delete"] = hard_delete
    return hints


ARROW_SCHEMA = pa.schema(
    [pa.field(c.name, c.arrow, nullable=c.hints.get("nullable", True)) for c in COLUMNS]
)
_KNOWN = frozenset(c.name for c in COLUMNS) | {"entity"}


def _json_or_none(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


_ENTITY = pa.struct([("type", pa.string()), ("description", pa.string())])


def values(rows: Sequence[dict[str, Any]], key: str) -> list[Any]:
    """Return ``row[key]`` for every row; C-speed when every row has the key (the norm)."""
    try:
        return list(map(itemgetter(key), rows))
    except KeyError:
        return [row.get(key) for row in rows]


def _metadata(rows: Sequence[dict[str, Any]]) -> pa.Array:
    """Encode each ``metadata`` map as one JSON text (loaded into a JSON column)."""
    maps = values(rows, "metadata")
    if None in maps:
        return pa.array([_json_or_none(v) for v in maps], pa.string())
    return pa.array(list(map(orjson.dumps, maps)), pa.string())


def _timestamps(name: str, values: list[Any], rows: Sequence[dict[str, Any]]) -> pa.Array:
    """Parse ISO-8601 strings as UTC timestamps, vectorised.

    The API writes ``2025-11-23T17:15:22.175Z``; Arrow also accepts ``+00:00`` offsets and other
    precisions, so mixed forms compare as instants, never as text.

    Raises:
        ExaDataError: a value is not an ISO-8601 timestamp, naming the import.
    """
    try:
        return pc.cast(pa.array(values, pa.string()), TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        for row, value in zip(rows, values, strict=True):
            if value is None:
                continue
            try:
                pc.cast(pa.array([value], pa.string()), TIMESTAMP)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise ExaDataError(
                    f"import {row.get('id')!r} has an unparseable {name}: {value!r}"
                ) from None
        raise


def _require(name: str, values: pa.Array, rows: Sequence[dict[str, Any]]) -> None:
    """Raise when a field the incremental load depends on is missing, naming the import."""
    if values.null_count:
        bad = next(row.get("id") for row in rows if row.get(name) is None)
        raise ExaDataError(f"import {bad!r} has no {name}; cannot load it incrementally")


def keys(rows: Sequence[dict[str, Any]]) -> tuple[pa.Array, pa.Array]:
    """Return the ``id`` and parsed ``updatedAt`` arrays of Import objects, nothing else.

    Cheap enough to run on every row of every run: the incremental filter and deletion
    detection need only these two, so the other columns are converted only for rows that
    changed.

    Raises:
        ExaDataError: an ``id`` or ``updatedAt`` is missing, or ``updatedAt`` is unparseable.
    """
    ids = pa.array(values(rows, "id"), pa.string())
    updated = _timestamps(settings.CURSOR_FIELD, values(rows, settings.CURSOR_FIELD), rows)
    _require("id", ids, rows)
    _require(settings.CURSOR_FIELD, updated, rows)
    return ids, updated


def _extra_column(key: str, rows: Sequence[dict[str, Any]]) -> pa.Array:
    """Convert a field the API added after this schema was written (additive evolution)."""
    values = [row.get(key) for row in rows]
    if any(isinstance(v, (dict, list)) for v in values):
        return pa.array([_json_or_none(v) for v in values], pa.string())
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def page_to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Convert Import objects (one or more pages) into an Arrow table with the declared columns.

    Args:
        rows: Import objects as the API sends them.

    Returns:
        A table with every declared column (nulls where a field is missing) plus one column
        per field the API added that is not declared yet (additive schema evolution).

    Raises:
        ExaDataError: ``id`` or ``updatedAt`` is missing or unparseable, or a value does not fit
            its declared type (the API changed a type: fail loudly, no variant columns).
    """
    try:
        entity = pa.array(values(rows, "entity"), _ENTITY)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        entity = pa.array(
            [e if isinstance(e, dict) else None for e in values(rows, "entity")], _ENTITY
        )
    arrays: list[pa.Array] = []
    for column in COLUMNS:
        name = column.name
        if name == settings.LOAD_ID_COLUMN:
            arrays.append(pa.nulls(len(rows), pa.string()))  # stamped by the scan (sync.py)
        elif name == settings.DELETED_AT_COLUMN:
            arrays.append(pa.nulls(len(rows), TIMESTAMP))  # live: the API only lists live imports
        elif name == "metadata":
            arrays.append(_metadata(rows))
        elif name.startswith("entity__"):
            arrays.append(pc.struct_field(entity, name.removeprefix("entity__")))
        elif column.arrow == TIMESTAMP:
            arrays.append(_timestamps(name, values(rows, name), rows))
        else:
            try:
                arrays.append(pa.array(values(rows, name), column.arrow))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise ExaDataError(
                    f"the API changed the type of {name!r}: {exc}. Declared"
                    f" {column.hints.get('data_type')}; refusing to load a variant column."
                ) from None
    table = pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)
    for name in ("id", settings.CURSOR_FIELD):
        _require(name, table.column(name).combine_chunks(), rows)
    extra = set().union(*rows) - _KNOWN
    for key in sorted(extra):
        table = table.append_column(key, _extra_column(key, rows))
    return table
