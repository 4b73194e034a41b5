"""One benchmark variant per child process: ``python -m bench.variants NAME [options]``.

Every variant pages through ``GET /websets/v0/imports`` of the emulator at ``--base-url`` and
prints, as its last stdout line, ``BENCH_RESULT {json}`` with its own timings:

* ``import_s``: time to import what the variant needs (``dlt``, ``duckdb``, ``exa_py``...);
* ``work_s``: time of the work itself (fetch, and load where the variant loads);
* ``rows_read``: imports read from the API; ``rows_loaded``: import rows written to DuckDB;
* ``steps``: dlt's extract / normalize / load seconds, for the dlt variants.

The items variants (``ceiling_items``, ``exa_source_items``; ``--concurrency``) read the websets
and every webset's items (``GET /websets/v0/websets/{id}/items``, 100 a page) instead.

The driver (``bench/run.py``) measures the whole process (wall and peak RSS) from outside.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from inspect import signature  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

PAGE_SIZE = 200
IMPORTS_PATH = "/websets/v0/imports"
WEBSETS_PATH = "/websets/v0/websets"
#: Websets and items are read 100 a page (their maximum), as exa-source does.
ITEMS_PAGE_SIZE = 100
#: What the items variants of exa-source load: the websets and everything under them.
ITEMS_RESOURCES = ("websets", "webset_searches", "webset_enrichments", "webset_items")
RESULT_PREFIX = "BENCH_RESULT "

Result = dict[str, Any]


def _dlt_steps(pipeline: Any) -> dict[str, float]:
    """Return the seconds of each step (extract, normalize, load) of the pipeline's last run."""
    steps: dict[str, float] = {}
    trace = pipeline.last_trace
    if trace is None:
        return steps
    for step in trace.steps:
        if step.step in ("extract", "normalize", "load") and step.finished_at:
            steps[step.step] = round((step.finished_at - step.started_at).total_seconds(), 3)
    return steps


def _normalized_rows(pipeline: Any, table: str = "imports") -> int:
    """Return the rows of ``table`` that the pipeline's last run normalized (and so loaded)."""
    trace = pipeline.last_trace
    info = trace.last_normalize_info if trace else None
    return int(info.row_counts.get(table, 0)) if info else 0


def ceiling(args: argparse.Namespace) -> Result:
    """Page through with a plain ``requests.Session`` and decode each page; load nothing."""
    t = time.perf_counter()
    import requests

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    rows = 0
    pages = 0
    params: dict[str, Any] = {"limit": PAGE_SIZE}
    with requests.Session() as session:
        session.headers["x-api-key"] = args.api_key
        while True:
            resp = session.get(args.base_url + IMPORTS_PATH, params=params)
            resp.raise_for_status()
            body = resp.json()
            rows += len(body["data"])
            pages += 1
            cursor = body.get("nextCursor")
            if not body.get("hasMore") or not cursor:
                break
            params = {"limit": PAGE_SIZE, "cursor": cursor}
    return {
        "import_s": import_s,
        "work_s": time.perf_counter() - t,
        "rows_read": rows,
        "rows_loaded": 0,
        "pages": pages,
    }


def _paged(session: Any, url: str, limit: int) -> Iterator[list[dict[str, Any]]]:
    """Yield the ``data`` of every page of one cursor list, decoded (``resp.json()``)."""
    params: dict[str, Any] = {"limit": limit}
    while True:
        resp = session.get(url, params=params)
        resp.raise_for_status()
        body = resp.json()
        yield body["data"]
        cursor = body.get("nextCursor")
        if not body.get("hasMore") or not cursor:
            return
        params = {"limit": limit, "cursor": cursor}


def ceiling_items(args: argparse.Namespace) -> Result:
    """List the websets, then page through each webset's items; decode only, load nothing.

    With ``--concurrency N`` > 1, N threads (one ``requests.Session`` each) read one webset's
    item chain at a time each, as exa-source's ``chains`` does.
    """
    t = time.perf_counter()
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    local = threading.local()
    sessions: list[Any] = []

    def session() -> Any:
        s = getattr(local, "session", None)
        if s is None:
            s = local.session = requests.Session()
            s.headers["x-api-key"] = args.api_key
            sessions.append(s)
        return s

    def chain(webset_id: str) -> tuple[int, int]:
        rows = pages = 0
        url = f"{args.base_url}{WEBSETS_PATH}/{webset_id}/items"
        for data in _paged(session(), url, ITEMS_PAGE_SIZE):
            rows += len(data)
            pages += 1
        return rows, pages

    ids: list[str] = []
    pages = 0
    for data in _paged(session(), args.base_url + WEBSETS_PATH, ITEMS_PAGE_SIZE):
        ids.extend(str(w["id"]) for w in data)
        pages += 1
    if args.concurrency > 1:
        with ThreadPoolExecutor(args.concurrency) as pool:
            counts = list(pool.map(chain, ids))
    else:
        counts = [chain(wid) for wid in ids]
    for s in sessions:
        s.close()
    return {
        "import_s": import_s,
        "work_s": time.perf_counter() - t,
        "rows_read": sum(r for r, _ in counts),
        "rows_loaded": 0,
        "pages": pages + sum(p for _, p in counts),
        "websets": len(ids),
        "concurrency": args.concurrency,
    }


def _state_bytes(pipeline: Any) -> int:
    """Size of the newest pipeline-state row in the destination (compressed, as stored)."""
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name("_dlt_pipeline_state")
        rows = client.execute_sql(
            f"select state from {table} where pipeline_name = %s order by created_at desc limit 1",
            pipeline.pipeline_name,
        )
    return len(rows[0][0]) if rows else 0


def exa_source(args: argparse.Namespace) -> Result:
    """Run one load with exa-source (full load on a fresh workdir, else an incremental rerun).

    Whichever ``exa_source`` is first on ``sys.path`` runs: the driver puts an older revision
    there for the side-by-side comparison.
    """
    t = time.perf_counter()
    import gc

    from exa_source.pipeline import make_pipeline, run_load

    import_s = time.perf_counter() - t
    # what `exa-source load` does before it loads (exa_source.cli.main); versions before 0.2
    # did it inside run_load, so both revisions run with a frozen collector
    gc.freeze()
    workdir = Path(args.workdir)
    t = time.perf_counter()
    pipeline = make_pipeline(
        args.destination,
        str(workdir / "exa.duckdb"),
        args.dataset,
        pipeline_name="bench_exa",
        pipelines_dir=str(workdir / "pipelines"),
    )
    # the imports benchmark loads the imports table only (0.1 had no other resource); the
    # items mode measures the websets resources
    only: dict[str, Any] = (
        {"resources": ("imports",)} if "resources" in signature(run_load).parameters else {}
    )
    summary = run_load(pipeline, api_key=args.api_key, base_url=args.base_url, **only)
    work_s = time.perf_counter() - t
    return {
        "import_s": import_s,
        "work_s": work_s,
        "rows_read": summary.rows_read,
        "rows_loaded": summary.rows_loaded,
        "pages": summary.pages,
        "steps": _dlt_steps(pipeline),
        "state_bytes": _state_bytes(pipeline),
    }


def exa_source_items(args: argparse.Namespace) -> Result:
    """One load of the websets, their searches, enrichments and items with exa-source.

    A full load on a fresh workdir, else a rerun; ``--concurrency`` websets' items at once.
    """
    t = time.perf_counter()
    import gc

    from exa_source.pipeline import make_pipeline, run_load

    import_s = time.perf_counter() - t
    gc.freeze()  # as `exa-source load` does
    workdir = Path(args.workdir)
    t = time.perf_counter()
    pipeline = make_pipeline(
        args.destination,
        str(workdir / "exa.duckdb"),
        args.dataset,
        pipeline_name="bench_exa_items",
        pipelines_dir=str(workdir / "pipelines"),
    )
    summary = run_load(
        pipeline,
        api_key=args.api_key,
        base_url=args.base_url,
        resources=ITEMS_RESOURCES,
        concurrency=args.concurrency,
    )
    work_s = time.perf_counter() - t
    items = summary.tables.get("webset_items", {})
    return {
        "import_s": import_s,
        "work_s": work_s,
        "rows_read": summary.rows_read,
        "rows_loaded": summary.rows_loaded,
        "items_read": int(items.get("rows", 0)),
        "items_loaded": int(items.get("rows_loaded", 0)),
        "websets_read": int(items.get("websets_read", 0)),
        "pages": summary.pages,
        "tables": summary.tables,
        "steps": _dlt_steps(pipeline),
        "concurrency": args.concurrency,
    }


def rest_api(args: argparse.Namespace) -> Result:
    """Load with dlt's declarative ``rest_api`` source, configured minimally (its defaults)."""
    t = time.perf_counter()
    import dlt
    from dlt.sources.rest_api import rest_api_source

    import_s = time.perf_counter() - t
    workdir = Path(args.workdir)
    t = time.perf_counter()
    source = rest_api_source(
        {
            "client": {
                "base_url": args.base_url,
                "auth": {
                    "type": "api_key",
                    "name": "x-api-key",
                    "api_key": args.api_key,
                    "location": "header",
                },
                "paginator": {
                    "type": "cursor",
                    "cursor_path": "nextCursor",
                    "cursor_param": "cursor",
                },
            },
            "resources": [
                {
                    "name": "imports",
                    "primary_key": "id",
                    "write_disposition": "merge",
                    "endpoint": {
                        "path": IMPORTS_PATH.lstrip("/"),
                        "data_selector": "data",
                        "params": {"limit": PAGE_SIZE},
                    },
                }
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_rest_api",
        destination=dlt.destinations.duckdb(credentials=str(workdir / "rest.duckdb")),
        dataset_name="exa_rest_api",
        pipelines_dir=str(workdir / "pipelines"),
    )
    pipeline.run(source)
    rows = _normalized_rows(pipeline)
    return {
        "import_s": import_s,
        "work_s": time.perf_counter() - t,
        "rows_read": rows,
        "rows_loaded": rows,
        "steps": _dlt_steps(pipeline),
    }


_EXAPY_DDL = """
CREATE TABLE IF NOT EXISTS imports (
    id TEXT, object TEXT, status TEXT, format TEXT, entity_type TEXT,
    entity_description TEXT, title TEXT, count BIGINT, metadata JSON, failed_reason TEXT,
    failed_message TEXT, failed_at TIMESTAMPTZ, created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ
)
"""


def exa_py(args: argparse.Namespace) -> Result:
    """Read with the official SDK's ``list_all(limit=200)``; insert each page into DuckDB.

    What a user would write without dlt for a one-off load: iterate the SDK's models, flatten
    each into a tuple and send one multi-row ``INSERT ... VALUES (...), (...)`` per page into a
    fresh table. Kept on its fastest reasonable form: DuckDB's ``executemany`` runs one statement
    per row (~0.7-2 ms each, 25 s for 10k imports), and an upsert (``INSERT OR REPLACE`` on a
    primary key) took 30 s for 100k imports.
    """
    t = time.perf_counter()
    import duckdb
    import orjson
    from exa_py import Exa

    import_s = time.perf_counter() - t
    workdir = Path(args.workdir)
    t = time.perf_counter()
    exa = Exa(api_key=args.api_key, base_url=args.base_url)
    con = duckdb.connect(str(workdir / "exa_py.duckdb"))
    con.execute(_EXAPY_DDL)
    row_sql = "(" + ", ".join(["?"] * 14) + ")"
    batch: list[Any] = []
    rows = 0

    def value(enum: Any) -> Any:
        return getattr(enum, "value", enum)

    def flush() -> None:
        n = len(batch) // 14
        con.execute("INSERT INTO imports VALUES " + ", ".join([row_sql] * n), batch)

    for imp in exa.websets.imports.list_all(limit=PAGE_SIZE):
        entity = imp.entity
        batch.extend(
            (
                imp.id,
                imp.object,
                value(imp.status),
                value(imp.format),
                value(getattr(entity, "type", None)),
                getattr(entity, "description", None),
                imp.title,
                None if imp.count is None else int(imp.count),
                None if imp.metadata is None else orjson.dumps(imp.metadata).decode(),
                value(imp.failed_reason),
                imp.failed_message,
                imp.failed_at,
                imp.created_at,
                imp.updated_at,
            )
        )
        rows += 1
        if len(batch) >= PAGE_SIZE * 14:
            flush()
            batch.clear()
    if batch:
        flush()
    con.close()
    return {
        "import_s": import_s,
        "work_s": time.perf_counter() - t,
        "rows_read": rows,
        "rows_loaded": rows,
    }


VARIANTS: dict[str, Callable[[argparse.Namespace], Result]] = {
    "ceiling": ceiling,
    "exa_source": exa_source,
    "rest_api": rest_api,
    "exa_py": exa_py,
    "ceiling_items": ceiling_items,
    "exa_source_items": exa_source_items,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one variant and print its ``BENCH_RESULT`` line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.variants")
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--workdir", default=".", help="pipelines dir and DuckDB file go here")
    parser.add_argument("--destination", default="duckdb", help="exa_source: duckdb or postgres")
    parser.add_argument("--dataset", default="exa_websets", help="exa_source: dataset name")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="items variants: websets read at once"
    )
    args = parser.parse_args(argv)
    result = VARIANTS[args.variant](args)
    result["variant"] = args.variant
    result["process_s"] = time.perf_counter() - _T0
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
