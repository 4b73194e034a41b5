"""Hand dlt the Airflow Variable ``dlt_secrets_toml``, read ONCE per task.

dlt ships an Airflow config provider (``AirflowSecretsTomlProvider``, on by default while
Airflow is importable). Inside an Airflow 3 task it asks the API server for every setting dlt
resolves, one Variable request each (``runtime.sentry_dsn``, ``runtime.slack_incoming_hook``,
...): over a thousand ``GET /execution/variables/...`` for one load, 15-20 s, and each lookup
would reach a real secrets backend (Vault, AWS Secrets Manager) too. It also imports the
deprecated ``airflow.models.Variable`` (two deprecation warnings in every task log).

:func:`dlt_secrets_from_airflow` turns that provider off for the task
(``PROVIDERS__ENABLE_AIRFLOW_SECRETS=false``), reads the Variable once through the Task SDK and
registers its TOML text as a dlt provider named ``Airflow Variable dlt_secrets_toml``, in the
place dlt's own provider had: after environment variables and ``.dlt/*.toml``. Every key the
documented Variable holds (``[sources.exa] api_key``, ``[destination.postgres] credentials``,
pipeline-scoped sections) resolves as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

#: dlt's Airflow Variable: the text of a ``secrets.toml`` (dlt's ``SECRETS_TOML_KEY``).
DLT_SECRETS_VARIABLE = "dlt_secrets_toml"
#: dlt setting that switches its Airflow provider on or off (read when dlt builds providers).
ENABLE_ENV = "PROVIDERS__ENABLE_AIRFLOW_SECRETS"
#: The name our provider shows in dlt's messages (e.g. a missing-config error lists providers).
PROVIDER_NAME = f"Airflow Variable {DLT_SECRETS_VARIABLE}"


def read_secrets_variable() -> str | None:
    """Return the text of ``dlt_secrets_toml`` (one Task SDK request), or None when unset."""
    from airflow.sdk import Variable

    value = Variable.get(DLT_SECRETS_VARIABLE, default=None)
    text = str(value) if value is not None else ""
    return text if text.strip() else None


def parse_secrets(text: str | None) -> dict[str, Any]:
    """Parse the Variable's TOML text; an invalid text is logged by its error type only.

    The text holds secrets: a parse error quoting the offending line would print one.

    Returns:
        The document as plain dicts (empty for None or invalid TOML).
    """
    if not text:
        return {}
    import tomlkit

    try:
        doc: dict[str, Any] = tomlkit.parse(text).unwrap()
    except Exception as exc:
        logger.warning(
            "Airflow Variable %s is not valid TOML (%s); it is ignored",
            DLT_SECRETS_VARIABLE,
            type(exc).__name__,
        )
        return {}
    return doc


@contextmanager
def dlt_secrets_from_airflow(text: str | None) -> Iterator[None]:
    """Within the block, dlt reads ``text`` as ``dlt_secrets_toml`` and never asks Airflow.

    Sets ``PROVIDERS__ENABLE_AIRFLOW_SECRETS=false`` and rebuilds dlt's providers, so that
    dlt's Airflow provider is gone even when dlt was configured earlier in the same process
    (``airflow dags test`` runs tasks in-process), then appends a TOML provider holding
    ``text``. On exit the environment variable is restored and the provider removed.

    Args:
        text: the Variable's text, from :func:`read_secrets_variable` (None: no provider added).
    """
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.providers import StringTomlProvider
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    class _VariableProvider(StringTomlProvider):
        @property
        def name(self) -> str:
            return PROVIDER_NAME

    before = os.environ.get(ENABLE_ENV)
    os.environ[ENABLE_ENV] = "false"
    context = Container()[PluggableRunContext]
    context.reload_providers()
    provider: _VariableProvider | None = None
    if parse_secrets(text) and text:
        provider = _VariableProvider(text)
        context.providers.add_provider(provider)
    try:
        yield
    finally:
        if provider is not None and provider in context.providers.providers:
            context.providers.providers.remove(provider)
        if before is None:
            os.environ.pop(ENABLE_ENV, None)
        else:
            os.environ[ENABLE_ENV] = before


def key_from_dlt_config(section: str, key: str = "api_key") -> tuple[str | None, str]:
    """Return ``(value, provider name)`` of ``sources.<section>.<key>`` from dlt's providers.

    Asks each provider in dlt's order (environment, ``.dlt/secrets.toml``, ...), so the message
    of a rejected key can name the provider that gave it.
    """
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    for provider in Container()[PluggableRunContext].providers.providers:
        if not provider.supports_secrets:
            continue
        value, _ = provider.get_value(key, str, None, "sources", section)
        if value is not None and str(value).strip():
            return str(value).strip(), _provider_label(provider.name)
    return None, ""


def _provider_label(name: str) -> str:
    """A dlt provider name as a user reads it (``Environment Variables`` -> the env var)."""
    if name == "Environment Variables":
        return "environment variable SOURCES__EXA__API_KEY"
    if name.endswith(".toml"):
        return f"dlt {name} (e.g. .dlt/{name})"
    return name
