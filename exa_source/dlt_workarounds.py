"""Workarounds for dlt behaviours that would break a scheduled load; each names its dlt versions.

Checked against dlt 1.31.0 (the version ``pyproject.toml`` allows from). Re-check each one when
raising the lower bound: if dlt fixes the behaviour, delete the workaround and its test
(``tests/test_dlt_workarounds.py``).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import dlt

logger = logging.getLogger(__name__)

#: The per-run folder dlt's extract writes into before it commits (``uniq_id(8)``).
_EXTRACT_FOLDER = re.compile(r"[0-9a-f]{16}")


def recover_interrupted_run(pipeline: dlt.Pipeline) -> bool:
    """Finish what a killed run left behind, so that this run starts from a clean folder.

    What a SIGKILL leaves in dlt 1.31's pipeline folder, and what is done about it:

    * a package killed inside normalize's commit: normalize renames ``load/new/<id>`` to
      ``load/normalized/<id>`` and only then deletes ``normalize/extracted/<id>``. Both copies
      survive and every later run fails with "Directory not empty". The normalized copy is
      complete, so the stale copies go;
    * temporary files and folders of dlt's atomic saves in ``load/new`` (0-byte files, folders
      whose extracted copy is gone) and temporary files in ``load/normalized``;
    * the folder of a killed extract: dlt extracts into ``normalize/<16 hex digits>/`` and
      moves the package to ``normalize/extracted/`` only when extraction completes; a killed
      extract leaves that folder with its partial files (54 MB seen) for good;
    * a package extracted or normalized but not loaded. ``pipeline.run(source)`` would load it
      *instead of* extracting the source, so changes made since wait for yet another run. It is
      loaded here first. (It is complete: its rows and deletion marks commit together.)

    Call it before ``pipeline.run(...)`` when driving the source from your own code, with no
    other run using the same pipeline folder; the CLI and the Airflow DAG do (through
    :func:`exa_source.pipeline.run_load`, which holds a lock on the folder).

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
    stale += [("normalize", i) for i in entries("normalize") if _EXTRACT_FOLDER.fullmatch(i)]
    # packages are folders; a file in load/normalized is a temp file of a killed atomic save
    stale += [("load/normalized", i) for i in entries("load/normalized") - normalized]
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


#: SQLSTATE classes that no retry can fix: 22 data exception (e.g. ``invalid byte sequence for
#: encoding "UTF8": 0x00``), 23 integrity constraint violation, 42 syntax error or access rule
#: violation (e.g. a column type the data does not fit).
_PERMANENT_SQLSTATE_CLASSES = frozenset(("22", "23", "42"))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (``__cause__``, else ``__context__``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, also when dlt wrapped it.

    The ``DatabaseTerminalException`` of a follow-up job carries the psycopg2 error as its cause.
    """
    codes = (getattr(e, "pgcode", None) for e in _causes(exc))
    return next((code for code in codes if isinstance(code, str)), None)


def permanent_load_failure(exc: BaseException) -> tuple[str, str] | None:
    """The table and one-line reason when a failed load step can never succeed, else None.

    dlt 1.31 retries every load job whose error is not one of its own terminal exceptions. A
    COPY that PostgreSQL rejects for its data (SQLSTATE class 22, 23 or 42) raises a raw
    psycopg2 error inside the job, so dlt keeps the package pending, and every later
    ``pipeline.run`` loads that package first, fails the same way, and never extracts again.
    A job dlt itself failed terminally (``LoadClientJobFailed``) counts as permanent too. A
    follow-up job (the merge SQL, e.g. a ``CHECK`` constraint a DBA added to the table) that
    fails raises ``LoadClientJobTerminalRetry``, which also leaves the package pending: it is
    judged by its SQLSTATE like a retried job.

    Returns:
        ``(table, reason)``: the job's table and the database's first message line.
    """
    from dlt.load.exceptions import (
        LoadClientJobFailed,
        LoadClientJobRetry,
        LoadClientJobTerminalRetry,
    )

    jobs = LoadClientJobFailed | LoadClientJobRetry | LoadClientJobTerminalRetry
    job = next((e for e in _causes(exc) if isinstance(e, jobs)), None)
    if job is None:
        return None
    cause: BaseException = job.client_exception
    code = _sqlstate(cause)
    permanent = isinstance(job, LoadClientJobFailed) or (
        isinstance(code, str) and code[:2] in _PERMANENT_SQLSTATE_CLASSES
    )
    if not permanent:
        return None
    table = str(job.job_id).split(".", 1)[0]
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    return table, f"{type(cause).__name__}: {lines[0]}"
