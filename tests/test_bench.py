"""Smoke test of the benchmark driver: 1k imports, one run per variant (not a benchmark)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # ~1 min alone: subprocesses per variant (the global 600 s timeout applies)
def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--imports",
            "1000",
            "--repeat",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    markdown = (out / "results.md").read_text()
    assert "## N = 1,000 imports" in markdown
    assert "| exa-source full load |" in markdown
    assert "| dlt rest_api, defaults |" in markdown
    assert "| exa-py list_all + DuckDB |" in markdown
    assert "## Targets" in markdown
    assert markdown in proc.stdout
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    raw = json.loads((out / "results.json").read_text())["1000"]
    expected = math.ceil(1000 / 200)
    for key in ("exa_full", "exa_rerun0", "exa_rerun1"):
        assert [m["requests"] for m in raw[key]] == [expected], key
    assert raw["exa_full"][0]["child"]["rows_loaded"] == 1000
    assert raw["exa_rerun1"][0]["child"]["rows_loaded"] >= 1000 // 100
    assert all(m["peak_rss_kb"] > 0 and m["wall_s"] > 0 for ms in raw.values() for m in ms)


@pytest.mark.slow
def test_bench_side_by_side_with_a_baseline_revision(tmp_path: Path) -> None:
    """``--baseline REV`` runs the same exa-source rows with that revision's package."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--imports",
            "500",
            "--repeat",
            "1",
            "--variants",
            "exa_full,exa_rerun0",
            "--baseline",
            "HEAD",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=290,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    markdown = (out / "results.md").read_text()
    assert "### This tree vs `HEAD`" in markdown
    assert "| baseline: full load |" in markdown
    raw = json.loads((out / "results.json").read_text())["500"]
    assert [m["child"]["rows_loaded"] for m in raw["old_full"]] == [500]
    assert [m["child"]["rows_loaded"] for m in raw["old_rerun0"]] == [0]
    assert raw["exa_rerun0"][0]["child"]["state_bytes"] > 0
