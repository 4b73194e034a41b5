"""Options: where the key comes from, and the checks every option passes before any request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import KEY, keyless_env

from exa_source import ExaConfigError, exa_websets_source
from exa_source.config import resolve_api_key
from exa_source.emulator import Emulator


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().endswith("API_KEY"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_key_resolution_order(no_key: pytest.MonkeyPatch) -> None:
    assert resolve_api_key() is None
    no_key.setenv("EXA_API_KEY", "from-env")
    assert resolve_api_key() == "from-env"
    no_key.setenv("SOURCES__EXA__API_KEY", "from-dlt")
    assert resolve_api_key() == "from-dlt"
    assert resolve_api_key("explicit") == "explicit"
    assert resolve_api_key("  ") == "from-dlt"  # blank is "not given"


def _key_seen_by_the_source(monkeypatch: pytest.MonkeyPatch) -> str:
    """Build the source with no explicit key and return the key its HTTP client got."""
    import exa_source.source as source_module

    seen: list[str] = []

    class Client:
        def __init__(self, base_url: str, api_key: str, **bounds: Any) -> None:
            seen.append(api_key)

    monkeypatch.setattr(source_module, "ExaRESTClient", Client)
    exa_websets_source(base_url="http://127.0.0.1:9")
    return seen[0]


def test_the_source_reads_sources_exa_not_sources_source_exa(no_key: pytest.MonkeyPatch) -> None:
    """The source lives in module ``source``: without an explicit section dlt would look up
    ``sources.source.exa`` first. The documented section is ``sources.exa``."""
    no_key.setenv("SOURCES__SOURCE__EXA__API_KEY", "module-scoped")
    no_key.setenv("SOURCES__EXA__API_KEY", "documented")
    assert _key_seen_by_the_source(no_key) == "documented"


def test_exa_api_key_works_when_the_source_is_used_directly(no_key: pytest.MonkeyPatch) -> None:
    no_key.setenv("EXA_API_KEY", "what-the-sdks-read")
    assert _key_seen_by_the_source(no_key) == "what-the-sdks-read"


def test_no_key_anywhere_is_a_config_error(no_key: pytest.MonkeyPatch) -> None:
    with pytest.raises(ExaConfigError, match="SOURCES__EXA__API_KEY"):
        exa_websets_source(base_url="http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("page_size", 0, "outside 1-200"),
        ("page_size", 201, "outside 1-200"),
        ("page_size", True, "must be an integer"),
        ("base_url", "http://api.example.com", "non-loopback"),
        ("base_url", "ftp://x", "not an http"),
        ("initial_updated_at", "yesterday", "not an ISO-8601"),
        ("deletions", "purge", "soft, hard, off"),
        ("event_types", "monitor run", "is not an event type"),
        ("event_types", 5, "must be a list of event types"),
        ("event_types", '["monitor.created"', "not a valid JSON list"),
    ],
)
def test_bad_options_fail_before_any_request(option: str, value: Any, message: str) -> None:
    options: dict[str, Any] = {"api_key": KEY, "base_url": "http://127.0.0.1:9", option: value}
    with pytest.raises(ExaConfigError, match=message):
        exa_websets_source(**options)


def test_importing_the_package_changes_no_global_state() -> None:
    """No logger filter, no environment variable, no frozen garbage collector on import."""
    probe = """
import gc, logging, os, sys
before_env = dict(os.environ)
import exa_source, exa_source.pipeline, exa_source.warehouse, exa_source.sync
loggers = [logging.getLogger(n) for n in ("", "dlt", "exa_source")]
assert not any(lg.filters for lg in loggers), [lg.filters for lg in loggers]
assert dict(os.environ) == before_env, set(os.environ) ^ set(before_env)
assert gc.get_freeze_count() == 0, gc.get_freeze_count()
print("clean")
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize("where", ["SOURCES__EXA__API_KEY", "EXA_API_KEY", "secrets.toml"])
def test_a_key_with_a_trailing_newline_is_stripped_and_never_echoed(
    where: str, tmp_path: Path, emulator: Emulator
) -> None:
    """Pasted keys carry newlines. Before, requests quoted ``'KEY\\n'`` in its error, which
    went to the terminal and into dlt's trace.pickle; the key works once stripped."""
    env = keyless_env()
    if where == "secrets.toml":
        (tmp_path / ".dlt").mkdir()
        (tmp_path / ".dlt" / "secrets.toml").write_text(f'[sources.exa]\napi_key = "{KEY}\\n"\n')
    else:
        env[where] = f"  {KEY}\n"
    pipes = tmp_path / "pipelines"
    args = ["load", "--base-url", emulator.base_url, "--pipelines-dir", str(pipes)]
    done = subprocess.run(
        [str(Path(sys.executable).parent / "exa-source"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Loaded 1,000 new or changed imports" in done.stdout
    assert KEY not in done.stdout + done.stderr
    assert _files_holding(pipes, KEY.encode()) == []


@pytest.mark.parametrize("bad", [f"{KEY[:5]}\n{KEY[5:]}", f"{KEY}\x00", f"{KEY[:3]}\x1b[2J", "ké"])
def test_a_key_with_a_control_character_exits_2_without_showing_it(
    bad: str, tmp_path: Path
) -> None:
    env = keyless_env()
    (tmp_path / ".dlt").mkdir()
    escaped = bad.encode("unicode_escape").decode().replace('"', '\\"')
    (tmp_path / ".dlt" / "secrets.toml").write_text(f'[sources.exa]\napi_key = "{escaped}"\n')
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "exa-source"),
            "load",
            "--base-url",
            "http://127.0.0.1:9",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot travel in an HTTP header" in lines[0]
    for part in (bad, bad.strip()[:8], KEY[:8]) if bad != "ké" else ("ké",):
        assert part not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("all", None),
        ("", None),
        ("monitor.run.created, monitor.created", ("monitor.created", "monitor.run.created")),
        (["webset.item.created"], ("webset.item.created",)),
        ('["monitor.created", "monitor.created"]', ("monitor.created",)),
    ],
)
def test_event_types_take_a_list_a_comma_string_or_a_json_list(value: Any, expected: Any) -> None:
    from exa_source.config import validate_event_types

    assert validate_event_types(value) == expected


def test_event_types_from_the_environment_reach_the_source(
    no_key: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``SOURCES__EXA__EVENT_TYPES`` as dlt passes it: a comma string or a JSON list."""
    from exa_source.emulator.store import SEED_ANCHOR
    from exa_source.pipeline import make_pipeline, run_load

    emu = Emulator(api_key=KEY, websets=1, items_per_webset=2, monitors=2)
    emu.store.clock.set(SEED_ANCHOR)
    with emu:
        for i, value in enumerate(("monitor.created,monitor.run.created", '["monitor.created"]')):
            no_key.setenv("SOURCES__EXA__EVENT_TYPES", value)
            pipeline = make_pipeline(
                "duckdb", str(tmp_path / f"{i}.duckdb"), pipelines_dir=str(tmp_path / f"p{i}")
            )
            run_load(pipeline, api_key=KEY, base_url=emu.base_url, resources=("events",))
            with pipeline.sql_client() as client:
                table = client.make_qualified_table_name("events")
                rows = client.execute_sql(f"select distinct type from {table} order by 1")
            assert [r[0] for r in rows or []] == sorted(
                value.strip('[]"').replace('"', "").split(",")
            )
