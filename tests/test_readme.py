"""Every command the README's quick start and "After the demo" show works as written.

The commands run in a copy of the clone's top level (``dev.py``, ``pyproject.toml``,
``README.md``) whose ``.venv`` points at this test run's environment, already installed (its
stamp matches ``pyproject.toml``, so ``dev.py`` installs nothing). First without a key, the way
a newcomer runs them (``python3 dev.py run`` = the demo), then with a key and the emulator as
the "real" API (``SOURCES__EXA__BASE_URL``), the way they run after a real load.
``python3 dev.py test ...`` is not run: it would run this suite inside itself.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KEY, keyless_env, printed_commands

from exa_source.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
QUICK_START = "## Quick start"
AFTER_DEMO = "## After the demo"
#: In "After the demo": the commands after this phrase need a real load.
AFTER_REAL_LOAD = "After a real load"
#: What a shown command starts with (inline code naming a command, e.g. `exa-source load`, is
#: prose; the README shows runnable commands with the path that works from the clone).
RUNNABLE = ("python3 dev.py ", ".venv/bin/")


def section(heading: str) -> str:
    """The README's text from ``heading`` to the next ``## `` heading."""
    start = README.index(f"\n{heading}") + 1
    end = README.find("\n## ", start + len(heading))
    return README[start : end if end > 0 else len(README)]


def commands(text: str) -> list[str]:
    """The shell commands ``text`` shows: lines of ```bash blocks, then runnable inline code."""
    found: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command:
                found.append(command)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [c for c in re.findall(r"`([^`\n]+)`", prose) if c.startswith(RUNNABLE)]
    return [c for c in dict.fromkeys(found) if not c.startswith("python3 dev.py test")]


def test_the_readme_shows_the_commands_this_test_runs() -> None:
    quick = commands(section(QUICK_START))
    assert quick[0] == "python3 dev.py run"
    assert "python3 dev.py run --full-refresh" in quick
    demo, real = section(AFTER_DEMO).split(AFTER_REAL_LOAD, 1)
    shown = commands(demo)
    assert ".venv/bin/exa-source report --duckdb-path exa_demo.duckdb" in shown
    assert any(c.startswith(".venv/bin/dlt pipeline") and c.endswith(" info") for c in shown)
    assert ".venv/bin/exa-source --help" in shown
    assert ".venv/bin/exa-source emulator --help" in shown
    assert ".venv/bin/exa-source report" in commands(real)


def test_the_first_screen_says_what_it_is_for_and_what_the_commands_leave() -> None:
    first = README[: README.index(AFTER_DEMO)]
    for words in (
        "An *import* is",
        "CSV file",
        "into a warehouse table",
        "BI",
        "./exa.duckdb",
        "./exa_demo.duckdb",
        ".exa_demo_pipelines/",
        "What each leaves behind",
    ):
        assert words in first, words


def _clone(tmp_path: Path) -> Path:
    """A copy of the clone's top level whose ``.venv`` is this environment, marked installed."""
    real = Path(sys.prefix)
    if real == Path(sys.base_prefix) or not (real / "pyvenv.cfg").exists():
        pytest.skip("needs the tests to run from a venv (python3 dev.py test makes one)")
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("dev.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, clone / name)
    venv = clone / ".venv"
    (venv / "bin").mkdir(parents=True)
    shutil.copy(real / "pyvenv.cfg", venv / "pyvenv.cfg")
    for name in ("lib", "lib64"):
        if (real / name).exists():
            (venv / name).symlink_to(real / name)
    for entry in (real / "bin").iterdir():
        (venv / "bin" / entry.name).symlink_to(entry)
    digest = hashlib.sha256((clone / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".installed").write_text(digest)  # dev.py run: nothing to install
    return clone


def _sh(
    command: str, cwd: Path, env: dict[str, str], expect: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"$ {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if expect is not None:
        assert expect in done.stdout, f"$ {command}\n{done.stdout[-3000:]}"
    return done


@pytest.mark.slow
def test_every_command_shown_works_after_the_demo_and_after_a_real_load(
    tmp_path: Path, emulator: Emulator
) -> None:
    clone = _clone(tmp_path)
    base = keyless_env()
    base["DLT_DATA_DIR"] = str(tmp_path / "dlt_home")  # dlt's default pipelines folder
    base["TMPDIR"] = str(tmp_path / "systemp")
    (tmp_path / "systemp").mkdir()
    quick = commands(section(QUICK_START))
    after_demo, after_real = (commands(t) for t in section(AFTER_DEMO).split(AFTER_REAL_LOAD))

    # a newcomer: no key
    first = _sh(quick[0], clone, base, expect="Demo of exa-source")
    assert sorted(p.name for p in clone.iterdir()) == sorted(
        [".exa_demo_pipelines", ".venv", "README.md", "dev.py", "exa_demo.duckdb", "pyproject.toml"]
    )
    assert list((tmp_path / "systemp").iterdir()) == []
    for command in [*quick[1:], *after_demo, *printed_commands(first.stdout)]:
        _sh(command, clone, base)

    # with a key: the emulator plays the real API
    keyed = {**base, "SOURCES__EXA__API_KEY": KEY, "SOURCES__EXA__BASE_URL": emulator.base_url}
    _sh(quick[0], clone, keyed, expect="Loaded 1,000 new or changed imports")
    assert (clone / "exa.duckdb").is_file()
    for command in [*quick[1:], *after_demo, *after_real]:
        _sh(command, clone, keyed)
