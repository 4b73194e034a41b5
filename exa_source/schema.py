"""The tables: declared columns, their meaning, and the page-to-Arrow conversion.

Each table the source loads is a :class:`TableSpec`: ``imports`` (:data:`IMPORTS`),
``websets``, ``webset_searches``, ``webset_enrichments`` and ``webset_items``
(:data:`WEBSETS`, :data:`SEARCHES`, :data:`ENRICHMENTS`, :data:`ITEMS`). A table's shape is
declared here, not inferred from the first page, so that it never changes under a BI tool:
every column exists from the first load even when all its values are null, and timestamps
are ``timestamp with time zone`` everywhere. Each page of the API becomes one Arrow table:
dlt loads Arrow tables as Parquet without touching rows one by one, which is what makes the
default path fast (see ``docs/dlt-behaviour.md`` "Speed").
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
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
    """One declared column of a table.

    Attributes:
        name: the API's field name (dlt normalizes it to snake_case in the destination), or
            for a nested field ``parent__child`` (dlt's own separator).
        arrow: the Arrow type the page is converted to.
        hints: dlt column hints (type, nullability, merge role).
        meaning: one line for the data dictionary.
        example: an example value for the data dictionary.
        paths: where the value is in an API object: one path of keys, or several tried in
            order (the first non-null wins). Default: the top-level field ``name``.
        derived: the value is a copy of part of another column (a typed field of an item's
            ``properties``, which is stored whole as JSON): not used to rebuild the object,
            and a value of an unexpected type is stored as null with a warning instead of
            failing the load.
    """

    name: str
    arrow: pa.DataType
    hints: TColumnSchema
    meaning: str
    example: str
    paths: tuple[tuple[str, ...], ...] = ()
    derived: bool = False

    @property
    def where(self) -> tuple[tuple[str, ...], ...]:
        """The paths of the value (see :attr:`paths`)."""
        return self.paths or ((self.name,),)


def _text(meaning: str, example: str, name: str, nullable: bool = True, **kw: Any) -> Column:
    hints: TColumnSchema = {"data_type": "text", "nullable": nullable}
    return Column(name, pa.string(), hints, meaning, example, **kw)


def _ts(meaning: str, example: str, name: str, nullable: bool = True, **kw: Any) -> Column:
    hints: TColumnSchema = {"data_type": "timestamp", "timezone": True, "nullable": nullable}
    return Column(name, TIMESTAMP, hints, meaning, example, **kw)


def _json(meaning: str, example: str, name: str, **kw: Any) -> Column:
    return Column(
        name, pa.string(), {"data_type": "json", "nullable": True}, meaning, example, **kw
    )


def _int(meaning: str, example: str, name: str, **kw: Any) -> Column:
    return Column(
        name, pa.int64(), {"data_type": "bigint", "nullable": True}, meaning, example, **kw
    )


def _double(meaning: str, example: str, name: str, **kw: Any) -> Column:
    return Column(
        name, pa.float64(), {"data_type": "double", "nullable": True}, meaning, example, **kw
    )


def _id(meaning: str, example: str) -> Column:
    hints: TColumnSchema = {"data_type": "text", "nullable": False, "primary_key": True}
    return Column("id", pa.string(), hints, meaning, example)


def _trailer(noun: str) -> tuple[Column, ...]:
    """The columns every table ends with: the soft-delete stamp and dlt's load id."""
    return (
        _ts(
            f"When exa-source found the {noun} gone from the API (soft delete); null while it"
            " exists.",
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


_CREATED_UPDATED = (
    _ts("When it was created.", "2025-11-23 17:16:04.201+00", "createdAt", False),
    _ts(
        "Last change; compared with the stored value on every run to find what changed.",
        "2025-11-23 17:16:04.403+00",
        "updatedAt",
        False,
    ),
)


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
        paths=(("entity", "type"),),
    ),
    _text(
        "Description of a `custom` entity; null for the other types.",
        "Seed-stage climate startups",
        "entity__description",
        paths=(("entity", "description"),),
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
    *_trailer("import"),
)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def values(rows: Sequence[dict[str, Any]], key: str) -> list[Any]:
    """Return ``row[key]`` for every row; C-speed when every row has the key (the norm)."""
    try:
        return list(map(itemgetter(key), rows))
    except KeyError:
        return [row.get(key) for row in rows]


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


def _timestamps(
    name: str, values: list[Any], rows: Sequence[dict[str, Any]], noun: str = "import"
) -> pa.Array:
    """Parse ISO-8601 strings as UTC timestamps, vectorised.

    The API writes ``2025-11-23T17:15:22.175Z``; Arrow also accepts ``+00:00`` offsets and
    millisecond or microsecond precision. Any other ISO-8601 form (nanoseconds, no offset, a
    date alone) goes through :func:`normalize_timestamp`, one batch at a time, only when the
    fast path fails. Mixed forms compare as instants, never as text.

    Raises:
        ExaDataError: a value is not an ISO-8601 timestamp, naming the object (``noun``).
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
                f"{noun} {_shown(row.get('id'))} has an unparseable {name}: {_shown(value)}"
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


def _require(
    name: str, values: pa.Array, rows: Sequence[dict[str, Any]], noun: str = "import"
) -> None:
    """Raise when a field the comparison depends on is missing, naming the object."""
    if values.null_count:
        bad = next(row.get("id") for row in rows if row.get(name) is None)
        raise ExaDataError(f"{noun} {_shown(bad)} has no {name}; cannot compare it with the table")


def _ids(rows: Sequence[dict[str, Any]], noun: str = "import") -> pa.Array:
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
            f"a {noun} has an id that is not a string: {_shown(bad)}"
            f" ({type(bad).__name__}); refusing to load it"
        ) from None


_NAMING = NamingConvention()
#: Prefix of the column an API field is stored in when its own name is owned (see below).
RENAMED_PREFIX: Final = "api_"


@functools.lru_cache(maxsize=1024)
def _stored_name(field: str, owned: frozenset[str]) -> str:
    name = _NAMING.normalize_identifier(field)
    if name in owned or name.startswith(("_dlt", "_exa")):
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


def _dig(row: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(row, dict):
            return None
        row = row.get(key)
    return row


def _gather(rows: Sequence[dict[str, Any]], column: Column) -> list[Any]:
    """The column's raw value in every row (see :attr:`Column.paths`)."""
    paths = column.where
    if len(paths) == 1 and len(paths[0]) == 1:
        return values(rows, paths[0][0])
    if len(paths) == 1:
        path = paths[0]
        return [_dig(row, path) for row in rows]
    out: list[Any] = []
    for row in rows:
        value = None
        for path in paths:
            value = _dig(row, path)
            if value is not None:
                break
        out.append(value)
    return out


def _json_texts(raw: list[Any]) -> pa.Array:
    """Encode each value as one JSON text (loaded into a JSON column), NULs replaced."""
    if None in raw:
        return clean_json(pa.array([_json_or_none(v) for v in raw], pa.string()))
    return clean_json(pa.array(list(map(orjson.dumps, raw)), pa.string()))


def _is_json(column: Column) -> bool:
    return column.hints.get("data_type") == "json"


@dataclass(frozen=True)
class TableSpec:
    """One table the source loads: its columns and how API objects become Arrow rows.

    Attributes:
        name: the table (and resource) name.
        noun: what one row is, for messages (``import``, ``webset``, ``item``...).
        columns: the declared columns, in the API's key order, ending with the
            soft-delete stamp and ``_dlt_load_id``.
        ignored: top-level API fields deliberately not stored in this table (a webset's
            embedded ``searches`` and ``enrichments`` have tables of their own).
        scope: the API field naming the parent a row belongs to (an item's ``websetId``):
            read with the record, so that a scan of one parent's rows can find that
            parent's deletions only.
        cursor: the API field that says when the object last changed, compared with the
            stored value to find what changed: ``updatedAt``, or for objects that never
            change once made, the one timestamp they have (an event's ``createdAt``, a
            webhook attempt's ``attemptedAt``).
        window: for an append-only table of objects that never change (events), read with
            the record only the rows whose cursor is at most this many seconds older than the
            newest: the scan then lists nothing older (it reads from the newest less an
            overlap shorter than this), so the record stays small however long the table grows.
    """

    name: str
    noun: str
    columns: tuple[Column, ...]
    ignored: frozenset[str] = field(default_factory=frozenset)
    scope: str | None = None
    cursor: str = settings.CURSOR_FIELD
    window: float | None = None

    def hints(self, hard_delete: bool = False) -> TTableSchemaColumns:
        """Dlt column hints for the resource, keyed by the API's field names.

        Args:
            hard_delete: mark ``_exa_deleted_at`` as dlt's ``hard_delete`` column, so that a row
                yielded with it set deletes the stored row instead of being written (``hard``
                deletion policy). Set explicitly to False otherwise, so that switching back to
                ``soft`` overrides the hint stored in the schema.
        """
        hints: TTableSchemaColumns = {c.name: {"name": c.name, **c.hints} for c in self.columns}
        hints[settings.DELETED_AT_COLUMN]["hard_delete"] = hard_delete
        return hints

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of the declared columns."""
        return pa.schema(
            [
                pa.field(c.name, c.arrow, nullable=c.hints.get("nullable", True))
                for c in self.columns
            ]
        )

    @cached_property
    def known(self) -> frozenset[str]:
        """Top-level API fields the declared columns (or :attr:`ignored`) account for.

        ``_dlt_load_id`` and ``_exa_deleted_at`` are not API fields: an API field of that name
        is stored renamed (:meth:`column_name`).
        """
        own = (settings.LOAD_ID_COLUMN, settings.DELETED_AT_COLUMN)
        return (
            frozenset(c.where[0][0] for c in self.columns if c.name not in own and not c.derived)
            | self.ignored
        )

    @cached_property
    def owned(self) -> frozenset[str]:
        """Column names the connector or dlt own: the declared columns (snake_case)."""
        return frozenset(_NAMING.normalize_path(c.name) for c in self.columns)

    @cached_property
    def cursor_column(self) -> str:
        """The stored (snake_case) name of the :attr:`cursor` column."""
        return _NAMING.normalize_identifier(self.cursor)

    @cached_property
    def scope_column(self) -> str | None:
        """The stored (snake_case) name of the :attr:`scope` column."""
        return None if self.scope is None else _NAMING.normalize_identifier(self.scope)

    def column_name(self, field: str) -> str:
        """The name a field the API added is stored under: its own, unless dlt or we own it.

        A field whose snake_case name is one of the declared columns, or starts with ``_dlt``
        or ``_exa`` (dlt's ``_dlt_load_id``/``_dlt_id``, our ``_exa_deleted_at``), is stored as
        ``api_<name>``: API data never writes a column that dlt or the connector relies on.
        """
        return _stored_name(field, self.owned)

    def keys(self, rows: Sequence[dict[str, Any]]) -> tuple[pa.Array, pa.Array]:
        """Return the ``id`` and parsed :attr:`cursor` arrays of API objects, nothing else.

        Cheap enough to run on every row of every run: the comparison with the destination
        and deletion detection need only these two, so the other columns are converted only
        for rows that changed.

        Raises:
            ExaDataError: an ``id`` or the cursor is missing or not a string, or the cursor
                is unparseable.
        """
        ids = _ids(rows, self.noun)
        cursor = self.cursor
        updated = _timestamps(cursor, values(rows, cursor), rows, self.noun)
        _require("id", ids, rows, self.noun)
        _require(cursor, updated, rows, self.noun)
        return ids, updated

    def scopes(self, rows: Sequence[dict[str, Any]]) -> pa.Array:
        """The :attr:`scope` of every row (e.g. each item's ``websetId``) as strings."""
        if self.scope is None:
            return pa.nulls(len(rows), pa.string())
        return clean_text(pa.array([str(v) for v in values(rows, self.scope)], pa.string()))

    @cached_property
    def _structs(self) -> dict[str, pa.DataType]:
        """Per top-level field holding nested columns, the struct type of those columns.

        Converting e.g. every item's ``properties`` to this struct once (in Arrow's C++, which
        ignores the keys it does not name) and taking each column's field from it is ~10x
        faster than walking every row's dicts in Python for each column.
        """
        tree: dict[str, Any] = {}
        for column in self.columns:
            if _is_json(column) or column.arrow not in _STRUCT_LEAVES:
                continue
            for path in column.where:
                if len(path) < 2:
                    continue
                node = tree.setdefault(path[0], {})
                for key in path[1:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = column.arrow

        def struct(node: dict[str, Any]) -> pa.DataType:
            return pa.struct(
                [(k, struct(v) if isinstance(v, dict) else v) for k, v in node.items()]
            )

        return {key: struct(node) for key, node in tree.items()}

    def _struct_arrays(self, rows: Sequence[dict[str, Any]]) -> dict[str, pa.Array]:
        """The :attr:`_structs` of a batch; a field whose values do not fit is left out."""
        out: dict[str, pa.Array] = {}
        for key, kind in self._structs.items():
            try:
                out[key] = pa.array(values(rows, key), kind)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                continue  # an unexpected shape: those columns take the row-by-row path
        return out

    def _from_structs(self, column: Column, structs: dict[str, pa.Array]) -> pa.Array | None:
        """The column taken from the batch's struct arrays, or None if one is missing."""
        if column.arrow not in _STRUCT_LEAVES or _is_json(column):
            return None
        found: list[pa.Array] = []
        for path in column.where:
            if len(path) < 2 or path[0] not in structs:
                return None
            array = structs[path[0]]
            for key in path[1:]:
                array = pc.struct_field(array, key)
            found.append(array)
        return found[0] if len(found) == 1 else pc.coalesce(*found)

    def _convert(
        self,
        column: Column,
        rows: Sequence[dict[str, Any]],
        structs: dict[str, pa.Array] | None = None,
    ) -> pa.Array:
        name = column.name
        if name == settings.LOAD_ID_COLUMN:
            return pa.nulls(len(rows), pa.string())  # stamped by the scan (sync.py)
        if name == settings.DELETED_AT_COLUMN:
            return pa.nulls(len(rows), TIMESTAMP)  # live: the API only lists live objects
        if name == "id":
            return _ids(rows, self.noun)
        taken = self._from_structs(column, structs) if structs else None
        if taken is not None:
            return clean_text(taken) if column.arrow == pa.string() else taken
        raw = _gather(rows, column)
        if _is_json(column):
            return _json_texts(raw)
        try:
            if column.arrow == TIMESTAMP:
                return _timestamps(name, raw, rows, self.noun)
            array = pa.array(raw, column.arrow)
            return clean_text(array) if column.arrow == pa.string() else array
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ExaDataError) as exc:
            if column.derived:  # a copy of part of a JSON column: keep the load going
                logger.warning(
                    "%s: %s has a value of another type; stored as null", self.name, name
                )
                return pa.array([v if _fits(v, column.arrow) else None for v in raw], column.arrow)
            if isinstance(exc, ExaDataError):
                raise
            raise ExaDataError(
                f"the API changed the type of {name!r}: {exc}. Declared"
                f" {column.hints.get('data_type')}; refusing to load a variant column."
            ) from None

    def to_table(self, rows: Sequence[dict[str, Any]]) -> pa.Table:
        """Convert API objects (one or more pages) into an Arrow table of the declared columns.

        Returns:
            A table with every declared column (nulls where a field is missing) plus one column
            per field the API added that is not declared yet (additive schema evolution).

        Raises:
            ExaDataError: ``id`` or ``updatedAt`` is missing or unparseable, or a value does
                not fit its declared type (the API changed a type: fail loudly, no variant
                columns).
        """
        structs = self._struct_arrays(rows)
        arrays = [self._convert(column, rows, structs) for column in self.columns]
        table = pa.Table.from_arrays(arrays, schema=self.arrow_schema)
        for name in ("id", self.cursor):
            _require(name, table.column(name).combine_chunks(), rows, self.noun)
        extra = set().union(*rows) - self.known
        for key in sorted(extra):
            name = self.column_name(key)
            if name in table.column_names:  # e.g. both _dltLoadId and _dlt_load_id
                logger.warning("API field %r skipped: its column %r is taken", key, name)
                continue
            table = table.append_column(name, _extra_column(key, rows))
        return table

    def stored_columns(self, naming: Any = None) -> dict[str, Column]:
        """The declared columns by their stored name under ``naming`` (default snake_case)."""
        naming = naming or _NAMING
        return {naming.normalize_path(c.name): c for c in self.columns}

    def to_api(self, stored: dict[str, Any], naming: Any = None) -> dict[str, Any]:
        """Turn a stored row back into the API's shape, so that it converts like a listed one.

        Nested fields are rebuilt from their columns; a parent whose fields are all null is
        null (as the API writes an absent ``entity``). Derived columns are skipped (the JSON
        column they copy carries them), as are dlt's and the connector's own columns.
        """
        declared = self.stored_columns(naming)
        row: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for name, value in stored.items():
            if name.startswith("_dlt_") or name == settings.DELETED_AT_COLUMN:
                continue
            if isinstance(value, datetime):
                aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
                value = aware.astimezone(timezone.utc).isoformat()
            column = declared.get(name)
            if column is None:  # a field the API added
                row[name] = value
                continue
            if column.derived or column.name.startswith("_"):
                continue
            if _is_json(column) and isinstance(value, str | bytes):
                value = orjson.loads(value)
            path = column.where[0]
            if len(path) == 1:
                row[path[0]] = value
            else:
                parent = nested.setdefault(path[0], {})
                for key in path[1:-1]:
                    parent = parent.setdefault(key, {})
                parent[path[-1]] = value
        for key, obj in nested.items():
            row[key] = obj if _any_value(obj) else None
        return row


#: Leaf types taken from struct arrays (timestamps need parsing, JSON columns encoding).
_STRUCT_LEAVES = (pa.string(), pa.int64(), pa.float64(), pa.bool_())


def _any_value(obj: Any) -> bool:
    if isinstance(obj, dict):
        return any(_any_value(v) for v in obj.values())
    return obj is not None


def _fits(value: Any, arrow: pa.DataType) -> bool:
    try:
        pa.array([value], arrow)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return False
    return True


IMPORTS = TableSpec(settings.IMPORTS_TABLE, "import", COLUMNS)
"""The ``imports`` table (``docs/exa-api.md`` §3.3)."""

#: The declared ``imports`` columns' Arrow schema and conversions, as before the generic spec.
ARROW_SCHEMA = IMPORTS.arrow_schema
column_hints = IMPORTS.hints
keys = IMPORTS.keys
page_to_table = IMPORTS.to_table


def column_name(field: str) -> str:
    """The name an ``imports`` field the API added is stored under (see TableSpec.column_name)."""
    return IMPORTS.column_name(field)


# --------------------------------------------------------------------- websets and their data


def _entity(noun: str) -> tuple[Column, ...]:
    return (
        _text(
            f"Entity type of the {noun}: company, person, article, research_paper or custom.",
            "company",
            "entity__type",
            paths=(("entity", "type"),),
        ),
        _text(
            "Description of a `custom` entity; null for the other types.",
            "Open-source repositories",
            "entity__description",
            paths=(("entity", "description"),),
        ),
    )


WEBSETS = TableSpec(
    settings.WEBSETS_TABLE,
    "webset",
    (
        _id("Webset id: `webset_` + a ULID.", "webset_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        _text("Object type, always `webset`.", "webset", "object"),
        _text("idle, pending, running or paused.", "idle", "status"),
        _text("Your own id for the webset, unique in the account.", "crm-42", "externalId"),
        _text("Title of the webset.", "Fintech CTOs in Europe", "title"),
        _text(
            "Link to the webset in Exa's dashboard.",
            "https://websets.exa.ai/websets/…",
            "dashboardUrl",
        ),
        _json("Imports attached to the webset (JSON list).", "[]", "imports"),
        _json("Monitors of the webset (JSON list).", "[]", "monitors"),
        _json("Sources whose items are excluded (JSON list of {source, id}).", "[]", "excludes"),
        _json("Free-form string-to-string map set by the user.", '{"team": "growth"}', "metadata"),
        *_CREATED_UPDATED,
        *_trailer("webset"),
    ),
    # each embedded search and enrichment is a row of its own table
    ignored=frozenset({"searches", "enrichments"}),
)
"""The ``websets`` table (``docs/exa-api.md`` §4.3)."""

SEARCHES = TableSpec(
    settings.SEARCHES_TABLE,
    "search",
    (
        _id("Search id: `wsearch_` + a ULID.", "wsearch_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        _text("Object type, always `webset_search`.", "webset_search", "object"),
        _text("The webset the search fills.", "webset_01k9x2y3z4a5b6c7d8e9f0g1h2", "websetId"),
        _text("created, pending, running, completed or canceled.", "completed", "status"),
        _text("What the search looks for.", "CTOs of fintech startups in Europe", "query"),
        *_entity("items it finds"),
        _json(
            "Criteria every item is evaluated against (JSON list).",
            '[{"description": "…"}]',
            "criteria",
        ),
        _int("Number of items the search should find.", "100", "count"),
        _text(
            "override or append: what happens to the webset's earlier items.",
            "override",
            "behavior",
        ),
        _json("Sources excluded from the search (JSON list).", "[]", "exclude"),
        _json("Sources the search is limited to (JSON list).", "[]", "scope"),
        _int("Items found so far.", "87", "progress__found", paths=(("progress", "found"),)),
        _int(
            "Candidates analyzed so far.",
            "240",
            "progress__analyzed",
            paths=(("progress", "analyzed"),),
        ),
        _double(
            "Percent done, 0-100.",
            "87",
            "progress__completion",
            paths=(("progress", "completion"),),
        ),
        _double(
            "Estimated seconds left, if known.",
            "30",
            "progress__timeLeft",
            paths=(("progress", "timeLeft"),),
        ),
        _json(
            "Exa's estimate of how many items exist (JSON object).", '{"expected": {…}}', "recall"
        ),
        _json("Free-form string-to-string map set by the user.", "{}", "metadata"),
        _ts("When the search was canceled.", "2025-11-23 17:20:00.000+00", "canceledAt"),
        _text(
            "Why: webset_deleted, webset_canceled or out_of_credits.",
            "webset_canceled",
            "canceledReason",
        ),
        *_CREATED_UPDATED,
        *_trailer("search"),
    ),
    scope="websetId",
)
"""The ``webset_searches`` table: the searches embedded in each webset (no list endpoint)."""

ENRICHMENTS = TableSpec(
    settings.ENRICHMENTS_TABLE,
    "enrichment",
    (
        _id("Enrichment id: `wenrich_` + a ULID.", "wenrich_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        _text("Object type, always `webset_enrichment`.", "webset_enrichment", "object"),
        _text("pending, canceled or completed.", "completed", "status"),
        _text(
            "The webset whose items it enriches.", "webset_01k9x2y3z4a5b6c7d8e9f0g1h2", "websetId"
        ),
        _text("Title (the column's header in Exa).", "Annual revenue in USD", "title"),
        _text("What to find for each item.", "Annual revenue in USD", "description"),
        _text(
            "Format of the results: text, date, number, options, email, phone or url.",
            "number",
            "format",
        ),
        _json(
            "The choices of an `options` enrichment (JSON list of {label}).",
            '[{"label": "Seed"}]',
            "options",
        ),
        _text("Instructions Exa follows.", "Find: annual revenue", "instructions"),
        _json("Free-form string-to-string map set by the user.", "{}", "metadata"),
        *_CREATED_UPDATED,
        *_trailer("enrichment"),
    ),
    scope="websetId",
)
"""The ``webset_enrichments`` table: the enrichments embedded in each webset (no list endpoint)."""


def _prop(
    meaning: str, example: str, name: str, *paths: tuple[str, ...], kind: str = "text"
) -> Column:
    make = {"text": _text, "int": _int}[kind]
    return make(
        meaning, example, name, paths=tuple(("properties", *p) for p in paths), derived=True
    )


ITEMS = TableSpec(
    settings.ITEMS_TABLE,
    "item",
    (
        _id("Item id: `witem_` + a ULID.", "witem_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        _text("Object type, always `webset_item`.", "webset_item", "object"),
        _text("Where the item came from: search or import.", "search", "source"),
        _text(
            "The search or import that found it.", "wsearch_01k9x2y3z4a5b6c7d8e9f0g1h2", "sourceId"
        ),
        _text("The webset it belongs to.", "webset_01k9x2y3z4a5b6c7d8e9f0g1h2", "websetId"),
        _prop(
            "Entity type: company, person, article, research_paper or custom.",
            "person",
            "entity_type",
            ("type",),
        ),
        _prop(
            "Person or company name.", "Ada Berg", "name", ("person", "name"), ("company", "name")
        ),
        _prop(
            "Title of an article, research paper or custom item.",
            "Seed round for Nova Labs",
            "title",
            ("article", "title"),
            ("researchPaper", "title"),
            ("custom", "title"),
        ),
        _prop("The item's URL.", "https://www.linkedin.com/in/ada-berg", "url", ("url",)),
        _prop("Short description.", "CTO at Nova Labs", "description", ("description",)),
        _prop("A person's position.", "CTO", "position", ("person", "position")),
        _prop("A person's company.", "Nova Labs", "company_name", ("person", "company", "name")),
        _prop(
            "Location of the person or company.",
            "Berlin, Germany",
            "location",
            ("person", "location"),
            ("company", "location"),
        ),
        _prop("A company's industry.", "Software", "industry", ("company", "industry")),
        _prop(
            "A company's employee count.", "120", "employees", ("company", "employees"), kind="int"
        ),
        _prop(
            "Author of an article, paper or custom item.",
            "Grace Ito",
            "author",
            ("article", "author"),
            ("researchPaper", "author"),
            ("custom", "author"),
        ),
        _prop(
            "Publication date as the API gives it (free text).",
            "2026-03-14",
            "published_at",
            ("article", "publishedAt"),
            ("researchPaper", "publishedAt"),
            ("custom", "publishedAt"),
        ),
        _json(
            "All the item's properties, as the API gives them (JSON).",
            '{"type": "person", …}',
            "properties",
        ),
        _json(
            "Criteria evaluations (JSON list of {criterion, reasoning, satisfied, references});"
            " one row each in the view `webset_item_evaluations`.",
            '[{"criterion": "…", "satisfied": "yes"}]',
            "evaluations",
        ),
        _json(
            "Enrichment results (JSON list); one row each in the view `webset_item_enrichments`.",
            '[{"enrichmentId": "…", "result": ["…"]}]',
            "enrichments",
        ),
        *_CREATED_UPDATED,
        *_trailer("item"),
    ),
    scope="websetId",
)
"""The ``webset_items`` table (``docs/exa-api.md`` §4.3): typed properties plus the JSON."""

# ------------------------------------------------------- monitors, webhooks and the event log


def _bool(meaning: str, example: str, name: str, **kw: Any) -> Column:
    return Column(name, pa.bool_(), {"data_type": "bool", "nullable": True}, meaning, example, **kw)


MONITORS = TableSpec(
    settings.MONITORS_TABLE,
    "monitor",
    (
        _id("Monitor id: `monitor_` + a ULID.", "monitor_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        _text("Object type, always `monitor`.", "monitor", "object"),
        _text("enabled or disabled.", "enabled", "status"),
        _text("The webset the monitor updates.", "webset_01k9x2y3z4a5b6c7d8e9f0g1h2", "websetId"),
        _text(
            "When it runs: a 5-field Unix cron expression (at most daily).",
            "0 9 * * 1",
            "cadence__cron",
            paths=(("cadence", "cron"),),
        ),
        _text(
            "Time zone of the cron expression.",
            "Etc/UTC",
            "cadence__timezone",
            paths=(("cadence", "timezone"),),
        ),
        _text(
            "What a run does: search (find new items) or refresh.",
            "search",
            "behavior__type",
            paths=(("behavior", "type"),),
        ),
        _json(
            "The run's settings (JSON: query, criteria, entity, count, behavior for a search).",
            '{"query": "…", "count": 10}',
            "behavior__config",
            paths=(("behavior", "config"),),
        ),
        _json(
            "The monitor's latest run as the API embeds it (JSON); every run is a row of"
            " `monitor_runs`.",
            '{"id": "monitor_run_…", "status": "completed", …}',
            "lastRun",
        ),
        _text(
            "Status of the latest run (copied from `last_run`).",
            "completed",
            "last_run_status",
            paths=(("lastRun", "status"),),
            derived=True,
        ),
        _ts("When the next run is due.", "2026-12-06 09:00:00.000+00", "nextRunAt"),
        _json("Free-form string-to-string map set by the user.", '{"team": "growth"}', "metadata"),
        *_CREATED_UPDATED,
        *_trailer("monitor"),
    ),
)
"""The ``monitors`` table (``docs/exa-api.md`` §4.3)."""

MONITOR_RUNS = TableSpec(
    settings.MONITOR_RUNS_TABLE,
    "monitor run",
    (
        _id("Run id: `monitor_run_` + a ULID.", "monitor_run_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        _text("Object type, always `monitor_run`.", "monitor_run", "object"),
        _text("The monitor that made the run.", "monitor_01k9x2y3z4a5b6c7d8e9f0g1h2", "monitorId"),
        _text("created, running, completed, canceled or failed.", "completed", "status"),
        _text("search or refresh.", "search", "type"),
        _ts("When the run completed.", "2026-12-05 09:04:10.000+00", "completedAt"),
        _ts("When the run failed.", "2026-12-05 09:01:00.000+00", "failedAt"),
        _text("Why the run failed, as the API words it.", "Search failed", "failedReason"),
        _ts("When the run was canceled.", "2026-12-05 09:02:00.000+00", "canceledAt"),
        *_CREATED_UPDATED,
        *_trailer("monitor run"),
    ),
    scope="monitorId",
)
"""The ``monitor_runs`` table: every run of every monitor (one list per monitor)."""

WEBHOOKS = TableSpec(
    settings.WEBHOOKS_TABLE,
    "webhook",
    (
        _id("Webhook id: `webhook_` + a ULID.", "webhook_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        _text("Object type, always `webhook`.", "webhook", "object"),
        _text("active or inactive.", "active", "status"),
        _json("The event types it is sent (JSON list).", '["webset.item.created"]', "events"),
        _text("Where the events are posted.", "https://hooks.example.com/exa", "url"),
        _json("Free-form string-to-string map set by the user.", "{}", "metadata"),
        *_CREATED_UPDATED,
        *_trailer("webhook"),
    ),
    # the signing secret: the API returns it on creation only, and it is never stored here,
    # even if a reply carries one (docs/exa-api.md §4.3)
    ignored=frozenset({"secret"}),
)
"""The ``webhooks`` table, without the signing ``secret`` (never stored)."""

WEBHOOK_ATTEMPTS = TableSpec(
    settings.WEBHOOK_ATTEMPTS_TABLE,
    "webhook attempt",
    (
        _id("Attempt id: `webhook_attempt_` + a ULID.", "webhook_attempt_01k9x2y3z4a5b6c7d8e9f0"),
        _text("Object type, always `webhook_attempt`.", "webhook_attempt", "object"),
        _text("The event delivered (`events.id`).", "event_01k9x2y3z4a5b6c7d8e9f0g1h2", "eventId"),
        _text("Its type.", "webset.item.created", "eventType"),
        _text("The webhook it was sent to.", "webhook_01k9x2y3z4a5b6c7d8e9f0g1h2", "webhookId"),
        _text("The URL it was posted to.", "https://hooks.example.com/exa", "url"),
        _bool("Whether the receiver accepted it (a 2xx reply).", "false", "successful"),
        _json(
            "The receiver's reply headers (JSON string map).",
            '{"content-type": "text/plain"}',
            "responseHeaders",
        ),
        _text("The receiver's reply body.", "upstream timeout", "responseBody"),
        _int("The receiver's HTTP status code.", "503", "responseStatusCode"),
        _int("Delivery attempt number for this event (1 = first try).", "2", "attempt"),
        _ts(
            "When it was attempted. Attempts never change: this is also the version the scan"
            " compares.",
            "2026-12-05 09:04:11.000+00",
            "attemptedAt",
            False,
        ),
        *_trailer("webhook attempt"),
    ),
    scope="webhookId",
    cursor="attemptedAt",
)
"""The ``webhook_attempts`` table: every delivery attempt of every webhook (no timestamps but
``attemptedAt``, ``docs/exa-api.md`` §4.4)."""

EVENTS = TableSpec(
    settings.EVENTS_TABLE,
    "event",
    (
        _id("Event id: `event_` + a ULID.", "event_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        _text("Object type, always `event`.", "event", "object"),
        _text("Event type, e.g. `monitor.run.completed`.", "webset.item.created", "type"),
        _text(
            "Id of the object the event is about (`data.id`).",
            "witem_01k9x2y3z4a5b6c7d8e9f0g1h2",
            "subject_id",
            paths=(("data", "id"),),
            derived=True,
        ),
        _text(
            "Its type (`data.object`): webset, webset_item, monitor_run…",
            "webset_item",
            "subject_object",
            paths=(("data", "object"),),
            derived=True,
        ),
        _text(
            "The webset it belongs to, where it has one (`data.websetId`).",
            "webset_01k9x2y3z4a5b6c7d8e9f0g1h2",
            "webset_id",
            paths=(("data", "websetId"),),
            derived=True,
        ),
        _json(
            "The object as it was when the event happened (JSON), as the API gives it.",
            '{"id": "witem_…", "object": "webset_item", …}',
            "data",
        ),
        _ts(
            "When it happened. Events never change: this is also the version the scan compares.",
            "2026-12-05 09:04:10.000+00",
            "createdAt",
            False,
        ),
        *_trailer("event"),
    ),
    cursor="createdAt",
    # the read starts EVENT_OVERLAP_SECONDS before the newest stored event; a day is ample
    window=86_400.0,
)
"""The ``events`` table: the event log, kept after the API's 60 days (append-only)."""

#: Every table, by name, in load order.
TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        IMPORTS,
        WEBSETS,
        SEARCHES,
        ENRICHMENTS,
        ITEMS,
        MONITORS,
        MONITOR_RUNS,
        WEBHOOKS,
        WEBHOOK_ATTEMPTS,
        EVENTS,
    )
}
