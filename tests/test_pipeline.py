"""Pipeline helpers: destinations and unwrapping dlt's errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from exa_source import ExaAuthError, ExaConfigError
from exa_source.pipeline import make_destination, unwrap


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
