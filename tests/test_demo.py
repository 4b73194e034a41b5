"""``exa-source demo``, run as a newcomer would: a subprocess with no key, in an empty folder."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import keyless_env, printed_commands

BIN = Path(sys.executable).parent


def run_demo(
    cwd: Path, *args: str, tmpdir: Path | None = None, log_level: str | None = None
) -> subprocess.CompletedProcess[str]:
    clean = keyless_env()
    if tmpdir is not None:
        clean["TMPDIR"] = str(tmpdir)
    top = ["--log-level", log_level] if log_level else []
    return subprocess.run(
        [str(BIN / "exa-source"), *top, "demo", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
    )


def loaded(out: str) -> list[int]:
    """The N of every ``Loaded N new or changed imports`` line."""
    return [int(n.replace(",", "")) for n in re.findall(r"Loaded ([\d,]+) new or changed", out)]


def narrated(out: str) -> tuple[int, int]:
    """What the demo says it changed in Exa: (imports changed, imports deleted)."""
    found = re.search(r"Meanwhile in Exa: ([\d,]+) imports changed .* and ([\d,]+) deleted", out)
    assert found, out
    changed, deleted = (int(g.replace(",", "")) for g in found.groups())
    return changed, deleted


def deleted_in_exa(out: str) -> list[int]:
    """The N of every ``; N deleted in Exa`` the load summaries report, one per summary line."""
    lines = [line for line in out.splitlines() if "Loaded " in line]
    return [
        int(m.group(1).replace(",", ""))
        if (m := re.search(r"; ([\d,]+) deleted in Exa", line))
        else 0
        for line in lines
    ]


@pytest.fixture(scope="module")
def twice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str], list[str]]:
    """The demo run twice in one empty folder, with its own TMPDIR: (cwd, tmpdir, outs, errs)."""
    cwd = tmp_path_factory.mktemp("newcomer")
    tmpdir = tmp_path_factory.mktemp("systemp")
    outs, errs = [], []
    for _ in range(2):
        done = run_demo(cwd, "--imports", "400", tmpdir=tmpdir)
        assert done.returncode == 0, done.stdout + done.stderr
        outs.append(done.stdout)
        errs.append(done.stderr)
    return cwd, tmpdir, outs, errs


def test_the_narrated_changes_are_what_is_loaded(
    twice: tuple[Path, Path, list[str], list[str]],
) -> None:
    """Today the demo changes 50 imports (one both updated and advanced) and says Loaded 49."""
    for out in twice[2]:
        changed, deleted = narrated(out)
        assert loaded(out) == [400, changed], out
        assert deleted_in_exa(out) == [0, deleted], out  # deletions only when they happen
        assert deleted > 0


def test_the_second_run_says_the_same_as_the_first(
    twice: tuple[Path, Path, list[str], list[str]],
) -> None:
    def figures(out: str) -> list[str]:
        return [
            re.sub(r"in [\d.]+ s", "in S s", line) for line in out.splitlines() if "Loaded" in line
        ]

    first, second = twice[2]
    assert figures(first) == figures(second)


def test_pipeline_state_stays_next_to_the_duckdb_file_and_nothing_in_temp(
    twice: tuple[Path, Path, list[str], list[str]],
) -> None:
    cwd, tmpdir, outs, _ = twice
    assert (cwd / "exa_demo.duckdb").is_file()
    assert (cwd / ".exa_demo_pipelines" / "exa_websets_demo").is_dir()
    assert sorted(p.name for p in cwd.iterdir()) == [".exa_demo_pipelines", "exa_demo.duckdb"]
    assert list(tmpdir.iterdir()) == []  # no exa_demo_* folder left in the system temp dir
    out = outs[1]
    assert "exa_websets_demo" in out
    assert ".exa_demo_pipelines" in out


def test_user_output_is_plain_sentences_and_logs_stay_out(
    twice: tuple[Path, Path, list[str], list[str]],
) -> None:
    timestamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}")
    for out, err in zip(twice[2], twice[3], strict=True):
        assert not timestamp.search(out), out
        assert " INFO " not in err, err  # logs go to stderr at WARNING by default
        assert out.count("Loaded ") == 2  # each summary printed once


def test_log_level_brings_the_logs_back_on_stderr(tmp_path: Path) -> None:
    done = run_demo(tmp_path, "--imports", "50", log_level="INFO")
    assert done.returncode == 0, done.stderr
    assert " INFO exa_source" in done.stderr
    assert " INFO " not in done.stdout


def test_the_printed_commands_work_when_copy_pasted(
    twice: tuple[Path, Path, list[str], list[str]],
) -> None:
    cwd, _, outs, _ = twice
    commands = printed_commands(outs[1])
    assert any(" report " in c and "exa_demo.duckdb" in c for c in commands), commands
    assert any(" pipeline " in c and c.endswith(" info") for c in commands), commands
    clean = keyless_env()
    for command in commands:
        done = subprocess.run(
            shlex.split(command), cwd=cwd, env=clean, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if " report " in command:
            assert "import_status_summary" in done.stdout
        else:
            assert "exa_websets_demo" in done.stdout


@pytest.mark.parametrize(
    ("args", "expect", "deletions"),
    [
        # 100 imports (1 page of 200, or 5 of 20), 8 websets with a search and an enrichment
        # each, 2,000 items (3 pages of 100 per webset), the websets list and an events page;
        # 4 monitors with 5 runs each (one page each), 2 webhooks with 3 attempts each (one
        # page each), the monitors and webhooks lists and the event log (one page, empty: the
        # seeded events are older than the API's 60 days)
        (["--full-refresh"], "read 2,156 in 36 pages", True),
        (["--page-size", "20"], "read 2,156 in 40 pages", True),
        (["--deletions", "off"], "read 2,156 in 36 pages", False),
    ],
)
def test_demo_takes_the_load_options_that_make_sense(
    tmp_path: Path, args: list[str], expect: str, deletions: bool
) -> None:
    done = run_demo(tmp_path, "--imports", "100", *args)
    assert done.returncode == 0, done.stderr
    first = next(line for line in done.stdout.splitlines() if "Loaded " in line)
    assert expect in first, done.stdout
    changed, _ = narrated(done.stdout)
    assert loaded(done.stdout) == [100, changed]
    assert ("deleted in Exa" in done.stdout) is deletions
