"""Workarounds for dlt behaviours that would break a scheduled load; each names its dlt versions.

Checked against dlt 1.31.0 (the version ``pyproject.toml`` allows from). Re-check each one when
raising the lower bound: if dlt fixes the behaviour, delete the workaround and its test
(``tests/test_dlt_workarounds.py``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import dlt

logger = logging.getLogger(__name__)


def recover_interrupted_run(pipeline: dlt.Pipeline) -> bool:
    """Finish what a killed run left behind, so that this run starts from a clean folder.

    What a SIGKILL leaves in dlt 1.31's pipeline folder, and what is done about it:

    * a package killed inside normalize's commit: normalize renames ``load/new/<id>`` to
      ``load/normalized/<id>`` and only then deletes ``normalize/extracted/<id>``. Both copies
      survive and every later run fails with "Directory not empty". The normalized copy is
      complete, so the stale copies go;
    * temporary files and folders of dlt's atomic saves in ``load/new`` (0-byte files, folders
      whose extracted copy is gone);
    * a package extracted or normalized but not loaded. ``pipeline.run(source)`` would load it
      *instead of* extracting the source, so changes made since wait for yet another run. It is
      loaded here first. (It is complete: its rows and deletion marks commit together.)

    Call it before ``pipeline.run(...)`` when driving the source from your own code; the CLI
    and the Airflow DAG do (through :func:`exa_source.pipeline.run_load`).

    Returns:
        True when a pending package was loaded.
    """
    work = Path(pipeline.working_dir)

    def entries(sub: str) -> set[str]:
        return {p.name for p in (work / sub).glob("*")}

    normalized = set(pipeline.list_normalized_load_packages())
    stale = [("normalize/extracted", i) for i in entries("normalize/extracted") & normalized]
    # load/new holds a package only while its extracted copy exists; anything else there is
    # a committed duplicate, or a temp folder or temp file (dlt's atomic save) of a killed run
    stale += [("load/new", i) for i in entries("load/new") - entries("normalize/extracted")]
    for sub, name in stale:
        logger.warning("removing %s/%s, left behind by a killed run", sub, name)
        path = work / sub / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if not pipeline.has_pending_data:
        return False
    logger.warning("loading the packages left by an interrupted run before extracting anew")
    pipeline.run()
    return True
