"""The ``apache_airflow_provider`` entry point of the ``exa-source`` package.

Airflow's ``ProvidersManager`` calls every function registered under that entry-point group (in
``pyproject.toml``) and validates the dictionary against its ``provider_info.schema.json``;
``package-name`` must equal the distribution's name or discovery raises. This is what makes
``--conn-type exa`` valid for ``airflow connections add`` and shows "Exa" in the UI's form.
"""

from __future__ import annotations

from typing import Any

from exa_source import __version__


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow: one connection type, ``exa``, served by ``ExaHook``."""
    return {
        "package-name": "exa-source",
        "name": "Exa Websets (exa-source)",
        "description": "Load the Exa Websets API into a warehouse with dlt.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "exa",
                "hook-class-name": "exa_source.airflow.hooks.ExaHook",
                "hook-name": "Exa",
            }
        ],
    }
