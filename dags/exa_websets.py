"""Airflow DAG ``exa_websets``: load Exa Websets imports into DuckDB or a warehouse with dlt.

Drop this file into Airflow's ``dags/`` folder (the ``exa-source`` package must be installed on
the workers). Configuration and credentials are described in the DAG's ``doc_md`` below.

Design: plain TaskFlow, not dlt's ``PipelineTasksGroup``
---------------------------------------------------------
``dlt.helpers.airflow_helper.PipelineTasksGroup`` works on Airflow 3 but its caveats
(``docs/dlt-behaviour.md``) break three requirements of this DAG:

* ``add_run(..., decompose="serialize")`` builds the source, and resolves its secrets, at DAG
  *parse* time: without the API key in the DAG processor the file fails to import, and the
  processor would need the secret. (``decompose="none"`` with a callable avoids that, but then
  the group adds nothing over one task.)
* its constructor sets process-wide env (``DLT_PROJECT_DIR``, ``DLT_DATA_DIR``) on every parse,
  which other DAGs in the same processor then depend on by accident, and leaves a
  ``/tmp/dlt_*`` folder behind per parse;
* the pipeline must be created at parse time after the group, i.e. dlt (~2.3 s of imports for
  ``airflow_helper``) is imported by every parse.

The source is a single resource (one paginated endpoint, merged on ``id``): there is nothing
to decompose into parallel tasks. One TaskFlow ``@task`` that imports dlt and the connector
*inside* the task parses in the time of ``import airflow.sdk``, needs no secret, no network and
writes nothing at parse time, and calls the same product code as the CLI
(:func:`exa_source.pipeline.make_pipeline` / :func:`exa_source.pipeline.run_load`).

Parse-time knobs are read from the environment only (cheap, no metastore round trip per
parse); runtime knobs are read inside the task from Airflow Variables, then the environment.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import dag, task

#: A stable name (Airflow imports DAG files under a generated module name).
logger = logging.getLogger("exa_source.dags.exa_websets")

DAG_ID = "exa_websets"
#: Airflow Connection holding the key (password) and an optional base URL (host).
DEFAULT_CONN_ID = "exa_default"
#: dlt's own Airflow Variable: the text of a ``secrets.toml``.
DLT_SECRETS_VARIABLE = "dlt_secrets_toml"


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


def _schedule() -> str | None:
    """Return the schedule: ``EXA_WEBSETS_SCHEDULE`` (cron or preset), ``none`` = manual only."""
    value = _env("EXA_WEBSETS_SCHEDULE", "@hourly")
    return None if value.lower() in ("none", "null", "manual") else value


DOC_MD = """
# exa_websets

Loads the **imports** of the [Exa Websets API](https://docs.exa.ai/websets)
(`GET /websets/v0/imports`) with [dlt](https://dlthub.com) into the table
`<dataset>.imports` (default dataset `exa_websets`), merged on `id`. Every run pages through
all imports (the API has no `updatedAt` filter), compares them with the table and writes only
the imports that are new, changed or deleted in Exa (deletions in the same load). The table
itself is the record of what was loaded, so a fresh worker with an empty local pipeline
folder, a restored database or a second deployment all converge on the next run; a failed run
changes neither the data nor the state.

The task returns a small summary as XCom (`rows_loaded`, `rows_read`, `rows_deleted`, `pages`,
`requests`, `retried`, `seconds`, `destination`, `dataset`, `load_id`, `rows_recovered`: of
`rows_loaded`, those from a package an interrupted run left and this run loaded first) and
logs dlt's load info.

## Credentials (first match wins)

1. Airflow Connection **`exa_default`** (any type, e.g. HTTP): *password* = the Exa API key;
   *host* = optional base URL override (e.g. `https://api.exa.ai`; a host without a scheme
   uses *schema* or `https`, plus *port* if set). Other id: env `EXA_WEBSETS_CONN_ID`.
2. dlt's Airflow Variable **`dlt_secrets_toml`** holding secrets.toml text:
   `[sources.exa]` / `api_key = "..."`.
3. Environment of the worker: `SOURCES__EXA__API_KEY` (or `.dlt/secrets.toml`), then
   `EXA_API_KEY`.

The key is masked in task logs and never passed through templates or XCom.

## Configuration

Read when the task runs: Airflow Variable first, then the environment variable, then the
default. A DuckDB path must be absolute (never a temp dir); the local pipelines dir may be
wiped between runs (state comes back from the destination).

| Variable | Env | Default |
|---|---|---|
| `exa_websets_destination` | `EXA_WEBSETS_DESTINATION` | `duckdb` (or `postgres`, ...) |
| `exa_websets_duckdb_path` | `EXA_WEBSETS_DUCKDB_PATH` | `$AIRFLOW_HOME/data/exa.duckdb` |
| `exa_websets_dataset` | `EXA_WEBSETS_DATASET` | `exa_websets` |
| `exa_websets_pipelines_dir` | `EXA_WEBSETS_PIPELINES_DIR` | dlt's default |

Warehouse credentials come from dlt config, e.g. env `DESTINATION__POSTGRES__CREDENTIALS` or
`[destination.postgres] credentials` in `dlt_secrets_toml`. Source options (`base_url`,
`page_size`, `initial_updated_at`, `deletions`) come from dlt config under
`[sources.exa]` (e.g. env `SOURCES__EXA__DELETIONS=hard`).

Read when the file is parsed (environment only, so parsing never touches the metastore):

| Env | Default |
|---|---|
| `EXA_WEBSETS_SCHEDULE` | `@hourly` (cron or preset; `none` = manual runs only) |
| `EXA_WEBSETS_RETRIES` | `3` task retries, exponential backoff (x2) |
| `EXA_WEBSETS_RETRY_DELAY_SECONDS` | `300` first retry delay (capped at 1 h) |
| `EXA_WEBSETS_TIMEOUT_MINUTES` | `60` execution timeout of the task |

HTTP retries inside one attempt are dlt's: `RUNTIME__REQUEST_MAX_ATTEMPTS` (5),
`RUNTIME__REQUEST_BACKOFF_FACTOR` (1). A rejected key (400/401), exhausted credits (402) or a
bad setting fail the task at once, without Airflow retries.

Try it: `airflow dags test exa_websets`.
"""


def _setting(name: str, default: str | None = None) -> str | None:
    """Return a runtime knob: Airflow Variable ``exa_websets_<name>``, env, then ``default``.

    Must run inside a task (a Variable lookup talks to the API server).
    """
    from airflow.sdk import Variable

    value = Variable.get(f"{DAG_ID}_{name}", default=None)
    if value is None or not str(value).strip():
        value = os.environ.get(f"EXA_WEBSETS_{name.upper()}", "").strip() or default
    return str(value).strip() if value else None


def _connection_credentials(conn_id: str) -> tuple[str | None, str | None]:
    """Return ``(api_key, base_url)`` from the Airflow Connection ``conn_id`` (None if absent)."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        logger.info("Airflow Connection %r not found", conn_id)
        return None, None
    key = (conn.password or "").strip() or None
    host = (conn.host or "").strip()
    if not host:
        return key, None
    base_url = host if "://" in host else f"{conn.schema or 'https'}://{host}"
    parts = urlsplit(base_url)
    if conn.port and parts.port is None:
        base_url = parts._replace(netloc=f"{parts.netloc}:{conn.port}").geturl()
    return key, base_url


def _variable_api_key() -> str | None:
    """Return ``[sources.exa] api_key`` from dlt's Airflow Variable ``dlt_secrets_toml``."""
    import tomlkit
    from airflow.sdk import Variable

    text = Variable.get(DLT_SECRETS_VARIABLE, default=None)
    if not text:
        return None
    try:
        doc = tomlkit.parse(str(text)).unwrap()
    except Exception as exc:  # a broken Variable must not leak its text into the log
        logger.warning("Variable %s is not valid TOML (%s)", DLT_SECRETS_VARIABLE, type(exc))
        return None
    key = doc.get("sources", {}).get("exa", {}).get("api_key")
    return str(key).strip() if key else None


def _resolve_credentials() -> tuple[str | None, str | None, str]:
    """Return ``(api_key, base_url, where)`` in the documented order; ``where`` names the source.

    Order: the Airflow Connection, dlt's ``dlt_secrets_toml`` Variable, then the environment
    (``SOURCES__EXA__API_KEY`` / ``.dlt/secrets.toml`` through dlt, then ``EXA_API_KEY``).
    """
    from airflow.sdk.log import mask_secret

    from exa_source.config import resolve_api_key

    conn_id = _env("EXA_WEBSETS_CONN_ID", DEFAULT_CONN_ID)
    key, base_url = _connection_credentials(conn_id)
    where = f"Airflow Connection {conn_id}"
    if not key:
        key, where = _variable_api_key(), f"Airflow Variable {DLT_SECRETS_VARIABLE}"
    if not key:
        key, where = resolve_api_key(), "dlt config / environment"
    if key:
        mask_secret(key)
    return key, base_url, where


def _duckdb_path() -> str:
    """Return the DuckDB file: configured, else ``$AIRFLOW_HOME/data/exa.duckdb``; absolute.

    Raises:
        AirflowFailException: a relative path (it would depend on the worker's cwd).
    """
    from airflow.sdk.exceptions import AirflowFailException

    airflow_home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    path = os.path.expanduser(
        _setting("duckdb_path", os.path.join(airflow_home, "data", "exa.duckdb")) or ""
    )
    if not os.path.isabs(path):
        raise AirflowFailException(
            f"exa_websets_duckdb_path={path!r} must be an absolute path: a relative one lands"
            " in the worker's working directory, which changes between runs"
        )
    return path


@dag(
    dag_id=DAG_ID,
    description="Load Exa Websets imports (changes and deletions, merged on id) with dlt",
    schedule=_schedule(),
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,
    dagrun_timeout=timedelta(minutes=_env_number("EXA_WEBSETS_TIMEOUT_MINUTES", 60) * 2),
    default_args={
        "owner": "data-engineering",
        "retries": int(_env_number("EXA_WEBSETS_RETRIES", 3)),
        "retry_delay": timedelta(seconds=_env_number("EXA_WEBSETS_RETRY_DELAY_SECONDS", 300)),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(hours=1),
        "execution_timeout": timedelta(minutes=_env_number("EXA_WEBSETS_TIMEOUT_MINUTES", 60)),
    },
    tags=["exa", "dlt", "websets", "ingestion"],
    doc_md=DOC_MD,
)
def exa_websets() -> None:
    """Load Exa Websets imports with dlt (see ``doc_md``)."""

    @task(task_id="load_imports", multiple_outputs=False)  # one small XCom, not one per key
    def load_imports() -> dict[str, Any]:
        """Run one load; return the run's summary (no secrets) as XCom.

        Returns:
            ``LoadSummary.as_dict()``: rows loaded and read, pages, requests, retried, seconds,
            destination, dataset and load id.

        Raises:
            AirflowFailException: no key, a rejected key, no credits or a bad setting (no
                retry would help).
            ExaError: the API failed after dlt's HTTP retries (Airflow retries the task).
        """
        from airflow.sdk.exceptions import AirflowFailException

        from exa_source import settings
        from exa_source.exceptions import ExaAuthError, ExaConfigError, ExaCreditsError
        from exa_source.pipeline import make_pipeline, run_load

        os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
        api_key, base_url, where = _resolve_credentials()
        if not api_key:
            raise AirflowFailException(
                "No Exa API key: set the password of the Airflow Connection"
                f" {_env('EXA_WEBSETS_CONN_ID', DEFAULT_CONN_ID)!r}, or api_key under"
                f" [sources.exa] in the Airflow Variable {DLT_SECRETS_VARIABLE!r}, or"
                " SOURCES__EXA__API_KEY / EXA_API_KEY on the worker"
            )
        destination = _setting("destination", "duckdb") or "duckdb"
        duckdb_path = _duckdb_path() if destination == "duckdb" else None
        dataset = _setting("dataset", settings.DATASET_NAME) or settings.DATASET_NAME
        pipelines_dir = _setting("pipelines_dir")
        logger.info(
            "exa_websets: key from %s, base URL %s, destination %s%s, dataset %s, pipelines dir %s",
            where,
            base_url or "(dlt config / default)",
            destination,
            f" at {duckdb_path}" if duckdb_path else "",
            dataset,
            pipelines_dir or "(dlt default)",
        )
        try:
            pipeline = make_pipeline(destination, duckdb_path, dataset, pipelines_dir=pipelines_dir)
            summary = run_load(pipeline, api_key=api_key, base_url=base_url)
        except (ExaConfigError, ExaAuthError, ExaCreditsError) as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        trace = pipeline.last_trace
        load_info = trace.last_load_info if trace else None
        if load_info is not None:
            logger.info("dlt load info:\n%s", load_info)
        result = summary.as_dict()
        logger.info(
            "exa_websets: %d rows loaded (%d read, %d pages, %d requests, %d retried) in %.1f s",
            summary.rows_loaded,
            summary.rows_read,
            summary.pages,
            summary.requests,
            summary.retried,
            summary.seconds,
        )
        return result

    load_imports()


exa_websets()
