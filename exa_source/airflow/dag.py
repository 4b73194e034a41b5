"""The DAG factory behind ``dags/exa_websets.py``: one deployment of the load per DAG id.

Design: plain TaskFlow, not dlt's ``PipelineTasksGroup``
---------------------------------------------------------
``dlt.helpers.airflow_helper.PipelineTasksGroup`` works on Airflow 3 but its caveats
(``docs/dlt-behaviour.md``) break three requirements of this DAG:

* ``add_run(..., decompose="serialize")`` builds the source, and resolves its secrets, at DAG
  *parse* time: without the API key in the DAG processor the file fails to import;
* its constructor sets process-wide env (``DLT_PROJECT_DIR``, ``DLT_DATA_DIR``) on every parse
  and leaves a ``/tmp/dlt_*`` folder behind per parse;
* dlt (~2.3 s of imports for ``airflow_helper``) is imported by every parse.

The source is a single resource (one paginated endpoint, merged on ``id``): there is nothing
to decompose. One TaskFlow ``@task`` that imports dlt and the connector *inside* the task
parses in the time of ``import airflow.sdk``, needs no secret, no network and writes nothing
at parse time, and calls the same product code as the CLI
(:func:`exa_source.pipeline.make_pipeline` / :func:`exa_source.pipeline.run_load`). What the
helper adds on top (load info and trace saved to the destination) the task does itself.

One deployment per DAG id
-------------------------
Everything a run keeps on the host derives from the DAG id: the dlt pipeline name, the local
pipelines folder (``$AIRFLOW_HOME/dlt_pipelines/<dag_id>/<destination>``), the Airflow
Variables (``<dag_id>_<name>``), the environment knobs (``<DAG_ID>_<NAME>``) and the Asset. Two
DAGs made by :func:`exa_websets_dag` with different ids share nothing but the Airflow
installation (and the Connection, if both are given the same ``conn_id``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset, Param, dag, task

from exa_source import settings

if TYPE_CHECKING:  # the task imports them when it runs; parsing stays light
    from exa_source.airflow.hooks import ExaCredentials
    from exa_source.exceptions import ExaAuthError

logger = logging.getLogger("exa_source.airflow.dag")

DEFAULT_DAG_ID = "exa_websets"
DEFAULT_CONN_ID = "exa_default"
#: The destination table the Asset stands for.
TABLE = settings.IMPORTS_TABLE
#: Extra time a run may take beyond its retry budget: scheduling and queueing of the retries.
DAGRUN_SLACK = timedelta(minutes=15)
#: Airflow's exponential backoff multiplier of the task's retries.
RETRY_BACKOFF = 2.0
#: Airflow caps each retry delay at this (``max_retry_delay``).
MAX_RETRY_DELAY = timedelta(hours=1)


def env_prefix(dag_id: str) -> str:
    """Environment prefix of a deployment: ``exa_websets`` -> ``EXA_WEBSETS``."""
    return re.sub(r"\W", "_", dag_id).upper()


def _env(name: str, default: str) -> str:
    """Return env var ``name``, or ``default`` when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or default


def _env_number(name: str, default: float) -> float:
    """Return env var ``name`` as a non-negative number.

    Raises:
        ValueError: the value is not a non-negative number (shown as a DAG import error).
    """
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} must be a number") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} must be 0 or more")
    return value


def retry_budget(retries: int, retry_delay: timedelta, attempt_timeout: timedelta) -> timedelta:
    """The longest a run can take when every attempt times out and every retry waits its most.

    Airflow's exponential backoff waits, before retry *i* (1-based), a deterministic
    pseudo-random time in ``[d * 2**(i-1), 2 * d * 2**(i-1))`` (``TaskInstance
    .next_retry_datetime``), capped at ``max_retry_delay``. A ``dagrun_timeout`` shorter than
    this sum fails the run while a retry is still waiting, and that retry never runs.
    """
    waits = sum(
        (
            min(retry_delay * 2 * RETRY_BACKOFF**i, MAX_RETRY_DELAY)
            for i in range(retries)  # i = retry number - 1
        ),
        timedelta(),
    )
    return attempt_timeout * (retries + 1) + waits


def imports_asset(dag_id: str = DEFAULT_DAG_ID) -> Asset:
    """The Airflow Asset a successful run of ``dag_id`` updates: its ``imports`` table.

    Schedule a downstream DAG on it (``schedule=[imports_asset()]``); each event's ``extra``
    holds ``rows_loaded``, ``rows_deleted``, ``load_id``, ``destination``, ``dataset`` and
    ``table``. The URI uses an ``x-`` scheme (Airflow keeps those verbatim): the destination
    is chosen when the task runs, so it cannot be part of a name fixed at parse time.
    """
    return Asset(name=f"{dag_id}.{TABLE}", uri=f"x-exa-source://{dag_id}/{TABLE}")


@dataclass(frozen=True)
class Deployment:
    """What one DAG made by :func:`exa_websets_dag` loads into (defaults before the knobs).

    Attributes:
        dag_id: DAG id; also the dlt pipeline name and the prefix of every knob.
        conn_id: Airflow Connection holding the key (password) and base URL (host).
        destination: dlt destination name default (``duckdb``).
        duckdb_path: DuckDB file default (absolute); None = ``$AIRFLOW_HOME/data/exa.duckdb``.
        dataset: dataset default.
        pipelines_dir: dlt's local folder default; None = per DAG id and destination.
    """

    dag_id: str = DEFAULT_DAG_ID
    conn_id: str = DEFAULT_CONN_ID
    destination: str = "duckdb"
    duckdb_path: str | None = None
    dataset: str = settings.DATASET_NAME
    pipelines_dir: str | None = None

    @property
    def prefix(self) -> str:
        """Environment prefix (``EXA_WEBSETS``)."""
        return env_prefix(self.dag_id)

    def setting(self, name: str, default: str | None = None) -> str | None:
        """A runtime knob: Variable ``<dag_id>_<name>``, env ``<PREFIX>_<NAME>``, ``default``.

        Must run inside a task (one Variable request to the API server).
        """
        from airflow.sdk import Variable

        value = Variable.get(f"{self.dag_id}_{name}", default=None)
        if value is None or not str(value).strip():
            value = os.environ.get(f"{self.prefix}_{name.upper()}", "").strip() or default
        return str(value).strip() if value else None


def _airflow_home() -> str:
    return os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")


def _doc_md(dep: Deployment, pool: str | None) -> str:
    """The DAG's documentation, with this deployment's names."""
    p, d = dep.prefix, dep.dag_id
    duckdb_default = dep.duckdb_path or "$AIRFLOW_HOME/data/exa.duckdb"
    pipelines_default = dep.pipelines_dir or f"$AIRFLOW_HOME/dlt_pipelines/{d}/<destination>"
    return f"""
# {d}

Loads the **imports** of the [Exa Websets API](https://docs.exa.ai/websets)
(`GET /websets/v0/imports`) with [dlt](https://dlthub.com) into the table
`<dataset>.imports` (default dataset `{dep.dataset}`), merged on `id`. Every run pages through
all imports (the API has no `updatedAt` filter), compares them with the table and writes only
the imports that are new, changed or deleted in Exa (deletions in the same load). The table
itself is the record of what was loaded: a fresh worker, a restored database or a second
deployment all converge on the next run; a failed run changes neither the data nor the state.

**A run loads the API's current state**, whatever its logical date: the API has no history.
Clearing or re-running an old run is a catch-up to *now*, not a replay of that day.

## Trigger parameters

| param | default | meaning |
|---|---|---|
| `full_refresh` | false | drop the table and the pipeline state, load everything again |
| `deletions` | dlt config (`soft`) | imports deleted in Exa: `soft`, `hard` or `off` |
| `initial_updated_at` | dlt config (none) | backfill start (ISO-8601): imports updated since |

## Outputs

* **Asset** `{d}.imports` (`x-exa-source://{d}/imports`), updated by every successful run;
  event extra: `rows_loaded`, `rows_deleted`, `load_id`, `destination`, `dataset`, `table`,
  `tables` (every table the run loaded: the DAG loads them all, imports, websets, searches,
  enrichments and items; the counts are totals over them).
  Schedule downstream DAGs on it (`schedule=[exa_source.airflow.dag.imports_asset("{d}")]`);
  a run with no change still emits an event, with `rows_loaded` 0.
* **XCom** `return_value`: `rows_loaded` (new or changed rows written, `rows_recovered`
  included), `rows_read`, `rows_deleted` (deletion marks written), `pages`, `requests`,
  `retried` (attempts answered 429/5xx), `seconds`, `destination`, `dataset`, `load_id`
  (null when nothing was loaded), `rows_recovered` (rows of a package an interrupted run left,
  loaded first by this run).
* **Tables** `_load_info` and `_trace` in the dataset: dlt's load info and trace of each run.

## Credentials (first match wins)

1. Airflow Connection **`{dep.conn_id}`**, type `exa`: *API key* (password); *Base URL*
   (host, optional, default `https://api.exa.ai`). Other id: env `{p}_CONN_ID`.
2. dlt's Airflow Variable **`dlt_secrets_toml`** holding secrets.toml text:
   `[sources.exa]` / `api_key = "..."`. Read once per task.
3. Environment of the worker: `SOURCES__EXA__API_KEY` (or `.dlt/secrets.toml`), then
   `EXA_API_KEY`.

The key is masked in task logs and never passed through templates or XCom.

## Configuration

Read when the task runs: Airflow Variable first, then the environment variable, then the
default.

| Variable | Env | Default |
|---|---|---|
| `{d}_destination` | `{p}_DESTINATION` | `{dep.destination}` (or `postgres`, ...) |
| `{d}_duckdb_path` | `{p}_DUCKDB_PATH` | `{duckdb_default}` (absolute) |
| `{d}_dataset` | `{p}_DATASET` | `{dep.dataset}` |
| `{d}_pipelines_dir` | `{p}_PIPELINES_DIR` | `{pipelines_default}` |

Warehouse credentials and source options come from dlt config: env
(`DESTINATION__POSTGRES__CREDENTIALS`, `SOURCES__EXA__DELETIONS`) or `dlt_secrets_toml`
(`[destination.postgres] credentials`, `[sources.exa] page_size`).

Read when the file is parsed (environment only, so parsing never touches the metastore):

| Env | Default |
|---|---|
| `{p}_SCHEDULE` | `@hourly` (cron or preset; `none` = manual runs only) |
| `{p}_RETRIES` | `3` task retries, exponential backoff (x2, each wait capped at 1 h) |
| `{p}_RETRY_DELAY_SECONDS` | `300` first retry delay |
| `{p}_TIMEOUT_MINUTES` | `60` execution timeout of one attempt |
| `{p}_POOL` | {f"`{pool}`" if pool else "none (Airflow's `default_pool`)"}: pool for Exa API work |

`dagrun_timeout` is the whole retry budget (every attempt timing out, every retry waiting
its longest) plus 15 min. A pool must exist before the task can run: Airflow leaves a task
of a missing pool unscheduled (the scheduler logs "Tasks using non-existent pool"). Create it
first, e.g. `airflow pools set exa_api 1 "Exa API"`, then set `{p}_POOL=exa_api`.

HTTP retries inside one attempt are dlt's: `RUNTIME__REQUEST_MAX_ATTEMPTS` (5),
`RUNTIME__REQUEST_BACKOFF_FACTOR` (1). A rejected key (400/401), exhausted credits (402) or a
bad setting fail the task at once, without Airflow retries.

Try it: `airflow dags test {d}`.
"""


def exa_websets_dag(
    dag_id: str = DEFAULT_DAG_ID,
    *,
    conn_id: str = DEFAULT_CONN_ID,
    destination: str = "duckdb",
    duckdb_path: str | None = None,
    dataset: str = settings.DATASET_NAME,
    pipelines_dir: str | None = None,
    start_date: datetime = datetime(2025, 1, 1, tzinfo=timezone.utc),
) -> DAG:
    """Build one deployment of the load as a DAG (call it at the top level of a DAG file).

    Parse-time knobs are read from the environment (``<PREFIX>_SCHEDULE``, ``_RETRIES``,
    ``_RETRY_DELAY_SECONDS``, ``_TIMEOUT_MINUTES``, ``_POOL``, ``_CONN_ID``; prefix
    :func:`env_prefix` of ``dag_id``); no Variable, no dlt import, no network.

    Args:
        dag_id: the DAG id, also the pipeline name and the prefix of every knob.
        conn_id: the Connection with the key (env ``<PREFIX>_CONN_ID`` overrides).
        destination: default destination (Variable / env override it at run time).
        duckdb_path: default DuckDB file (absolute).
        dataset: default dataset.
        pipelines_dir: default local pipelines folder.
        start_date: the DAG's start date (runs never catch up).

    Returns:
        The DAG (Airflow finds it at module level or through ``@dag``'s registration).

    Raises:
        ValueError: a parse-time knob is not a non-negative number.
    """
    prefix = env_prefix(dag_id)
    dep = Deployment(
        dag_id=dag_id,
        conn_id=_env(f"{prefix}_CONN_ID", conn_id),
        destination=destination,
        duckdb_path=duckdb_path,
        dataset=dataset,
        pipelines_dir=pipelines_dir,
    )
    schedule: str | None = _env(f"{prefix}_SCHEDULE", "@hourly")
    if schedule and schedule.lower() in ("none", "null", "manual"):
        schedule = None
    retries = int(_env_number(f"{prefix}_RETRIES", 3))
    retry_delay = timedelta(seconds=_env_number(f"{prefix}_RETRY_DELAY_SECONDS", 300))
    timeout = timedelta(minutes=_env_number(f"{prefix}_TIMEOUT_MINUTES", 60))
    pool = _env(f"{prefix}_POOL", "") or None
    asset = imports_asset(dag_id)

    @dag(
        dag_id=dag_id,
        description="Load Exa Websets imports (changes and deletions, merged on id) with dlt",
        schedule=schedule,
        start_date=start_date,
        catchup=False,
        max_active_runs=1,
        max_active_tasks=1,
        dagrun_timeout=retry_budget(retries, retry_delay, timeout) + DAGRUN_SLACK,
        default_args={
            "owner": "data-engineering",
            "retries": retries,
            "retry_delay": retry_delay,
            "retry_exponential_backoff": RETRY_BACKOFF,
            "max_retry_delay": MAX_RETRY_DELAY,
            "execution_timeout": timeout,
        },
        params={
            "full_refresh": Param(
                False,
                type="boolean",
                title="Full refresh",
                description="Drop the table and the pipeline state and load everything again.",
            ),
            "deletions": Param(
                None,
                type=["null", "string"],
                enum=[None, "soft", "hard", "off"],
                title="Deletions",
                description="Imports deleted in Exa: soft (mark), hard (delete) or off;"
                " empty = dlt config (default soft).",
            ),
            "initial_updated_at": Param(
                None,
                type=["null", "string"],
                title="Initial updatedAt",
                description="Backfill start (ISO-8601, e.g. 2025-01-01): only imports updated"
                " at or after it are loaded; empty = dlt config (none).",
            ),
        },
        tags=["exa", "dlt", "websets", "ingestion"],
        doc_md=_doc_md(dep, pool),
    )
    def _exa_websets() -> None:
        task_args: dict[str, Any] = {
            "task_id": "load_imports",
            "outlets": [asset],
            "multiple_outputs": False,  # one small XCom, not one per key
        }
        if pool:
            task_args["pool"] = pool

        @task(**task_args)  # type: ignore[untyped-decorator]  # airflow.sdk's overloads
        def load_imports(params: dict[str, Any] | None = None) -> dict[str, Any]:
            """Run one load; return its summary (no secrets) as XCom; emit the Asset event.

            Raises:
                AirflowFailException: no key, a rejected key, no credits or a bad setting.
                ExaError: the API failed after dlt's HTTP retries (Airflow retries the task).
            """
            from airflow.sdk import get_current_context

            summary = run_task(dep, params or {})
            extra = {k: summary.get(k) for k in ("rows_loaded", "rows_deleted", "load_id")}
            extra.update(destination=summary["destination"], dataset=summary["dataset"])
            extra["tables"] = sorted(summary.get("tables") or {})  # every table this run loaded
            get_current_context()["outlet_events"][asset].extra = {**extra, "table": TABLE}
            return summary

        load_imports()

    return _exa_websets()


def _resolve_key(dep: Deployment, secrets: Mapping[str, Any]) -> ExaCredentials:
    """Find the key in the documented order and say where it came from.

    Order: the Connection; ``[sources.exa] api_key`` in ``dlt_secrets_toml``; dlt's providers
    (env ``SOURCES__EXA__API_KEY``, ``.dlt/secrets.toml``); ``EXA_API_KEY``.
    """
    from airflow.sdk.exceptions import AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    from exa_source.airflow.dlt_config import DLT_SECRETS_VARIABLE, key_from_dlt_config
    from exa_source.airflow.hooks import ExaCredentials, ExaHook

    base_url: str | None = None
    try:
        creds = ExaHook(dep.conn_id).get_credentials()
        if creds.api_key:
            return creds
        base_url = creds.base_url
        logger.info("%s has no API key (empty password)", creds.where)
    except AirflowNotFoundException:
        logger.info("Airflow Connection %r not found", dep.conn_id)
    key: Any = secrets.get("sources", {}).get(settings.SOURCE_NAME, {}).get("api_key")
    if key is not None and str(key).strip():
        where = f"Airflow Variable {DLT_SECRETS_VARIABLE}"
        found = ExaCredentials(str(key).strip(), base_url, where)
    else:
        value, where = key_from_dlt_config(settings.SOURCE_NAME)
        if not value:
            value = os.environ.get(settings.API_KEY_ENV, "").strip() or None
            where = f"environment variable {settings.API_KEY_ENV}"
        found = ExaCredentials(value, base_url, where)
    if found.api_key:
        mask_secret(found.api_key)
    return found


def _pipelines_dir(dep: Deployment, destination: str) -> str:
    """The deployment's local dlt folder: configured, else per DAG id and destination."""
    configured = dep.setting("pipelines_dir", dep.pipelines_dir)
    if configured:
        return os.path.expanduser(configured)
    return os.path.join(_airflow_home(), "dlt_pipelines", dep.dag_id, destination)


def _duckdb_path(dep: Deployment) -> str:
    """The DuckDB file: configured, else ``$AIRFLOW_HOME/data/exa.duckdb``; absolute.

    Raises:
        AirflowFailException: a relative path (it would depend on the worker's cwd).
    """
    from airflow.sdk.exceptions import AirflowFailException

    default = dep.duckdb_path or os.path.join(_airflow_home(), "data", "exa.duckdb")
    path = os.path.expanduser(dep.setting("duckdb_path", default) or "")
    if not os.path.isabs(path):
        raise AirflowFailException(
            f"{dep.dag_id}_duckdb_path={path!r} must be an absolute path: a relative one lands"
            " in the worker's working directory, which changes between runs"
        )
    return path


def _auth_failure(exc: ExaAuthError, where: str) -> str:
    """The message of a rejected key, naming where the key came from.

    The connector's own message lists the CLI's places for a key (env, secrets.toml); in a
    task the key came from one known place, named here instead.
    """
    detail = f"(HTTP {exc.status}: {exc.detail})" if exc.status else f"({exc})"
    return (
        f"Exa rejected the API key from {where} {detail}; paste the key again from the Exa"
        " dashboard into that place. (No retry: a rejected key fails the task at once.)"
    )


def run_task(dep: Deployment, params: Mapping[str, Any]) -> dict[str, Any]:
    """The body of ``load_imports``: resolve settings and key, load, save load info and trace.

    Returns:
        ``LoadSummary.as_dict()``.

    Raises:
        AirflowFailException: see ``load_imports``.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from exa_source.airflow.dlt_config import (
        dlt_secrets_from_airflow,
        parse_secrets,
        read_secrets_variable,
    )

    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    # before dlt builds its providers: see exa_source.airflow.dlt_config
    secrets_text = read_secrets_variable()
    with dlt_secrets_from_airflow(secrets_text):
        from exa_source.exceptions import ExaAuthError, ExaConfigError, ExaCreditsError
        from exa_source.pipeline import make_pipeline, run_load

        key = _resolve_key(dep, parse_secrets(secrets_text))
        if not key.api_key:
            raise AirflowFailException(
                f"No Exa API key: set the API key of the Airflow Connection {dep.conn_id!r}"
                f" (type exa), or api_key under [sources.exa] in the Airflow Variable"
                " dlt_secrets_toml, or SOURCES__EXA__API_KEY / EXA_API_KEY on the worker"
            )
        destination = dep.setting("destination", dep.destination) or dep.destination
        duckdb_path = _duckdb_path(dep) if destination == "duckdb" else None
        dataset = dep.setting("dataset", dep.dataset) or dep.dataset
        pipelines_dir = _pipelines_dir(dep, destination)
        full_refresh = bool(params.get("full_refresh"))
        deletions = params.get("deletions") or None
        initial_updated_at = params.get("initial_updated_at") or None
        logger.info(
            "%s: key from %s, base URL %s, destination %s%s, dataset %s, pipeline %s in %s;"
            " full_refresh=%s, deletions=%s, initial_updated_at=%s",
            dep.dag_id,
            key.where,
            key.base_url or "(dlt config / default)",
            destination,
            f" at {duckdb_path}" if duckdb_path else "",
            dataset,
            dep.dag_id,
            pipelines_dir,
            full_refresh,
            deletions or "(dlt config)",
            initial_updated_at or "(dlt config)",
        )
        try:
            pipeline = make_pipeline(
                destination,
                duckdb_path,
                dataset,
                pipeline_name=dep.dag_id,
                pipelines_dir=pipelines_dir,
            )
            summary = run_load(
                pipeline,
                api_key=key.api_key,
                base_url=key.base_url,
                deletions=deletions,
                initial_updated_at=initial_updated_at,
                full_refresh=full_refresh,
            )
        except ExaAuthError as exc:
            raise AirflowFailException(_auth_failure(exc, key.where)) from None
        except (ExaConfigError, ExaCreditsError) as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        _save_load_info_and_trace(pipeline)
    logger.info(
        "%s: %d rows loaded, %d deleted (%d read, %d pages, %d requests, %d retried) in %.1f s",
        dep.dag_id,
        summary.rows_loaded,
        summary.rows_deleted,
        summary.rows_read,
        summary.pages,
        summary.requests,
        summary.retried,
        summary.seconds,
    )
    return summary.as_dict()


def _save_load_info_and_trace(pipeline: Any) -> None:
    """Log dlt's load info and save it and the run's trace to the destination.

    What dlt's Airflow helper does with ``save_load_info`` / ``save_trace_info``: tables
    ``_load_info`` and ``_trace`` (and their child tables) in the dataset, here in one run.
    dlt writes secret config values into a trace as null. A failure here is logged, not
    raised: the load itself has committed.
    """
    trace = pipeline.last_trace
    load_info = trace.last_load_info if trace else None
    if load_info is not None:
        logger.info("dlt load info:\n%s", load_info)
    # dlt warns, once per run, about every column of these documents that is null (staging_*,
    # environment, ...): "could not have their types inferred". Nothing to act on; muted.
    dlt_logger = logging.getLogger("dlt")
    level = dlt_logger.level
    dlt_logger.setLevel(logging.ERROR)
    import dlt

    # one dlt run for both documents (the helper makes two: ~0.5 s more per task here)
    documents = [
        dlt.resource([doc], name=name)
        for doc, name in ((load_info, "_load_info"), (trace, "_trace"))
        if doc is not None
    ]
    try:
        if documents:
            pipeline.run(documents)
    except Exception as exc:
        logger.warning("could not save dlt's load info / trace to the destination: %s", exc)
    finally:
        dlt_logger.setLevel(level)
