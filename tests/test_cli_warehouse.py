"""CLI: ``exa-source report`` and ``exa-source dictionary``."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Target

from exa_source.cli import EXIT_CONFIG, EXIT_FAILED, main
from exa_source.emulator import Emulator
from exa_source.warehouse import (
    DAILY_VIEW,
    DICTIONARY_END,
    DICTIONARY_START,
    STATUS_VIEW,
    data_dictionary,
    format_table,
    summary,
)


def _target_args(target: Target, tmp_path: Path) -> list[str]:
    # A fresh pipelines dir: report needs only the destination, not the loader's local state.
    return [
        "--destination",
        target.destination,
        "--duckdb-path",
        target.duckdb_path or str(tmp_path / "unused.duckdb"),
        "--dataset",
        target.dataset,
        "--pipelines-dir",
        str(tmp_path / "report_pipelines"),
    ]


def test_report_prints_the_views_and_writes_a_chart(
    target: Target, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target.load(emulator)
    chart = tmp_path / "chart.png"
    code = main(["report", *_target_args(target, tmp_path), "--days", "3", "--chart", str(chart)])
    out = capsys.readouterr().out
    assert code == 0
    results = summary(target.pipeline())
    status = results[STATUS_VIEW]
    assert format_table(status.headers, status.rows) in out
    daily = results[DAILY_VIEW]
    assert format_table(daily.headers, daily.rows[-3:]) in out
    assert f"last 3 of {len(daily.rows)} days" in out
    current = results["imports_current"]
    assert current.rows[0][:2] == (len(emulator.store), len(emulator.store))
    assert format_table(current.headers, current.rows) in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000


def test_report_before_any_load_says_what_to_do(
    target: Target, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if target.destination == "duckdb":  # an existing database without the views
        target.pipeline().sql_client().open_connection()
    code = main(["report", *_target_args(target, tmp_path)])
    assert code == EXIT_CONFIG
    assert "exa-source load" in capsys.readouterr().err


def test_dictionary_prints_the_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dictionary"]) == 0
    assert capsys.readouterr().out == data_dictionary()


def test_dictionary_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{DICTIONARY_START}\n{data_dictionary()}{DICTIONARY_END}\n")
    assert main(["dictionary", "--check", str(readme)]) == 0
    readme.write_text(readme.read_text().replace("Last change", "Last edit"))
    assert main(["dictionary", "--check", str(readme)]) == EXIT_FAILED
    assert "differs" in capsys.readouterr().err


#: What a hostile API value looks like: an OSC sequence that retitles the terminal (ESC ... BEL),
#: a C1 CSI and a DEL.
HOSTILE = "\x1b]0;pwned\x07 Acme\x9b2J\x7f"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\x7f")


def test_report_renders_control_characters_from_the_api_visibly(
    target: Target, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `report` prints the entity types (import_status_summary): text that came from the API
    emulator.store.create({"type": HOSTILE, "description": HOSTILE}, title=HOSTILE, count=3)
    target.load(emulator)
    assert main(["report", *_target_args(target, tmp_path)]) == 0
    out = capsys.readouterr().out
    assert not [c for c in RAW_CONTROLS if c in out], repr(out)
    assert r"\x1b]0;pwned\x07 Acme\x9b2J\x7f" in out  # still recognisable


def test_error_messages_render_control_characters_visibly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from exa_source import cli
    from exa_source.exceptions import ExaAPIError

    def failing(args: object) -> int:
        raise ExaAPIError(f"Exa API error 500 on /websets/v0/imports: {HOSTILE}")

    monkeypatch.setattr(cli, "_load", failing)
    assert main(["load"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert not [c for c in RAW_CONTROLS if c in err], repr(err)
    assert r"error: Exa API error 500 on /websets/v0/imports: \x1b]0;pwned\x07 Acme" in err


def test_report_reads_the_item_and_health_views_from_the_warehouse_alone(
    target: Target, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No imports loaded, and a fresh pipelines dir: the views in the warehouse are printed."""
    from exa_source.emulator.store import SEED_ANCHOR

    emu = Emulator(websets=2, items_per_webset=5, monitors=2, webhooks=1)
    emu.store.clock.set(SEED_ANCHOR)
    with emu.start():
        emu.monitors.step_monitors(status="failed")
        emu.monitors.step_webhooks(successful=False)
        resources = ("websets", "webset_items", "monitors", "monitor_runs", "webhooks")
        target.load(emu, resources=(*resources, "webhook_attempts"), api_key=emu.api_key)
    code = main(["report", *_target_args(target, tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "monitor_run_health, all days, one line per monitor" in out
    assert "webhook_delivery_health, one line per webhook" in out
    assert "webset_items_current" in out
    webhook = emu.monitors.webhook_ids()[0]
    line = next(x for x in out.splitlines() if x.startswith(webhook))
    assert " 0.5 " in line  # 2 of 4 attempts failed, shown to 4 places
