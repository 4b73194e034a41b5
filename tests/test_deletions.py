"""Deletion detection: imports deleted in Exa are soft- or hard-deleted after a complete scan."""

from __future__ import annotations

import pytest
from conftest import Target, assert_equals_emulator

from exa_source import ExaAPIError, ExaConfigError, exa_websets_source
from exa_source.deletions import apply_deletions
from exa_source.emulator import Emulator, Fault

GONE = "select id, _exa_deleted_at from {table} where _exa_deleted_at is not null order by id"


def _delete(emu: Emulator, n: int) -> list[str]:
    return sorted(emu.store.mutate(delete=n, seed=5)["deleted"])


def test_soft_delete_is_the_default_and_keeps_history(target: Target, emulator: Emulator) -> None:
    target.load(emulator)
    gone = _delete(emulator, 10)

    summary = target.load(emulator)

    assert summary.rows_deleted == 10
    assert [r["id"] for r in target.rows(GONE)] == gone
    assert len(target.rows()) == 1_000  # the rows are kept, stamped
    assert_equals_emulator(target, emulator)  # live rows == the API
    # nothing new is gone: the next run stamps nothing and keeps the first stamps
    stamps = target.rows(GONE)
    assert target.load(emulator).rows_deleted == 0
    assert target.rows(GONE) == stamps


def test_hard_delete_removes_the_rows(target: Target, emulator: Emulator) -> None:
    target.load(emulator, deletions="hard")
    gone = _delete(emulator, 7)

    assert target.load(emulator, deletions="hard").rows_deleted == 7
    ids = {r["id"] for r in target.rows()}
    assert len(ids) == 993 and not ids & set(gone)
    assert_equals_emulator(target, emulator)


def test_off_leaves_deleted_rows_alone(target: Target, emulator: Emulator) -> None:
    target.load(emulator, deletions="off")
    _delete(emulator, 3)
    assert target.load(emulator, deletions="off").rows_deleted == 0
    assert len(target.rows()) == 1_000 and not target.rows(GONE)


def test_a_failed_scan_never_deletes(
    target: Target, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("RUNTIME__REQUEST_BACKOFF_FACTOR", "0.01")
    target.load(emulator, deletions="hard")
    _delete(emulator, 20)
    emulator.faults.add(Fault("status", status=503, skip=2, times=10))  # dies on page 3 of 5

    with pytest.raises(ExaAPIError):
        target.load(emulator, deletions="hard")

    assert len(target.rows()) == 1_000
    emulator.faults.clear()
    assert target.load(emulator, deletions="hard").rows_deleted == 20
    assert_equals_emulator(target, emulator)


def test_deletions_survive_a_crash_between_load_and_apply(
    target: Target, emulator: Emulator
) -> None:
    """The deleted ids are committed with the load; applying them again is harmless."""
    target.load(emulator)
    _delete(emulator, 4)
    pipeline = target.pipeline()
    pipeline.run(
        exa_websets_source(api_key="test-key-0123456789abcdef", base_url=emulator.base_url)
    )
    assert not target.rows(GONE)  # "crashed" before apply_deletions

    fresh = target.pipeline(pipelines_dir=target.pipelines_dir + "_new_worker")
    assert apply_deletions(fresh) == 0  # a new worker has no local state yet...
    fresh.sync_destination()
    assert apply_deletions(fresh) == 4  # ...the committed state carries the ids
    assert apply_deletions(fresh) == 4  # idempotent
    assert len(target.rows(GONE)) == 4
    assert_equals_emulator(target, emulator)


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ExaConfigError, match="soft, hard, off"):
        exa_websets_source(api_key="k", base_url="http://127.0.0.1:9", deletions="purge")
