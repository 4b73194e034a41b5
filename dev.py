#!/usr/bin/env python3
"""Set up and run exa-source from a fresh clone with nothing but python3.

    python3 dev.py run [args]    create .venv, install, then load into exa.duckdb
                                 (`exa-source load` with a key, `exa-source demo` without)
    python3 dev.py test [args]   create .venv, install everything, run the whole test suite

Installs with uv (fetched from PyPI into the venv; ~2 s) and falls back to pip. Reinstalls only
when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
EXTRAS = {"run": "", "test": "[test,postgres,airflow,bench]"}


def _sh(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def ensure_venv(extras: str) -> None:
    """Create .venv and install the project with ``extras`` unless already done."""
    stamp = VENV / f".installed{extras}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not PY.exists():
        print(f"dev.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"dev.py: installing exa-source{extras} into {VENV}", flush=True)
    target = f"-e.{extras}"
    try:
        _sh(PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "uv")
        # compile bytecode now: where PYTHONDONTWRITEBYTECODE is set (CI images often do), every
        # process would otherwise compile dlt, pandas and Airflow from source (~1-2 s each)
        _sh(BIN / "uv", "pip", "install", "-q", "--compile-bytecode", "--python", PY, target)
    except (subprocess.CalledProcessError, FileNotFoundError):
        _sh(PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", target)
    stamp.write_text(digest)


def has_key() -> bool:
    """True when an Exa key is configured: asks the package's own resolver (exa_source.config)."""
    probe = (
        "import sys; from exa_source.config import resolve_api_key; sys.exit(not resolve_api_key())"
    )
    env = {**os.environ, "PROVIDERS__ENABLE_AIRFLOW_SECRETS": "false"}
    return subprocess.run([str(PY), "-c", probe], cwd=ROOT, env=env).returncode == 0


def main(argv: list[str]) -> int:
    """Entry point: ``run`` or ``test``, then arguments passed through."""
    if not argv or argv[0] not in EXTRAS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv(EXTRAS[command])
    if command == "test":
        cmd = [str(PY), "-m", "pytest", *rest]
    else:
        sub = "load" if has_key() else "demo"
        if sub == "demo":
            print("dev.py: no Exa API key set: running the demo against the bundled emulator")
        cmd = [str(BIN / "exa-source"), sub, *rest]
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
