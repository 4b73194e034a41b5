"""The ``exa-source`` command line, run as a user would: a subprocess against the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import KEY

from exa_source.emulator import Emulator

BIN = Path(sys.executable).parent


def run(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    exe: str = "exa-source",
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    drop = ("SOURCES__", "EXA_", *unset)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    clean.pop("PROVIDERS__ENABLE_AIRFLOW_SECRETS", None)  # the CLI must set it itself
    return subprocess.run(
        [str(BIN / exe), *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_load_prints_a_summary_and_dlt_cli_sees_the_pipeline(
    tmp_path: Path, emulator: Emulator
) -> None:
    pipes = str(tmp_path / "pipelines")
    args = ["load", "--base-url", emulator.base_url, "--pipelines-dir", pipes]
    first = run(args, tmp_path, {"SOURCES__EXA__API_KEY": KEY})
    assert first.returncode == 0, first.stderr
    # 5 pages of imports, the websets list (no webset here), one events page for the items,
    # the monitors and webhooks lists and the event log
    assert "Loaded 1,000 new or changed imports (read 1,000 in 10 pages" in first.stdout
    with duckdb.connect(str(tmp_path / "exa.duckdb"), read_only=True) as con:
        assert con.execute("select count(distinct id) from exa_websets.imports").fetchall() == [
            (1000,)
        ]

    emulator.store.mutate(update=5, seed=1)
    second = run(args, tmp_path, {"EXA_API_KEY": KEY})
    assert second.returncode == 0, second.stderr
    assert "Loaded 5 new or changed imports" in second.stdout

    for command in ("info", "trace"):
        shown = run(
            ["pipeline", "--pipelines-dir", pipes, "exa_websets", command], tmp_path, exe="dlt"
        )
        assert shown.returncode == 0, shown.stderr
        assert "exa_websets" in shown.stdout
        assert KEY not in shown.stdout + shown.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "No Exa API key"),
        (["--page-size", "500"], "outside 1-200"),
        (["--base-url", "http://exa.example.com"], "non-loopback"),
        (["--initial-updated-at", "last tuesday"], "not an ISO-8601"),
        (["--destination", "nosuchdb"], "unknown destination"),
        (["--duckdb-path", "exa_websets.duckdb"], "named like the dataset"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    key = {} if not args else {"EXA_API_KEY": KEY}
    result = run(["load", "--base-url", "http://127.0.0.1:9", *args], tmp_path, key)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "exa.duckdb").exists()


def test_rejected_key_exits_1_without_leaking_it(tmp_path: Path, emulator: Emulator) -> None:
    secret = "sk-wrong-0123456789"
    result = run(["load", "--base-url", emulator.base_url], tmp_path, {"EXA_API_KEY": secret})
    assert result.returncode == 1
    assert "Exa rejected the API key" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_demo_needs_no_key(tmp_path: Path) -> None:
    result = run(["demo", "--imports", "300"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Loaded 300 new or changed imports" in result.stdout
    assert "3. Incremental load" in result.stdout
    assert "distinct ids" in result.stdout
    assert (tmp_path / "exa_demo.duckdb").exists()


def _one_line_exit_2(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert KEY not in result.stdout + result.stderr
    return lines[0]


@pytest.mark.parametrize("where", ["env", "config.toml"])
def test_wrong_type_in_dlt_config_exits_2_naming_the_setting(tmp_path: Path, where: str) -> None:
    env = {"EXA_API_KEY": KEY}
    if where == "env":
        env["SOURCES__EXA__PAGE_SIZE"] = "abc"
    else:
        (tmp_path / ".dlt").mkdir()
        (tmp_path / ".dlt" / "config.toml").write_text('[sources.exa]\npage_size = "abc"\n')
    result = run(["load", "--base-url", "http://127.0.0.1:9"], tmp_path, env)
    line = _one_line_exit_2(result)
    assert "SOURCES__EXA__PAGE_SIZE" in line
    assert "[sources.exa] page_size" in line
    assert "integer" in line
    assert "abc" not in line  # values are never echoed (a value may be a secret)
    assert not (tmp_path / "exa.duckdb").exists()


@pytest.mark.parametrize("command", ["load", "report"])
def test_missing_destination_credentials_exit_2_naming_the_setting(
    tmp_path: Path, command: str
) -> None:
    args = [command, "--destination", "postgres", "--pipelines-dir", str(tmp_path / "p")]
    if command == "load":
        args += ["--base-url", "http://127.0.0.1:9"]
    result = run(args, tmp_path, {"EXA_API_KEY": KEY}, unset=("DESTINATION__", "CREDENTIALS__"))
    line = _one_line_exit_2(result)
    assert "DESTINATION__POSTGRES__CREDENTIALS" in line
    assert "[destination.postgres] credentials" in line


def test_unparseable_destination_credentials_exit_2_without_showing_them(tmp_path: Path) -> None:
    secret = "not-a-dsn-sekrit-0123"
    args = ["report", "--destination", "postgres", "--pipelines-dir", str(tmp_path / "p")]
    env = {"DESTINATION__POSTGRES__CREDENTIALS": secret}
    result = run(args, tmp_path, env, unset=("DESTINATION__", "CREDENTIALS__"))
    line = _one_line_exit_2(result)
    assert "cannot be parsed as dlt's PostgresCredentials" in line
    assert secret not in result.stdout + result.stderr


def test_log_lines_render_control_characters_visibly() -> None:
    import logging

    from exa_source.cli import _VisibleFormatter

    formatter = _VisibleFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "exa_source", logging.WARNING, __file__, 1, "id %s", ("\x1b]0;x\x07",), None
    )
    assert formatter.format(record) == r"WARNING id \x1b]0;x\x07"
    try:
        raise ValueError("bad\x1b[2J")
    except ValueError:
        record.exc_info = sys.exc_info()
    shown = formatter.format(record)
    assert "\x1b" not in shown
    assert "Traceback (most recent call last):\n" in shown  # tracebacks keep their lines
    assert shown.endswith(r"ValueError: bad\x1b[2J")


def test_a_scan_past_its_page_bound_fails_naming_the_bound_and_changes_nothing(
    tmp_path: Path, emulator: Emulator
) -> None:
    """An API answering ``hasMore: true`` forever ran 90 s and 1.32M rows until killed; the
    bound turns that into one clear failure (here: 1,000 imports are 5 pages)."""
    args = ["load", "--base-url", emulator.base_url, "--pipelines-dir", str(tmp_path / "p")]
    env = {"SOURCES__EXA__API_KEY": KEY}
    assert run(args, tmp_path, env).returncode == 0
    emulator.store.mutate(update=3, delete=2, seed=4)
    by_flag = ([*args, "--max-pages", "3"], env)
    by_setting = (args, {**env, "SOURCES__EXA__MAX_PAGES": "3"})
    for bounded, bounded_env in (by_flag, by_setting):
        done = run(bounded, tmp_path, bounded_env)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "the max_pages bound (3) was reached" in done.stderr
        assert "Traceback" not in done.stderr
    with duckdb.connect(str(tmp_path / "exa.duckdb"), read_only=True) as con:
        deleted = con.execute(
            "select count(*) from exa_websets.imports where _exa_deleted_at is not null"
        ).fetchall()
    assert deleted == [(0,)]  # a stopped scan deletes nothing
    done = run(args, tmp_path, env)
    assert done.returncode == 0
    assert "Loaded 3 new or changed imports" in done.stdout
    assert "2 deleted in Exa" in done.stdout


#: What the ``--help`` / ``--version`` path must never import: dlt and its heavy dependencies.
HEAVY = ("dlt", "pyarrow", "duckdb", "pandas", "exa_source.source", "exa_source.pipeline")

_PROBE = """
import sys
from exa_source import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY:", ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["load", "--help"],
        ["report", "--help"],
        ["dictionary", "--help"],
        ["demo", "--help"],
        ["emulator", "--help"],
    ],
    ids=lambda a: "-".join(a),
)
def test_help_and_version_import_no_dlt(tmp_path: Path, args: list[str]) -> None:
    """``--help`` took 1-7 s: ``import exa_source`` imported dlt, pyarrow and duckdb."""
    probe = _PROBE.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "HEAVY: \n" in done.stderr, done.stderr
    assert done.stdout.strip()
    # the console script itself, as a user runs it, with Python's own import log
    timed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "exa_source", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert timed.returncode == 0, timed.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in timed.stderr.splitlines()}
    assert not [m for m in HEAVY if m in imported]


def test_package_imports_dlt_only_when_the_source_is_asked_for() -> None:
    probe = (
        "import sys, exa_source; assert 'dlt' not in sys.modules;"
        " from exa_source import ExaError, ExaConfigError, __version__;"
        " assert 'dlt' not in sys.modules;"
        " from exa_source import exa_websets_source;"
        " from exa_source.source import exa_websets_source as real;"
        " assert exa_websets_source is real and 'dlt' in sys.modules;"
        " assert set(exa_source.__all__) <= set(dir(exa_source)); print(__version__)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.2.0"


def test_version(tmp_path: Path) -> None:
    done = run(["--version"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exa-source 0.2.0"


def _help(tmp_path: Path, *args: str) -> str:
    done = run([*args, "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())  # argparse wraps lines: compare words


def test_help_shows_defaults_and_where_the_key_comes_from(tmp_path: Path) -> None:
    load = _help(tmp_path, "load")
    for shown in (
        "imports per request, 1-200 (default: 200)",
        "(default: exa_websets)",
        "(default: exa.duckdb)",
        "(default: duckdb;",
        "(default: soft)",
        "(default: https://api.exa.ai)",
        "SOURCES__EXA__API_KEY",
        "[sources.exa] api_key in .dlt/secrets.toml",
        "EXA_API_KEY",
    ):
        assert shown in load, shown
    top = _help(tmp_path)
    assert "SOURCES__EXA__API_KEY" in top
    assert "EXA_API_KEY" in top
    assert "(default: WARNING" in top
    report = _help(tmp_path, "report")
    assert "dataset (schema) to read (default: exa_websets)" in report
    assert "to load into" not in report
    assert "(default: 14)" in report
    demo = _help(tmp_path, "demo")
    assert "imports to seed (default: 2000)" in demo
    assert "(default: exa_demo.duckdb)" in demo
    assert "--full-refresh" in demo


def test_emulator_takes_the_emulators_own_flags(tmp_path: Path) -> None:
    """``exa-source emulator --help`` and ``--port 0`` failed with "unrecognized arguments"."""
    shown = run(["emulator", "--help"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: exa-source emulator")
    for flag in ("--port", "--api-key", "--imports", "--no-quirk", "--idle-timeout"):
        assert flag in shown.stdout
    bad = run(["emulator", "--no-such-flag"], tmp_path)
    assert bad.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in bad.stderr
    served = subprocess.Popen(
        [str(BIN / "exa-source"), "emulator", "--port", "0", "--imports", "3", "--api-key", "k"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert served.stdout is not None
        url = served.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0"), url
        import requests

        page = requests.get(f"{url}/websets/v0/imports", headers={"x-api-key": "k"}, timeout=10)
        assert len(page.json()["data"]) == 3
    finally:
        served.terminate()
        assert served.wait(timeout=30) == 0


def test_dlt_errors_are_one_line_below_debug() -> None:
    """dlt logs a failed job's traceback twice; the CLI keeps each record to its first line."""
    import logging

    from exa_source.cli import _OneLineDltErrors

    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    keep = _OneLineDltErrors()
    failed = logging.LogRecord(
        "dlt",
        logging.ERROR,
        "load.py",
        1,
        "Terminal exception in job %s",
        ("imports.1.sql",),
        exc_info,
    )
    embedded = logging.LogRecord(
        "dlt",
        logging.ERROR,
        "load.py",
        2,
        "Job failed with message Traceback (most recent call last):\n  File x\nValueError: boom",
        None,
        None,
    )
    info = logging.LogRecord("dlt", logging.INFO, "load.py", 3, "line one\nline two", None, None)
    for record in (failed, embedded, info):
        assert keep.filter(record)
    formatter = logging.Formatter()
    assert formatter.format(failed) == (
        "Terminal exception in job imports.1.sql (--log-level DEBUG shows dlt's traceback)"
    )
    assert "\n" not in formatter.format(embedded) and "File x" not in formatter.format(embedded)
    assert formatter.format(info) == "line one\nline two"  # below WARNING: untouched
