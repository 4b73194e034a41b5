"""Build the ``exa_websets`` pipeline and run one load: shared by the CLI and the Airflow DAG."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import dlt
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.destination import Destination
from dlt.common.destination.reference import AnyDestination
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.exceptions import PipelineStepFailed

from exa_source import settings
from exa_source.deletions import apply_deletions, imports_state
from exa_source.helpers import ExaConfigError, ExaError
from exa_source.source import exa_websets_source
from exa_source.warehouse import create_views, drop_views

logger = logging.getLogger(__name__)


@dataclass
class LoadSummary:
    """What one run did, for the CLI's summary line and the DAG's XCom.

    Attributes:
        rows_loaded: import rows new or changed since the last run, written to the table.
        rows_read: import rows read from the API (every run scans them all).
        rows_deleted: imports found deleted upstream by this run's complete scan (soft- or
            hard-deleted in the destination according to the deletion policy).
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


def resolve_api_key(explicit: str | None = None) -> str | None:
    """Find the API key: an explicit value, then dlt config/secrets, then ``EXA_API_KEY``.

    dlt looks in ``SOURCES__EXA__API_KEY``, ``.dlt/secrets.toml`` (``[sources.exa] api_key``)
    and its other providers (e.g. the Airflow Variable ``dlt_secrets_toml``).
    """
    if explicit:
        return explicit
    key: Any = None
    try:
        key = dlt.secrets.get(f"sources.{settings.SOURCE_NAME}.api_key")
    except ConfigFieldMissingException:
        pass
    return str(key) if key else os.environ.get(settings.API_KEY_ENV) or None


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


def recover_interrupted_run(pipeline: dlt.Pipeline) -> bool:
    """Finish what a killed run left behind, so that this run starts from a clean folder.

    Two things a SIGKILL can leave in dlt 1.31's pipeline folder:

    * a package killed inside normalize's commit: normalize renames ``load/new/<id>`` to
      ``load/normalized/<id>`` and only then deletes ``normalize/extracted/<id>``. Both copies
      survive and every later run fails with "Directory not empty". The normalized copy is
      complete, so the stale copies go;
    * a package extracted or normalized but not loaded. ``pipeline.run(source)`` would load it
      *instead of* extracting the source, so changes made since wait for yet another run. It is
      loaded here first; then the state is re-read from the destination (the package carried
      a newer one than the local folder may hold if the kill came before dlt saved it) and the
      deletions that run recorded are applied.

    Returns:
        True when a pending package was loaded.
    """
    work = Path(pipeline.working_dir)

    def entries(sub: str) -> set[str]:
        return {p.name for p in (work / sub).glob("*")}

    normalized = set(pipeline.list_normalized_load_packages())
    stale = [("normalize/extracted", i) for i in entries("normalize/extracted") & normalized]
    # load/new holds a package only while its extracted copy exists; anything else there is
    # a committed duplicate, or a temp folder or temp file (dlt's atomic save) of a killed run
    stale += [("load/new", i) for i in entries("load/new") - entries("normalize/extracted")]
    for sub, name in stale:
        logger.warning("removing %s/%s, left behind by a killed run", sub, name)
        path = work / sub / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if not pipeline.has_pending_data:
        return False
    logger.warning("loading the packages left by an interrupted run before extracting anew")
    pipeline.run()
    pipeline.sync_destination()
    apply_deletions(pipeline)
    return True


def unwrap(exc: BaseException) -> BaseException:
    """Return the innermost :class:`ExaError` behind dlt's wrappers, else ``exc`` itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ExaError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def run_load(
    pipeline: dlt.Pipeline,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    page_size: int | None = None,
    initial_updated_at: str | None = None,
    lag_seconds: float | None = None,
    deletions: str | None = None,
    full_refresh: bool = False,
) -> LoadSummary:
    """Run one load of the ``exa`` source into ``pipeline``.

    Options left as None come from dlt config (``[sources.exa]``) or the source's defaults.

    Raises:
        ExaConfigError: no API key or an invalid option, before any request.
        ExaError: the API or the data failed the run; nothing was committed.
        PipelineStepFailed: a failure in dlt's normalize or load step.
    """
    key = resolve_api_key(api_key)
    if not key:
        raise ExaConfigError(settings.NO_KEY_MESSAGE)
    options: dict[str, Any] = {
        "base_url": base_url,
        "page_size": page_size,
        "initial_updated_at": initial_updated_at,
        "lag_seconds": lag_seconds,
        "deletions": deletions,
    }
    source = exa_websets_source(api_key=key, **{k: v for k, v in options.items() if v is not None})
    started = time.monotonic()
    if full_refresh:
        drop_views(pipeline)  # PostgreSQL: the views would block dlt's drop of `imports`
    # objects created by imports live until exit: keep the garbage collector from re-walking
    # them during the run (measured: ~8% less CPU per load)
    gc.freeze()
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
    rows_deleted = apply_deletions(pipeline)
    seconds = time.monotonic() - started
    trace = pipeline.last_trace
    normalize = trace.last_normalize_info if trace else None
    rows_loaded = normalize.row_counts.get(settings.IMPORTS_TABLE, 0) if normalize else 0
    scan = imports_state(pipeline).get("last_scan", {})
    summary = LoadSummary(
        rows_loaded=rows_loaded,
        rows_read=scan.get("rows", 0),
        rows_deleted=rows_deleted,
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
