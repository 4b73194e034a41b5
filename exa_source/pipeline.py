"""Build the ``exa_websets`` pipeline and run one load: shared by the CLI and the Airflow DAG."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

import dlt
from dlt.common.destination import Destination
from dlt.common.destination.reference import AnyDestination
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.exceptions import PipelineStepFailed

from exa_source import settings
from exa_source.config import require_api_key
from exa_source.dlt_workarounds import permanent_load_failure, recover_interrupted_run
from exa_source.exceptions import ExaConfigError, ExaDestinationError, ExaError
from exa_source.source import exa_websets_source, gap_warning
from exa_source.warehouse import create_views, drop_views

logger = logging.getLogger(__name__)


@dataclass
class LoadSummary:
    """What one run did, for the CLI's summary line and the DAG's XCom.

    Attributes:
        rows_loaded: rows written by this run, all tables: new or changed compared with the
            destination tables, plus ``rows_recovered``.
        rows_read: rows read from the API, all tables.
        rows_deleted: rows found deleted upstream by this run's complete scans, written as
            deletion marks in the same load (soft- or hard-deleted by the deletion policy).
        pages: list pages read.
        requests: HTTP attempts, retries included.
        retried: attempts answered 429 or 5xx.
        seconds: wall time of the whole run (extract, normalize, load).
        destination: destination type, e.g. ``duckdb``.
        dataset: dataset (schema) name.
        load_id: dlt load id, or None when nothing was loaded.
        rows_recovered: rows written by the package a killed or failed run left behind,
            loaded first by this run (0 when there was none).
        tables: per table this run loaded: ``rows_loaded``, ``rows`` (read), ``deleted``,
            ``pages``, ``requests``, ``retried`` (items also ``websets_read``, ``events_read``;
            events also ``gap``).
        warnings: what the user should act on, e.g. a gap in the event log (the API keeps
            events 60 days and the last complete read of them was longer ago).
    """

    rows_loaded: int
    rows_read: int
    rows_deleted: int
    pages: int
    requests: int
    retried: int
    seconds: float
    destination: str
    dataset: str
    load_id: str | None
    rows_recovered: int = 0
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON-able values."""
        return asdict(self)

    def sentence(self) -> str:
        """One sentence on what the load did: the CLI's and the demo's summary line.

        Deletions and recovered rows are mentioned only when there were some.
        """
        return (
            f"Loaded {self._what()}"
            f" (read {self.rows_read:,} in {_count(self.pages, 'page')},"
            f" {_count(self.requests, 'request')}, {self.retried:,} retried) into"
            f" {self.destination} dataset {self.dataset} in {self.seconds:.1f} s"
            + (f"; {self.rows_deleted:,} deleted in Exa" if self.rows_deleted else "")
            + (
                f"; {self.rows_recovered:,} of the loaded rows came from the package an"
                " interrupted run left"
                if self.rows_recovered
                else ""
            )
            + "".join(f". WARNING: {w}" for w in self.warnings)
        )

    def _what(self) -> str:
        """``N new or changed imports, N websets, ...``: the tables that read or wrote rows."""
        shown = [
            (table, t["rows_loaded"])
            for table, t in self.tables.items()
            if t["rows_loaded"] or t["rows"] or table == settings.IMPORTS_TABLE
        ]
        if not shown:
            shown = [(table, 0) for table in self.tables][:1] or [("rows", self.rows_loaded)]
        first, rest = shown[0], shown[1:]
        return ", ".join(
            [f"{first[1]:,} new or changed {first[0]}", *(f"{n:,} {t}" for t, n in rest)]
        )


def _count(n: int, noun: str) -> str:
    """``1 page``, ``2 pages``, ``1,000 pages``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def make_destination(
    destination: str = "duckdb",
    duckdb_path: str | None = None,
    dataset: str = settings.DATASET_NAME,
) -> AnyDestination:
    """Return a dlt destination; DuckDB always gets an explicit file path.

    Args:
        destination: a dlt destination name (``duckdb``, ``postgres``, ...); credentials of
            other destinations come from dlt config (``DESTINATION__POSTGRES__CREDENTIALS``).
        duckdb_path: DuckDB file; default ``exa.duckdb`` in the working directory. Never a temp
            directory (dlt's default inside Airflow) and never named like the dataset.
        dataset: the dataset the pipeline loads into.

    Raises:
        ExaConfigError: unknown destination, or a DuckDB file named like the dataset.
    """
    if destination == "duckdb":
        path = Path(duckdb_path or settings.DEFAULT_DUCKDB_FILE).expanduser().resolve()
        if path.stem == dataset:
            raise ExaConfigError(
                f"DuckDB file {path.name!r} is named like the dataset; dlt fails to load into it"
                " (Ambiguous reference to catalog or schema)."
                f" Use e.g. {settings.DEFAULT_DUCKDB_FILE}."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        credentials = DuckDbCredentials(str(path))
        limit = os.environ.get(settings.DUCKDB_MEMORY_LIMIT_ENV, settings.DUCKDB_MEMORY_LIMIT)
        if limit:
            credentials.global_config = {"memory_limit": limit}
        return cast(AnyDestination, dlt.destinations.duckdb(credentials=credentials))
    try:
        found = Destination.from_reference(destination)
    except Exception as exc:  # dlt raises several types for unknown names
        raise ExaConfigError(
            f"unknown destination {destination!r}: {exc}. Try duckdb or postgres,"
            " or any dlt destination name."
        ) from None
    if found is None:
        raise ExaConfigError(f"unknown destination {destination!r}")
    return found


def make_pipeline(
    destination: str = "duckdb",
    duckdb_path: str | None = None,
    dataset: str = settings.DATASET_NAME,
    pipeline_name: str = settings.PIPELINE_NAME,
    pipelines_dir: str | None = None,
) -> dlt.Pipeline:
    """Create (or attach to) the pipeline; its state comes back from the destination if absent."""
    return dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=make_destination(destination, duckdb_path, dataset),
        dataset_name=dataset,
        pipelines_dir=pipelines_dir,  # type: ignore[arg-type]  # None = dlt's default
    )


def unwrap(exc: BaseException) -> BaseException:
    """Return the innermost :class:`ExaError` behind dlt's wrappers, else ``exc`` itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ExaError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def imports_state(pipeline: dlt.Pipeline) -> dict[str, Any]:
    """The ``imports`` resource's state as last committed (the last scan's description)."""
    return resource_state(pipeline, settings.IMPORTS_TABLE)


def resource_state(pipeline: dlt.Pipeline, resource: str) -> dict[str, Any]:
    """A resource's state as last committed."""
    state: dict[str, Any] = (
        pipeline.state.get("sources", {})
        .get(settings.SOURCE_NAME, {})
        .get("resources", {})
        .get(resource, {})
    )
    return state


def scan_state(pipeline: dlt.Pipeline, resource: str) -> dict[str, Any]:
    """The description of a resource's last scan (``last_scan`` in its state)."""
    scan: dict[str, Any] = resource_state(pipeline, resource).get("last_scan", {})
    return scan


#: What the summary counts per table, as each scan's state names it.
_TABLE_KEYS = ("rows", "deleted", "pages", "requests", "retried")


#: The lock file each run holds in the pipeline's working folder (see :func:`exclusive`).
RUN_LOCK_FILE = ".exa-source-run.lock"


@contextmanager
def exclusive(pipeline: dlt.Pipeline) -> Iterator[None]:
    """Hold an exclusive lock on the pipeline's working folder for the life of one run.

    dlt does not support two runs of one pipeline folder at a time, and the recovery of a killed
    run deletes what a run in progress would still be writing. The kernel releases the lock when
    the process ends, however it ends, so a killed run never blocks the next.

    Raises:
        ExaDestinationError: another process holds the folder (the message names its pid).
    """
    folder = Path(pipeline.working_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / RUN_LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ExaDestinationError(
                f"another run (pid {holder}) is using the pipeline folder {folder}; wait for it"
                " to finish, or give this run its own pipelines folder (--pipelines-dir)"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: What DuckDB says when another process holds the file: "... Conflicting lock is held in
#: /usr/bin/python3 (PID 123) by user ann. ..."; the holder is quoted in our error.
_DUCKDB_HOLDER = re.compile(r"Conflicting lock is held in (.*?\(PID \d+\))")


def _duckdb_file(pipeline: dlt.Pipeline) -> str | None:
    """The DuckDB file the pipeline loads into, or None for any other destination."""
    destination = pipeline.destination
    if destination is None or destination.destination_name != "duckdb":
        return None
    credentials = destination.config_params.get("credentials")
    database = getattr(credentials, "database", None)
    return database if isinstance(database, str) and database != ":memory:" else None


@contextmanager
def duckdb_held(pipeline: dlt.Pipeline) -> Iterator[None]:
    """Open the pipeline's DuckDB file once, waiting out readers, and keep it open for the run.

    A DuckDB file takes one writer or many readers. dlt opens and closes the file several
    times in one run (state sync, the scan's read of the table, the load, the views), and a BI
    tool that opens it read-only every few hundred milliseconds made 3 of 5 loads fail on
    "Could not set lock on file". DuckDB shares one database instance between all connections
    of a process to the same file, so while this connection stays open dlt's connections reuse
    it and never ask for the lock again: the run waits for readers once, at its start.

    Waits up to ``EXA_DUCKDB_LOCK_WAIT_SECONDS`` (default
    :data:`~exa_source.settings.DUCKDB_LOCK_WAIT_SECONDS`), retrying with backoff.

    Raises:
        ExaDestinationError: the file stayed locked; the message names the holder.
    """
    path = _duckdb_file(pipeline)
    if path is None:
        yield
        return
    import duckdb

    wait = float(
        os.environ.get(settings.DUCKDB_LOCK_WAIT_ENV, settings.DUCKDB_LOCK_WAIT_SECONDS) or 0
    )
    deadline = time.monotonic() + wait
    pause = 0.02
    while True:
        try:
            keeper = duckdb.connect(path)
            break
        except duckdb.IOException as exc:
            message = str(exc)
            if "lock" not in message.lower() or time.monotonic() >= deadline:
                found = _DUCKDB_HOLDER.search(message)
                holder = found.group(1) if found else "another process"
                raise ExaDestinationError(
                    f"the DuckDB file {path} is held by {holder} and stayed locked for"
                    f" {wait:.0f} s; a DuckDB file takes one writer or many readers. Close"
                    f" the program that holds it or set {settings.DUCKDB_LOCK_WAIT_ENV} to wait"
                    " longer (README: querying the file while loads run)."
                ) from None
            time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
            pause = min(pause * 2, 0.5)
    try:
        yield
    finally:
        keeper.close()


def _raise_clearly(pipeline: dlt.Pipeline, exc: PipelineStepFailed) -> NoReturn:
    """Re-raise a failed dlt step as the error a data engineer can act on.

    An :class:`ExaError` behind dlt's wrappers is raised as is. A load that can never succeed
    (:func:`~exa_source.dlt_workarounds.permanent_load_failure`) has its package aborted, so
    that the next run reads the API again instead of retrying the package forever; nothing is
    lost by that, since the next scan loads whatever the table lacks.

    Raises:
        ExaError: see above.
        PipelineStepFailed: ``exc``, when it is neither.
    """
    inner = unwrap(exc)
    if isinstance(inner, ExaError):
        raise inner from None
    failure = permanent_load_failure(exc) if exc.step == "load" else None
    if failure is None:
        raise exc
    table, reason = failure
    pipeline.abort_packages()
    raise ExaDestinationError(
        f"loading table {table} failed for a reason no retry can fix ({reason}); the load"
        " package was aborted and nothing of it was kept. The next run compares the API with"
        " the table again and loads what is missing."
    ) from None


def run_load(
    pipeline: dlt.Pipeline,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    page_size: int | None = None,
    initial_updated_at: str | None = None,
    deletions: str | None = None,
    max_pages: int | None = None,
    max_seconds: float | None = None,
    full_refresh: bool = False,
    resources: tuple[str, ...] | list[str] | None = None,
    concurrency: int | None = None,
    items_reconcile_days: float | None = None,
    event_types: tuple[str, ...] | list[str] | str | None = None,
) -> LoadSummary:
    """Run one load of the ``exa`` source into ``pipeline``.

    Options left as None come from dlt config (``[sources.exa]``) or the source's defaults.
    First finishes what a killed run left behind
    (:func:`~exa_source.dlt_workarounds.recover_interrupted_run`), then loads, then refreshes
    the BI views.

    Raises:
        ExaConfigError: no API key or an invalid option, before any request.
        ExaError: the API or the data failed the run; nothing was committed.
        PipelineStepFailed: a failure in dlt's normalize or load step.
    """
    key = require_api_key(api_key)
    options: dict[str, Any] = {
        "base_url": base_url,
        "page_size": page_size,
        "initial_updated_at": initial_updated_at,
        "deletions": deletions,
        "max_pages": max_pages,
        "max_seconds": max_seconds,
        "concurrency": concurrency,
        "items_reconcile_days": items_reconcile_days,
        "event_types": event_types,
    }
    source = exa_websets_source(api_key=key, **{k: v for k, v in options.items() if v is not None})
    if resources:
        unknown = sorted(set(resources) - set(settings.RESOURCES))
        if unknown:
            raise ExaConfigError(
                f"unknown resource {', '.join(unknown)}; choose among"
                f" {', '.join(settings.RESOURCES)}"
            )
        source = source.with_resources(*resources)
    selected = list(source.selected_resources)
    started = time.monotonic()
    with exclusive(pipeline), duckdb_held(pipeline):
        if full_refresh:
            drop_views(pipeline)  # PostgreSQL: the views would block dlt's drop of `imports`
        # the scan of the package a killed run left, if any: its rows count as this run's
        pending = {t: scan_state(pipeline, t) for t in selected}
        try:
            recovered = recover_interrupted_run(pipeline)
            info = pipeline.run(
                source,
                refresh="drop_sources" if full_refresh else None,  # type: ignore[arg-type]
            )
        except PipelineStepFailed as exc:
            _raise_clearly(pipeline, exc)
        create_views(pipeline)
    seconds = time.monotonic() - started
    tables: dict[str, dict[str, Any]] = {}
    for table in selected:
        scan = scan_state(pipeline, table)
        tables[table] = {
            "rows_loaded": scan.get("changed", 0)
            + (pending[table].get("changed", 0) if recovered else 0),
            **{key: scan.get(key, 0) for key in _TABLE_KEYS},
        }
        for key in ("websets_read", "events_read", "gap"):
            if key in scan:
                tables[table][key] = scan[key]
    warnings = [gap_warning(t["gap"]) for t in tables.values() if t.get("gap")]
    total = {key: sum(t[key] for t in tables.values()) for key in ("rows_loaded", *_TABLE_KEYS)}
    rows_recovered = sum(pending[t].get("changed", 0) for t in selected) if recovered else 0
    summary = LoadSummary(
        rows_loaded=total["rows_loaded"],
        rows_read=total["rows"],
        rows_deleted=total["deleted"],
        pages=total["pages"],
        requests=total["requests"],
        retried=total["retried"],
        tables=tables,
        seconds=round(seconds, 3),
        destination=pipeline.destination.destination_name if pipeline.destination else "",
        dataset=pipeline.dataset_name,
        load_id=info.loads_ids[-1] if info.loads_ids else None,
        rows_recovered=rows_recovered,
        warnings=warnings,
    )
    logger.info("exa_websets load: %s", summary.as_dict())
    return summary
