"""Command line: ``exa-source load | report | dictionary | demo | emulator``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
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

#: Exit codes: a bad setting (fix the command) vs a failed run (retry later / look at the API).
EXIT_CONFIG = 2
EXIT_FAILED = 1

REPORT_DAYS = 14


def _defaults_for_cli() -> None:
    """Set process defaults that suit a one-shot CLI run (never overriding the user's env).

    * telemetry off;
    * dlt's Airflow secrets provider off: when Airflow is merely *installed*, dlt imports it and
      queries the Variable ``dlt_secrets_toml`` on first config access, ~3 s per run. Inside
      an Airflow task (``AIRFLOW_CTX_TASK_ID`` set, e.g. a BashOperator) it is left as the
      user has it; the DAG itself turns it off and reads ``dlt_secrets_toml`` once
      (:mod:`exa_source.airflow.dlt_config`).
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


class _OneLineDltErrors(logging.Filter):
    """Keep dlt's warnings and errors to their first line (the CLI's, below DEBUG).

    When a load job fails, dlt logs the whole traceback twice (``Terminal exception in job``
    with ``exc_info``, then ``Job ... failed terminally ... with message Traceback ...``):
    ~6 kB on stderr above the CLI's own one-line error, which already names the table and
    the database's reason. ``--log-level DEBUG`` keeps dlt's records whole.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and (record.exc_info or "\n" in str(record.msg)):
            first = record.getMessage().split("\n", 1)[0].rstrip()
            record.msg, record.args = f"{first} (--log-level DEBUG shows dlt's traceback)", ()
            record.exc_info, record.exc_text = None, None
        return True


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_VisibleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("exa_source")
    package_logger.addHandler(handler)
    package_logger.setLevel(level.upper())
    package_logger.propagate = False
    if level.upper() != "DEBUG":
        # dlt's own logger (named "dlt"; dlt adds its handler when a pipeline first logs)
        dlt_logger = logging.getLogger("dlt")
        if not any(isinstance(f, _OneLineDltErrors) for f in dlt_logger.filters):
            dlt_logger.addFilter(_OneLineDltErrors())


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: ...)`` after each option that has a default and does not say it.

    Options whose default is None (taken from dlt config or the source) or off say their
    default in their own words.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


#: dlt's default pipelines folder, as ``--help`` names it.
DLT_PIPELINES_DIR = "dlt's, ~/.dlt/pipelines, or /var/dlt/pipelines for root"

#: Where the key comes from, in the order it is looked up (``exa_source.config``).
KEY_HELP = (
    "The Exa API key comes from the environment variable SOURCES__EXA__API_KEY, from"
    " [sources.exa] api_key in .dlt/secrets.toml (or any other dlt config provider), or from"
    " EXA_API_KEY, looked up in that order; it is never a flag."
)


def _add_target_options(
    parser: argparse.ArgumentParser, duckdb_default: str, verb: str, pipelines_default: str
) -> None:
    parser.add_argument(
        "--destination",
        default="duckdb",
        help="dlt destination name (default: duckdb; e.g. postgres, with credentials from dlt"
        " config such as DESTINATION__POSTGRES__CREDENTIALS)",
    )
    parser.add_argument(
        "--duckdb-path", default=duckdb_default, help="DuckDB file for --destination duckdb"
    )
    parser.add_argument(
        "--dataset", default=settings.DATASET_NAME, help=f"dataset (schema) to {verb}"
    )
    parser.add_argument(
        "--pipelines-dir",
        default=None,
        help=f"dlt's local working folder of the pipeline (default: {pipelines_default})",
    )


def _add_load_options(parser: argparse.ArgumentParser, demo: bool = False) -> None:
    """The options of a load; the demo takes those that make sense against its emulator."""
    if not demo:
        parser.add_argument(
            "--base-url",
            default=None,
            help=f"API root; /websets/v0/... is appended (default: {settings.DEFAULT_BASE_URL})",
        )
    parser.add_argument(
        "--page-size",
        type=int,
        default=None,
        help=f"imports per request, {settings.MIN_PAGE_SIZE}-{settings.MAX_PAGE_SIZE}"
        f" (default: {settings.DEFAULT_PAGE_SIZE})",
    )
    if not demo:
        parser.add_argument(
            "--initial-updated-at",
            default=None,
            help="backfill start: load only imports updated at or after this ISO timestamp"
            " (default: none, load all)",
        )
    parser.add_argument(
        "--deletions",
        choices=("soft", "hard", "off"),
        default=None,
        help="imports deleted in Exa: soft (stamp _exa_deleted_at, keep the row), hard (delete"
        f" the row) or off (default: {settings.DEFAULT_DELETIONS})",
    )
    parser.add_argument(
        "--max-pages",
        type=int,
        default=None,
        help="fail a scan that is still paging after this many pages; an API paging forever"
        f" otherwise never ends (default: {settings.MAX_PAGES:,})",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="fail a scan still paging after this many seconds"
        f" (default: {settings.MAX_SECONDS:,.0f})",
    )
    parser.add_argument(
        "--resources",
        type=_resource_list,
        default=None,
        help="comma-separated tables to load, among "
        + ",".join(settings.RESOURCES)
        + " (default: all)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="websets whose items are read at once, 1-"
        f"{settings.MAX_CONCURRENCY} (default: {settings.DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--items-reconcile-days",
        type=float,
        default=None,
        help="read every webset's items whole at least this often, which finds items deleted"
        f" in Exa; 0 = every run (default: {settings.ITEMS_RECONCILE_DAYS:g})",
    )
    parser.add_argument(
        "--event-types",
        default=None,
        help="comma-separated event types the events table loads, e.g."
        " monitor.run.completed,webset.item.created (default: all)",
    )
    if demo:
        refresh = (
            "accepted like `exa-source load --full-refresh`; the demo's first load always"
            " starts from scratch, its emulator being new on every run"
        )
    else:
        refresh = (
            "drop the table and the pipeline state, then load everything again (never needed"
            " to catch up: every run compares the API with the table)"
        )
    parser.add_argument("--full-refresh", action="store_true", help=refresh)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``exa-source``; it imports nothing heavy (no dlt)."""
    from exa_source import __version__
    from exa_source.demo import DEMO_DUCKDB_FILE, DEMO_IMPORTS, DEMO_PIPELINES_DIR

    parser = argparse.ArgumentParser(
        prog="exa-source",
        description="Copy the list of your Exa Websets imports (the CSV files and lists your"
        " team imported into Exa to enrich them), with their status, into a warehouse table"
        " for BI, with dlt. Without an Exa key, try `exa-source demo`.",
        epilog=KEY_HELP + " Each command has --help.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"exa-source {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        help="log level of exa_source, on stderr (default: WARNING for demo, INFO otherwise)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=summary, description=summary, formatter_class=_HelpFormatter, **kwargs
        )

    load = command(
        "load", "load imports from the Exa API (incremental; merge on id)", epilog=KEY_HELP
    )
    _add_target_options(load, settings.DEFAULT_DUCKDB_FILE, "load into", DLT_PIPELINES_DIR)
    _add_load_options(load)

    report = command("report", "print the BI views of an existing load (and optionally a chart)")
    _add_target_options(report, settings.DEFAULT_DUCKDB_FILE, "read", DLT_PIPELINES_DIR)
    report.add_argument(
        "--days",
        type=int,
        default=REPORT_DAYS,
        help="show the last N days of import_daily (0 = all)",
    )
    report.add_argument("--chart", default=None, metavar="PATH", help="also write a PNG chart")

    dictionary = command(
        "dictionary", "print the data dictionary (markdown) generated from the dlt schema"
    )
    dictionary.add_argument(
        "--check",
        default=None,
        metavar="README",
        help="exit 1 if the dictionary block of this file differs from the generated one",
    )

    demo = command(
        "demo",
        "no key needed: load sample imports from the bundled emulator, change some, load again,"
        " and print a report",
    )
    _add_target_options(
        demo, DEMO_DUCKDB_FILE, "load into", f"{DEMO_PIPELINES_DIR} next to the DuckDB file"
    )
    demo.add_argument("--imports", type=int, default=DEMO_IMPORTS, help="imports to seed")
    _add_load_options(demo, demo=True)

    command(
        "emulator",
        "run the bundled emulator of the Exa Websets API (options: exa-source emulator --help)",
        add_help=False,
    )
    return parser


def _resource_list(text: str) -> tuple[str, ...]:
    """Parse ``--resources``: known names, comma-separated."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in settings.RESOURCES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown resource {', '.join(unknown) or repr(text)}; choose among"
            f" {', '.join(settings.RESOURCES)}"
        )
    return names


_SCAN_OPTIONS = (
    "page_size",
    "deletions",
    "max_pages",
    "max_seconds",
    "resources",
    "concurrency",
    "items_reconcile_days",
    "event_types",
)


def _scan_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options ``load`` and ``demo`` share (see :func:`_add_load_options`)."""
    return {name: getattr(args, name) for name in _SCAN_OPTIONS}


def _load(args: argparse.Namespace) -> int:
    from exa_source.pipeline import make_pipeline, run_load

    pipeline = make_pipeline(
        args.destination, args.duckdb_path, args.dataset, pipelines_dir=args.pipelines_dir
    )
    summary = run_load(
        pipeline,
        base_url=args.base_url,
        initial_updated_at=args.initial_updated_at,
        full_refresh=args.full_refresh,
        **_scan_options(args),
    )
    print(summary.sentence())
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
        render_health_report,
        render_items_report,
        summary,
        write_chart,
    )

    if args.destination == "duckdb" and not Path(args.duckdb_path).exists():
        raise ExaConfigError(f"no DuckDB file {args.duckdb_path}: run `exa-source load` first")
    pipeline = make_pipeline(
        args.destination, args.duckdb_path, args.dataset, pipelines_dir=args.pipelines_dir
    )
    items = render_items_report(pipeline)
    health = render_health_report(pipeline)
    try:
        results = summary(pipeline)
    except DatabaseUndefinedRelation:
        results = None
    if results is None and items is None and not health:
        raise ExaConfigError(
            f"no BI views in {args.destination} dataset {args.dataset!r}: run `exa-source load`"
            " first (the views are created after each successful load)"
        ) from None
    where = Path(args.duckdb_path).resolve() if args.destination == "duckdb" else ""
    print(f"Views in {args.destination} {where} dataset {args.dataset}".replace("  ", " "))
    if items is not None:
        print(f"\nwebset_items_current and webset_item_enrichments, per webset\n{items}")
    for title, text in health:
        print(f"\n{title}\n{text}")
    if results is None:
        return 0
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
    from exa_source.demo import run_demo

    return run_demo(
        sys.stdout,
        imports=args.imports,
        destination=args.destination,
        duckdb_path=args.duckdb_path,
        dataset=args.dataset,
        pipelines_dir=args.pipelines_dir,
        **_scan_options(args),
    )


def _emulator_argv(argv: Sequence[str]) -> list[str] | None:
    """The emulator's own arguments when the command is ``emulator``, else None.

    Everything after ``emulator`` goes to the emulator's own parser untouched (an argparse
    subcommand would reject its options); a ``--log-level`` given before it is passed on.
    """
    rest = list(argv)
    forwarded: list[str] = []
    while rest and rest[0].startswith("--log-level"):
        taken = 1 if "=" in rest[0] else 2
        forwarded += rest[:taken]
        del rest[:taken]
    if not rest or rest[0] != "emulator":
        return None
    return [*forwarded, *rest[1:]]


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
    argv = list(sys.argv[1:] if argv is None else argv)
    emulator_argv = _emulator_argv(argv)
    if emulator_argv is not None:
        from exa_source.emulator.__main__ import main as emulator_main

        return emulator_main(emulator_argv, prog="exa-source emulator")
    args = build_parser().parse_args(argv)
    _defaults_for_cli()
    _setup_logging(args.log_level or ("WARNING" if args.command == "demo" else "INFO"))

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
