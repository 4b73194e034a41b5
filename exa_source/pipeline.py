"""Build the ``exa_websets`` pipeline and run one load: shared by the CLI and the Airflow DAG."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import dlt
from dlt.common.destination import Destination
from dlt.common.destination.reference import AnyDestination
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.exceptions import PipelineStepFailed

from exa_source import settings
from exa_source.config import require_api_key
from exa_source.dlt_workarounds import recover_interrupted_run
from exa_source.exceptions import ExaConfigError, ExaError
from exa_source.source import exa_websets_source
from exa_source.warehouse import create_views, drop_views

logger = logging.getLogger(__name__)


@dataclass
class LoadSummary:
    """What one run did, for the CLI's summary line and the DAG's XCom.

    Attributes:
        rows_loaded: imports new or changed compared with the destination table, written.
        rows_read: import rows read from the API (every run scans them all).
        rows_deleted: imports found deleted upstream by this run's complete scan, written as
            deletion marks in the same load (soft- or hard-deleted by the deletion policy).
        pages: list pages read.
        requests: HTTP attempts, retries included.
        retried: attempts answered 429 or 5xx.
        seconds: wall time of the whole run (extract, normalize, load).
        destination: destination type, e.g. ``duckdb``.
        dataset: dataset (schema) name.
        load_id: dlt load id, or None when nothing was loaded.
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

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON-able values."""
        return asdict(self)


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
    state: dict[str, Any] = (
        pipeline.state.get("sources", {})
        .get(settings.SOURCE_NAME, {})
        .get("resources", {})
        .get(settings.IMPORTS_TABLE, {})
    )
    return state


def run_load(
    pipeline: dlt.Pipeline,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    page_size: int | None = None,
    initial_updated_at: str | None = None,
    deletions: str | None = None,
    full_refresh: bool = False,
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
    }
    source = exa_websets_source(api_key=key, **{k: v for k, v in options.items() if v is not None})
    started = time.monotonic()
    if full_refresh:
        drop_views(pipeline)  # PostgreSQL: the views would block dlt's drop of `imports`
    try:
        recover_interrupted_run(pipeline)
        info = pipeline.run(
            source,
            refresh="drop_sources" if full_refresh else None,  # type: ignore[arg-type]
        )
    except PipelineStepFailed as exc:
        inner = unwrap(exc)
        if isinstance(inner, ExaError):
            raise inner from None
        raise
    create_views(pipeline)
    seconds = time.monotonic() - started
    scan = imports_state(pipeline).get("last_scan", {})
    summary = LoadSummary(
        rows_loaded=scan.get("changed", 0),
        rows_read=scan.get("rows", 0),
        rows_deleted=scan.get("deleted", 0),
        pages=scan.get("pages", 0),
        requests=scan.get("requests", 0),
        retried=scan.get("retried", 0),
        seconds=round(seconds, 3),
        destination=pipeline.destination.destination_name if pipeline.destination else "",
        dataset=pipeline.dataset_name,
        load_id=info.loads_ids[-1] if info.loads_ids else None,
    )
    logger.info("exa_websets load: %s", summary.as_dict())
    return summary
