"""HTTP and paging for the Exa Websets API: one place for the REST client, errors and retries.

Built on dlt's REST client (:class:`RESTClient`), its cursor paginator and its retrying
session, with three changes that the API's quirks or speed require:

* each response body is decoded once, with orjson, inside the response hook (dlt's client
  would decode it twice: once for the data, once for the paginator). Decoding in the hook
  also means a malformed or truncated body is retried like a dropped connection;
* pagination stops when ``hasMore`` is false **or** ``nextCursor`` is null: the real API answered
  ``hasMore: true, nextCursor: null`` on a last page (``docs/exa-api.md`` §2, §8 item 3). A
  cursor that comes back twice is an error, never a loop; an empty cursor is never sent;
* HTTP errors become :class:`~exa_source.exceptions.ExaError` subclasses with a message a data
  engineer can act on. Exa answers a rejected key with **400**
  ``{"error": "x-api-key header is invalid"}``, not 401 (``docs/exa-api.md`` §5.2); both mean
  "rejected key" here and neither is retried.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from dlt.common.configuration import resolve_configuration
from dlt.common.configuration.specs import RuntimeConfiguration
from dlt.sources.helpers.requests.retry import DEFAULT_RETRY_EXCEPTIONS, Client
from dlt.sources.helpers.rest_client.auth import APIKeyAuth
from dlt.sources.helpers.rest_client.client import RESTClient
from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator
from dlt.sources.helpers.rest_client.typing import Hooks
from requests import HTTPError, Response
from requests.exceptions import RequestException

from exa_source import settings
from exa_source.exceptions import (
    ExaAPIError,
    ExaAuthError,
    ExaCreditsError,
    ExaPaginationError,
)

logger = logging.getLogger(__name__)

_BODY_ATTR = "_exa_body"
#: Environment variables that requests honours when ``trust_env`` is on.
_ENV_SETTINGS = frozenset(
    (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "requests_ca_bundle",
        "curl_ca_bundle",
        "netrc",
    )
)
T = TypeVar("T")


class MalformedResponseError(RequestException):
    """A 2xx reply whose body is not the JSON envelope. Retried like a dropped connection."""


@dataclass
class RequestStats:
    """Counters of one scan, kept by the client's response hook.

    Attributes:
        requests: HTTP attempts, retries included.
        pages: list pages decoded successfully.
        retried: attempts that failed with a retryable status (429, 5xx).
        started: ``time.monotonic()`` at creation.
    """

    requests: int = 0
    pages: int = 0
    retried: int = 0
    started: float = field(default_factory=time.monotonic)


def _api_message(response: Response) -> str:
    """Return the human part of an Exa error body, whichever of its three shapes it has.

    Exa's websets endpoints answer NestJS bodies (``{"statusCode", "message", "error"}``),
    gateway bodies (``{"requestId", "error"}``) or an envelope
    (``{"error": {"message"}}``) (``docs/exa-api.md`` §5.2); a gateway may also send HTML.
    """
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        text = response.text.strip().replace("\n", " ")
        return text[:200] or response.reason or "no body"
    if not isinstance(body, dict):
        return str(body)[:200]
    message = body.get("message")
    error = body.get("error")
    if isinstance(error, dict):
        message = message or error.get("message")
    if isinstance(message, list):
        message = "; ".join(str(m) for m in message)
    return str(message or error or body)[:500]


def raise_for_exa_status(response: Response, *args: Any, **kwargs: Any) -> None:
    """Response hook: turn error statuses into clear errors and decode good bodies once.

    Runs inside the retrying session's ``send``, once per attempt. 429 and 5xx are re-raised as
    :class:`requests.HTTPError` so that dlt's retry policy (backoff, ``Retry-After``) handles
    them; every other 4xx raises an :class:`ExaError`, which the session does not retry.

    Raises:
        ExaAuthError: 400 naming the API key, or 401/403.
        ExaCreditsError: 402.
        ExaAPIError: any other 4xx.
        HTTPError: 429 or 5xx (retried by the session).
        MalformedResponseError: a 2xx body that is not a JSON object (retried).
    """
    status = response.status_code
    if status < 400:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise MalformedResponseError(
                f"Exa answered {status} with a body that is not JSON ({exc}) for"
                f" {response.request.method} {response.request.path_url}",
                response=response,
            ) from None
        setattr(response, _BODY_ATTR, body)
        return
    message = _api_message(response)
    if status == 429 or status >= 500:
        raise HTTPError(f"{status} from Exa: {message}", response=response)
    if status in (401, 403) or (status == 400 and "api-key" in message.lower()):
        raise ExaAuthError(
            f"Exa rejected the API key (HTTP {status}: {message}). Check the key set in"
            f" SOURCES__EXA__API_KEY, [sources.exa] api_key in .dlt/secrets.toml or"
            f" {settings.API_KEY_ENV}."
        )
    if status == 402:
        raise ExaCreditsError(
            f"Exa answered 402: out of credits or over the key's budget ({message})."
        )
    raise ExaAPIError(f"Exa API error {status} on {response.request.path_url}: {message}")


def decoded_body(response: Response) -> Any:
    """Return the body decoded by :func:`raise_for_exa_status`, decoding it if needed."""
    body = getattr(response, _BODY_ATTR, None)
    if body is None:
        body = orjson.loads(response.content)
        setattr(response, _BODY_ATTR, body)
    return body


class ExaCursorPaginator(JSONResponseCursorPaginator):
    """Cursor paginator for Exa list endpoints (``{data, hasMore, nextCursor}``).

    dlt's paginator already stops when the cursor is null or ``hasMore`` is false; this one
    reads the body decoded once by the response hook and refuses a cursor it has seen before
    (a server bug that would otherwise loop forever).
    """

    def __init__(self) -> None:
        super().__init__(cursor_path="nextCursor", cursor_param="cursor", has_more_path="hasMore")
        self._seen: set[str] = set()

    def update_state(self, response: Response, data: list[Any] | None = None) -> None:
        """Read ``nextCursor`` and ``hasMore`` from the page envelope.

        Raises:
            ExaPaginationError: the envelope lacks ``hasMore`` or repeats a cursor.
        """
        body = decoded_body(response)
        cursor = body.get("nextCursor")
        # An empty string is "no cursor" too: never send `cursor=` (the API rejects it).
        self._next_reference = cursor or None
        has_more = body.get("hasMore")
        if not isinstance(has_more, bool):
            raise ExaPaginationError(
                f"Exa list reply without a boolean hasMore (got {has_more!r});"
                " expected {data, hasMore, nextCursor}"
            )
        self._has_next_page = self._has_next_page and has_more
        if self._has_next_page and cursor in self._seen:
            raise ExaPaginationError(
                f"Exa returned the cursor {cursor!r} twice in one scan; stopping instead of"
                " looping. Rerun; if it persists, report it to Exa."
            )
        if cursor:
            self._seen.add(cursor)


class ExaRESTClient(RESTClient):
    """dlt's REST client whose page extraction reads the once-decoded envelope.

    Args:
        base_url: API root, e.g. ``https://api.exa.ai`` (paths carry ``/websets/v0``).
        api_key: the Exa key, sent as the ``x-api-key`` header and nowhere else.
        stats: counters updated on every attempt.
    """

    def __init__(self, base_url: str, api_key: str, stats: RequestStats | None = None) -> None:
        config = resolve_configuration(RuntimeConfiguration())
        retrying = Client(
            raise_for_status=False,
            exceptions=(*DEFAULT_RETRY_EXCEPTIONS, MalformedResponseError),
        )
        retrying.update_from_config(config)
        super().__init__(
            base_url=base_url.rstrip("/"),
            auth=APIKeyAuth(name=settings.API_KEY_HEADER, api_key=api_key, location="header"),
            paginator=ExaCursorPaginator(),
            session=retrying.session,
            config=config,
        )
        # requests re-reads proxy and CA-bundle variables from the environment on every request
        # (~0.4 ms a page); when none is set there is nothing to read
        self.session.trust_env = any(k.lower() in _ENV_SETTINGS for k in os.environ)
        self.stats = stats or RequestStats()
        self.max_attempts = config.request_max_attempts

    def _count(self, response: Response, *args: Any, **kwargs: Any) -> None:
        self.stats.requests += 1
        if response.status_code == 429 or response.status_code >= 500:
            self.stats.retried += 1

    def extract_response(self, response: Response, data_selector: Any) -> list[Any]:
        """Return the page's ``data`` list from the once-decoded envelope.

        Raises:
            ExaPaginationError: the reply is not a ``{data: [...]}`` envelope.
        """
        body = decoded_body(response)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ExaPaginationError(
                f"Exa list reply without a data list on {response.request.path_url}"
            )
        self.stats.pages += 1
        return data

    def pages(self, path: str, page_size: int) -> Iterator[list[dict[str, Any]]]:
        """Yield the ``data`` list of every page of a list endpoint, first to last.

        Pages are fetched and decoded one page ahead in a background thread, so that waiting
        for the next page overlaps with converting and writing the current one (the cursor
        chain itself is strictly sequential).

        Raises:
            ExaAPIError: a 429/5xx or network error that outlasted every retry.
            ExaError: see :func:`raise_for_exa_status`.
        """
        return prefetched(self._pages(path, page_size), settings.PAGES_AHEAD)

    def _pages(self, path: str, page_size: int) -> Iterator[list[dict[str, Any]]]:
        """The pages, fetched in the calling thread.

        Raises:
            ExaAPIError: a 429/5xx or network error that outlasted every retry.
            ExaError: see :func:`raise_for_exa_status`.
        """
        hooks: Hooks = {"response": [self._count, raise_for_exa_status]}
        try:
            yield from self.paginate(
                path, params={"limit": page_size}, hooks=hooks, data_selector="data"
            )
        except HTTPError as exc:
            raise ExaAPIError(
                f"Exa kept failing after {self.max_attempts} attempts: {exc}."
                " Nothing was committed; rerun later (retries: RUNTIME__REQUEST_MAX_ATTEMPTS,"
                " RUNTIME__REQUEST_BACKOFF_FACTOR, RUNTIME__REQUEST_MAX_RETRY_DELAY)."
            ) from None
        except (RequestException, OSError) as exc:
            raise ExaAPIError(
                f"Could not read {path} from Exa after {self.max_attempts} attempts:"
                f" {type(exc).__name__}: {exc}. Nothing was committed; rerun later."
            ) from None


_DONE = object()


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead of the consumer.

    An exception in the producer is re-raised in the consumer at the point it occurred. When
    the consumer stops early (an error downstream, or the generator is closed), the producer
    stops at its next item and closes ``items`` in its own thread.
    """
    box: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # re-raised in the consumer
            put((None, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="exa-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = box.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
