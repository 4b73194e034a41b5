"""The demo behind ``exa-source demo`` (and ``python3 dev.py run`` when no Exa key is set).

It needs no key and no network: it starts the bundled emulator with sample imports, loads them
into a DuckDB file, changes some of them "in Exa", loads again and prints a report, then says
where everything is and which commands show more. Its pipeline state lives in a stable folder
next to the DuckDB file (:data:`DEMO_PIPELINES_DIR`), never in the system temp folder.

Importing this module is cheap (no dlt): the CLI reads its defaults to build ``--help``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from exa_source import settings

DEMO_IMPORTS = 2_000
#: Sample websets (every entity type) and items of each, with searches and enrichments.
DEMO_WEBSETS = 8
DEMO_ITEMS_PER_WEBSET = 250
#: Sample monitors (each with a run in every status) and webhooks (successful and failed
#: deliveries).
DEMO_MONITORS = 4
DEMO_WEBHOOKS = 2
DEMO_DUCKDB_FILE = "exa_demo.duckdb"
DEMO_PIPELINE = "exa_websets_demo"
#: dlt's working folder of the demo pipeline, next to the DuckDB file (git-ignored).
DEMO_PIPELINES_DIR = ".exa_demo_pipelines"
DEMO_KEY = "demo-key"
#: What the demo changes "in Exa" between its two loads (``ImportStore.mutate``).
DEMO_MUTATION: Mapping[str, int] = {"update": 25, "create": 10, "advance": 15, "delete": 5}


@dataclass(frozen=True)
class Changes:
    """What a mutation changed, counted as the next load sees it: distinct imports.

    Attributes:
        changed: distinct imports that differ now and still exist (what the next load writes).
        updated: imports whose title and metadata were edited (and still exist).
        advanced: imports moved one lifecycle step (and still exist).
        both: imports both edited and advanced, counted once in ``changed``.
        created: new imports (and still exist).
        deleted: imports that existed before and were deleted (a created-then-deleted one
            never existed for the warehouse, so it is not counted).
    """

    changed: int
    updated: int
    advanced: int
    both: int
    created: int
    deleted: int

    @classmethod
    def of(cls, mutated: Mapping[str, Sequence[str]]) -> Changes:
        """Count ``ImportStore.mutate``'s result (ids per kind of change) by distinct import."""
        updated, advanced, created, deleted = (
            set(mutated.get(kind, ())) for kind in ("updated", "advanced", "created", "deleted")
        )
        updated, advanced = updated - deleted, advanced - deleted
        return cls(
            changed=len((updated | advanced | created) - deleted),
            updated=len(updated),
            advanced=len(advanced),
            both=len(updated & advanced),
            created=len(created - deleted),
            deleted=len(deleted - created),
        )

    def sentence(self) -> str:
        """Say what changed, e.g. ``49 imports changed (25 edited, ...) and 5 deleted``."""
        detail = (
            f"{self.updated:,} edited, {self.advanced:,} moved one lifecycle step,"
            f" {self.created:,} new"
        )
        if self.both:
            detail += f"; {self.both:,} both edited and moved, counted once"
        return f"{self.changed:,} imports changed ({detail}) and {self.deleted:,} deleted"


def demo_pipelines_dir(destination: str, duckdb_path: str) -> Path:
    """The demo's default pipelines folder: next to its DuckDB file, else in the working dir."""
    base = Path(duckdb_path).expanduser().parent if destination == "duckdb" else Path()
    return (base / DEMO_PIPELINES_DIR).resolve()


def shown_path(path: str | Path) -> str:
    """A path as the user should type it here: relative when inside the working directory."""
    absolute = Path(path).expanduser().resolve()
    try:
        return shlex.quote(str(absolute.relative_to(Path.cwd().resolve())))
    except ValueError:
        return shlex.quote(str(absolute))


def console_script(name: str) -> str:
    """How to call a console script of this environment (``exa-source``, ``dlt``) from here.

    Its bare name when the ``PATH`` finds this environment's copy (an activated venv), else
    its path (``.venv/bin/exa-source`` after ``python3 dev.py run``), so that a printed command
    works when copy-pasted.
    """
    script = Path(sys.executable).parent / name
    if not script.exists():
        return name
    found = shutil.which(name)
    if found and os.path.samefile(found, script):
        return name
    return shown_path(script)


def look_further(
    destination: str, duckdb_path: str, dataset: str, pipelines_dir: Path
) -> list[str]:
    """The commands that show the demo's load: its report and dlt's view of its pipeline."""
    report = [console_script("exa-source"), "report"]
    if destination == "duckdb":
        report += ["--duckdb-path", shown_path(duckdb_path)]
    else:
        report += ["--destination", shlex.quote(destination)]
    if dataset != settings.DATASET_NAME:
        report += ["--dataset", shlex.quote(dataset)]
    dlt_cli = [console_script("dlt"), "pipeline", "--pipelines-dir", shown_path(pipelines_dir)]
    return [" ".join(report), " ".join([*dlt_cli, DEMO_PIPELINE, "info"])]


def _change_websets(emu: Any) -> str:
    """Drive the emulator's websets the way Exa's own work would; say what changed."""
    store = emu.websets
    first, second = store.ids()[:2]
    store.create_search(first, {"query": "more of the same", "count": 20})
    store.create_enrichment(second, {"description": "Headquarters city", "format": "text"})
    done = store.step(items=20)
    found, enriched = len(done["items_created"]), len(done["items_enriched"])
    runs = emu.monitors.step_monitors(status="completed")
    failed = emu.monitors.step_monitors(monitor=emu.monitors.monitor_ids()[0], status="failed")
    attempts = emu.monitors.step_webhooks(successful=False)
    return (
        f"a new search found {found} items and an enrichment filled {enriched} results;"
        f" monitors ran {len(runs) + len(failed)} times ({len(failed)} failed) and"
        f" {len(attempts)} webhook deliveries failed"
    )


def run_demo(
    out: TextIO,
    *,
    imports: int = DEMO_IMPORTS,
    destination: str = "duckdb",
    duckdb_path: str = DEMO_DUCKDB_FILE,
    dataset: str = settings.DATASET_NAME,
    pipelines_dir: str | None = None,
    page_size: int | None = None,
    deletions: str | None = None,
    max_pages: int | None = None,
    max_seconds: float | None = None,
    resources: Sequence[str] | None = None,
    concurrency: int | None = None,
    items_reconcile_days: float | None = None,
    event_types: str | None = None,
) -> int:
    """Run the demo and write what it does to ``out`` as plain sentences.

    The first load always starts from scratch (``full_refresh``): the emulator is new on every
    run, so what an earlier demo left in the table is not compared with it.

    Args:
        out: where the user-facing text goes (the CLI passes stdout).
        imports: sample imports the emulator is seeded with.
        destination: dlt destination name.
        duckdb_path: the DuckDB file, for ``destination="duckdb"``.
        dataset: dataset (schema) to load into.
        pipelines_dir: dlt's working folder; default :func:`demo_pipelines_dir`.
        page_size: imports per request (default: the source's).
        deletions: ``soft``, ``hard`` or ``off`` (default: the source's).
        max_pages: bound of a scan in pages (default: the source's).
        max_seconds: bound of a scan in seconds (default: the source's).
        resources: the tables to load (default: all).
        concurrency: websets whose items are read at once (default: the source's).
        items_reconcile_days: see ``exa-source load --help`` (default: the source's).
        event_types: the event types to load (default: all).

    Returns:
        0: every failure raises (the CLI turns it into a message and an exit code).
    """
    from exa_source.emulator import Emulator
    from exa_source.pipeline import make_pipeline, run_load
    from exa_source.warehouse import render_health_report, render_items_report, render_report

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    folder = Path(pipelines_dir) if pipelines_dir else demo_pipelines_dir(destination, duckdb_path)
    with Emulator(
        api_key=DEMO_KEY,
        imports=imports,
        websets=DEMO_WEBSETS,
        items_per_webset=DEMO_ITEMS_PER_WEBSET,
        monitors=DEMO_MONITORS,
        webhooks=DEMO_WEBHOOKS,
    ).start() as emu:
        say(
            "Demo of exa-source, with no Exa key: the bundled emulator of the Exa Websets API"
            f" serves {imports:,} sample imports and {DEMO_WEBSETS} websets of"
            f" {DEMO_ITEMS_PER_WEBSET} items (people, companies, articles, papers, with"
            f" evaluations and enrichment results), {DEMO_MONITORS} monitors and"
            f" {DEMO_WEBHOOKS} webhooks on {emu.base_url}."
        )
        pipeline = make_pipeline(
            destination,
            duckdb_path,
            dataset,
            pipeline_name=DEMO_PIPELINE,
            pipelines_dir=str(folder),
        )

        def load(full_refresh: bool = False) -> str:
            done = run_load(
                pipeline,
                api_key=DEMO_KEY,
                base_url=emu.base_url,
                page_size=page_size,
                deletions=deletions,
                max_pages=max_pages,
                max_seconds=max_seconds,
                full_refresh=full_refresh,
                resources=tuple(resources) if resources else None,
                concurrency=concurrency,
                items_reconcile_days=items_reconcile_days,
                event_types=event_types,
            )
            return done.sentence()

        say(
            "1. Full load: every import, webset, search, enrichment, item, monitor, run,"
            " webhook, delivery attempt and event is read and written"
        )
        say(f"   {load(full_refresh=True)}")
        changes = Changes.of(emu.store.mutate(**DEMO_MUTATION, seed=1))
        say(f"2. Meanwhile in Exa: {changes.sentence()}; {_change_websets(emu)}")
        say(
            "3. Incremental load: every import and webset is read again, items only for the"
            " websets with item events; only what changed is written, and the deletions are"
            " marked"
        )
        say(f"   {load()}")
    where = f" {Path(duckdb_path).resolve()}" if destination == "duckdb" else ""
    say(f"\nLive imports by status and entity type, in {destination}{where} dataset {dataset}")
    say(render_report(pipeline))
    items = render_items_report(pipeline)
    if items is not None:
        say(
            "\nLive items and enrichment results per webset (views webset_items_current and"
            " webset_item_enrichments)"
        )
        say(items)
    for title, text in render_health_report(pipeline):
        say(f"\n{title}\n{text}")
    say(
        f"\nThe dlt pipeline is {DEMO_PIPELINE}; its pipelines folder (dlt's local state) is"
        f" {shown_path(folder)}"
        + (
            f", next to the DuckDB file {shown_path(duckdb_path)}"
            if destination == "duckdb"
            else ""
        )
        + ". Run the demo again at will: it starts from scratch each time."
    )
    say("Look further:")
    for command in look_further(destination, duckdb_path, dataset, folder):
        say(f"  {command}")
    return 0
