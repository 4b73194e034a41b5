"""The errors exa-source raises on purpose, one class per thing a data engineer must do next.

Every class derives from :class:`ExaError`. The CLI maps :class:`ExaConfigError` to exit code 2
(fix the command or the configuration) and every other :class:`ExaError` to exit code 1 (the run
failed; nothing was committed; rerun later or look at the API).
"""

from __future__ import annotations


class ExaError(Exception):
    """Base class of every error the connector raises on purpose."""


class ExaConfigError(ExaError):
    """A setting is missing or invalid; raised before any request is sent."""


class ExaAuthError(ExaError):
    """Exa rejected the API key (HTTP 400 ``x-api-key header is invalid``, 401 or 403).

    Attributes:
        status: the HTTP status Exa answered.
        detail: Exa's own message from the error body (up to 500 characters), for callers
            that word the error themselves, e.g. naming where the key came from (Airflow).
    """

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class ExaCreditsError(ExaError):
    """Exa answered 402: the team is out of credits or the key's budget is spent."""


class ExaAPIError(ExaError):
    """Any other failed request: a 4xx, or 429/5xx/network errors after every retry.

    Attributes:
        status: the HTTP status of a 4xx answer (e.g. 404 for a webset deleted while its
            items were read); None for errors after retries.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ExaPaginationError(ExaError):
    """The API's pagination misbehaved (a repeated cursor) or a reply had no page envelope."""


class ExaDataError(ExaError):
    """A record the API sent cannot be loaded as declared (e.g. an unparseable ``updatedAt``)."""


class ExaDestinationError(ExaError):
    """The destination's table cannot serve as the record of what was loaded.

    Raised, for example, when the resource's table name is a function of the data (dlt's
    dynamic table names): the connector must know which single table to compare the scan with.
    """
