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
    args: list[str], cwd: Path, env: dict[str, str] | None = None, exe: str = "exa-source"
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "EXA_"))}
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
    assert "Loaded 1,000 new or changed imports (read 1,000 in 5 pages" in first.stdout
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
