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


@pytest.mark.slow  # ~20 s: one emulator and six child processes
def test_bench_items_mode_smoke(tmp_path: Path) -> None:
    """``--items``: every items variant side by side; the rerun loads nothing, reads no item."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--items",
            "150",
            "--websets",
            "3",
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
    assert "## N = 150 items (3 websets)" in markdown
    for label in (
        "ceiling: requests loop, decode only",
        "ceiling, 4 threads",
        "exa-source full load",
        "exa-source rerun, 0% changed",
        "exa-source full load, concurrency 1",
        "exa-source rerun, 0% changed, concurrency 1",
    ):
        assert f"| {label} |" in markdown, label
    assert markdown in proc.stdout
    raw = json.loads((out / "results.json").read_text())
    runs = raw["150"]
    pages = 3 * math.ceil(50 / 100)
    for key in ("ceiling_items", "ceiling_items_c4"):
        assert [m["requests"] for m in runs[key]] == [pages], key
        assert runs[key][0]["child"]["rows_read"] == 150
    for prefix in ("exa_source_items", "exa_source_items_c1"):
        full, rerun = runs[f"{prefix}_full"][0], runs[f"{prefix}_rerun0"][0]
        assert full["requests"] == pages
        assert full["child"]["items_loaded"] == 150
        assert rerun["child"]["rows_loaded"] == 0
        assert rerun["requests"] == 0  # no item request
    assert raw["meta"]["sizes"]["150"]["seed_s"] > 0
    assert all(m["peak_rss_kb"] > 0 and m["wall_s"] > 0 for ms in runs.values() for m in ms)
