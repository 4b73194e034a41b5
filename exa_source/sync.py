"""Exact change capture: the destination table is the record of what was loaded.

The imports list has no ``updatedAt`` filter and no feed of deleted imports (``docs/exa-api.md``
§4.4, §3.7), so every run pages through every import. What a run must write is decided by
comparing that scan with the rows **in the destination table**, never with anything kept in the
local pipeline state:

* at the start of a run :class:`Record` reads ``(id, updated_at, _exa_deleted_at)`` of the
  resource's actual table (whatever name ``apply_hints(table_name=...)`` gave it) from the
  pipeline's destination; a missing dataset or table is an empty record;
* each batch of the scan is looked up in the record: a row is loaded when its id is absent,
  when its ``updatedAt`` differs in either direction (a corrected clock, a restored backup), or
  when the stored row is soft-deleted and the import is listed again (it comes back to life);
* after a **complete** scan (the generator ran past the last page: not after ``add_limit``, an
  error or a kill) the ids live in the record but absent from the scan were deleted upstream.
  They are yielded in the same load package as the changed rows, as the stored row with
  ``_exa_deleted_at`` set, so they commit atomically with them: ``soft`` keeps that row,
  ``hard`` lets dlt delete it (``hard_delete`` column hint), ``off`` yields nothing.

Because the record is the destination itself, a dropped table, a restored backup, a second
destination sharing the pipelines folder, a wiped pipelines folder, rows a user's ``add_filter``
dropped, or a bad clock upstream all converge on the next normal run, with no flag.

Write dispositions other than ``merge`` (``delete-insert``, ``upsert``, ``insert-only``):

* ``append`` keeps a change log: each changed row and each deletion mark is appended; the
  record is the newest row of each id (by ``_dlt_load_id``, then ``updated_at``);
* ``replace`` and ``merge``/``scd2`` need the whole snapshot on every run (``replace`` swaps the
  table; ``scd2`` compares row versions itself and retires rows absent from the load), so every
  scanned row is yielded and deletions are left to them. ``scd2`` gets a deterministic
  ``_dlt_id`` row version, ``<id>|<updatedAt in microseconds>``.

The lookup is vectorised: the record's ids are hashed once (on the Arrow buffers, no Python
string per row) into a sorted ``int64`` array, each batch is hashed and binary-searched in it,
and every hit is confirmed by comparing the ids themselves, so a hash collision can never match
two different imports. At 1M imports the record takes ~60 MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import dlt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.destination.exceptions import SqlClientNotAvailable
from dlt.common.schema.utils import has_table_seen_data
from dlt.destinations.exceptions import DatabaseUndefinedRelation

from exa_source import settings
from exa_source.config import DeletionPolicy
from exa_source.exceptions import ExaDestinationError
from exa_source.schema import IMPORTS, TIMESTAMP, TableSpec

logger = logging.getLogger(__name__)

Mode = Literal["changes", "snapshot"]
#: Rows fetched from the destination at a time while reading the record.
FETCH_ROWS = 100_000
#: Ids per ``IN (...)`` list when reading the stored rows of deleted imports.
STORED_CHUNK = 1_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(when: datetime) -> int:
    """An aware datetime as µs since the epoch (the unit of :class:`Record` versions)."""
    return (when - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """µs since the epoch as an aware UTC datetime."""
    return _EPOCH + micros * _MICROSECOND


_DLT_LOAD_ID = settings.LOAD_ID_COLUMN
#: dlt's table hint for ``write_disposition={..., "deduplicated": True}``: skip the window that
#: keeps one row per key in the staging table. The source sets it (each import is listed once
#: per scan: at 1M imports it saves ~100 MB of DuckDB memory) and a scan that meets an id twice
#: sets it back to False for its load.
DEDUPLICATED_HINT = "x-stage-data-deduplicated"
_DLT_ID = "_dlt_id"
#: A stored ``updated_at`` no import can have (year -290,000): the row is written again.
_REWRITE = np.iinfo(np.int64).min


@dataclass(frozen=True)
class Plan:
    """How this run writes, read from the resource's hints when the scan starts.

    Attributes:
        table: the destination table name (normalized), after any ``apply_hints``.
        mode: ``changes`` (compare with the record) or ``snapshot`` (yield every row).
        disposition: dlt's write disposition (``merge``, ``append``, ``replace``).
        strategy: the merge strategy, or None.
        policy: the deletion policy.
        hint: the resource's ``write_disposition`` hint as it was given (a name or dlt's dict),
            put back after a load that appended into an empty table (see :class:`Scan`).
        spec: the table's declared columns and conversion.
    """

    table: str
    mode: Mode
    disposition: str
    strategy: str | None
    policy: DeletionPolicy
    hint: Any = None
    spec: TableSpec = IMPORTS

    @property
    def row_version(self) -> bool:
        """Whether rows need a deterministic ``_dlt_id`` (dlt's scd2 compares it)."""
        return self.strategy == "scd2"

    @property
    def latest_per_id(self) -> bool:
        """Whether the table may hold several rows per id (a change log)."""
        return self.disposition == "append"


def plan_for(resource: Any, naming: Any, policy: DeletionPolicy, spec: TableSpec = IMPORTS) -> Plan:
    """Derive the :class:`Plan` from a resource's current hints.

    Args:
        resource: the running :class:`~dlt.extract.resource.DltResource`, or None when the
            source is iterated outside a pipeline (then the declared defaults apply).
        naming: the schema's naming convention (normalizes the table name).
        policy: the deletion policy.
        spec: the table the resource loads.

    Raises:
        ExaDestinationError: the table name is a function of the data (dlt dynamic table names).
    """
    if resource is None:
        return Plan(spec.name, "changes", "merge", "delete-insert", policy, spec=spec)
    if resource.has_dynamic_table_name:
        raise ExaDestinationError(
            f"resource {resource.name!r} has a dynamic table name; exa-source compares every scan"
            " with one destination table, so give it a fixed name"
            " (apply_hints(table_name='...'))"
        )
    hints = resource.compute_table_schema()
    disposition = str(hints.get("write_disposition") or "append")
    strategy = hints.get("x-merge-strategy") if disposition == "merge" else None
    if disposition == "merge" and not strategy:
        strategy = "delete-insert"
    snapshot = disposition == "replace" or strategy == "scd2"
    table = naming.normalize_table_identifier(str(resource.table_name))
    mode: Mode = "snapshot" if snapshot else "changes"
    return Plan(table, mode, disposition, strategy, policy, resource.write_disposition, spec)


#: Odd multiplier of the polynomial id hash (any odd 64-bit constant works).
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _hash(ids: pa.Array) -> np.ndarray:
    """A 64-bit hash of each id, computed on the Arrow buffers (no Python string is made).

    A polynomial over the id's bytes, modulo 2**64, seeded with the byte length:
    ``h = len; h = h * M + byte`` for every byte. Ids of one length are hashed together as
    columns of a byte matrix, so the work is a few vector operations per byte position. Two
    ids that differ in one byte never collide (M is odd); a rare collision of others costs a
    comparison of the ids, never a wrong match (see :meth:`Record.positions`).
    """
    ids = ids.cast(pa.string())
    count = len(ids)
    out = np.zeros(count, dtype=np.uint64)
    if not count:
        return out.view(np.int64)
    offsets = np.frombuffer(
        ids.buffers()[1], dtype=np.int32, count=count + 1, offset=ids.offset * 4
    ).astype(np.int64)
    data = np.frombuffer(ids.buffers()[2] or b"", dtype=np.uint8)
    lengths = np.diff(offsets)
    with np.errstate(over="ignore"):
        if lengths.min() == lengths.max():  # the norm (import_ + ULID): one byte matrix, no copy
            length = int(lengths[0])
            matrix = data[offsets[0] : offsets[-1]].reshape(count, length)
            acc = np.full(count, length, dtype=np.uint64)
            for i in range(length):
                acc *= _HASH_MULTIPLIER
                acc += matrix[:, i]
            return acc.view(np.int64)
        for length in np.unique(lengths):
            rows = np.flatnonzero(lengths == length)
            starts = offsets[:-1][rows]
            acc = np.full(len(rows), length, dtype=np.uint64)
            for i in range(int(length)):
                acc *= _HASH_MULTIPLIER
                acc += data[starts + i]
            out[rows] = acc
    return out.view(np.int64)


#: Odd multiplier that spreads a row's version over 64 bits before it is mixed with its id.
_VERSION_MULTIPLIER = np.uint64(0xBF58476D1CE4E5B9)


def _mix(hashes: np.ndarray, micros: np.ndarray) -> np.ndarray:
    """One 64-bit value per row from its id hash and its ``updated_at`` (microseconds)."""
    with np.errstate(over="ignore"):
        return hashes.view(np.uint64) ^ (
            micros.astype(np.int64).view(np.uint64) * _VERSION_MULTIPLIER
        )


def _fingerprints(codes: np.ndarray, mixed: np.ndarray, names: Sequence[str]) -> dict[str, str]:
    """``{scope: "count:sum"}`` over rows grouped by scope code (sums wrap modulo 2**64)."""
    if not len(codes):
        return {}
    order = np.argsort(codes, kind="stable")
    codes, mixed = codes[order], mixed[order]
    starts = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]]))
    counts = np.diff(np.concatenate([starts, [len(codes)]]))
    with np.errstate(over="ignore"):
        sums = np.add.reduceat(mixed, starts)
    return {
        names[int(codes[start])]: f"{int(count)}:{int(total):016x}"
        for start, count, total in zip(starts, counts, sums, strict=True)
    }


class Fingerprints:
    """Fingerprints (see :meth:`Record.fingerprints`) of rows as a scan lists them."""

    def __init__(self) -> None:
        self._names: dict[str, int] = {}
        self._codes: list[np.ndarray] = []
        self._mixed: list[np.ndarray] = []

    def add(self, scopes: pa.Array, hashes: np.ndarray, micros: np.ndarray) -> None:
        """Add a batch: each row's scope, id hash and ``updatedAt`` in microseconds."""
        encoded = pc.dictionary_encode(scopes)
        local = np.array(
            [
                self._names.setdefault(str(v), len(self._names))
                for v in encoded.dictionary.to_pylist()
            ],
            dtype=np.int32,
        )
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        self._codes.append(local[indices] if len(local) else indices.astype(np.int32))
        self._mixed.append(_mix(hashes, micros))

    def result(self) -> dict[str, str]:
        """``{scope: fingerprint}`` of every scope added (scopes with no rows are absent)."""
        if not self._codes:
            return {}
        names = sorted(self._names, key=self._names.__getitem__)
        return _fingerprints(np.concatenate(self._codes), np.concatenate(self._mixed), names)


def _take(values: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """``values[rows]`` without concatenating the chunks.

    Arrow's ``ChunkedArray.take`` first concatenates every chunk: at 1M ids a 37 MB copy per
    call (7 ms), once per scanned batch. This takes from each chunk and restores the order.
    """
    if values.num_chunks == 1:
        return values.chunk(0).take(pa.array(rows))
    lengths = np.fromiter((len(c) for c in values.chunks), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    which = np.searchsorted(starts, rows, side="right") - 1
    picked: list[pa.Array] = []
    where: list[np.ndarray] = []
    for chunk in np.unique(which):
        sel = np.flatnonzero(which == chunk)
        picked.append(values.chunk(int(chunk)).take(pa.array(rows[sel] - starts[chunk])))
        where.append(sel)
    if not picked:
        return pa.array([], values.type)
    merged = pa.concat_arrays(picked)
    return merged.take(pa.array(np.argsort(np.concatenate(where))))  # a permutation


@dataclass
class Record:
    """The destination's rows, as the record of what was loaded: one entry per id.

    The rows stay in the order they were read; only their hashes are sorted, with
    :attr:`order` mapping each sorted hash back to its row, so that building the record copies
    no id (at 1M imports: ids ~37 MB, every other array 1-8 MB).

    Attributes:
        ids: the ids, for confirming a hash hit.
        updated: ``updated_at`` in microseconds since the epoch.
        deleted: True where the stored row is soft-deleted (``_exa_deleted_at`` set).
        hashes: the ids' hashes, sorted ascending.
        order: the row of each entry of :attr:`hashes`.
        seen: True where this run's scan listed the id.
        found: ``found`` when read from the table, ``missing`` when the destination said the
            table (or its dataset) does not exist, ``unknown`` when there was nothing to ask
            (no pipeline, no destination, no SQL client).
        scope: for a table with a scope column (an item's ``webset_id``), each row's scope as a
            code into :attr:`scope_names`; None otherwise.
        scope_names: the scopes, by code.
    """

    ids: pa.ChunkedArray
    updated: np.ndarray
    deleted: np.ndarray
    hashes: np.ndarray
    order: np.ndarray
    seen: np.ndarray = field(init=False)
    found: Literal["found", "missing", "unknown"] = "found"
    scope: np.ndarray | None = None
    scope_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.seen = np.zeros(len(self.hashes), dtype=bool)

    @classmethod
    def empty(cls, found: Literal["found", "missing", "unknown"] = "unknown") -> Record:
        """A record with no rows."""
        none = np.empty(0, np.int64)
        return cls(
            pa.chunked_array([], pa.string()), none, np.empty(0, bool), none, none, found=found
        )

    @classmethod
    def build(
        cls,
        ids: pa.Array | pa.ChunkedArray,
        updated: np.ndarray,
        deleted: np.ndarray,
        hashes: np.ndarray,
        scope: np.ndarray | None = None,
        scope_names: Sequence[str] = (),
    ) -> Record:
        """Index rows read from the destination by the hash of their id.

        Raises:
            ValueError: an id occurs twice (the caller re-reads the newest row per id).
        """
        if isinstance(ids, pa.Array):
            ids = pa.chunked_array([ids], pa.string())
        # the order among equal hashes does not matter (every candidate is compared by id), so
        # numpy's default sort: SIMD quicksort, 2-4x faster than a stable sort at 1M hashes
        order = np.argsort(hashes)
        if len(order) < 2**31:  # 4 bytes a row instead of 8
            order = order.astype(np.int32)
        hashes.sort()  # in place: the same values as hashes[order], no copy
        record = cls(
            ids, updated, deleted, hashes, order, scope=scope, scope_names=tuple(scope_names)
        )
        same = np.flatnonzero(record.hashes[1:] == record.hashes[:-1])
        if len(same):
            left = _take(ids, order[same])
            right = _take(ids, order[same + 1])
            if pc.any(pc.equal(left, right)).as_py():
                raise ValueError("duplicate ids")
        return record

    def __len__(self) -> int:
        return len(self.hashes)

    def positions(self, id_array: pa.Array, wanted: np.ndarray | None = None) -> np.ndarray:
        """Return each id's row in the record, or -1 when the record lacks it.

        Args:
            id_array: the ids.
            wanted: their hashes (:func:`_hash`), if already computed.
        """
        found = np.full(len(id_array), -1, dtype=np.int64)
        if not len(self.hashes) or not len(id_array):
            return found
        if wanted is None:
            wanted = _hash(id_array)
        # binary search with the queries in order: numpy narrows each search with the previous
        # result, which is 1.6x faster than random queries into a large array
        by_hash = np.argsort(wanted)
        left = np.empty(len(wanted), dtype=np.int64)
        left[by_hash] = np.searchsorted(self.hashes, wanted[by_hash], side="left")
        inside = np.flatnonzero(left < len(self.hashes))
        hit = inside[self.hashes[left[inside]] == wanted[inside]]
        if not len(hit):
            return found
        rows = self.order[left[hit]].astype(np.int64)
        same = pc.equal(_take(self.ids, rows), id_array.take(pa.array(hit)))
        ok = np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)
        found[hit[ok]] = rows[ok]
        for i in hit[~ok]:  # a hash shared by different ids: compare the next candidates
            at = int(left[i]) + 1
            while at < len(self.hashes) and self.hashes[at] == wanted[i]:
                row = int(self.order[at])
                if self.ids[row].as_py() == id_array[int(i)].as_py():
                    found[i] = row
                    break
                at += 1
        return found

    def changed(
        self, id_array: pa.Array, micros: np.ndarray, pos: np.ndarray | None = None
    ) -> np.ndarray:
        """Mark the batch's ids as seen; return True where the row must be loaded.

        A row must be loaded when its id is absent, its ``updatedAt`` differs from the stored
        one (later *or earlier*), or the stored row is soft-deleted (listed again = alive).

        Args:
            id_array: the ids.
            micros: their ``updatedAt`` in microseconds.
            pos: their :meth:`positions`, if already looked up.
        """
        if pos is None:
            pos = self.positions(id_array)
        present = pos >= 0
        where = pos[present]
        self.seen[where] = True
        load = ~present
        load[present] = (self.updated[where] != micros[present]) | self.deleted[where]
        return load

    def fingerprints(self, unseen: bool = False) -> dict[str, str]:
        """Per scope, a fingerprint of its live rows: their count and a sum over (id, version).

        Two sets of rows have the same fingerprint only if they hold the same ids at the same
        ``updated_at`` (up to a 64-bit hash collision): what a source compares with the
        fingerprint it expected after its last run, to prove the table still holds what it
        loaded (see :mod:`exa_source.items`).

        Args:
            unseen: only the rows this run's scan did not list (after :meth:`settle`).
        """
        if self.scope is None or not len(self.hashes):
            return {}
        live = ~self.deleted & ~self.seen if unseen else ~self.deleted
        codes = self.scope[live]
        mixed = _mix(self.hashes[np.argsort(self.order)][live], self.updated[live])
        return _fingerprints(codes, mixed, self.scope_names)

    def newest(self) -> int | None:
        """The highest stored version (the cursor column) in µs; None if there is none.

        Versions past :func:`future_cap` are ignored: a value stamped by a bad clock upstream
        (year 9999) must not become the point a read starts from.
        """
        updated = self.updated[self.updated <= to_micros(future_cap())]
        return int(updated.max()) if len(updated) else None

    def newest_per_scope(self) -> dict[str, int]:
        """Per scope, the highest stored version in µs (each webhook's newest attempt).

        Versions past :func:`future_cap` are ignored (see :meth:`newest`).
        """
        if self.scope is None or not len(self.updated):
            return {}
        keep = self.updated <= to_micros(future_cap())
        low = np.iinfo(np.int64).min
        top = np.full(len(self.scope_names), low, dtype=np.int64)
        np.maximum.at(top, self.scope[keep], self.updated[keep])
        return {name: int(v) for name, v in zip(self.scope_names, top, strict=True) if v != low}

    def settle(self, complete: set[str]) -> None:
        """Count as listed every row whose scope was not scanned whole (no deletion for them).

        A table without a scope is either listed whole (``complete`` holds anything) or,
        when ``complete`` is empty, never (an append-only table: no deletion at all).
        """
        if self.scope is None:
            if not complete:
                self.seen[:] = True
            return
        wanted = np.array([name in complete for name in self.scope_names], dtype=bool)
        if not len(wanted):
            return
        self.seen[~wanted[self.scope]] = True

    def gone(self, include_soft_deleted: bool) -> list[str]:
        """Ids not listed by a complete scan: live ones, plus soft-deleted ones if asked."""
        mask = ~self.seen if include_soft_deleted else ~self.seen & ~self.deleted
        if not mask.any():
            return []
        return [str(v) for v in self.ids.filter(pa.array(mask)).to_pylist()]


# --------------------------------------------------------------------------- reading the record


def _columns(client: Any, table: str) -> list[str]:
    """The table's column names, as the destination has them; raises if it does not exist."""
    with client.execute_query(f"select * from {table} where 1 = 0") as cursor:
        return [str(d[0]) for d in cursor.description]


def _record_sql(
    client: Any,
    engine: str,
    table: str,
    columns: list[str],
    latest_per_id: bool,
    scope: str | None = None,
    cursor: str = "updated_at",
    since: datetime | None = None,
) -> str:
    """``select id, updated (µs or timestamp), deleted (0/1)[, scope]`` for the record.

    ``cursor`` is the stored column that versions a row (``updated_at``, or ``created_at`` /
    ``attempted_at`` for objects that never change); with ``since``, only rows whose cursor is
    at or after it are read (see ``TableSpec.window``).
    """
    quote = client.escape_column_name
    if since is not None:
        stamp = since.astimezone(timezone.utc).isoformat(timespec="microseconds")
        table = (
            f"(select * from {table} where {quote(cursor)} >="
            f" cast('{stamp}' as timestamp with time zone)) as windowed"
        )
    scoped = "" if scope is None else f", {quote(scope)}"
    updated = quote(cursor)
    if engine == "duckdb":
        micros = f"epoch_us({updated})"
    elif engine == "postgres":  # exact on every version (extract is a float before 14)
        micros = (
            f"cast(floor(extract(epoch from {updated})) as bigint) * 1000000"
            f" + cast(extract(microseconds from {updated}) as bigint) % 1000000"
        )
    else:  # converted in Python
        micros = updated
    if settings.DELETED_AT_COLUMN in columns:
        deleted = f"case when {quote(settings.DELETED_AT_COLUMN)} is null then 0 else 1 end"
    else:
        deleted = "0"
    source = table
    if latest_per_id:
        # rows written before 0.2 have no load id: they rank after every row that has one
        order = f"{updated} desc"
        if _DLT_LOAD_ID in columns:
            order = f"{quote(_DLT_LOAD_ID)} desc nulls last, {order}"
        source = (
            f"(select {quote('id')}, {updated}{scoped}, {deleted} as exa_deleted, row_number() over"
            f" (partition by {quote('id')} order by {order}) as exa_rank from {table}) as ranked"
            " where exa_rank = 1"
        )
        deleted = "exa_deleted"
    return (
        f"select {quote('id')}, {micros} as exa_micros, {deleted} as exa_flag"
        f"{scoped and scoped + ' as exa_scope'}"
        f" from {source}"
    )


def _micros(values: list[Any]) -> np.ndarray:
    """Timestamps (datetimes from a generic driver, or integers) as microseconds."""
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
            out[i] = (aware - _EPOCH) // _MICROSECOND
        else:
            out[i] = int(value)
    return out


Chunk = tuple[pa.Array, Any, Any, Any]
"""Ids, microseconds, deleted flags and scopes (None when the record has no scope)."""


def _chunks_duckdb(client: Any, sql: str) -> Iterator[Chunk]:
    """DuckDB: stream the record as Arrow batches (no Python object per row)."""
    reader = client.native_connection.sql(sql).to_arrow_reader(FETCH_ROWS)
    for batch in reader:
        scope = batch.column(3) if batch.num_columns > 3 else None
        yield batch.column(0), batch.column(1), batch.column(2), scope


def _record_ids(ids: list[str]) -> pa.Array:
    """The record's ids as Arrow, in memory from the system allocator.

    They live as long as the run; pyarrow's default pool (mimalloc) keeps more around them
    (measured at 1M ids: 20 MB more at the peak).
    """
    return pa.array(ids, pa.string(), memory_pool=pa.system_memory_pool())


def _chunks_postgres(client: Any, sql: str) -> Iterator[Chunk]:
    """PostgreSQL: a server-side cursor, so the server streams and the client holds one chunk.

    Rows arrive as Python tuples, an object per value, which is what costs: so each row carries
    two values, the id and ``micros * 2 + deleted`` (exact: a timestamp in microseconds needs
    58 bits); measured at 1M rows, 1.0 s instead of 1.6 s. Rows are fetched a fifth of a chunk
    at a time and only the values are kept until the chunk is full, which keeps the transient
    objects small (fetching whole chunks cost 30 MB more at the peak). A plain loop of appends
    beat ``zip(*rows)`` by 1.5x here.
    """
    fetch = max(1, FETCH_ROWS // 5)
    scoped = " exa_scope" in sql
    alias = (
        "r(exa_id, exa_micros, exa_flag, exa_scope)"
        if scoped
        else "r(exa_id, exa_micros, exa_flag)"
    )
    packed_sql = (
        f"select exa_id, exa_micros * 2 + exa_flag{', exa_scope' if scoped else ''}"
        f" from ({sql}) as {alias}"
    )
    with client.begin_transaction():
        with client.native_connection.cursor(name="exa_source_record") as cursor:
            cursor.itersize = fetch
            cursor.execute(packed_sql)
            ids: list[str] = []
            packed: list[int] = []
            scopes: list[str] = []
            while True:
                rows = cursor.fetchmany(fetch)
                for row in rows:
                    ids.append(row[0])
                    packed.append(row[1])
                if scoped:
                    scopes.extend(row[2] for row in rows)
                last = len(rows) < fetch
                del rows
                if ids and (len(ids) >= FETCH_ROWS or last):
                    both = np.asarray(packed, dtype=np.int64)
                    scope = pa.array(scopes, pa.string()) if scoped else None
                    yield _record_ids(ids), both >> 1, both & 1, scope
                    ids, packed, scopes = [], [], []
                if last:
                    return


def _chunks_generic(client: Any, sql: str) -> Iterator[Chunk]:
    """Any other SQL destination: DB-API fetchmany."""
    with client.execute_query(sql) as cursor:
        while rows := cursor.fetchmany(FETCH_ROWS):
            ids, updated, deleted, *scope = zip(*rows, strict=True)
            scopes = pa.array([str(v) for v in scope[0]], pa.string()) if scope else None
            yield _record_ids(list(map(str, ids))), _micros(list(updated)), deleted, scopes


def read_record(pipeline: dlt.Pipeline | None, plan: Plan) -> Record:
    """Read the record of ``plan.table`` from the pipeline's destination.

    Returns:
        The record; empty when there is no pipeline or destination (e.g. ``list(source)``),
        when the dataset or the table does not exist yet, or when the destination has no SQL
        client (then every scanned row is loaded and no deletion is detected; logged).

    Raises:
        ExaDestinationError: the table exists but has no ``id`` or ``updated_at`` column.
    """
    if pipeline is None or pipeline.destination is None:
        return Record.empty()
    try:
        client_cm = pipeline.sql_client()
    except SqlClientNotAvailable:
        logger.warning(
            "%s: the destination %s has no SQL client; every scanned import is loaded and"
            " deletions are not detected",
            plan.table,
            pipeline.destination.destination_name,
        )
        return Record.empty()
    engine = pipeline.destination.destination_name
    with client_cm as client:
        qualified = client.make_qualified_table_name(plan.table)
        try:
            columns = _columns(client, qualified)
        except DatabaseUndefinedRelation:
            return Record.empty("missing")
        scope = plan.spec.scope_column
        cursor = plan.spec.cursor_column
        missing = [c for c in ("id", cursor, scope) if c is not None and c not in columns]
        if missing:
            raise ExaDestinationError(
                f"table {plan.table!r} has no column {', '.join(missing)}; exa-source compares"
                f" each scan with the stored id and {cursor} (was the table made by another"
                " tool, or were the columns renamed by add_map?)"
            )
        chunks = {"duckdb": _chunks_duckdb, "postgres": _chunks_postgres}.get(
            engine, _chunks_generic
        )
        latest = plan.latest_per_id
        since = _window_start(client, qualified, cursor, plan.spec.window)
        while True:
            sql = _record_sql(client, engine, qualified, columns, latest, scope, cursor, since)
            rows = _read(client, sql, chunks)
            if engine == "duckdb":
                _evict_duckdb_cache(client)
            _release_freed_memory()
            if rows is None:
                return Record.empty("found")
            try:
                record = Record.build(*rows)
            except ValueError:
                if latest:
                    raise
                # several rows for one id (a table loaded with append once): newest row wins
                latest = True
                continue
            if latest and not plan.latest_per_id:
                _rewrite_repeated(client, qualified, record, plan)
            return record


def future_cap() -> datetime:
    """Stored versions later than this are a bad clock upstream, not a point to read from.

    This machine's clock plus a day: a cap that is wrong by the machine's own error only makes
    a read start earlier (more rows listed again, none lost). See :meth:`Record.newest`.
    """
    return datetime.now(timezone.utc) + timedelta(days=1)


def _window_start(client: Any, table: str, cursor: str, window: float | None) -> datetime | None:
    """The newest stored cursor (not past :func:`future_cap`) less ``window`` seconds.

    None without a window or rows.
    """
    if window is None:
        return None
    column = client.escape_column_name(cursor)
    cap = future_cap().isoformat(timespec="microseconds")
    sql = (
        f"select max({column}) from {table}"
        f" where {column} <= cast('{cap}' as timestamp with time zone)"
    )
    with client.execute_query(sql) as c:
        row = c.fetchone()
    newest = row[0] if row else None
    if not isinstance(newest, datetime):
        return None
    aware = newest if newest.tzinfo else newest.replace(tzinfo=timezone.utc)
    return aware - timedelta(seconds=window)


def _rewrite_repeated(client: Any, table: str, record: Record, plan: Plan) -> None:
    """Make this run write again every import the merged table holds more than one row of.

    A table merged on ``id`` holds one row per import, unless rows were appended to it behind
    the merge (a user's ``write_disposition="append"`` run, a copy by hand, two first loads
    into one table at once). The record keeps the newest row of each id; the repeated ids are
    marked changed, so that this run's ``delete-insert`` merge replaces all their rows with one
    and the table converges with no flag. Other strategies only get the warning.
    """
    quote = client.escape_column_name
    sql = f"select {quote('id')} from {table} group by {quote('id')} having count(*) > 1"
    with client.execute_query(sql) as cursor:
        repeated = [str(row[0]) for row in cursor.fetchall()]
    if not repeated:
        return
    heals = plan.strategy == "delete-insert"
    logger.warning(
        "%s holds several rows for %d import(s); %s",
        plan.table,
        len(repeated),
        "this run writes them again, one row each"
        if heals
        else f"the newest is used (the {plan.strategy} merge does not remove the others)",
    )
    if heals:
        pos = record.positions(pa.array(repeated, pa.string()))
        record.updated[pos[pos >= 0]] = _REWRITE


def _evict_duckdb_cache(client: Any) -> None:
    """Make DuckDB drop the table blocks it cached while the record was read.

    DuckDB keeps the blocks of a table it scanned in its buffer pool until memory runs short
    (up to its ``memory_limit``): at 1M imports the ``id`` column alone held ~30 MB for the
    rest of the run, which the scan and the load never read again. Lowering the limit for a
    moment evicts them (they are on disk, nothing is spilled); the limit is then set back to the
    configured one (dlt's ``global_config``), or to the value read before.
    """
    connection = client.native_connection
    configured = (getattr(client.credentials, "global_config", None) or {}).get("memory_limit")
    try:
        with client.execute_query("select current_setting('memory_limit')") as cursor:
            before = str(cursor.fetchall()[0][0])
        connection.execute("SET memory_limit = '1MB'")
    except Exception:  # an engine build without the setting: nothing to evict
        return
    restore = str(configured) if configured else before
    connection.execute(f"SET memory_limit = '{restore}'")


def _release_freed_memory() -> None:
    """Hand the memory freed while reading the record back to the operating system.

    Reading a million rows allocates and frees many blocks (a Python tuple per row on
    PostgreSQL, Arrow buffers on both engines). pyarrow's pool and glibc's malloc keep freed
    blocks for reuse, which the scan that follows never needs: measured at 1M imports, this
    returns 30 MB. It frees memory only; nothing else of the process changes.
    """
    pa.default_memory_pool().release_unused()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _read(client: Any, sql: str, chunks: Any) -> tuple[Any, ...] | None:
    """Read the record into (ids, micros, deleted, hashes, scope codes, scope names).

    Returns None when the table is empty; the scope codes are None when it has no scope.

    The rows are counted first so that the arrays are filled in place: concatenating per-chunk
    arrays would hold every array twice at the peak (measured: +20 MB at 1M imports).
    """
    with client.execute_query(f"select count(*) from ({sql}) as exa_record") as cursor:
        total = int(cursor.fetchall()[0][0])
    if not total:
        return None
    updated = np.empty(total, dtype=np.int64)
    deleted = np.empty(total, dtype=bool)
    hashes = np.empty(total, dtype=np.int64)
    id_chunks: list[pa.Array] = []
    scope_codes: np.ndarray | None = None
    names: dict[str, int] = {}
    done = 0
    for ids, micros, flags, scopes in chunks(client, sql):
        ids = ids.cast(pa.string())
        end = done + len(ids)
        if end > total:  # rows added since the count: grow
            total = max(end, total * 2)
            updated, deleted, hashes = (np.resize(a, total) for a in (updated, deleted, hashes))
        updated[done:end] = (
            micros.cast(pa.int64()).to_numpy(zero_copy_only=False)
            if isinstance(micros, pa.ChunkedArray | pa.Array)
            else np.asarray(micros, dtype=np.int64)
        )
        deleted[done:end] = (
            flags.to_numpy(zero_copy_only=False)
            if isinstance(flags, pa.ChunkedArray | pa.Array)
            else np.asarray(flags, dtype=bool)
        )
        hashes[done:end] = _hash(ids)
        if scopes is not None:
            if scope_codes is None or len(scope_codes) < total:
                scope_codes = (
                    np.empty(total, np.int32)
                    if scope_codes is None
                    else np.resize(scope_codes, total)
                )
            encoded = pc.dictionary_encode(pa.array(scopes).cast(pa.string()))
            local = np.array(
                [names.setdefault(str(v), len(names)) for v in encoded.dictionary.to_pylist()],
                dtype=np.int32,
            )
            scope_codes[done:end] = local[encoded.indices.to_numpy(zero_copy_only=False)]
        id_chunks.append(ids)
        done = end
    if not done:
        return None
    ids_all = pa.chunked_array(id_chunks, pa.string())
    codes = None if scope_codes is None else scope_codes[:done]
    scope_names = sorted(names, key=names.__getitem__)
    return ids_all, updated[:done], deleted[:done], hashes[:done], codes, scope_names


def emptied_by_this_load(plan: Plan) -> bool:
    """Whether this load package drops or truncates the table before loading.

    dlt's ``refresh`` (``drop_sources``, ``drop_resources``, ``drop_data``; the CLI's
    ``--full-refresh``) lists the tables in the package and empties them in the load step, after
    the scan: the rows in the table now are not the record this load builds on, so it is empty.
    """
    try:
        package = dlt.current.load_package_state()["state"]
    except Exception:  # no load package: iterated outside a pipeline
        return False
    listed = [*package.get("dropped_tables", []), *package.get("truncated_tables", [])]
    return any(t.get("name") == plan.table for t in listed)


def recreate_if_dropped(record: Record, plan: Plan, schema: Any) -> bool:
    """Make dlt create the table again when it was dropped behind dlt's back.

    dlt creates a table only when the schema version it is loading is not yet stored in the
    destination. A table dropped by hand (``drop table``, a restore of a single table) leaves
    that version in place, so the next load would fail on the missing table. When the
    destination itself says the table is missing while dlt's schema has loaded data into it,
    the table is listed in this load package's ``dropped_tables``, dlt's own mechanism of
    ``refresh``: the loader then (re)creates it before loading. Nothing is dropped that exists.

    Returns:
        True when the table was listed for re-creation.
    """
    if record.found != "missing" or schema is None:
        return False
    table = schema.tables.get(plan.table)
    if table is None or not has_table_seen_data(table):
        return False
    package = dlt.current.load_package_state()["state"]
    dropped = package.setdefault("dropped_tables", [])
    if all(t.get("name") != plan.table for t in dropped):
        dropped.append(deepcopy(table))
    logger.warning(
        "%s: the destination has no table %s although rows were loaded into it before; it"
        " is created again and every import is loaded",
        plan.table,
        plan.table,
    )
    return True


# --------------------------------------------------------------------------- deletion marks


def stored_rows(
    pipeline: dlt.Pipeline, table: str, ids: list[str], spec: TableSpec = IMPORTS
) -> Iterator[list[dict[str, Any]]]:
    """Read the stored rows of ``ids`` in API shape, a chunk of ids at a time."""
    naming = pipeline.default_schema.naming
    with pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name(table)
        for start in range(0, len(ids), STORED_CHUNK):
            chunk = ids[start : start + STORED_CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            sql = f"select * from {qualified} where {client.escape_column_name('id')} in ({marks})"
            with client.execute_query(sql, *chunk) as cursor:
                names = [str(d[0]) for d in cursor.description]
                rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
            latest: dict[str, dict[str, Any]] = {}
            version = spec.cursor_column
            for row in rows:  # a change log may hold several rows per id: keep the newest
                key = (row.get(_DLT_LOAD_ID) or "", row.get(version))
                kept = latest.get(row["id"])
                if kept is None or key > (kept.get(_DLT_LOAD_ID) or "", kept.get(version)):
                    latest[row["id"]] = row
            yield [spec.to_api(r, naming) for r in latest.values()]


# --------------------------------------------------------------------------- the scan


@dataclass
class Counters:
    """What one scan did; saved in the resource state after it (``dlt pipeline ... info``).

    Attributes:
        rows: imports read from the API.
        changed: rows yielded because they are new or changed (or all, in snapshot mode).
        deleted: deletion marks yielded (imports gone from the API).
        max_updated_at: the highest ``updatedAt`` (the cursor) seen, in µs (None if none).
        min_updated_at: the lowest, in µs (None if none).
        complete: the scan reached the last page.
    """

    rows: int = 0
    changed: int = 0
    deleted: int = 0
    max_updated_at: int | None = None
    min_updated_at: int | None = None
    complete: bool = False


class Scan:
    """One run's comparison of the API with the destination; see the module docstring.

    Args:
        plan: how this run writes (from the resource hints).
        record: the destination's rows (empty in snapshot mode).
        since: only rows with ``updatedAt`` at or after this are loaded (backfill start); older
            ones still count as listed, so they are never taken for deleted.
        load_id: dlt's load id of this run's package, stamped on every row as
            ``_dlt_load_id`` (None outside a pipeline).
        empty_table: the destination table holds no row when this package loads (it is
            missing or empty, or this load drops or truncates it). A ``merge`` then has nothing
            to merge with, and the rows are appended instead: dlt's merge copies every row into
            a staging table first, then deletes and inserts in the table, which for a first load
            of 1M imports into DuckDB doubled the load step (and its memory). A scan that meets
            an id twice switches the load back to a deduplicating merge (see :meth:`select`).
    """

    def __init__(
        self,
        plan: Plan,
        record: Record,
        since: datetime | None,
        load_id: str | None,
        empty_table: bool = False,
    ) -> None:
        self.plan = plan
        self.record = record
        self.since = None if since is None else to_micros(since)
        self.load_id = load_id
        self.counters = Counters()
        #: append into the empty table instead of merging (see the class docstring)
        self.appends = empty_table and plan.mode == "changes" and plan.disposition == "merge"
        #: whether this scan changed the resource's write disposition (put back by the source)
        self.hinted = False
        # what this scan yielded, to tell whether one id was yielded twice (see _duplicates)
        self._yielded_rows = np.zeros(len(record), dtype=bool)
        self._yielded_new: list[np.ndarray] = []  # sorted runs of hashes, see _duplicates
        self._dedup_marked = False
        #: fingerprints of the listed rows per scope (tables with a scope column only)
        self.listed = Fingerprints() if plan.spec.scope is not None else None

    def select(self, rows: Sequence[dict[str, Any]]) -> Any:
        """Return the rows of one batch that must be written, converted, or None.

        The result is an Arrow table, or one wrapped by ``dlt.mark.with_hints`` when it is the
        first to repeat an id of this scan.

        Raises:
            ExaDataError: an ``id`` or ``updatedAt`` is missing or unparseable.
        """
        if not rows:
            return None
        spec = self.plan.spec
        id_array, updated = spec.keys(rows)
        micros = np.asarray(updated.cast(pa.int64()).to_numpy(zero_copy_only=False))
        self.counters.rows += len(rows)
        top = int(micros.max())
        if self.counters.max_updated_at is None or top > self.counters.max_updated_at:
            self.counters.max_updated_at = top
        bottom = int(micros.min())
        if self.counters.min_updated_at is None or bottom < self.counters.min_updated_at:
            self.counters.min_updated_at = bottom
        hashes = _hash(id_array)
        if self.listed is not None:
            self.listed.add(spec.scopes(rows), hashes, micros)
        if self.plan.mode == "changes":
            pos = self.record.positions(id_array, hashes)
            load = self.record.changed(id_array, micros, pos)
        else:
            pos = np.full(len(rows), -1, dtype=np.int64)
            load = np.ones(len(rows), dtype=bool)
        if self.since is not None:
            load &= micros >= self.since
        picked = np.flatnonzero(load)
        if not len(picked):
            return None
        self.counters.changed += len(picked)
        chosen = rows if len(picked) == len(rows) else [rows[int(i)] for i in picked]
        table = self._stamp(spec.to_table(chosen))
        if self._duplicates(pos[picked], hashes[picked]) and not self._dedup_marked:
            # the source declares its rows deduplicated (no window over the staging table);
            # this load must deduplicate after all, keeping the newest updatedAt (dlt: the last
            # hint wins for the whole package, so rows already written for an append are merged
            # too)
            self._dedup_marked = True
            self.appends = False
            logger.warning(
                "%s: a %s is listed twice in one scan; deduplicating", self.plan.table, spec.noun
            )
            newest_first = {"name": spec.cursor, "dedup_sort": "desc"}
            return dlt.mark.with_hints(
                table,
                dlt.mark.make_hints(
                    write_disposition=self.plan.hint if self.hinted else None,
                    columns={spec.cursor: newest_first},  # type: ignore[dict-item]
                    additional_table_hints={DEDUPLICATED_HINT: False},
                ),
            )
        if self.appends and not self.hinted:
            self.hinted = True
            return dlt.mark.with_hints(table, dlt.mark.make_hints(write_disposition="append"))
        return table

    def _duplicates(self, pos: np.ndarray, hashes: np.ndarray) -> bool:
        """Whether a row about to be yielded may repeat an id this scan already yielded.

        Rows stored in the record are tracked by position (exact); new ids by hash (8 MB at 1M),
        kept as sorted runs that are merged like a binary counter (a run is merged with the
        previous one when that is at most twice as long), so each batch is checked against
        a handful of runs and the total merge work is O(n log n). A hash match of two different
        ids only costs a deduplication the load did not need; two rows of one id always match.
        Exact where it matters (one row per id) without keeping every yielded id.
        """
        stored = pos[pos >= 0]
        fresh = np.sort(hashes[pos < 0])
        seen_twice = bool(self._yielded_rows[stored].any()) or len(np.unique(stored)) < len(stored)
        self._yielded_rows[stored] = True
        if len(fresh):
            seen_twice |= bool((fresh[1:] == fresh[:-1]).any())
            for run in self._yielded_new:
                at = np.searchsorted(run, fresh).clip(0, len(run) - 1)
                seen_twice |= bool((run[at] == fresh).any())
            runs = self._yielded_new
            runs.append(fresh)
            while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
                newer, older = runs.pop(), runs.pop()
                runs.append(np.sort(np.concatenate([older, newer]), kind="stable"))
        return seen_twice

    def deletion_marks(
        self, pipeline: dlt.Pipeline | None, complete: set[str] | None = None
    ) -> Iterator[pa.Table]:
        """After a complete scan: the stored rows of objects gone from the API, marked deleted.

        ``soft`` and ``hard`` yield the same rows; the ``hard_delete`` hint on
        ``_exa_deleted_at`` makes dlt delete them under ``hard``. ``hard`` also purges rows a
        previous ``soft`` run marked. Nothing in ``snapshot`` mode or under ``off``.

        Args:
            pipeline: the running pipeline (None outside one: nothing is yielded).
            complete: for a table with a scope column, the scopes listed whole by this scan
                (an item's webset); rows of other scopes are never taken for deleted.
        """
        self.counters.complete = True
        if complete is not None:
            self.record.settle(complete)
        if self.plan.mode != "changes" or self.plan.policy == "off" or pipeline is None:
            return
        gone = self.record.gone(include_soft_deleted=self.plan.policy == "hard")
        if not gone:
            return
        when = datetime.now(timezone.utc).replace(microsecond=0)
        stamp = pa.scalar(when, TIMESTAMP)
        for rows in stored_rows(pipeline, self.plan.table, gone, self.plan.spec):
            if not rows:
                continue
            table = self.plan.spec.to_table(rows)
            index = table.schema.get_field_index(settings.DELETED_AT_COLUMN)
            marks = pa.repeat(stamp, len(rows))
            table = table.set_column(index, table.schema.field(index), marks)
            self.counters.deleted += len(rows)
            yield self._stamp(table)
        logger.info(
            "%s: %d %ss gone from the API (%s delete)",
            self.plan.table,
            self.counters.deleted,
            self.plan.spec.noun,
            self.plan.policy,
        )

    def _stamp(self, table: pa.Table) -> pa.Table:
        """Add ``_dlt_load_id`` (and the scd2 row version ``_dlt_id``) to a table.

        The load id is one value for every row: a dictionary array carries it once instead of
        once per row (a full load of 300k imports: ~0.5 s less in dlt's load step). dlt types
        the column by the dictionary's values (text).
        """
        if self.load_id is not None:
            index = table.schema.get_field_index(_DLT_LOAD_ID)
            load_ids = pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(len(table), dtype=np.int32)), pa.array([self.load_id])
            )
            table = table.set_column(index, pa.field(_DLT_LOAD_ID, load_ids.type), load_ids)
        if self.plan.row_version:
            cursor = self.plan.spec.cursor
            micros = pc.cast(pc.cast(table.column(cursor), pa.int64()), pa.string())
            version = pc.binary_join_element_wise(table.column("id"), micros, "|")
            table = table.append_column(pa.field(_DLT_ID, pa.string(), nullable=False), version)
        return table

    def state(self, seconds: float, stats: Any) -> dict[str, Any]:
        """The resource-state entry describing this scan (constant size)."""
        top = self.counters.max_updated_at
        return {
            "complete": self.counters.complete,
            "rows": self.counters.rows,
            "changed": self.counters.changed,
            "deleted": self.counters.deleted,
            "pages": stats.pages,
            "requests": stats.requests,
            "retried": stats.retried,
            "seconds": round(seconds, 3),
            "max_updated_at": None
            if top is None
            else from_micros(top).isoformat(timespec="microseconds"),
            "table": self.plan.table,
            "mode": self.plan.mode,
        }
