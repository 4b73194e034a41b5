"""``ExaHook``: the Airflow connection type ``exa`` (API key and base URL).

Registered through the package's ``apache_airflow_provider`` entry point
(:mod:`exa_source.airflow.provider`), so ``airflow connections add exa_default --conn-type exa
--conn-password ...`` is accepted without the "invalid conn-type" warning Airflow prints for a
type no installed provider declares, and the UI shows a form with two fields: *API key*
(the Connection's password, stored encrypted and masked in task logs) and *Base URL* (the host).

``test_connection`` (the UI's *Test* button, ``airflow connections test``; both need
``[core] test_connection = Enabled``) sends ONE cheap authenticated request,
``GET /websets/v0/imports?limit=1``, without retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from exa_source import settings
from exa_source.config import validate_base_url
from exa_source.exceptions import ExaConfigError

logger = logging.getLogger(__name__)

#: Seconds the connection test waits for the API (connect and read): a form button must answer.
TEST_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class ExaCredentials:
    """What an ``exa`` Connection holds.

    Attributes:
        api_key: the key (the Connection's password), stripped; None when the password is empty.
        base_url: the API root from the Connection's host, or None for the default.
        where: where they came from, for messages (``Airflow Connection 'exa_default'``).
    """

    api_key: str | None
    base_url: str | None
    where: str

    def __repr__(self) -> str:  # never show the key, even in a debugger or a traceback
        key = "set" if self.api_key else "None"
        return f"ExaCredentials(api_key=<{key}>, base_url={self.base_url!r}, where={self.where!r})"


def base_url_from_connection(host: str | None, schema: str | None, port: int | None) -> str | None:
    """Build the base URL from a Connection's host, schema and port.

    A host with a scheme is used as is (``https://api.exa.ai``, ``http://127.0.0.1:8765``); a
    bare host takes the *schema* field as the scheme (``https`` when empty) and *port* if the
    host has none. An empty host means the default, ``https://api.exa.ai``.
    """
    host = (host or "").strip()
    if not host:
        return None
    base_url = host if "://" in host else f"{(schema or '').strip() or 'https'}://{host}"
    parts = urlsplit(base_url)
    if port and parts.port is None:
        base_url = parts._replace(netloc=f"{parts.netloc}:{port}").geturl()
    return base_url.rstrip("/")


class ExaHook(BaseHook):
    """Read an ``exa`` Connection and check it against the API.

    Args:
        exa_conn_id: the Connection id (default ``exa_default``).
    """

    conn_name_attr = "exa_conn_id"
    default_conn_name = "exa_default"
    conn_type = "exa"
    hook_name = "Exa"

    def __init__(self, exa_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.exa_conn_id = exa_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Form of the ``exa`` type: *API key* (password) and *Base URL* (host) only."""
        return {
            "hidden_fields": ["schema", "login", "port", "extra"],
            "relabeling": {"password": "API key", "host": "Base URL"},
            "placeholders": {
                "host": f"{settings.DEFAULT_BASE_URL} (leave empty for the default)",
                "password": "the Exa API key (dashboard.exa.ai/api-keys)",
            },
        }

    def get_credentials(self) -> ExaCredentials:
        """Return the key and base URL of the Connection; the key is registered for masking.

        Raises:
            AirflowNotFoundException: no Connection with this id.
        """
        from airflow.sdk.log import mask_secret

        conn = self.get_connection(self.exa_conn_id)
        key = (conn.password or "").strip() or None
        if key:
            mask_secret(key)
        base_url = base_url_from_connection(conn.host, conn.schema, conn.port)
        return ExaCredentials(key, base_url, f"Airflow Connection {self.exa_conn_id!r}")

    def get_conn(self) -> ExaCredentials:
        """Airflow's generic accessor: the same as :meth:`get_credentials`."""
        return self.get_credentials()

    def test_connection(self) -> tuple[bool, str]:
        """Send one authenticated ``GET /websets/v0/imports?limit=1``; never retried.

        Returns:
            ``(True, message)`` when the API accepted the key, else ``(False, reason)``. The
            reason names the Connection and the HTTP status and quotes the API's message; it
            never contains the key.
        """
        import requests

        try:
            creds = self.get_credentials()
        except Exception as exc:  # the Connection could not be read at all
            return False, f"cannot read Airflow Connection {self.exa_conn_id!r}: {exc}"
        if not creds.api_key:
            return False, f"{creds.where} has no API key (its password is empty)"
        try:
            base_url = validate_base_url(creds.base_url or settings.DEFAULT_BASE_URL)
        except ExaConfigError as exc:
            return False, f"{creds.where}: {exc}"
        url = f"{base_url}{settings.IMPORTS_PATH}"
        try:
            response = requests.get(
                url,
                params={"limit": 1},
                headers={settings.API_KEY_HEADER: creds.api_key},
                timeout=TEST_TIMEOUT_SECONDS,
                allow_redirects=False,  # requests would resend the key header to any host
            )
        except requests.RequestException as exc:
            return False, f"could not reach {url} ({type(exc).__name__}); check the Base URL"
        status = response.status_code
        detail = _api_message(response)
        if status == 200:
            return True, f"Exa accepted the API key of {creds.where} at {base_url}"
        if status in (400, 401, 403):
            return False, (
                f"Exa rejected the API key of {creds.where} (HTTP {status}: {detail});"
                " paste the key again from the Exa dashboard into that Connection's API key"
            )
        if status == 402:
            return False, f"the key of {creds.where} is valid but out of credits (HTTP 402)"
        return False, f"Exa answered HTTP {status} at {url}: {detail}"


def _api_message(response: Any) -> str:
    """The human part of an Exa error body, in one line (``docs/exa-api.md`` §5.2).

    Exa answers ``{"message": ...}``, ``{"requestId", "error": "..."}`` or
    ``{"error": {"message": ...}}``; a gateway may send HTML. (The same shapes as
    ``exa_source.client``, which this module does not import: it would import dlt into the
    api-server's connection test.)
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error")
        nested = error.get("message") if isinstance(error, dict) else error
        message = body.get("message") or nested
    text = str(message or response.text or response.reason or "no body")
    return " ".join(text.split())[:200]
