"""The ``imports`` table: declared columns, their meaning, and the page-to-Arrow conversion.

The table's shape is declared here, not inferred from the first page, so that it never changes
under a BI tool: every column exists from the first load even when all its values are null, and
timestamps are ``timestamp with time zone`` everywhere. Each page of the API becomes one Arrow
table: dlt loads Arrow tables as Parquet without touching rows one by one, which is what makes
the default path fast (see ``docs/dlt-behaviour.md`` "Speed").
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention
from dlt.common.schema.typing import TColumnSchema, TTableSchemaColumns

from exa_source import settings
from exa_source.exceptions import ExaDataError

logger = logging.getLogger(__name__)

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
#: API fields converted into declared columns; ``_dlt_load_id`` and ``_exa_deleted_at`` are not
#: API fields: an API field of that name is stored renamed (:func:`column_name`).
_KNOWN = frozenset(
    c.name for c in COLUMNS if c.name not in (settings.LOAD_ID_COLUMN, settings.DELETED_AT_COLUMN)
) | {"entity"}


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


#: ISO-8601 as far as the connector accepts it: extended or basic form, ``T``/space, optional
#: time, any number of fraction digits, ``Z``/offset/none (``docs/exa-api.md`` §4.4).
_ISO_8601 = re.compile(
    r"(\d{4})-?(\d{2})-?(\d{2})"
    r"(?:[Tt ](\d{2}):?(\d{2})(?::?(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?"
)


def normalize_timestamp(value: Any) -> str | None:
    """Rewrite an ISO-8601 value into the one form Arrow parses, or None if it is not one.

    The API writes ``2025-11-23T17:15:22.175Z``, which Arrow parses directly; this is the slow
    path for the other valid forms, with a fixed interpretation: no offset means UTC, a date
    alone means midnight UTC, fractions beyond microseconds are truncated (nanoseconds would
    not survive DuckDB or PostgreSQL, and truncation keeps the scan's comparison with the
    stored value exact).
    """
    if not isinstance(value, str):
        return None
    match = _ISO_8601.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset is None or offset in ("Z", "z"):
        offset = "+00:00"
    elif len(offset) == 3:
        offset += ":00"
    elif ":" not in offset:
        offset = f"{offset[:3]}:{offset[3:]}"
    micros = (fraction or "")[:6].ljust(6, "0")
    return f"{year}-{month}-{day}T{hour or '00'}:{minute or '00'}:{second or '00'}.{micros}{offset}"


def _timestamps(name: str, values: list[Any], rows: Sequence[dict[str, Any]]) -> pa.Array:
    """Parse ISO-8601 strings as UTC timestamps, vectorised.

    The API writes ``2025-11-23T17:15:22.175Z``; Arrow also accepts ``+00:00`` offsets and
    millisecond or microsecond precision. Any other ISO-8601 form (nanoseconds, no offset, a
    date alone) goes through :func:`normalize_timestamp`, one batch at a time, only when the
    fast path fails. Mixed forms compare as instants, never as text.

    Raises:
        ExaDataError: a value is not an ISO-8601 timestamp, naming the import.
    """
    try:
        return pc.cast(pa.array(values, pa.string()), TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    fixed = [None if v is None else normalize_timestamp(v) for v in values]
    for row, value, norm in zip(rows, values, fixed, strict=True):
        if value is None:
            continue
        bad = norm is None
        if not bad:
            try:
                pc.cast(pa.array([norm], pa.string()), TIMESTAMP)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                bad = True
        if bad:
            raise ExaDataError(
                f"import {_shown(row.get('id'))} has an unparseable {name}: {_shown(value)}"
            ) from None
    return pc.cast(pa.array(fixed, pa.string()), TIMESTAMP)


def _shown(value: Any) -> str:
    """``repr`` of an API value for an error message, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


#: What replaces U+0000 in text and JSON: PostgreSQL cannot store it in ``text`` or ``jsonb``
#: (COPY fails with ``invalid byte sequence for encoding "UTF8": 0x00``), so every engine gets
#: the same visible replacement character instead.
NUL_REPLACEMENT: Final = "\ufffd"


def _has_byte(array: pa.Array, needle: bytes) -> bool:
    """Whether the data buffer of a string array contains ``needle``.

    A superset check: bytes outside the array's slice count too, which costs at most a no-op
    replace. ~4 µs per 1,000 ids, against ~130 µs for ``pc.match_substring``.
    """
    data = array.buffers()[2] if array.type == pa.string() else None
    if data is None:
        return False
    raw = np.frombuffer(data, dtype=np.uint8)
    if len(needle) == 1:
        return bool((raw == needle[0]).any())
    return needle in data.to_pybytes()


def clean_text(array: pa.Array) -> pa.Array:
    """Replace NUL characters in a string array with :data:`NUL_REPLACEMENT` (rare; cheap check)."""
    if _has_byte(array, b"\x00"):
        return pc.replace_substring(array, "\x00", NUL_REPLACEMENT)
    return array


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT)
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def clean_json(array: pa.Array) -> pa.Array:
    r"""Replace NUL characters inside JSON texts with :data:`NUL_REPLACEMENT`.

    orjson writes U+0000 as the escape ``\u0000``, which PostgreSQL's ``jsonb`` rejects.
    """
    if not _has_byte(array, b"\\u0000"):
        return array
    texts = [
        None if t is None else orjson.dumps(_without_nul(orjson.loads(t))).decode()
        for t in array.to_pylist()
    ]
    return pa.array(texts, pa.string())


def _require(name: str, values: pa.Array, rows: Sequence[dict[str, Any]]) -> None:
    """Raise when a field the comparison depends on is missing, naming the import."""
    if values.null_count:
        bad = next(row.get("id") for row in rows if row.get(name) is None)
        raise ExaDataError(f"import {_shown(bad)} has no {name}; cannot compare it with the table")


def _ids(rows: Sequence[dict[str, Any]]) -> pa.Array:
    """The ``id`` of every row as a string array, NULs replaced (see :func:`clean_text`).

    Raises:
        ExaDataError: an ``id`` is not a string (the API's ids are ``import_...`` strings; a
            number would compare unequal to the stored text forever), naming it.
    """
    raw = values(rows, "id")
    try:
        return clean_text(pa.array(raw, pa.string()))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        bad = next(v for v in raw if v is not None and not isinstance(v, str))
        raise ExaDataError(
            f"an import has an id that is not a string: {_shown(bad)}"
            f" ({type(bad).__name__}); refusing to load it"
        ) from None


def keys(rows: Sequence[dict[str, Any]]) -> tuple[pa.Array, pa.Array]:
    """Return the ``id`` and parsed ``updatedAt`` arrays of Import objects, nothing else.

    Cheap enough to run on every row of every run: the comparison with the destination and
    deletion detection need only these two, so the other columns are converted only for rows
    that changed.

    Raises:
        ExaDataError: an ``id`` or ``updatedAt`` is missing or not a string, or ``updatedAt`` is
            unparseable.
    """
    ids = _ids(rows)
    updated = _timestamps(settings.CURSOR_FIELD, values(rows, settings.CURSOR_FIELD), rows)
    _require("id", ids, rows)
    _require(settings.CURSOR_FIELD, updated, rows)
    return ids, updated


_NAMING = NamingConvention()
#: Column names the connector or dlt own: the declared columns, dlt's ``_dlt_*`` and ours.
_OWNED = frozenset(_NAMING.normalize_path(c.name) for c in COLUMNS)
#: Prefix of the column an API field is stored in when its own name is owned (see above).
RENAMED_PREFIX: Final = "api_"


@functools.lru_cache(maxsize=1024)
def column_name(field: str) -> str:
    """The name a field the API added is stored under: its own, unless dlt or we own it.

    A field whose snake_case name is one of the declared columns, or starts with ``_dlt`` or
    ``_exa`` (dlt's ``_dlt_load_id``/``_dlt_id``, our ``_exa_deleted_at``), is stored as
    ``api_<name>``: API data never writes a column that dlt or the connector relies on.
    """
    name = _NAMING.normalize_identifier(field)
    if name in _OWNED or name.startswith(("_dlt", "_exa")):
        return RENAMED_PREFIX + name.lstrip("_")
    return field


def _extra_column(key: str, rows: Sequence[dict[str, Any]]) -> pa.Array:
    """Convert a field the API added after this schema was written (additive evolution)."""
    values = [row.get(key) for row in rows]
    if any(isinstance(v, (dict, list)) for v in values):
        return clean_json(pa.array([_json_or_none(v) for v in values], pa.string()))
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        array = pa.array([None if v is None else str(v) for v in values], pa.string())
    return clean_text(array) if array.type == pa.string() else array


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
            arrays.append(clean_json(_metadata(rows)))
        elif name == "id":
            arrays.append(_ids(rows))
        elif name.startswith("entity__"):
            arrays.append(clean_text(pc.struct_field(entity, name.removeprefix("entity__"))))
        elif column.arrow == TIMESTAMP:
            arrays.append(_timestamps(name, values(rows, name), rows))
        else:
            try:
                array = pa.array(values(rows, name), column.arrow)
                arrays.append(clean_text(array) if column.arrow == pa.string() else array)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise ExaDataError(
                    f"the API changed the type of {name!r}: {exc}. Declared"
                    f" {column.hints.get('data_type')}; refusing to load a variant column."
                ) from None
    table = pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)
    for name in ("id", settings.CURSOR_FIELD):
        _require(name, table.column(name).combine_chunks(), rows)
    extra = set().union(*rows) - _KNOWN
    for key in sorted(extra):
        name = column_name(key)
        if name in table.column_names:  # e.g. both _dltLoadId and _dlt_load_id
            logger.warning("API field %r skipped: its column %r is taken", key, name)
            continue
        table = table.append_column(name, _extra_column(key, rows))
    return table
