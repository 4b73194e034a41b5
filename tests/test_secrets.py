"""Secret hygiene: the API key appears nowhere the connector writes, even at DEBUG.

The CLI runs as a subprocess (real stdout/stderr) through success and failure paths with dlt and
exa_source at DEBUG; then stdout, stderr, every file of the pipeline folder (state, schemas,
traces, load packages, gzip members and Parquet files decoded as well), the DuckDB tables and a
PostgreSQL dataset (pipeline state decompressed) are searched for the key.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import os
import subprocess
import sys
import uuid
import zlib
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from conftest import PG_DSN, keyless_env, postgres_available

from exa_source.emulator import Emulator, Fault
from exa_source.pipeline import make_pipeline

KEY = "sk-exa-LEAKCHECK-3f9a1c7e5b2d"
WRONG = "sk-exa-WRONGKEY-8e6d4c2a0f1b"
BIN = Path(sys.executable).parent


def _variants(secret: str) -> list[bytes]:
    """The key as text, plus the shapes a log or a pickle might give it."""
    raw = secret.encode()
    return [raw, secret[4:20].encode(), orjson.dumps(secret), raw.hex().encode()]


def _decoded(path: Path, data: bytes) -> list[bytes]:
    """The file's bytes plus its decoded forms (gzip members, Parquet values)."""
    out = [data]
    if data[:2] == b"\x1f\x8b":
        out.append(gzip.decompress(data))
    if path.suffix == ".parquet":
        out.append(str(pq.read_table(path).to_pylist()).encode())
    return out


def _hits(blobs: dict[str, bytes], secrets: list[str]) -> list[str]:
    found = []
    for where, blob in blobs.items():
        for secret in secrets:
            if any(v in blob for v in _variants(secret)):
                found.append(f"{secret[:10]}... in {where}")
    return found


def _tables_as_text(pipeline: Any) -> bytes:
    """Every row of every table of the dataset (and its staging dataset), state decompressed."""
    chunks: list[bytes] = []
    with pipeline.sql_client() as client:
        for dataset in (pipeline.dataset_name, f"{pipeline.dataset_name}_staging"):
            sql = "select table_name from information_schema.tables where table_schema = %s"
            tables = [r[0] for r in client.execute_sql(sql, dataset) or []]
            for table in tables:
                rows = client.execute_sql(f'select * from "{dataset}"."{table}"') or []
                for row in rows:
                    chunks.append(repr(row).encode())
                    for value in row:
                        if isinstance(value, str) and table == "_dlt_pipeline_state":
                            with contextlib.suppress(ValueError, zlib.error):
                                chunks.append(zlib.decompress(base64.b64decode(value)))
    return b"\n".join(chunks)


def _databases(
    tmp_path: Path, duck: Path, pg_dataset: str | None, monkeypatch: pytest.MonkeyPatch
) -> dict[str, bytes]:
    """The DuckDB tables and (if given) the PostgreSQL dataset's as text; drops the dataset."""
    duck_pipeline = make_pipeline(
        "duckdb", str(duck), pipeline_name="exa_websets", pipelines_dir=str(tmp_path / "p2")
    )
    databases = {"duckdb tables": _tables_as_text(duck_pipeline)}
    if pg_dataset is not None:
        monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", PG_DSN)
        pg_pipeline = make_pipeline(
            "postgres",
            dataset=pg_dataset,
            pipeline_name="exa_websets_pg_check",
            pipelines_dir=str(tmp_path / "p3"),
        )
        try:
            databases["postgres tables"] = _tables_as_text(pg_pipeline)
        finally:
            import psycopg2

            with psycopg2.connect(PG_DSN) as conn, conn.cursor() as cur:
                cur.execute(f'drop schema if exists "{pg_dataset}" cascade')
                cur.execute(f'drop schema if exists "{pg_dataset}_staging" cascade')
    return databases


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "exa-source"), "--log-level", "DEBUG", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        timeout=300,
    )


def test_the_key_leaks_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = keyless_env()
    base_env = {
        **clean,
        "RUNTIME__LOG_LEVEL": "DEBUG",
        "RUNTIME__REQUEST_MAX_ATTEMPTS": "2",
        "RUNTIME__REQUEST_BACKOFF_FACTOR": "0.01",
        "RUNTIME__REQUEST_MAX_RETRY_DELAY": "1",
    }
    pipes = tmp_path / "pipelines"
    duck = tmp_path / "exa.duckdb"
    common = ["--pipelines-dir", str(pipes), "--duckdb-path", str(duck)]
    outputs: dict[str, bytes] = {}
    pg_why = postgres_available()
    pg_dataset = f"t_secret_{uuid.uuid4().hex[:8]}"

    with Emulator(api_key=KEY, imports=500).start() as emu:
        load = ["load", "--base-url", emu.base_url, *common]
        good = {**base_env, "SOURCES__EXA__API_KEY": KEY}
        steps: list[tuple[str, dict[str, str], list[str], int, Fault | None]] = [
            ("good load", good, load, 0, None),
            ("rejected key", {**base_env, "EXA_API_KEY": WRONG}, load, 1, None),
            ("5xx exhaustion", good, load, 1, Fault("status", status=503, times=10)),
            ("bad record", good, load, 1, None),
            ("good load again", good, load, 0, None),
        ]
        if pg_why is None:
            pg = [
                "load",
                "--base-url",
                emu.base_url,
                "--destination",
                "postgres",
                "--dataset",
                pg_dataset,
                "--pipelines-dir",
                str(pipes),
            ]
            pg_env = {**good, "DESTINATION__POSTGRES__CREDENTIALS": PG_DSN}
            steps.append(("postgres load", pg_env, pg, 0, None))
        for name, env, args, code, fault in steps:
            emu.faults.clear()
            if fault is not None:
                emu.faults.add(fault)
            if name == "bad record":
                page = orjson.loads(emu.store.page(None, 200, emu.quirk_last_page).to_json())
                page["data"][0]["updatedAt"] = "not a time"
                emu.faults.add(Fault("status", status=200, body=page))
            done = _run(args, env, tmp_path)
            assert done.returncode == code, (name, done.stderr[-2000:])
            outputs[f"{name}: stdout"] = done.stdout
            outputs[f"{name}: stderr"] = done.stderr
        # DEBUG really was on: dlt's REST client logged each request, with its headers, at
        # DEBUG (dlt's format: `...|[DEBUG]|<pid>|<thread>|dlt|client.py|_log_request:...`)
        stderr = b"".join(v for k, v in outputs.items() if k.endswith("stderr"))
        requests_logged = [
            line
            for line in stderr.splitlines()
            if b"|[DEBUG]|" in line and b"|dlt|" in line and b"Making GET request" in line
        ]
        assert requests_logged, stderr[-3000:]
        assert all(b"headers=" in line for line in requests_logged), requests_logged[0]
        assert b"unparseable updatedAt" in outputs["bad record: stderr"]
        assert b"kept failing after 2 attempts" in outputs["5xx exhaustion: stderr"]

    files: dict[str, bytes] = {}
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        for i, blob in enumerate(_decoded(path, path.read_bytes())):
            files[f"{path.relative_to(tmp_path)}#{i}"] = blob
    assert any("trace.pickle" in f for f in files), "no trace written?"
    assert any("load/loaded" in f for f in files)

    databases = _databases(tmp_path, duck, pg_dataset if pg_why is None else None, monkeypatch)
    if pg_why is None:
        assert b"import_" in databases["postgres tables"]
    assert b"import_" in databases["duckdb tables"]
    assert b"last_scan" in databases["duckdb tables"], "pipeline state was not decompressed"
    # the search itself finds a planted key (positive control)
    assert _hits({"control": b"x-api-key: " + KEY.encode()}, [KEY])

    leaks = _hits({**outputs, **files, **databases}, [KEY, WRONG])
    assert not leaks, leaks
    if pg_why is not None and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required under CI: {pg_why}")


def test_a_webhook_secret_is_stored_shown_and_logged_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook's signing secret, returned on creation and (here) on every list, is kept nowhere.

    The webhook's URL carries a planted control token: it must be found in the outputs (the
    report prints it), the pipeline folder and the tables, so the same search proves it would
    have found the secret.
    """
    import requests

    from exa_source.emulator.store import SEED_ANCHOR

    control = f"ctl{uuid.uuid4().hex[:16]}"
    clean = keyless_env()
    env = {**clean, "RUNTIME__LOG_LEVEL": "DEBUG", "SOURCES__EXA__API_KEY": KEY}
    pipes = tmp_path / "pipelines"
    duck = tmp_path / "exa.duckdb"
    common = ["--pipelines-dir", str(pipes), "--duckdb-path", str(duck)]
    pg_why = postgres_available()
    pg_dataset = f"t_whsec_{uuid.uuid4().hex[:8]}"
    outputs: dict[str, bytes] = {}
    emu = Emulator(api_key=KEY, websets=2, items_per_webset=5, monitors=2, webhooks=1, seed=4)
    emu.store.clock.set(SEED_ANCHOR)
    with emu.start():
        reply = requests.post(
            f"{emu.base_url}/websets/v0/webhooks",
            headers={"x-api-key": KEY},
            json={
                "events": ["monitor.run.completed"],
                "url": f"https://hooks.example.com/{control}",
            },
            timeout=10,
        )
        reply.raise_for_status()
        webhook = reply.json()
        secret = webhook["secret"]
        assert secret and secret.startswith("whsec_")
        # the API documents the secret on creation only; here it comes with every list too
        emu.monitors._webhooks[webhook["id"]]["secret"] = secret
        listed = requests.get(
            f"{emu.base_url}/websets/v0/webhooks", headers={"x-api-key": KEY}, timeout=10
        )
        assert secret in listed.text
        emu.monitors.step_monitors(status="completed")
        emu.monitors.step_webhooks(successful=False)
        emu.monitors.step_webhooks(successful=True)
        runs = [("duckdb load", env, ["load", "--base-url", emu.base_url, *common])]
        if pg_why is None:
            pg_env = {**env, "DESTINATION__POSTGRES__CREDENTIALS": PG_DSN}
            pg = ["load", "--base-url", emu.base_url, "--destination", "postgres"]
            pg += ["--dataset", pg_dataset, "--pipelines-dir", str(pipes)]
            runs.append(("postgres load", pg_env, pg))
        runs.append(("duckdb load again", env, ["load", "--base-url", emu.base_url, *common]))
        runs.append(("report", env, ["report", *common]))
        for name, run_env, args in runs:
            done = _run(args, run_env, tmp_path)
            assert done.returncode == 0, (name, done.stderr[-2000:])
            outputs[f"{name}: stdout"] = done.stdout
            outputs[f"{name}: stderr"] = done.stderr

    files: dict[str, bytes] = {}
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        for i, blob in enumerate(_decoded(path, path.read_bytes())):
            files[f"{path.relative_to(tmp_path)}#{i}"] = blob
    databases = _databases(tmp_path, duck, pg_dataset if pg_why is None else None, monkeypatch)
    if pg_why is not None and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required under CI: {pg_why}")

    # positive controls: the search finds the planted token in every kind of place it searches
    assert _hits({k: v for k, v in outputs.items() if k.startswith("report")}, [control])
    assert _hits(files, [control]), "control not found in the pipeline folder"
    for name, blob in databases.items():
        assert _hits({name: blob}, [control]), f"control not found in {name}"
        assert b"webhook_attempt_" in blob
    leaks = _hits({**outputs, **files, **databases}, [secret])
    assert not leaks, leaks
    print(
        f"\nwebhook secret: 0 hits in {len(outputs)} outputs, {len(files)} files and"
        f" {len(databases)} databases; control found in each"
    )
