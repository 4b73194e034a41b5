"""Command line: ``exa-source load | report | dictionary | demo | emulator``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from exa_source import settings

if TYPE_CHECKING:
    from dlt.common.configuration.exceptions import (
        ConfigFieldMissingException,
        ConfigValueCannotBeCoercedException,
        InvalidNativeValue,
    )

    from exa_source.pipeline import LoadSummary

#: Exit codes: a bad setting (fix the command) vs a failed run (retry later / look at the API).
EXIT_CONFIG = 2
EXIT_FAILED = 1

DEMO_IMPORTS = 2_000
DEMO_DUCKDB_FILE = "exa_demo.duckdb"
DEMO_PIPELINE = "exa_websets_demo"
REPORT_DAYS = 14


def _defaults_for_cli() -> None:
    """Set process defaults that suit a one-shot CLI run (never overriding the user's env).

    * telemetry off;
    * dlt's Airflow secrets provider off: when Airflow is merely *installed*, dlt imports it and
      queries the Variable ``dlt_secrets_toml`` on first config access, ~3 s per run. The DAG
      keeps it (it runs inside Airflow and may take its secrets from there).
    """
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    if "AIRFLOW_CTX_TASK_ID" not in os.environ:
        os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")


def _visible(text: str) -> str:
    """:func:`exa_source.warehouse.visible`, imported on first use (keeps ``--help`` fast)."""
    from exa_source.warehouse import visible

    return visible(text)


def _visible_lines(text: str) -> str:
    """Apply :func:`_visible` line by line: a traceback keeps its line breaks."""
    return "\n".join(_visible(line) for line in text.split("\n"))


class _VisibleFormatter(logging.Formatter):
    """A log formatter that shows control characters in messages as escapes.

    A log line may quote text from the API (an id, an error body); :func:`_visible` keeps a
    terminal escape sequence in it from acting on the user's terminal. The message is escaped
    whole (so it stays one line); tracebacks and stacks keep their line breaks.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _visible(super().formatMessage(record))

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        return _visible_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _visible_lines(super().formatStack(stack_info))


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_VisibleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("exa_source")
    package_logger.addHandler(handler)
    package_logger.setLevel(level.upper())
    package_logger.propagate = False


def _add_target_options(parser: argparse.ArgumentParser, duckdb_default: str) -> None:
    parser.add_argument(
        "--destination",
        default="duckdb",
        help="dlt destination name (default duckdb; e.g. postgres, with credentials from dlt"
        " config such as DESTINATION__POSTGRES__CREDENTIALS)",
    )
    parser.add_argument(
        "--duckdb-path",
        default=duckdb_default,
        help=f"DuckDB file for --destination duckdb (default {duckdb_default})",
    )
    parser.add_argument(
        "--dataset", default=settings.DATASET_NAME, help="dataset (schema) to load into"
    )
    parser.add_argument("--pipelines-dir", default=None, help="dlt's local pipeline folder")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``exa-source``."""
    parser = argparse.ArgumentParser(
        prog="exa-source", description="Load Exa Websets imports into a warehouse with dlt."
    )
    parser.add_argument("--log-level", default="INFO", help="log level of exa_source (stderr)")
    commands = parser.add_subparsers(dest="command", required=True)

    load = commands.add_parser("load", help="load imports (incremental; merge on id)")
    _add_target_options(load, settings.DEFAULT_DUCKDB_FILE)
    load.add_argument("--base-url", default=None, help="API root (default https://api.exa.ai)")
    load.add_argument("--page-size", type=int, default=None, help="imports per request, 1-200")
    load.add_argument(
        "--initial-updated-at",
        default=None,
        help="backfill start: load only imports updated at or after this ISO timestamp",
    )
    load.add_argument(
        "--deletions",
        choices=("soft", "hard", "off"),
        default=None,
        help="imports deleted in Exa: soft (default: stamp _exa_deleted_at, keep the row),"
        " hard (delete the row) or off",
    )
    load.add_argument(
        "--max-pages",
        type=int,
        default=None,
        help=f"stop a scan that is still paging after this many pages (default"
        f" {settings.MAX_PAGES:,}; an API paging forever otherwise never ends)",
    )
    load.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="stop a scan still paging after this many seconds"
        f" (default {settings.MAX_SECONDS:,.0f})",
    )
    load.add_argument(
        "--full-refresh",
        action="store_true",
        help="drop the table and the pipeline state, then load everything again (never needed"
        " to catch up: every run compares the API with the table)",
    )

    report = commands.add_parser(
        "report", help="print the BI views of an existing load (and optionally a PNG chart)"
    )
    _add_target_options(report, settings.DEFAULT_DUCKDB_FILE)
    report.add_argument(
        "--days",
        type=int,
        default=REPORT_DAYS,
        help=f"show the last N days of import_daily (default {REPORT_DAYS}; 0 = all)",
    )
    report.add_argument("--chart", default=None, metavar="PATH", help="also write a PNG chart")

    dictionary = commands.add_parser(
        "dictionary", help="print the data dictionary (markdown) generated from the dlt schema"
    )
    dictionary.add_argument(
        "--check",
        default=None,
        metavar="README",
        help="exit 1 if the dictionary block of this file differs from the generated one",
    )

    demo = commands.add_parser(
        "demo", help="no key needed: load from the bundled emulator and print a report"
    )
    _add_target_options(demo, DEMO_DUCKDB_FILE)
    demo.add_argument("--imports", type=int, default=DEMO_IMPORTS, help="imports to seed")

    emulator = commands.add_parser(
        "emulator", help="run the bundled emulator of the Exa Websets API", add_help=False
    )
    emulator.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _print_summary(summary: LoadSummary) -> None:
    print(
        f"Loaded {summary.rows_loaded:,} new or changed imports"
        f" (read {summary.rows_read:,} in {summary.pages:,} pages, {summary.requests:,} requests,"
        f" {summary.retried:,} retried) into {summary.destination} dataset {summary.dataset}"
        f" in {summary.seconds:.1f} s"
        + (f"; {summary.rows_deleted:,} deleted in Exa" if summary.rows_deleted else "")
        + (
            f"; {summary.rows_recovered:,} of the loaded imports came from the package an"
            " interrupted run left"
            if summary.rows_recovered
            else ""
        )
    )


def _load(args: argparse.Namespace) -> int:
    from exa_source.pipeline import make_pipeline, run_load

    pipeline = make_pipeline(
        args.destination, args.duckdb_path, args.dataset, pipelines_dir=args.pipelines_dir
    )
    summary = run_load(
        pipeline,
        base_url=args.base_url,
        page_size=args.page_size,
        initial_updated_at=args.initial_updated_at,
        deletions=args.deletions,
        max_pages=args.max_pages,
        max_seconds=args.max_seconds,
        full_refresh=args.full_refresh,
    )
    _print_summary(summary)
    return 0


def _report(args: argparse.Namespace) -> int:
    from dlt.destinations.exceptions import DatabaseUndefinedRelation

    from exa_source.exceptions import ExaConfigError
    from exa_source.pipeline import make_pipeline
    from exa_source.warehouse import (
        CURRENT_VIEW,
        DAILY_VIEW,
        STATUS_VIEW,
        format_table,
        summary,
        write_chart,
    )

    if args.destination == "duckdb" and not Path(args.duckdb_path).exists():
        raise ExaConfigError(f"no DuckDB file {args.duckdb_path}: run `exa-source load` first")
    pipeline = make_pipeline(
        args.destination, args.duckdb_path, args.dataset, pipelines_dir=args.pipelines_dir
    )
    try:
        results = summary(pipeline)
    except DatabaseUndefinedRelation:
        raise ExaConfigError(
            f"no BI views in {args.destination} dataset {args.dataset!r}: run `exa-source load`"
            " first (the views are created after each successful load)"
        ) from None
    where = Path(args.duckdb_path).resolve() if args.destination == "duckdb" else ""
    print(f"Views in {args.destination} {where} dataset {args.dataset}".replace("  ", " "))
    for name in (CURRENT_VIEW, STATUS_VIEW, DAILY_VIEW):
        result = results[name]
        rows = result.rows
        title = name
        if name == DAILY_VIEW and args.days > 0 and len(rows) > args.days:
            rows = rows[-args.days :]
            title = f"{name} (last {args.days} of {len(result.rows)} days; --days 0 for all)"
        print(f"\n{title}\n{format_table(result.headers, rows)}")
    if args.chart:
        print(f"\nChart written to {write_chart(results, args.chart).resolve()}")
    return 0


def _dictionary(args: argparse.Namespace) -> int:
    from exa_source.warehouse import DICTIONARY_END, DICTIONARY_START, check_readme, data_dictionary

    if args.check:
        if check_readme(args.check):
            print(f"{args.check}: data dictionary is up to date")
            return 0
        print(
            f"{args.check}: the block between {DICTIONARY_START} and {DICTIONARY_END} differs"
            " from the schema (or is missing); regenerate it with `exa-source dictionary`",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(data_dictionary(), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from exa_source.emulator import Emulator
    from exa_source.pipeline import make_pipeline, run_load
    from exa_source.warehouse import render_report

    key = "demo-key"
    with Emulator(api_key=key, imports=args.imports).start() as emu:
        print(f"Emulator of the Exa Websets API on {emu.base_url} with {args.imports:,} imports")
        pipelines_dir = args.pipelines_dir or tempfile.mkdtemp(prefix="exa_demo_")
        pipeline = make_pipeline(
            args.destination,
            args.duckdb_path,
            args.dataset,
            pipeline_name=DEMO_PIPELINE,
            pipelines_dir=pipelines_dir,
        )
        print("1. Full load")
        _print_summary(run_load(pipeline, api_key=key, base_url=emu.base_url, full_refresh=True))
        changed = emu.store.mutate(update=25, create=10, advance=15, delete=5, seed=1)
        print(
            "2. Meanwhile in Exa: "
            + ", ".join(f"{len(ids)} imports {what}" for what, ids in changed.items())
        )
        print("3. Incremental load: only what changed is loaded, deletions are detected")
        _print_summary(run_load(pipeline, api_key=key, base_url=emu.base_url))
        where = Path(args.duckdb_path).resolve() if args.destination == "duckdb" else ""
        print(f"\nReport from {args.destination} {where}")
        print(render_report(pipeline))
    return 0


def _print_error(message: str) -> None:
    r"""Print ``error: <message>`` to stderr as one line, control characters made visible.

    Line breaks inside the message are shown as ``\x0a`` too: a message that quotes the API
    cannot forge further output lines.
    """
    print(f"error: {_visible(message.strip())}", file=sys.stderr)


#: How a config type is named in an error message.
_TYPE_WORDS: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "text",
}


def _setting_names(path: Sequence[str]) -> str:
    """Name a dlt setting both ways, e.g. ``SOURCES__EXA__PAGE_SIZE / [sources.exa] page_size``."""
    env = "__".join(path).upper()
    if len(path) < 2:
        return f"{env} / {path[0]}" if path else env
    return f"{env} / [{'.'.join(path[:-1])}] {path[-1]}"


def _failed_spec(exc: BaseException) -> type | None:
    """The dlt configuration class being resolved when ``exc`` was raised, if one is found.

    dlt's coercion error names the field but not its section; the frames of its traceback hold
    the configuration being resolved (a local named ``config``). The innermost one wins.
    Returns None when dlt's internals differ (the message then names only the field).
    """
    from dlt.common.configuration.specs import BaseConfiguration

    spec: type | None = None
    tb = exc.__traceback__
    while tb is not None:
        config = tb.tb_frame.f_locals.get("config")
        if isinstance(config, BaseConfiguration):
            spec = type(config)
        tb = tb.tb_next
    return spec


def _coercion_message(exc: ConfigValueCannotBeCoercedException) -> str:
    """One line for a configured value of the wrong type; the value itself is never shown."""
    from exa_source.source import exa_websets_source

    field = str(exc.field_name)
    expected = _TYPE_WORDS.get(exc.hint) or f"of type {getattr(exc.hint, '__name__', exc.hint)}"
    spec = _failed_spec(exc)
    if spec is not None and spec.__module__ == exa_websets_source.__module__:
        where = _setting_names(("sources", settings.SOURCE_NAME, field))
    elif spec is not None:
        where = f"`{field}` of dlt's {spec.__name__}"
    else:
        where = f"`{field}`"
    return (
        f"setting {where} must be {expected}; the configured value (environment or"
        " .dlt/*.toml) is not one (values are not shown: they may be secrets)"
    )


def _trace_path(field: str, traces: Sequence[Any]) -> tuple[list[str], list[str]]:
    """The sections + field of a missing dlt setting, and its own missing fields if nested."""
    from dlt.common.configuration.exceptions import LookupTraces, flatten_traces

    if not traces:
        return [field], []
    first = traces[0]
    inner = list(first.traces) if isinstance(first, LookupTraces) else []
    leaves = flatten_traces(list(traces))
    sections = [str(s) for s in leaves[0].sections] if leaves else []
    if not (inner and sections and sections[-1] == field):
        sections.append(field)
    return sections, inner


def _missing_message(exc: ConfigFieldMissingException) -> str:
    """One line naming each missing dlt setting (names only: dlt's traces hold no values)."""
    parts = []
    for field, traces in exc.traces.items():
        path, inner = _trace_path(str(field), traces)
        unset = f" (or all of: {', '.join(inner)})" if inner else ""
        parts.append(_setting_names(path) + unset)
    plural = "s" if len(parts) > 1 else ""
    return (
        f"missing setting{plural} {'; '.join(parts)} for dlt's {exc.spec_name}: set it in the"
        " environment or in .dlt/secrets.toml"
    )


def _native_message(exc: InvalidNativeValue) -> str:
    """One line for a value dlt cannot parse (e.g. a malformed connection string)."""
    where = ".".join(str(s) for s in exc.embedded_sections) or "value"
    return (
        f"the configured {where} cannot be parsed as dlt's {exc.spec.__name__} (values are not"
        " shown: they may be secrets); check its format, e.g. a connection string"
        " postgresql://user:password@host:5432/database for PostgreSQL"
    )


def config_error_message(exc: BaseException) -> str | None:
    """Return a one-line message when ``exc`` is a bad dlt setting, else None.

    The setting was read by dlt (environment variables, ``.dlt/config.toml``,
    ``.dlt/secrets.toml``) and failed before the run did anything: the same case as a bad
    command line flag, so the CLI exits 2. Covered: a value of the wrong type
    (``SOURCES__EXA__PAGE_SIZE=abc``), a missing setting (destination credentials) and a value
    dlt cannot parse. Looks through :class:`~dlt.pipeline.exceptions.PipelineStepFailed` and
    explicit causes. The message names settings, never their values: any value may be a secret.

    Args:
        exc: the exception a command raised.

    Returns:
        The message, or None when ``exc`` is not a configuration error.
    """
    from dlt.common.configuration.exceptions import (
        ConfigFieldMissingException,
        ConfigValueCannotBeCoercedException,
        InvalidNativeValue,
    )
    from dlt.pipeline.exceptions import PipelineStepFailed

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConfigValueCannotBeCoercedException):
            return _coercion_message(current)
        if isinstance(current, ConfigFieldMissingException):
            return _missing_message(current)
        if isinstance(current, InvalidNativeValue):
            return _native_message(current)
        if isinstance(current, PipelineStepFailed):
            current = current.exception
        else:
            current = current.__cause__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "emulator":
        from exa_source.emulator.__main__ import main as emulator_main

        return emulator_main(args.args)
    _defaults_for_cli()
    _setup_logging(args.log_level)

    from exa_source.exceptions import ExaConfigError, ExaError
    from exa_source.pipeline import unwrap

    # objects created by imports live until the process exits: keep the garbage collector from
    # re-walking them during the run (measured: ~8% less CPU per load). Only here, in the CLI
    # process: a library must not change the interpreter's collector for its host.
    gc.freeze()

    commands = {"load": _load, "report": _report, "dictionary": _dictionary, "demo": _demo}
    # Error messages may quote the API (an error body) or the destination: printed through
    # `visible`, one line each, so a control sequence in them cannot act on the terminal.
    try:
        return commands[args.command](args)
    except ExaConfigError as exc:
        _print_error(str(exc))
        return EXIT_CONFIG
    except ExaError as exc:
        _print_error(str(exc))
        return EXIT_FAILED
    except Exception as exc:  # dlt's step failures: show the cause, not a 200-line trace
        message = config_error_message(exc)
        if message is not None:  # a bad dlt setting: fix the configuration, like a bad flag
            _print_error(message)
            return EXIT_CONFIG
        inner = unwrap(exc)
        _print_error(f"{type(inner).__name__}: {inner}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
