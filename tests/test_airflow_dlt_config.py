"""``dlt_secrets_toml`` handed to dlt in-process (``exa_source.airflow.dlt_config``).

What the DAG's task does before it touches dlt: dlt's Airflow provider off, the Variable's
text as a provider after the environment. Checked here without Airflow processes; the
scheduler-path test counts the requests for real.
"""

from __future__ import annotations

import os

import dlt
import pytest
from conftest import KEY
from dlt.common.configuration.container import Container
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

from exa_source.airflow.dlt_config import (
    ENABLE_ENV,
    PROVIDER_NAME,
    dlt_secrets_from_airflow,
    key_from_dlt_config,
    parse_secrets,
)

TOML = f"""
[sources.exa]
api_key = "{KEY}"
page_size = 50

[destination.postgres]
credentials = "postgresql://loader:pw@db.example:5432/warehouse"
"""


def _provider_names() -> list[str]:
    return [p.name for p in Container()[PluggableRunContext].providers.providers]


def test_variable_text_resolves_and_airflow_provider_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SOURCES__EXA__API_KEY", raising=False)
    monkeypatch.delenv(ENABLE_ENV, raising=False)
    with dlt_secrets_from_airflow(TOML):
        assert os.environ[ENABLE_ENV] == "false"
        names = _provider_names()
        assert PROVIDER_NAME in names
        assert not any("Airflow Secrets" in n for n in names)
        assert names.index("Environment Variables") < names.index(PROVIDER_NAME)
        credentials = dlt.secrets["destination.postgres.credentials"]
        assert "db.example" in str(credentials)
        assert dlt.config["sources.exa.page_size"] == 50
        assert key_from_dlt_config("exa") == (KEY, PROVIDER_NAME)
        # the environment still wins, as with dlt's own provider
        monkeypatch.setenv("SOURCES__EXA__API_KEY", "from-env")
        assert key_from_dlt_config("exa") == (
            "from-env",
            "environment variable SOURCES__EXA__API_KEY",
        )
    assert ENABLE_ENV not in os.environ
    assert PROVIDER_NAME not in _provider_names()


def test_no_or_broken_variable_adds_nothing_and_logs_no_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with dlt_secrets_from_airflow(None):
        assert PROVIDER_NAME not in _provider_names()
    broken = f'[sources.exa]\napi_key = "{KEY}\n'  # unterminated string
    assert parse_secrets(broken) == {}
    with dlt_secrets_from_airflow(broken):
        assert PROVIDER_NAME not in _provider_names()
    assert "not valid TOML" in caplog.text
    assert KEY not in caplog.text
