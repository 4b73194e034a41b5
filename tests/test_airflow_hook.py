"""The ``exa`` connection type: provider registration, ``ExaHook``, ``airflow connections test``.

The CLI runs as subprocesses in a temporary ``AIRFLOW_HOME`` (module fixture from
``test_dags.py``) against the emulator; each command's output and every log file is searched for
the keys, the right one and the wrong one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import test_dags
from conftest import KEY
from test_dags import AIRFLOW, AirflowHome

from exa_source.emulator import Emulator

pytestmark = [pytest.mark.airflow]

#: A migrated AIRFLOW_HOME, once per module (the fixture of test_dags.py).
airflow_home = test_dags.airflow_home

WRONG_KEY = "wrong-" + KEY[::-1]


def test_provider_info_is_valid_for_airflow() -> None:
    """The entry point's dict passes Airflow's own schemas; the form names the two fields."""
    import jsonschema
    from airflow.providers_manager import _read_schema_from_resources_or_local_file

    from exa_source.airflow.hooks import ExaHook
    from exa_source.airflow.provider import get_provider_info

    info = get_provider_info()
    jsonschema.validate(
        info, _read_schema_from_resources_or_local_file("provider_info.schema.json")
    )
    assert info["package-name"] == "exa-source"  # Airflow raises unless it equals the dist name
    assert info["connection-types"] == [
        {
            "connection-type": "exa",
            "hook-class-name": "exa_source.airflow.hooks.ExaHook",
            "hook-name": "Exa",
        }
    ]
    behaviour = ExaHook.get_ui_field_behaviour()
    jsonschema.validate(
        behaviour,
        _read_schema_from_resources_or_local_file("customized_form_field_behaviours.schema.json"),
    )
    assert behaviour["relabeling"] == {"password": "API key", "host": "Base URL"}
    assert {"login", "schema", "port", "extra"} <= set(behaviour["hidden_fields"])


def test_credentials_repr_hides_the_key() -> None:
    from exa_source.airflow.hooks import ExaCredentials, base_url_from_connection

    creds = ExaCredentials(KEY, "https://api.exa.ai", "Airflow Connection 'exa_default'")
    assert KEY not in repr(creds) and "api_key=<set>" in repr(creds)
    assert base_url_from_connection("api.exa.ai", None, None) == "https://api.exa.ai"
    assert base_url_from_connection("127.0.0.1", "http", 8765) == "http://127.0.0.1:8765"
    assert base_url_from_connection("http://127.0.0.1:8765/", None, 1) == "http://127.0.0.1:8765"
    assert base_url_from_connection("", "https", 443) is None


def _cli(home: AirflowHome, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(home.env, AIRFLOW__CORE__TEST_CONNECTION="Enabled", **extra)
    return subprocess.run(
        [str(AIRFLOW), *args],
        env=env,
        cwd=home.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_airflow_connections_test(airflow_home: AirflowHome, emulator: Emulator) -> None:
    """``connections add --conn-type exa`` without a warning; ``connections test``: success
    with the right key, a clear failure with a wrong one; neither key in any output or log."""
    home = airflow_home
    outputs: list[str] = []
    for conn_id, key in (("exa_good", KEY), ("exa_bad", WRONG_KEY)):
        added = _cli(
            home,
            "connections",
            "add",
            conn_id,
            "--conn-type",
            "exa",
            "--conn-host",
            emulator.base_url,
            "--conn-password",
            key,
        )
        outputs.append(added.stdout)
        assert added.returncode == 0, added.stdout[-3000:]
        assert "invalid" not in added.stdout.lower(), added.stdout[-3000:]
        assert f"Successfully added `conn_id`={conn_id}" in added.stdout

    emulator.reset_stats()
    good = _cli(home, "connections", "test", "exa_good")
    bad = _cli(home, "connections", "test", "exa_bad")
    outputs += [good.stdout, bad.stdout]
    print("--- connections test exa_good:\n" + good.stdout[-600:])
    print("--- connections test exa_bad:\n" + bad.stdout[-600:])
    assert good.returncode == 0, good.stdout[-3000:]
    assert "Connection success!" in good.stdout
    assert bad.returncode == 1, bad.stdout[-3000:]
    assert "Connection failed!" in bad.stdout
    assert (
        "Exa rejected the API key of Airflow Connection 'exa_bad' (HTTP 400: x-api-key header"
        " is invalid)" in " ".join(bad.stdout.split())
    )
    # one request per test, no retries
    assert emulator.stats.as_dict()["requests"] == {"GET /websets/v0/imports": 2}

    # a Connection given only through the environment (URI form) works the same way
    uri = {"conn_type": "exa", "host": emulator.base_url, "password": KEY}
    env_conn = _cli(home, "connections", "test", "exa_env", AIRFLOW_CONN_EXA_ENV=json.dumps(uri))
    outputs.append(env_conn.stdout)
    assert env_conn.returncode == 0 and "Connection success!" in env_conn.stdout

    for text in outputs:
        assert KEY not in text and WRONG_KEY not in text
    for file in Path(home.path, "logs").rglob("*") if (home.path / "logs").exists() else []:
        if file.is_file():
            data = file.read_bytes()
            assert KEY.encode() not in data and WRONG_KEY.encode() not in data, file
