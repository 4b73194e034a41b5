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


def test_recovery_removes_a_killed_extract_folder_and_temp_files(tmp_path: Path) -> None:
    """A SIGKILL during extract leaves ``normalize/<16 hex>/`` with partial files (54 MB seen),
    during a normalize commit a 0-byte temp file in ``load/normalized``; neither was removed."""
    from conftest import KEY

    from exa_source.emulator import Emulator
    from exa_source.pipeline import make_pipeline, run_load

    with Emulator(api_key=KEY, imports=50).start() as emu:
        pipeline = make_pipeline(
            duckdb_path=str(tmp_path / "x.duckdb"), pipelines_dir=str(tmp_path / "p")
        )
        run_load(pipeline, api_key=KEY, base_url=emu.base_url)
        work = Path(pipeline.working_dir)
        killed = work / "normalize" / "0f1e2d3c4b5a6978" / "new_jobs"
        killed.mkdir(parents=True)
        (killed / "imports.abc.0.parquet").write_bytes(b"x" * 1_000_000)
        (work / "load" / "normalized" / "1795887000.123.tmp").write_bytes(b"")
        emu.store.mutate(update=4, seed=2)
        assert run_load(pipeline, api_key=KEY, base_url=emu.base_url).rows_loaded == 4
        assert sorted(p.name for p in (work / "normalize").iterdir()) == [".version", "extracted"]
        assert not list((work / "load" / "normalized").iterdir())
