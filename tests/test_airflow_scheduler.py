"""The DAG under the real scheduler path: api-server, scheduler, dag-processor, LocalExecutor.

``airflow dags test`` runs the task in-process with no API server, so it cannot show what a
deployed task does: every Variable, Connection and XCom goes through the API server's
execution API. This module starts the three processes ONCE in a temporary ``AIRFLOW_HOME``
(SQLite metadata DB; Airflow 3 accepts it with the LocalExecutor) and triggers the shipped DAG
twice against the emulator (5,000 imports), next to a downstream DAG scheduled on its Asset.

Every wait polls with a deadline. The api-server's access log counts the execution API's
``/variables/`` requests of each task. The figures (task durations under the scheduler, the
``exa-source load`` CLI on the same data, Variable requests) are printed for the report.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import KEY, Target, assert_equals_emulator
from test_dags import _SCRUBBED, AIRFLOW, DAGS, airflow_env

from exa_source.emulator import Emulator
from exa_source.emulator.store import SEED_ANCHOR

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DAG_ID = "exa_websets"
DOWNSTREAM = "exa_downstream"
IMPORTS = 5_000
#: ``[sources.exa] page_size`` in the ``dlt_secrets_toml`` Variable (the default is 200)
PAGE_SIZE = 100
#: Upper bound of Variable requests per load task: dlt_secrets_toml once, plus the
#: deployment's four knobs (destination, duckdb_path, dataset, pipelines_dir).
MAX_VARIABLE_REQUESTS = 8
STARTUP_DEADLINE = float(os.environ.get("EXA_TEST_SCHEDULER_STARTUP", "180"))
RUN_DEADLINE = float(os.environ.get("EXA_TEST_SCHEDULER_RUN", "240"))
#: For the report only: measure another DAG file (e.g. the one on an older commit).
DAG_FILE = Path(os.environ.get("EXA_TEST_SCHEDULER_DAG_FILE", str(DAGS / "exa_websets.py")))

DOWNSTREAM_DAG = '''
"""Runs after every load of exa_websets: records the Asset events that triggered it."""
from datetime import datetime, timezone

from airflow.sdk import dag, task

from exa_source.airflow.dag import imports_asset


@dag(dag_id="exa_downstream", schedule=[imports_asset("exa_websets")],
     start_date=datetime(2025, 1, 1, tzinfo=timezone.utc), catchup=False)
def exa_downstream():
    @task(multiple_outputs=False)
    def consume(triggering_asset_events=None):
        return [dict(e.extra) for events in triggering_asset_events.values() for e in events]

    consume()


exa_downstream()
'''

T = TypeVar("T")


def _poll(what: str, check: Callable[[], T | None], deadline: float, proc_logs: str = "") -> T:
    """Call ``check`` until it returns a value; fail with ``what`` after ``deadline`` seconds."""
    until = time.monotonic() + deadline
    pause = 0.2
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > until:
            pytest.fail(f"timed out after {deadline:.0f} s waiting for {what}\n{proc_logs}")
        time.sleep(pause)  # a polling interval, not a wait for state
        pause = min(pause * 1.5, 2.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """The running Airflow processes, their home and the emulator they load from."""

    home: Path
    env: dict[str, str]
    emu: Emulator
    duckdb_path: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"

    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def tails(self) -> str:
        out = []
        for name in self.procs:
            text = self.log(name).read_text(errors="replace") if self.log(name).exists() else ""
            out.append(f"--- {name} (rc={self.procs[name].poll()}):\n{text[-3000:]}")
        return "\n".join(out)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db, timeout=30) as conn:
            return conn.execute(sql, args).fetchall()

    def cli(self, *args: str) -> str:
        proc = subprocess.run(
            [str(AIRFLOW), *args],
            env=self.env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stdout[-3000:]
        return proc.stdout

    def alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited\n{self.tails()}"

    def variable_requests(self) -> list[str]:
        """The execution API's Variable requests in the api-server's access log so far."""
        text = self.log("api-server").read_text(errors="replace")
        return [line for line in text.splitlines() if "/execution/variables/" in line]

    def trigger_and_wait(self, dag_id: str, run_id: str) -> str:
        """Trigger ``dag_id`` as ``run_id``; wait until the run ends; return its state."""
        self.cli("dags", "trigger", dag_id, "--run-id", run_id)
        return self.wait_run(dag_id, run_id)

    def wait_run(self, dag_id: str, run_id: str) -> str:
        def ended() -> str | None:
            self.alive()
            rows = self.query(
                "select state from dag_run where dag_id = ? and run_id = ?", dag_id, run_id
            )
            state = rows[0][0] if rows else None
            return state if state in ("success", "failed") else None

        return _poll(f"run {run_id} of {dag_id}", ended, RUN_DEADLINE, self.tails())

    def task(self, dag_id: str, run_id: str) -> tuple[str, float, Any]:
        """``(state, duration in s, return_value XCom)`` of the run's only task."""
        (state, duration, task_id) = self.query(
            "select state, duration, task_id from task_instance where dag_id = ? and run_id = ?",
            dag_id,
            run_id,
        )[0]
        rows = self.query(
            "select value from xcom where dag_id = ? and run_id = ? and task_id = ?"
            " and key = 'return_value'",
            dag_id,
            run_id,
            task_id,
        )
        value = json.loads(rows[0][0]) if rows else None
        return str(state), float(duration or 0), value


def _start(stack: Stack, name: str, *args: str) -> None:
    with open(stack.log(name), "wb") as out:
        stack.procs[name] = subprocess.Popen(
            [str(AIRFLOW), *args],
            env=stack.env,
            cwd=stack.home,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a group below
        )


def _stop(stack: Stack) -> None:
    for proc in stack.procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in stack.procs.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Migrate a fresh home, start api-server + scheduler + dag-processor once per module."""
    home = tmp_path_factory.mktemp("airflow_sched")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags / "exa_websets.py")
    (dags / "exa_downstream.py").write_text(DOWNSTREAM_DAG)
    # every kind of table: imports, websets with items, monitors with runs, webhooks with
    # attempts, and their events (the emulator's clock at the seed anchor keeps those within
    # the API's 60 days)
    emu = Emulator(
        api_key=KEY, imports=IMPORTS, websets=2, items_per_webset=5, monitors=2, webhooks=1
    )
    emu.store.clock.set(SEED_ANCHOR)
    with emu.start():
        port = _free_port()
        env = airflow_env(
            home,
            dags,
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM="2",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(port),
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(16),
            AIRFLOW_CONN_EXA_DEFAULT=json.dumps(
                {"conn_type": "exa", "host": emu.base_url, "password": KEY}
            ),
            EXA_WEBSETS_SCHEDULE="none",
            EXA_WEBSETS_RETRIES="0",
            EXA_WEBSETS_DUCKDB_PATH=str(home / "data" / "exa.duckdb"),
        )
        stack = Stack(home, env, emu, home / "data" / "exa.duckdb")
        stack.cli("db", "migrate")
        # dlt config from the metastore Variable, through the API server: read once, used
        stack.cli(
            "variables", "set", "dlt_secrets_toml", f"[sources.exa]\npage_size = {PAGE_SIZE}\n"
        )
        started = time.monotonic()
        try:
            _start(stack, "api-server", "api-server", "--port", str(port), "--workers", "1")
            _start(stack, "scheduler", "scheduler", "--skip-serve-logs")
            _start(stack, "dag-processor", "dag-processor")

            def ready() -> bool | None:
                stack.alive()
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        pass
                    rows = stack.query("select dag_id from serialized_dag")
                except (OSError, sqlite3.Error):
                    return None
                return True if {DAG_ID, DOWNSTREAM} <= {r[0] for r in rows} else None

            _poll("api-server up and both DAGs parsed", ready, STARTUP_DEADLINE, stack.tails())
            print(f"airflow stack up in {time.monotonic() - started:.1f} s")
            yield stack
        finally:
            _stop(stack)


def _cli_load(stack: Stack, folder: Path) -> tuple[float, str]:
    """``exa-source load`` on the same emulator into its own DuckDB file: (wall s, summary)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env.update(SOURCES__EXA__API_KEY=KEY, TMPDIR=str(stack.home / "tmp"))
    started = time.monotonic()
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "exa-source"),
            "load",
            "--base-url",
            stack.emu.base_url,
            "--page-size",
            str(PAGE_SIZE),  # as the DAG's runs
            "--duckdb-path",
            str(folder / "cli.duckdb"),
            "--pipelines-dir",
            str(folder / "pipelines"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    return seconds, proc.stdout.strip()


def test_two_triggered_runs_under_the_scheduler(stack: Stack, tmp_path: Path) -> None:
    """Two runs succeed (5,000 imports and every other table, then 0); a handful of Variable
    requests per task; the downstream DAG runs after each load with the Asset event's extra;
    key nowhere."""
    figures: dict[str, Any] = {}
    downstream_runs: list[str] = []
    for number, expected in ((1, IMPORTS), (2, 0)):
        before = len(stack.variable_requests())
        run_id = f"test_run_{number}"
        state = stack.trigger_and_wait(DAG_ID, run_id)
        ti_state, duration, summary = stack.task(DAG_ID, run_id)
        variables = stack.variable_requests()[before:]
        figures[f"run{number}"] = {
            "state": state,
            "task_seconds": round(duration, 2),
            "rows_loaded": summary and summary.get("rows_loaded"),
            "load_seconds": summary and summary.get("seconds"),
            "variable_requests": len(variables),
        }
        print(f"scheduler run {number}: {figures[f'run{number}']}")
        assert (state, ti_state) == ("success", "success"), stack.tails()
        tables = summary["tables"]
        assert tables["imports"]["rows_loaded"] == expected
        assert tables["imports"]["rows"] == IMPORTS
        # the other tables under the scheduler: everything on the first run, nothing after
        others = {"monitor_runs": 10, "webhook_attempts": 3, "webset_items": 10, "monitors": 2}
        for table, rows in others.items():
            assert tables[table]["rows_loaded"] == (rows if number == 1 else 0), (table, tables)
        assert (tables["events"]["rows_loaded"] > 0) is (number == 1), tables["events"]
        # dlt_secrets_toml reached dlt
        assert summary["tables"]["imports"]["pages"] == IMPORTS // PAGE_SIZE
        assert len(variables) <= MAX_VARIABLE_REQUESTS, "\n".join(variables[:50])
        assert sum("/variables/dlt_secrets_toml " in line for line in variables) == 1

        # the downstream DAG runs on the Asset event of this load
        def downstream() -> str | None:
            rows = stack.query(
                "select run_id from dag_run where dag_id = ? and state = 'success' order by id",
                DOWNSTREAM,
            )
            new = [r[0] for r in rows if r[0] not in downstream_runs]
            return new[-1] if new else None

        down_id = _poll(f"a run of {DOWNSTREAM}", downstream, RUN_DEADLINE, stack.tails())
        downstream_runs.append(down_id)
        events = stack.task(DOWNSTREAM, down_id)[2]
        assert events[-1]["rows_loaded"] == summary["rows_loaded"], events
        assert events[-1]["load_id"] == summary["load_id"]
        assert events[-1]["table"] == "imports"

    assert_equals_emulator(
        Target("duckdb", "exa_websets", str(stack.duckdb_path), str(tmp_path / "v"), DAG_ID),
        stack.emu,
    )
    # the deployment's own folder, not dlt's shared default
    assert (stack.home / "dlt_pipelines" / DAG_ID / "duckdb" / DAG_ID / "state.json").is_file()

    # the same data with the CLI, for the report
    cli_first, _ = _cli_load(stack, tmp_path)
    cli_rerun, line = _cli_load(stack, tmp_path)
    figures["cli"] = {"first_load_s": round(cli_first, 2), "rerun_s": round(cli_rerun, 2)}
    print(f"exa-source load on the same data: {figures['cli']} ({line})")
    print("FIGURES " + json.dumps(figures))

    # no deprecation warning from our path in the task logs (dlt's own Airflow provider
    # imported airflow.models.Variable and airflow.operators.python: two per task)
    task_logs = list((stack.home / "logs" / f"dag_id={DAG_ID}").rglob("*.log"))
    assert len(task_logs) == 2
    for log in task_logs:
        assert "deprecat" not in log.read_text(errors="replace").lower(), log

    needle = KEY.encode()
    for file in stack.home.rglob("*"):
        if file.is_file() and file.name != "airflow.db" and not file.suffix == ".duckdb":
            assert needle not in file.read_bytes(), f"API key found in {file}"
