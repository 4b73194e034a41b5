"""The Airflow DAG ``dags/exa_websets.py``: parsing, and real ``airflow dags test`` runs.

Every Airflow process runs as a subprocess with a temporary ``AIRFLOW_HOME`` (SQLite, migrated
once per module) and a scrubbed environment: the API key reaches the DAG ONLY through the
``exa_default`` Connection (type ``exa``) given as ``AIRFLOW_CONN_EXA_DEFAULT``, except in the
test of the ``dlt_secrets_toml`` Variable. After each run the output, the task logs, the
metadata DB (XCom, rendered templates), the pipeline folders and the DuckDB files are searched
for the key. ``airflow dags test`` has no API server: ``tests/test_airflow_scheduler.py``
covers the deployed path.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import KEY, PG_DSN, Target, assert_equals_emulator, postgres_available

from exa_source import settings
from exa_source.emulator import Emulator, Fault
from exa_source.pipeline import make_pipeline, run_load

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
AIRFLOW = Path(sys.executable).parent / "airflow"
DAG_ID = "exa_websets"
DATASET = "exa_websets"
DAGS_TEST_TIMEOUT = float(os.environ.get("EXA_TEST_DAGS_TEST_TIMEOUT", "240"))

try:
    import airflow.sdk  # noqa: F401
except ImportError:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "apache-airflow is not installed: pip install -e '.[airflow,test]'",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

#: Prefixes of variables that could hand the DAG a key, a destination or config behind the
#: test's back; none of them reaches an Airflow subprocess.
_SCRUBBED = ("SOURCES__", "EXA_", "AIRFLOW", "DESTINATION__", "PROVIDERS__", "RUNTIME__", "DLT_")


@dataclass
class AirflowHome:
    """A migrated ``AIRFLOW_HOME`` and the clean environment of its subprocesses."""

    path: Path
    env: dict[str, str]

    @property
    def db(self) -> Path:
        """The SQLite metadata DB."""
        return self.path / "airflow.db"


def airflow_env(home: Path, dags: Path = DAGS, **extra: str) -> dict[str, str]:
    """The scrubbed environment of an Airflow subprocess in ``home`` (its ``tmp/`` is made)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        RUNTIME__DLTHUB_TELEMETRY="false",
        PYTHONDONTWRITEBYTECODE="1",  # keep dags/ free of __pycache__
        TMPDIR=str(home / "tmp"),
    )
    env.update(extra)
    (home / "tmp").mkdir(exist_ok=True)
    return env


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """``airflow db migrate`` once per module in a fresh ``AIRFLOW_HOME``."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = airflow_env(home)
    started = time.monotonic()
    proc = subprocess.run(
        [str(AIRFLOW), "db", "migrate"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"airflow db migrate: {time.monotonic() - started:.1f} s")
    return AirflowHome(home, env)


@dataclass
class DagRun:
    """One ``airflow dags test`` process."""

    returncode: int
    output: str
    seconds: float


@dataclass
class Deployment:
    """What one test's DAG runs against: the emulator, a DuckDB file and a pipelines dir."""

    home: AirflowHome
    emu: Emulator
    duckdb_path: Path
    pipelines_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The subprocess env: the key ONLY in the ``exa_default`` Connection."""
        conn = {"conn_type": "exa", "host": self.emu.base_url, "password": KEY}
        env = dict(self.home.env)
        env.update(
            AIRFLOW_CONN_EXA_DEFAULT=json.dumps(conn),
            EXA_WEBSETS_DUCKDB_PATH=str(self.duckdb_path),
            EXA_WEBSETS_PIPELINES_DIR=str(self.pipelines_dir),
        )
        env.update(extra)
        assert not any(k in env for k in ("SOURCES__EXA__API_KEY", "EXA_API_KEY"))
        assert KEY not in env.get("AIRFLOW_VAR_DLT_SECRETS_TOML", "")
        return env

    def dags_test(
        self,
        dag_id: str = DAG_ID,
        conf: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        **extra: str,
    ) -> DagRun:
        """Run ``airflow dags test <dag_id>``; check that the key leaked nowhere.

        ``env`` replaces :meth:`env` (a test that hands the key some other way).
        """
        started = time.monotonic()
        args = ["--conf", json.dumps(conf)] if conf else []
        try:
            proc = subprocess.run(
                [str(AIRFLOW), "dags", "test", dag_id, *args],
                env=env if env is not None else self.env(**extra),
                cwd=self.home.path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=DAGS_TEST_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.output.decode() if isinstance(exc.output, bytes) else exc.output or ""
            pytest.fail(f"airflow dags test timed out; output tail:\n{out[-6000:]}")
        run = DagRun(proc.returncode, proc.stdout, time.monotonic() - started)
        print(f"airflow dags test: rc={run.returncode} in {run.seconds:.1f} s")
        print("\n".join(run.output.splitlines()[-8:]))
        self.assert_no_key_anywhere(run.output)
        return run

    def assert_no_key_anywhere(self, output: str) -> None:
        """The key appears in no output, log, metadata DB (XCom, rendered fields) or state."""
        assert KEY not in output, "API key in the `airflow dags test` output"
        needle = KEY.encode()
        searched = 0
        # the test's folder: pipelines dirs, DuckDB files (``_load_info``, ``_trace``), DAGs
        for root in (self.home.path, self.duckdb_path.parent.parent):
            for file in root.rglob("*"):
                if file.is_file():
                    searched += 1
                    assert needle not in file.read_bytes(), f"API key found in {file}"
        assert searched > 0

    def xcom(self, dag_id: str = DAG_ID) -> dict[str, Any]:
        """The ``return_value`` XCom of the latest ``load_imports`` instance of ``dag_id``."""
        with sqlite3.connect(self.home.db) as conn:
            row = conn.execute(
                "select value from xcom where dag_id = ? and task_id = 'load_imports'"
                " and key = 'return_value' order by timestamp desc limit 1",
                (dag_id,),
            ).fetchone()
        assert row is not None, "no XCom return_value"
        value = row[0]
        result: dict[str, Any] = json.loads(value) if isinstance(value, (str, bytes)) else value
        return result

    def xcom_keys(self) -> list[str]:
        """Every XCom key the DAG has pushed in this ``AIRFLOW_HOME``."""
        with sqlite3.connect(self.home.db) as conn:
            rows = conn.execute("select distinct key from xcom where dag_id = ?", (DAG_ID,))
            return sorted(str(r[0]) for r in rows)

    def latest_task_instance(self, dag_id: str = DAG_ID) -> tuple[str, int]:
        """``(state, try_number)`` of the latest ``load_imports`` instance of ``dag_id``."""
        with sqlite3.connect(self.home.db) as conn:
            row = conn.execute(
                "select ti.state, ti.try_number from task_instance ti join dag_run dr"
                " on dr.dag_id = ti.dag_id and dr.run_id = ti.run_id"
                " where ti.dag_id = ? and ti.task_id = 'load_imports'"
                " order by dr.id desc limit 1",
                (dag_id,),
            ).fetchone()
        assert row is not None
        return str(row[0]), int(row[1])

    def target(self, duckdb_path: Path | None = None, dag_id: str = DAG_ID) -> Target:
        """A conftest Target on the DAG's DuckDB, reading through a SEPARATE pipelines dir.

        The DAG's own pipelines dir stays untouched by the checks.
        """
        path = duckdb_path or self.duckdb_path
        return Target("duckdb", DATASET, str(path), str(path.parent / f"verify_{dag_id}"), dag_id)

    def snapshot(self) -> dict[str, Any]:
        """The destination's rows, dlt state and loads (what a failed run must not change)."""
        with duckdb.connect(str(self.duckdb_path), read_only=True) as conn:
            return {
                table: conn.execute(f"select * from {DATASET}.{table} order by all").fetchall()
                for table in ("imports", "_dlt_pipeline_state", "_dlt_loads")
            }


@pytest.fixture
def deployment(airflow_home: AirflowHome, emulator: Emulator, tmp_path: Path) -> Deployment:
    """The emulator (1,000 imports, in-process, free port) and fresh DuckDB/pipelines paths."""
    return Deployment(airflow_home, emulator, tmp_path / "data" / "exa.duckdb", tmp_path / "pl")


_PARSE_SCRIPT = r"""
import json, os, socket, sys, time

def _no_network(*args, **kwargs):
    raise AssertionError("network access while parsing the DAG")

socket.socket.connect = _no_network
socket.create_connection = _no_network
import airflow.sdk  # imported by every DAG processor anyway: not part of the file's cost
from airflow.dag_processing.dagbag import BundleDagBag

env_before = dict(os.environ)
started = time.perf_counter()
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=sys.argv[1])
seconds = time.perf_counter() - started
dag = bag.dags.get("exa_websets")
out = {
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "parse_seconds": seconds,
    "file_seconds": [s.duration.total_seconds() if hasattr(s.duration, "total_seconds")
                     else float(s.duration) for s in bag.dagbag_stats],
    "env_changed": sorted(k for k in set(env_before) | set(os.environ)
                          if env_before.get(k) != os.environ.get(k)),
    "heavy_modules": sorted(m for m in ("dlt", "duckdb", "pyarrow", "exa_source.pipeline")
                            if m in sys.modules),
}
if dag is not None:
    task = dag.get_task("load_imports")
    out.update(
        dag_ids=sorted(bag.dag_ids),
        schedule=dag.schedule,
        timetable=type(dag.timetable).__name__,
        catchup=dag.catchup,
        max_active_runs=dag.max_active_runs,
        tags=sorted(dag.tags),
        doc_md=dag.doc_md or "",
        retries=task.retries,
        retry_exponential_backoff=float(task.retry_exponential_backoff),
        retry_delay=task.retry_delay.total_seconds(),
        execution_timeout=task.execution_timeout.total_seconds()
        if task.execution_timeout else None,
        retry_delay_max=task.max_retry_delay.total_seconds() if task.max_retry_delay else None,
        dagrun_timeout=dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
        params={k: dag.params.get_param(k).dump() for k in dag.params},
        outlets=[(o.name, o.uri) for o in task.outlets],
        pool=task.pool,
        tasks=[t.task_id for t in dag.tasks],
    )
print("RESULT " + json.dumps(out))
"""


def _parse_dags(home: AirflowHome, **extra: str) -> dict[str, Any]:
    """Parse ``dags/`` with BundleDagBag in a subprocess with no secrets and no network."""
    env = dict(home.env, **extra)
    tmp = home.path / "parse_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    env["TMPDIR"] = str(tmp)
    proc = subprocess.run(
        [sys.executable, "-c", _PARSE_SCRIPT, str(DAGS)],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["tmp_entries"] = sorted(p.name for p in tmp.iterdir())
    return result


def test_dag_imports_without_secrets(airflow_home: AirflowHome) -> None:
    """(1) BundleDagBag, no secrets, no network: no import errors, attributes as specified."""
    parsed = _parse_dags(airflow_home)
    assert parsed["import_errors"] == {}
    assert parsed["dag_ids"] == [DAG_ID]
    assert parsed["tasks"] == ["load_imports"]
    assert parsed["schedule"] == "@hourly"
    assert parsed["catchup"] is False
    assert parsed["max_active_runs"] == 1
    assert {"exa", "dlt"} <= set(parsed["tags"])
    assert parsed["retries"] >= 1
    assert parsed["retry_exponential_backoff"] > 1
    assert parsed["execution_timeout"] and parsed["execution_timeout"] > 0
    for needle in ("GET /websets/v0/imports", "exa_default", "dlt_secrets_toml", "EXA_API_KEY"):
        assert needle in parsed["doc_md"]
    for knob in ("SCHEDULE", "DESTINATION", "DUCKDB_PATH", "DATASET", "PIPELINES_DIR"):
        assert f"EXA_WEBSETS_{knob}" in parsed["doc_md"]
    # safe to parse: no env changes, no temp folders, no heavy imports
    assert parsed["env_changed"] == []
    assert parsed["tmp_entries"] == []
    assert parsed["heavy_modules"] == []
    # what keeps parsing cheap is asserted above (no heavy import); the time is only reported
    print(f"parse time of dags/: {parsed['parse_seconds']:.3f} s, file {parsed['file_seconds']}")

    # the run may last as long as every attempt timing out and every retry waiting its longest
    # (Airflow waits up to 2x the exponential delay, capped at max_retry_delay)
    attempts = parsed["retries"] + 1
    waits = sum(
        min(2 * parsed["retry_delay"] * 2**i, parsed["retry_delay_max"])
        for i in range(parsed["retries"])
    )
    assert parsed["dagrun_timeout"] >= attempts * parsed["execution_timeout"] + waits
    # the trigger form's parameters and the Asset a downstream DAG can be scheduled on
    params = parsed["params"]
    assert params["full_refresh"]["value"] is False
    assert params["full_refresh"]["schema"]["type"] == "boolean"
    assert params["deletions"]["schema"]["enum"] == [None, "soft", "hard", "off"]
    assert params["initial_updated_at"]["value"] is None
    assert parsed["outlets"] == [["exa_websets.imports", "x-exa-source://exa_websets/imports"]]
    assert parsed["pool"] == "default_pool"  # a missing pool would leave the task unscheduled
    for needle in ("current state", "catch-up", "rows_deleted", "rows_recovered", "_POOL"):
        assert needle in parsed["doc_md"]

    # the schedule, retries and pool are overridable without editing code
    custom = _parse_dags(
        airflow_home,
        EXA_WEBSETS_SCHEDULE="15 */6 * * *",
        EXA_WEBSETS_RETRIES="5",
        EXA_WEBSETS_POOL="exa_api",
    )
    assert custom["import_errors"] == {}
    assert custom["schedule"] == "15 */6 * * *"
    assert custom["retries"] == 5
    assert custom["pool"] == "exa_api"
    assert custom["dagrun_timeout"] > parsed["dagrun_timeout"]


def test_dags_test_loads_emulator(deployment: Deployment) -> None:
    """(2) ``airflow dags test`` with the key only in ``exa_default``: the table equals the API."""
    run = deployment.dags_test()
    assert run.returncode == 0, run.output[-5000:]
    assert "state=success" in run.output
    assert "key from Airflow Connection 'exa_default'" in run.output
    assert "dlt load info" in run.output
    assert deployment.latest_task_instance() == ("success", 1)
    summary = deployment.xcom()
    assert deployment.xcom_keys() == ["return_value"]  # one small XCom
    assert len(json.dumps(summary)) < 2_000
    expected = len(deployment.emu.store.snapshot())
    assert summary["rows_loaded"] == expected == 1_000
    assert summary["rows_read"] == expected
    assert summary["tables"]["imports"]["pages"] == 5 == summary["tables"]["imports"]["requests"]
    assert sorted(summary["tables"]) == sorted(settings.RESOURCES)  # the DAG loads everything
    assert summary["destination"] == "duckdb" and summary["dataset"] == DATASET
    assert_equals_emulator(deployment.target(), deployment.emu)


def test_second_run_loads_only_changes_on_a_fresh_worker(deployment: Deployment) -> None:
    """(3) Local pipeline folder wiped between runs: state comes back from DuckDB."""
    first = deployment.dags_test()
    assert first.returncode == 0, first.output[-5000:]
    assert deployment.xcom()["rows_loaded"] == 1_000

    changed = deployment.emu.store.mutate(update=25, create=10, advance=15, seed=7)
    changed_ids = {i for ids in changed.values() for i in ids}
    assert deployment.pipelines_dir.is_dir()
    shutil.rmtree(deployment.pipelines_dir)  # an ephemeral worker: nothing local survives

    second = deployment.dags_test()
    assert second.returncode == 0, second.output[-5000:]
    summary = deployment.xcom()
    assert summary["tables"]["imports"]["rows_loaded"] == len(changed_ids) == 50
    assert summary["tables"]["imports"]["rows"] == 1_010
    assert_equals_emulator(deployment.target(), deployment.emu)


def _without_local(state: dict[str, Any]) -> dict[str, Any]:
    """A dlt state without ``_local`` (the last process's cwd and paths, not load state)."""
    return {k: v for k, v in state.items() if k != "_local"}


def test_persistent_5xx_fails_task_and_changes_nothing(deployment: Deployment) -> None:
    """(4) 5xx beyond dlt's and Airflow's retries: the task fails; destination/state intact."""
    first = run_load(
        make_pipeline(
            "duckdb",
            str(deployment.duckdb_path),
            DATASET,
            pipelines_dir=str(deployment.pipelines_dir),
        ),
        api_key=KEY,
        base_url=deployment.emu.base_url,
    )
    assert first.rows_loaded == 1_000
    state_file = deployment.pipelines_dir / DAG_ID / "state.json"
    local_state = _without_local(json.loads(state_file.read_text()))
    before = deployment.snapshot()

    deployment.emu.store.mutate(update=20, create=5, seed=3)  # a success would load these
    fault = deployment.emu.faults.add(Fault(kind="status", status=503, times=1000))
    run = deployment.dags_test(
        EXA_WEBSETS_RETRIES="1",
        EXA_WEBSETS_RETRY_DELAY_SECONDS="1",
        RUNTIME__REQUEST_MAX_ATTEMPTS="2",
        RUNTIME__REQUEST_BACKOFF_FACTOR="0",
    )
    assert run.returncode != 0
    assert "state=failed" in run.output
    assert run.output.count("Exa kept failing after 2 attempts: 503") == 2  # try 1 + 1 retry
    assert "new_state=up_for_retry" in run.output
    assert deployment.latest_task_instance() == ("failed", 2)
    assert fault.hits == 4  # 2 task tries x 2 HTTP attempts, then nothing more

    assert deployment.snapshot() == before
    assert _without_local(json.loads(state_file.read_text())) == local_state


SECOND_DAG = """
from exa_source.airflow.dag import exa_websets_dag

exa_websets_dag("exa_websets_b")
"""


def _state_pipelines(path: Path) -> list[str]:
    """The pipeline names in a DuckDB file's ``_dlt_pipeline_state``."""
    with duckdb.connect(str(path), read_only=True) as conn:
        rows = conn.execute(f"select distinct pipeline_name from {DATASET}._dlt_pipeline_state")
        return sorted(str(r[0]) for r in rows.fetchall())


def test_two_deployments_on_one_host_share_nothing(deployment: Deployment, tmp_path: Path) -> None:
    """Two DAGs from the factory (ids ``exa_websets`` and ``exa_websets_b``) in one dags folder,
    each into its own DuckDB file, runs interleaved with changes in Exa: after each run its
    table equals the API; pipeline names, folders and state follow the DAG ids."""
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(DAGS / "exa_websets.py", dags / "exa_websets.py")
    (dags / "exa_websets_b.py").write_text(SECOND_DAG)
    files = {DAG_ID: tmp_path / "a" / "exa.duckdb", "exa_websets_b": tmp_path / "b" / "exa.duckdb"}
    env = deployment.env(
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        EXA_WEBSETS_DUCKDB_PATH=str(files[DAG_ID]),
        EXA_WEBSETS_B_DUCKDB_PATH=str(files["exa_websets_b"]),
    )
    del env["EXA_WEBSETS_PIPELINES_DIR"]  # each DAG's default folder
    emu = deployment.emu
    steps: list[tuple[str, dict[str, int]]] = [
        (DAG_ID, {}),
        ("exa_websets_b", {}),
        (DAG_ID, {"update": 25, "create": 10, "delete": 5, "seed": 1}),
        (DAG_ID, {"update": 3, "seed": 2}),
        ("exa_websets_b", {"update": 7, "delete": 2, "advance": 9, "seed": 3}),
        (DAG_ID, {"create": 4, "seed": 4}),
    ]
    results = []
    for dag_id, change in steps:
        if change:
            emu.store.mutate(**change)
        run = deployment.dags_test(dag_id, env=env)
        assert run.returncode == 0, run.output[-5000:]
        summary = deployment.xcom(dag_id)
        imports = summary["tables"]["imports"]
        results.append((dag_id, imports["rows_loaded"], imports["deleted"]))
        assert_equals_emulator(deployment.target(files[dag_id], dag_id), emu)
    print(f"two deployments (dag, rows_loaded, rows_deleted): {results}")
    # each deployment's first run loads everything; later runs only the changes since its own
    assert results[0][1] == results[1][1] == 1_000
    assert results[2][1:] == (35, 5)  # 25 updated + 10 created, 5 deleted
    assert results[4][1] >= 7 + 3 and results[4][2] == 5 + 2  # b catches up with both changes
    home = deployment.home.path
    for dag_id, path in files.items():
        assert _state_pipelines(path) == [dag_id]
        assert (home / "dlt_pipelines" / dag_id / "duckdb" / dag_id / "state.json").is_file()
    assert sorted(p.name for p in (home / "dlt_pipelines").iterdir()) == sorted(files)


def test_key_and_postgres_credentials_from_dlt_secrets_toml(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Connection: the key and ``[destination.postgres] credentials`` come only from the
    ``dlt_secrets_toml`` Variable (read once, handed to dlt), into PostgreSQL."""
    why = postgres_available()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required under CI and is not reachable: {why}")
        pytest.skip(f"PostgreSQL not reachable ({why})")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    secrets_toml = (
        f'[sources.exa]\napi_key = "{KEY}"\nbase_url = "{deployment.emu.base_url}"\n\n'
        f'[destination.postgres]\ncredentials = "{PG_DSN}"\n'
    )
    env = deployment.env(EXA_WEBSETS_DESTINATION="postgres", EXA_WEBSETS_DATASET=schema)
    del env["AIRFLOW_CONN_EXA_DEFAULT"]
    env["AIRFLOW_VAR_DLT_SECRETS_TOML"] = secrets_toml
    try:
        run = deployment.dags_test(env=env)
        assert run.returncode == 0, run.output[-5000:]
        assert "key from Airflow Variable dlt_secrets_toml" in run.output
        assert "Airflow Connection 'exa_default' not found" in run.output
        assert deployment.xcom()["rows_loaded"] == 1_000
        monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", PG_DSN)
        target = Target("postgres", schema, None, str(tmp_path / "verify"), DAG_ID)
        assert_equals_emulator(target, deployment.emu)
    finally:
        import psycopg2

        with psycopg2.connect(PG_DSN) as conn, conn.cursor() as cur:
            cur.execute(f'drop schema if exists "{schema}" cascade')
            cur.execute(f'drop schema if exists "{schema}_staging" cascade')


def test_wrong_key_names_the_connection(deployment: Deployment) -> None:
    """A rejected key fails the task at once, naming the Connection it came from."""
    env = deployment.env()
    conn = json.loads(env["AIRFLOW_CONN_EXA_DEFAULT"])
    env["AIRFLOW_CONN_EXA_DEFAULT"] = json.dumps({**conn, "password": "wrong-key-000"})
    run = deployment.dags_test(env=env)
    assert run.returncode != 0
    text = " ".join(run.output.split())
    assert (
        "Exa rejected the API key from Airflow Connection 'exa_default'"
        " (HTTP 400: x-api-key header is invalid)" in text
    ), run.output[-5000:]
    assert "SOURCES__EXA__API_KEY" not in text
    assert "wrong-key-000" not in run.output
    assert deployment.latest_task_instance() == ("failed", 1)  # no retry for a rejected key


def test_trigger_params_deletions_and_full_refresh(deployment: Deployment) -> None:
    """The trigger form's params reach the load: ``deletions=hard``, then ``full_refresh``."""
    first = deployment.dags_test()
    assert first.returncode == 0, first.output[-5000:]
    deleted = deployment.emu.store.mutate(delete=5, seed=11)["deleted"]

    hard = deployment.dags_test(conf={"deletions": "hard"})
    assert hard.returncode == 0, hard.output[-5000:]
    assert "deletions=hard" in hard.output
    assert deployment.xcom()["rows_deleted"] == 5
    ids = {r["id"] for r in deployment.target().rows()}
    assert ids.isdisjoint(deleted) and len(ids) == 995  # gone, not soft-deleted

    refresh = deployment.dags_test(conf={"full_refresh": True})
    assert refresh.returncode == 0, refresh.output[-5000:]
    assert deployment.xcom()["rows_loaded"] == 995
    assert_equals_emulator(deployment.target(), deployment.emu)
    # dlt's load info and trace were saved next to the data
    with duckdb.connect(str(deployment.duckdb_path), read_only=True) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "select table_name from information_schema.tables where table_schema = ?",
                [DATASET],
            ).fetchall()
        }
    assert {"_load_info", "_trace"} <= tables
