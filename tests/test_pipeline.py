"""Pipeline helpers: destinations, key resolution, unwrapping dlt's errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from exa_source import ExaAuthError, ExaConfigError
from exa_source.pipeline import make_destination, resolve_api_key, unwrap


def test_duckdb_gets_an_explicit_absolute_path(tmp_path: Path) -> None:
    destination = make_destination("duckdb", str(tmp_path / "sub" / "x.duckdb"))
    assert destination.destination_name == "duckdb"
    assert (tmp_path / "sub").is_dir()


def test_duckdb_file_named_like_the_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExaConfigError, match="Ambiguous"):
        make_destination("duckdb", str(tmp_path / "exa_websets.duckdb"))


def test_unknown_destination_is_refused() -> None:
    with pytest.raises(ExaConfigError, match="unknown destination"):
        make_destination("nosuchdb")


def test_key_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCES__EXA__API_KEY", raising=False)
    monkeypatch.delenv("EXA_API_KEY", raising=False)
    assert resolve_api_key() is None
    monkeypatch.setenv("EXA_API_KEY", "from-env")
    assert resolve_api_key() == "from-env"
    monkeypatch.setenv("SOURCES__EXA__API_KEY", "from-dlt")
    assert resolve_api_key() == "from-dlt"
    assert resolve_api_key("explicit") == "explicit"


def test_unwrap_finds_the_exa_error_behind_dlt_wrappers() -> None:
    inner = ExaAuthError("rejected")
    try:
        try:
            raise inner
        except ExaAuthError as exc:
            raise RuntimeError("step failed") from exc
    except RuntimeError as outer:
        assert unwrap(outer) is inner
    plain = ValueError("x")
    assert unwrap(plain) is plain


def test_recovery_removes_what_a_killed_normalize_leaves_in_load_new(tmp_path: Path) -> None:
    from conftest import KEY

    from exa_source.emulator import Emulator
    from exa_source.pipeline import make_pipeline, recover_interrupted_run, run_load

    with Emulator(api_key=KEY, imports=50).start() as emu:
        pipeline = make_pipeline(
            duckdb_path=str(tmp_path / "x.duckdb"), pipelines_dir=str(tmp_path / "p")
        )
        run_load(pipeline, api_key=KEY, base_url=emu.base_url)
        new = Path(pipeline.working_dir) / "load" / "new"
        new.mkdir(parents=True, exist_ok=True)
        (new / "0123456789abcdef").write_text("half-saved")  # dlt's atomic-save temp file
        (new / "1795887000.123").mkdir()  # a package whose extracted copy is gone
        assert recover_interrupted_run(pipeline) is False  # nothing pending to load
        assert not list(new.iterdir())
        assert run_load(pipeline, api_key=KEY, base_url=emu.base_url).rows_read == 50
