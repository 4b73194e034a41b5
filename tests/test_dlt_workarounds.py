"""dlt workarounds: what a killed run leaves in the pipeline folder is cleaned up."""

from __future__ import annotations

from pathlib import Path


def test_recovery_removes_what_a_killed_normalize_leaves_in_load_new(tmp_path: Path) -> None:
    from conftest import KEY

    from exa_source.dlt_workarounds import recover_interrupted_run
    from exa_source.emulator import Emulator
    from exa_source.pipeline import make_pipeline, run_load

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
