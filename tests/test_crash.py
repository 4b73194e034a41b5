"""Crash recovery: SIGKILL ``exa-source load`` at 20+ points of extract, normalize and load.

One DuckDB destination and one pipeline folder live through the whole test, as in production.
Each kill point: (sometimes) change the emulator, start the CLI, kill it at a point chosen
either by time (spread over the measured length of an unkilled run) or by phase (as soon as
dlt's folders show that phase), record the phase, (sometimes) change the emulator again, then
rerun cleanly. After the rerun(s) the table equals the emulator, no id is duplicated, the cursor
is not ahead of the data and no load package is left pending.

dlt's folders (``dlt/common/storages``, ``dlt/extract/storage.py``) under
``<pipelines_dir>/exa_websets``:

* ``normalize/<random 8>/<load_id>``: a package being extracted (one random folder per extract);
* ``normalize/extracted/<load_id>``: extracted, waiting for normalize;
* ``load/new/<load_id>``: being normalized;
* ``load/normalized/<load_id>``: normalized, being loaded (jobs move new → started → completed);
* ``load/loaded/<load_id>``: loaded.

dlt's ``run`` finishes pending packages (extracted or normalized) and then **returns without
extracting**, and a kill inside normalize's commit leaves a package in two folders, which blocks
every later run ("Directory not empty"). ``exa_source.pipeline.recover_interrupted_run`` repairs
both before each run, so ONE clean rerun after any kill reads the API and matches it: the test
checks exactly that.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from conftest import Target, _ts, assert_equals_emulator, keyless_env

from exa_source.emulator import Emulator

KEY = "crash-key-5ecret-0123456789"
IMPORTS = 30_000
BIN = Path(sys.executable).parent
PIPELINE = "exa_websets"
LIST = ("GET", "/websets/v0/imports")

#: phase → the folder (under the pipeline's working dir) whose appearance marks it
PHASE_FOLDERS = {
    "extracted": "normalize/extracted",
    "normalize": "load/new",
    "load": "load/normalized",
    "loaded": "load/loaded",
}


def _packages(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _extracting(work: Path) -> set[str]:
    """Packages being extracted: ``normalize/<random>/<load_id>``."""
    root = work / "normalize"
    if not root.is_dir():
        return set()
    return {
        p.name
        for d in root.iterdir()
        if d.is_dir() and d.name != "extracted" and not d.name.startswith(".")
        for p in d.iterdir()
        if p.is_dir()
    }


def phase_of(work: Path, loaded_before: set[str]) -> str:
    """Name the phase the pipeline folder shows (the latest one wins)."""
    if _packages(work / "load" / "loaded") - loaded_before:
        return "after load"
    if _packages(work / "load" / "normalized"):
        return "load"
    if _packages(work / "load" / "new"):
        return "normalize"
    if _packages(work / "normalize" / "extracted"):
        return "extracted"
    if _extracting(work):
        return "extract"
    return "startup"


def pending(work: Path) -> list[str]:
    """Packages not yet loaded: extracted, being normalized or normalized."""
    return sorted(
        f"{sub}/{name}"
        for sub in ("normalize/extracted", "load/new", "load/normalized")
        for name in _packages(work / sub)
    )


@dataclass
class KillPoint:
    """What happened at one kill point."""

    trigger: str
    killed_after: float
    phase: str
    pending_at_kill: list[str]
    changed_before: bool
    changed_after_kill: bool
    first_rerun_read_api: bool


class Crash:
    """The CLI against one emulator, one DuckDB file and one pipeline folder."""

    def __init__(self, emu: Emulator, tmp: Path) -> None:
        self.emu = emu
        self.tmp = tmp
        self.pipes = tmp / "pipelines"
        self.work = self.pipes / PIPELINE
        self.duckdb = tmp / "exa.duckdb"
        self.target = Target("duckdb", "exa_websets", str(self.duckdb), str(self.pipes), PIPELINE)
        env = keyless_env()
        self.env = {**env, "SOURCES__EXA__API_KEY": KEY}

    def command(self) -> list[str]:
        return [
            str(BIN / "exa-source"),
            "load",
            "--base-url",
            self.emu.base_url,
            "--duckdb-path",
            str(self.duckdb),
            "--pipelines-dir",
            str(self.pipes),
        ]

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(),
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run_clean(self) -> float:
        """Run the CLI to the end; returns its wall time."""
        started = time.monotonic()
        done = subprocess.run(self.command(), env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return time.monotonic() - started

    def rerun(self) -> None:
        """A clean rerun in-process (same code path as the CLI's ``load``, no start-up cost)."""
        self.target.load(self.emu, api_key=KEY)

    def kill_at(self, trigger: str, when: float, deadline: float = 60.0) -> tuple[float, str]:
        """Start a run and SIGKILL it at ``when`` s, or ``when`` s after a phase appears.

        Returns (seconds after start, phase at kill); phase ``finished`` if it ended first.
        """
        loaded_before = _packages(self.work / "load" / "loaded")
        proc = self.start()
        started = time.monotonic()
        try:
            if trigger == "time":
                try:
                    proc.wait(timeout=when)
                except subprocess.TimeoutExpired:
                    pass
            else:
                seen_at: float | None = None
                while proc.poll() is None and time.monotonic() - started < deadline:
                    if seen_at is None and _phase_reached(self.work, trigger, loaded_before):
                        seen_at = time.monotonic()
                    if seen_at is not None and time.monotonic() - seen_at >= when:
                        break
                    time.sleep(0.002)
            if proc.poll() is not None:
                assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
                return time.monotonic() - started, "finished"
            phase = phase_of(self.work, loaded_before)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return time.monotonic() - started, phase
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()

    def check(self) -> None:
        assert_equals_emulator(self.target, self.emu)
        assert not pending(self.work), pending(self.work)
        pipeline = self.target.pipeline()
        assert not pipeline.has_pending_data
        pipeline.sync_destination()  # the committed state, as the next run will see it
        scan = pipeline.state["sources"]["exa"]["resources"]["imports"]["last_scan"]
        live = [r["updated_at"] for r in self.target.rows() if r["_exa_deleted_at"] is None]
        assert scan["complete"] is True
        assert _ts(scan["max_updated_at"]) == _ts(max(live)), "the state does not describe the data"


def _phase_reached(work: Path, trigger: str, loaded_before: set[str]) -> bool:
    if trigger == "extract":
        return bool(_extracting(work))
    if trigger == "loaded":
        return bool(_packages(work / "load" / "loaded") - loaded_before)
    return bool(_packages(work / PHASE_FOLDERS[trigger]))


def _schedule(duration: float) -> list[tuple[str, float]]:
    """Kill points: 12 spread over an unkilled run's duration, 12 triggered by a phase."""
    timed = [("time", duration * (0.05 + 0.9 * i / 11)) for i in range(12)]
    phased = [
        ("extract", 0.0),
        ("extract", 0.4),
        ("extracted", 0.0),
        ("extracted", 0.0),
        ("normalize", 0.0),
        ("normalize", 0.0),
        ("load", 0.0),
        ("load", 0.02),
        ("load", 0.1),
        ("load", 0.3),
        ("loaded", 0.0),
        ("loaded", 0.05),
    ]
    mixed: list[tuple[str, float]] = []
    for i in range(max(len(timed), len(phased))):
        mixed += timed[i : i + 1] + phased[i : i + 1]
    return mixed


@pytest.mark.slow
def test_sigkill_at_any_point_then_rerun_equals_emulator(tmp_path: Path) -> None:
    with Emulator(api_key=KEY, imports=IMPORTS).start() as emu:
        crash = Crash(emu, tmp_path)
        crash.rerun()  # the initial full load
        emu.store.mutate(update=3_000, create=20, seed=100)
        duration = crash.run_clean()
        crash.check()

        points: list[KillPoint] = []
        finished = 0  # runs that ended before their kill point
        for i, (trigger, when) in enumerate(_schedule(duration)):
            changed_before = i % 3 != 2
            if changed_before:
                emu.store.mutate(update=2_000, create=10, delete=3, advance=5, seed=i)
            # a run can end before its kill point (a quiet machine runs faster than the
            # measured run did): check it, then try again earlier, up to 4 times
            for attempt in range(4):
                at = when * 0.5**attempt
                killed_after, phase = crash.kill_at(trigger, at)
                if phase != "finished":
                    break
                crash.check()
                finished += 1
            if phase == "finished":
                continue
            at_kill = pending(crash.work)
            changed_after = i % 4 == 1
            if changed_after:
                emu.store.mutate(update=50, create=2, delete=1, seed=1000 + i)
            emu.reset_stats()
            crash.rerun()
            # finishes what the kill left, then reads the API: one rerun suffices
            read_api = emu.stats.requests[LIST] > 0
            assert read_api, (trigger, phase, at_kill)
            assert_equals_emulator(crash.target, emu)
            crash.check()
            points.append(
                KillPoint(
                    trigger=f"{trigger}+{at:.2f}s",
                    killed_after=round(killed_after, 2),
                    phase=phase,
                    pending_at_kill=at_kill,
                    changed_before=changed_before,
                    changed_after_kill=changed_after,
                    first_rerun_read_api=read_api,
                )
            )

        # the dlt CLI agrees: nothing pending
        info = subprocess.run(
            [str(BIN / "dlt"), "pipeline", "--pipelines-dir", str(crash.pipes), PIPELINE, "info"],
            capture_output=True,
            text=True,
            env=crash.env,
        )
        assert info.returncode == 0, info.stderr
        assert "packages ready to be" not in info.stdout, info.stdout
        assert "completed load packages" in info.stdout

    phases = Counter(p.phase for p in points)
    report = {
        "unkilled_run_seconds": round(duration, 2),
        "kill_points": len(points),
        "runs_that_ended_before_their_kill_point": finished,
        "phases": dict(phases),
        "points": [asdict(p) for p in points],
        "dlt_info": info.stdout[-2000:],
    }
    (tmp_path / "kills.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "points"}, indent=1))
    for p in points:
        print(asdict(p))
    assert len(points) >= 20
    assert {"extract", "load"} <= set(phases), phases
    assert phases["normalize"] + phases["extracted"] >= 1, phases


def test_kill_inside_normalize_commit_does_not_block_later_runs(tmp_path: Path) -> None:
    """Reproduce, without timing, the folder state SIGKILL leaves inside normalize's commit."""
    with Emulator(api_key=KEY, imports=500).start() as emu:
        crash = Crash(emu, tmp_path)
        crash.target.load(emu, api_key=KEY)
        emu.store.mutate(update=20, create=3, seed=1)
        pipeline = crash.target.pipeline()
        from exa_source.source import exa_websets_source

        pipeline.extract(exa_websets_source(api_key=KEY, base_url=emu.base_url))
        (load_id,) = pipeline.list_extracted_load_packages()
        extracted = crash.work / "normalize" / "extracted" / load_id
        shutil.copytree(extracted, tmp_path / "copy")
        pipeline.normalize()
        shutil.copytree(tmp_path / "copy", extracted)  # the delete never happened
        assert set(pipeline.list_normalized_load_packages()) == {load_id}

        crash.target.load(emu, api_key=KEY)  # dlt: OSError Directory not empty, every time
        crash.target.load(emu, api_key=KEY)
        crash.check()
