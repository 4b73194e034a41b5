"""HTTP and paging for the Exa Websets API: one place for the REST client, errors and retries.

Built on dlt's REST client (:class:`RESTClient`), its cursor paginator and its retrying
session, with changes that the API's quirks, speed or a misbehaving server require:

* each response body is decoded once, with orjson, inside the response hook (dlt's client
  would decode it twice: once for the data, once for the paginator). Decoding in the hook
  also means a truncated body is retried like a dropped connection, while a complete body that
  cannot be decoded (not UTF-8, not JSON, nested too deep) fails at once: retrying would only
  fetch the same bytes again;
* pagination stops when ``hasMore`` is false **or** ``nextCursor`` is null: the real API answered
  ``hasMore: true, nextCursor: null`` on a last page (``docs/exa-api.md`` §2, §8 item 3). A
  cursor that comes back twice is an error, never a loop; an empty cursor is never sent; a
  non-string cursor or a non-object item is an error naming the page;
* HTTP errors become :class:`~exa_source.exceptions.ExaError` subclasses with a message a data
  engineer can act on. Exa answers a rejected key with **400**
  ``{"error": "x-api-key header is invalid"}``, not 401 (``docs/exa-api.md`` §5.2); both mean
  "rejected key" here and neither is retried;
* redirects are never followed: requests strips only ``Authorization`` when a redirect leaves
  the host, so it would send ``x-api-key`` wherever a 3xx points;
* every run ends: a whole response body has a deadline (requests' timeout bounds each socket
  read only, so a body drip-fed a byte at a time never times out), and a scan has a bound on
  its pages and on its wall time (an API answering ``hasMore: true`` with a fresh cursor forever
  has no repeated cursor to catch).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import orjson
from dlt.common.configuration import resolve_configuration
from dlt.common.configuration.specs import RuntimeConfiguration
from dlt.sources.helpers.requests.retry import DEFAULT_RETRY_EXCEPTIONS, Client
from dlt.sources.helpers.rest_client.auth import APIKeyAuth
from dlt.sources.helpers.rest_client.client import RESTClient
from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator
from dlt.sources.helpers.rest_client.typing import Hooks
from requests import HTTPError, Request, Response
from requests.exceptions import ReadTimeout, RequestException

from exa_source import settings
from exa_source.exceptions import (
    ExaAPIError,
    ExaAuthError,
    ExaConfigError,
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
#: Longest request path (with its query, hence the cursor) quoted in an error message.
_MAX_QUOTED = 300
_DEFAULT_PORTS = {"http": 80, "https": 443}
_OBJECT_TYPES = {dict}
#: JSON names of the types orjson decodes to, for messages about a page's items.
_JSON_TYPES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}
T = TypeVar("T")


class MalformedResponseError(RequestException):
    """A 2xx reply whose body was cut short (empty, or ends mid-document); retried."""


class BodyTimeoutError(ReadTimeout):
    """A response body took longer than the client's ``body_timeout``. Retried like a timeout."""


@dataclass
class RequestStats:
    """Counters of one scan, kept by the client's response hook.

    Attributes:
        requests: HTTP attempts, retries included.
        pages: list pages decoded successfully.
        retried: attempts that failed with a retryable status (429, 5xx).
        started: ``time.monotonic()`` at creation.
        server_date: the ``Date`` header of the last response, as sent (the server's clock).
    """

    requests: int = 0
    pages: int = 0
    retried: int = 0
    started: float = field(default_factory=time.monotonic)
    server_date: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


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


def _page(response: Response) -> str:
    """Name the request of a reply for a message: method, path and query (hence the cursor)."""
    request = response.request
    if request is None:
        return "an Exa request"
    target = request.path_url
    if len(target) > _MAX_QUOTED:
        target = target[:_MAX_QUOTED] + "..."
    return f"{request.method} {target}"


def _origin(location: str, request_url: str | None) -> str:
    """Return ``scheme://host:port`` of a redirect target, and nothing else of it.

    A Location may carry credentials, paths and query strings (a presigned signature, a
    token): none of it belongs in a log. A relative Location is resolved against the request.
    """
    try:
        parts = urlsplit(urljoin(request_url or "", location.strip()))
        host, port = parts.hostname, parts.port
    except ValueError:  # e.g. a port out of range
        return "an unparseable Location"
    scheme = parts.scheme.lower()
    if not scheme or not host:
        return "an unparseable Location"
    host = "".join(c if c.isprintable() else "?" for c in host[:100])
    if ":" in host:
        host = f"[{host}]"
    port = port or _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def _undecodable(response: Response, error: orjson.JSONDecodeError) -> Exception:
    """Tell a body cut short (retryable) from a complete one that cannot be decoded (final).

    A dropped connection usually surfaces as an incomplete read (Content-Length not reached)
    and is retried by the session before this point. A body that is empty or ends in the middle
    of a JSON document or of a UTF-8 character was cut short as well, only where the HTTP
    framing could not see it (a close-delimited body, a proxy): it is retried too. Anything
    else (bytes that are not UTF-8, text that is not JSON, nesting deeper than orjson's 1024
    levels) comes back the same on every attempt, so it fails at once.

    Returns:
        :class:`MalformedResponseError` (retried) or :class:`ExaAPIError` (not retried).
    """
    content = response.content
    status = response.status_code
    page = _page(response)
    cut: str | None = None
    reason = ""
    if not content.strip():
        cut = "an empty body"
    elif error.msg.startswith("str is not valid UTF-8"):  # orjson reports position 0 for these
        try:
            content.decode()
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":
                cut = "a body that ends inside a UTF-8 character"
            else:
                reason = f"not valid UTF-8 (at byte {exc.start:,})"
        else:
            reason = f"not valid UTF-8 ({error.msg})"
    elif error.pos >= len(content.decode(errors="replace").rstrip()):  # pos counts characters
        cut = "a JSON body that ends mid-document"
    elif "depth" in error.msg or "recursion" in error.msg.lower():
        reason = "nested deeper than 1024 levels (the most orjson decodes)"
    else:
        ctype = response.headers.get("Content-Type") or "no Content-Type"
        reason = f"not JSON ({ctype}; {error.msg} at character {error.pos:,})"
    if cut is not None:
        return MalformedResponseError(
            f"Exa answered {status} on {page} with {cut} ({len(content):,} bytes): cut short"
            " in transit",
            response=response,
        )
    return ExaAPIError(
        f"Exa answered {status} on {page} with a body that is {reason}; not retried: the same"
        f" reply would come back. Check that base_url is the Exa API ({settings.DEFAULT_BASE_URL})"
        " and not a proxy or web page."
    )


def _redirect(response: Response) -> ExaAPIError:
    """The error for a 3xx reply, naming only the origin it points to."""
    status = response.status_code
    page = _page(response)
    location = response.headers.get("Location")
    if not location:
        return ExaAPIError(
            f"Exa answered {status} on {page} without a Location; redirects are not followed."
        )
    origin = _origin(location, response.request.url if response.request else None)
    return ExaAPIError(
        f"Exa answered {status} on {page} redirecting to {origin}; not followed: the API key"
        f" would be sent to it. Point base_url at the API itself ({settings.DEFAULT_BASE_URL})."
    )


def raise_for_exa_status(response: Response, *args: Any, **kwargs: Any) -> None:
    """Response hook: turn error statuses into clear errors and decode good bodies once.

    Runs inside the retrying session's ``send``, once per attempt. 429 and 5xx are re-raised as
    :class:`requests.HTTPError` so that dlt's retry policy (backoff, ``Retry-After``) handles
    them; every other 4xx raises an :class:`ExaError`, which the session does not retry.

    A 3xx is an error, raised before requests could follow it: requests drops only the
    ``Authorization`` header when a redirect leaves the host, never ``x-api-key``, so following
    would hand the key to whatever the Location names (another host, or plain http). The
    message names the target's origin only; a Location may carry a signature or a token.

    Raises:
        ExaAuthError: 400 naming the API key, or 401/403.
        ExaCreditsError: 402.
        ExaAPIError: a 3xx, any other 4xx, or a complete 2xx body that cannot be decoded.
        HTTPError: 429 or 5xx (retried by the session).
        MalformedResponseError: a 2xx body cut short (retried).
    """
    status = response.status_code
    if status < 300:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise _undecodable(response, exc) from None
        setattr(response, _BODY_ATTR, body)
        return
    if status < 400:
        raise _redirect(response)
    message = _api_message(response)
    if status == 429 or status >= 500:
        raise HTTPError(f"{status} from Exa: {message}", response=response)
    if status in (401, 403) or (status == 400 and "api-key" in message.lower()):
        raise ExaAuthError(
            f"Exa rejected the API key (HTTP {status}: {message}). Check the key set in"
            f" SOURCES__EXA__API_KEY, [sources.exa] api_key in .dlt/secrets.toml or"
            f" {settings.API_KEY_ENV}.",
            status=status,
            detail=message,
        )
    if status == 402:
        raise ExaCreditsError(
            f"Exa answered 402: out of credits or over the key's budget ({message})."
        )
    raise ExaAPIError(
        f"Exa API error {status} on {response.request.path_url}: {message}", status=status
    )


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
    reads the body decoded once by the response hook, refuses a cursor it has seen before (a
    server bug that would otherwise loop forever) and bounds the scan: a server answering
    ``hasMore: true`` with a fresh cursor every time never repeats one, so after ``max_pages``
    pages or ``max_seconds`` (from the first request) with more to come, it stops. The
    client deep-copies it for every scan, so the counts are per scan.

    Args:
        max_pages: most pages of one scan.
        max_seconds: most seconds of one scan, checked before each page is requested.
    """

    def __init__(
        self, max_pages: int = settings.MAX_PAGES, max_seconds: float = settings.MAX_SECONDS
    ) -> None:
        super().__init__(cursor_path="nextCursor", cursor_param="cursor", has_more_path="hasMore")
        self._seen: set[str] = set()
        self.max_pages = max_pages
        self.max_seconds = max_seconds
        self._pages = 0
        self._started = time.monotonic()

    def init_request(self, request: Request) -> None:
        """Start the scan's clock (called once, before the first request)."""
        self._started = time.monotonic()
        self._pages = 0

    def update_state(self, response: Response, data: list[Any] | None = None) -> None:
        """Read ``nextCursor`` and ``hasMore`` from the page envelope.

        Raises:
            ExaPaginationError: the envelope lacks ``hasMore``, has a cursor that is not a
                string, repeats a cursor, or the scan reached ``max_pages``/``max_seconds``
                with more pages to come.
        """
        body = decoded_body(response)
        if not isinstance(body, dict):
            raise ExaPaginationError(
                f"Exa list reply on {_page(response)} is not a {{data, hasMore, nextCursor}} object"
            )
        cursor = body.get("nextCursor")
        if cursor is not None and type(cursor) is not str:
            raise ExaPaginationError(
                f"Exa list reply on {_page(response)} has a nextCursor that is not a string"
                f" ({cursor!r:.100}); expected a string or null"
            )
        # An empty string is "no cursor" too: never send `cursor=` (the API rejects it).
        self._next_reference = cursor or None
        has_more = body.get("hasMore")
        if not isinstance(has_more, bool):
            raise ExaPaginationError(
                f"Exa list reply on {_page(response)} without a boolean hasMore (got"
                f" {has_more!r:.100}); expected {{data, hasMore, nextCursor}}"
            )
        self._has_next_page = self._has_next_page and has_more
        self._pages += 1
        if not self._has_next_page or cursor is None:  # a next page implies a cursor
            return
        if cursor in self._seen:
            raise ExaPaginationError(
                f"Exa returned the cursor {cursor!r:.100} twice in one scan (on"
                f" {_page(response)}); stopping instead of looping. Rerun; if it persists,"
                " report it to Exa."
            )
        self._seen.add(cursor)
        self._check_bounds(response)

    def _check_bounds(self, response: Response) -> None:
        """Stop a scan that has more pages to come but used up its pages or its time."""
        path = _page(response).split("?", 1)[0]
        if self._pages >= self.max_pages:
            raise ExaPaginationError(
                f"Stopped the scan ({path}) after {self._pages:,} pages: the max_pages bound"
                f" ({self.max_pages:,}) was reached and Exa still answers hasMore with a new"
                f" cursor. If the list really is that long, raise {settings.MAX_PAGES_HINT};"
                " otherwise the API is paging in a loop. Nothing was committed."
            )
        elapsed = time.monotonic() - self._started
        if elapsed >= self.max_seconds:
            raise ExaPaginationError(
                f"Stopped the scan ({path}) after {self._pages:,} pages and {elapsed:,.1f} s: the"
                f" max_seconds bound ({self.max_seconds:g} s) was reached and Exa still answers"
                f" hasMore. If a scan really takes that long, raise {settings.MAX_SECONDS_HINT};"
                " otherwise the API is paging in a loop or too slowly. Nothing was committed."
            )


class _BodyWatchdog:
    """Cuts off response bodies still being read at their deadline.

    requests' timeout bounds each socket read, not a whole body: a server that sends the
    headers and then a byte every few seconds holds a request forever. :meth:`arm` registers a
    body about to be read; one daemon thread shuts the socket down for reading (urllib3's
    ``HTTPResponse.shutdown``) when the deadline passes, which ends the blocked read at once,
    wherever it is (plain, chunked or compressed body). Reading in chunks and checking the
    clock would not do: a single urllib3 read may wait for many drip-fed bytes.

    Arming and disarming take a lock each, ~3 us a page (a ``threading.Timer`` per request would
    cost ~0.3 ms); the thread wakes up only at the earliest deadline, starts on first use and
    exits after ``settings.BODY_WATCHDOG_IDLE_SECONDS`` without work.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Any]] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count()
        #: when the thread wakes up next; math.inf while idle, None when there is no thread
        self._wake_at: float | None = None

    def arm(self, raw: Any, seconds: float) -> int:
        """Shut ``raw`` (a urllib3 response) down in ``seconds`` unless disarmed; return a token."""
        deadline = time.monotonic() + seconds
        with self._cond:
            token = next(self._ids)
            self._armed[token] = (deadline, raw)
            if self._wake_at is None:
                self._wake_at = deadline
                threading.Thread(target=self._watch, name="exa-body-deadline", daemon=True).start()
            elif deadline < self._wake_at:
                self._cond.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Forget a body; return whether its deadline passed (its socket was shut down)."""
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
        return False

    def _watch(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (deadline, raw) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        self._fired.add(token)
                        try:
                            raw.shutdown()
                        except Exception:  # released or closed meanwhile: the read has ended
                            pass
                if self._armed:
                    self._wake_at = min(deadline for deadline, _ in self._armed.values())
                    self._cond.wait(self._wake_at - now)
                else:
                    self._wake_at = math.inf
                    idle = not self._cond.wait(settings.BODY_WATCHDOG_IDLE_SECONDS)
                    if idle and not self._armed:
                        self._wake_at = None
                        return


def _positive(name: str, value: Any, integer: bool = False) -> Any:
    """Return ``value`` if it is a finite positive number (an int if ``integer``).

    Raises:
        ExaConfigError: anything else.
    """
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not 0 < value < math.inf:
        kind = "integer" if integer else "number"
        raise ExaConfigError(f"{name} must be a positive {kind}, got {value!r}")
    return value


class ExaRESTClient(RESTClient):
    """dlt's REST client whose page extraction reads the once-decoded envelope.

    Args:
        base_url: API root, e.g. ``https://api.exa.ai`` (paths carry ``/websets/v0``).
        api_key: the Exa key, sent as the ``x-api-key`` header and nowhere else (redirects are
            not followed).
        stats: counters updated on every attempt.
        max_pages: most pages of one scan (default ``settings.MAX_PAGES``).
        max_seconds: most seconds of one scan (default ``settings.MAX_SECONDS``).
        body_timeout: most seconds to read one response body, once its headers arrived
            (default: ``RUNTIME__REQUEST_TIMEOUT``). Exceeding it counts as a timeout:
            retried, then :class:`ExaAPIError`.

    Raises:
        ExaConfigError: a bound that is not a finite positive number (``max_pages``: integer).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        stats: RequestStats | None = None,
        *,
        max_pages: int | None = None,
        max_seconds: float | None = None,
        body_timeout: float | None = None,
    ) -> None:
        config = resolve_configuration(RuntimeConfiguration())
        self.max_pages: int = _positive(
            "max_pages", settings.MAX_PAGES if max_pages is None else max_pages, integer=True
        )
        self.max_seconds: float = _positive(
            "max_seconds", settings.MAX_SECONDS if max_seconds is None else max_seconds
        )
        self.body_timeout: float = (
            _positive("RUNTIME__REQUEST_TIMEOUT", config.request_timeout)
            if body_timeout is None
            else _positive("body_timeout", body_timeout)
        )
        retrying = Client(
            raise_for_status=False,
            exceptions=(*DEFAULT_RETRY_EXCEPTIONS, MalformedResponseError),
        )
        retrying.update_from_config(config)
        super().__init__(
            base_url=base_url.rstrip("/"),
            auth=APIKeyAuth(name=settings.API_KEY_HEADER, api_key=api_key, location="header"),
            paginator=ExaCursorPaginator(self.max_pages, self.max_seconds),
            session=retrying.session,
            config=config,
        )
        # requests re-reads proxy and CA-bundle variables from the environment on every request
        # (~0.4 ms a page); when none is set there is nothing to read
        self.session.trust_env = any(k.lower() in _ENV_SETTINGS for k in os.environ)
        # the list calls pass allow_redirects=False and the hook refuses a 3xx; this covers any
        # other call made through this session with the key (requests raises TooManyRedirects)
        self.session.max_redirects = 0
        self.stats = stats or RequestStats()
        self.max_attempts = config.request_max_attempts
        self._watchdog = _BodyWatchdog()

    def _count(self, response: Response, *args: Any, **kwargs: Any) -> None:
        stats = self.stats
        with stats.lock:  # cursor chains of several websets are read at once
            stats.requests += 1
            stats.server_date = response.headers.get("Date") or stats.server_date
            if response.status_code == 429 or response.status_code >= 500:
                stats.retried += 1

    def _read_body(self, response: Response, *args: Any, **kwargs: Any) -> None:
        """Response hook: read the whole body within ``body_timeout`` seconds.

        requests reads the body after the response hooks; reading it here, under the
        watchdog, bounds it for every status (error pages too). Without urllib3 2.3's
        ``HTTPResponse.shutdown`` the body is read unbounded, as before.

        Raises:
            BodyTimeoutError: the deadline passed first (retried like a timeout).
        """
        raw = response.raw
        if getattr(response, "_content", None) is not False or not hasattr(raw, "shutdown"):
            return  # read already, or not a urllib3 response
        token = self._watchdog.arm(raw, self.body_timeout)
        fired = False
        try:
            try:
                response.content  # noqa: B018 - reads and caches the body
            finally:
                fired = self._watchdog.disarm(token)
        except Exception:
            if fired:  # the read failed because the watchdog cut it
                raise self._too_slow(response) from None
            raise
        if fired:  # a close-delimited body just ends when cut
            raise self._too_slow(response)

    def _too_slow(self, response: Response) -> BodyTimeoutError:
        tell = getattr(response.raw, "tell", None)
        received = f"{tell():,} bytes" if callable(tell) else "part of it"
        response.close()  # the socket is shut: never hand this connection back for reuse
        return BodyTimeoutError(
            f"the body of {_page(response)} took longer than {self.body_timeout:g} s"
            f" ({received} received by then; a server drip-feeding it?). The deadline is the"
            " client's body_timeout, by default RUNTIME__REQUEST_TIMEOUT",
            response=response,
        )

    def extract_response(self, response: Response, data_selector: Any) -> list[Any]:
        """Return the page's ``data`` list from the once-decoded envelope.

        The items are checked to be objects with one C-level pass (``map(type, ...)``, ~10 us
        for 200 items), not per row in Python: a null or a string among them would otherwise surface
        later as a bare ``TypeError`` far from the page that carried it.

        Raises:
            ExaPaginationError: the reply is not a ``{data: [...]}`` envelope, or an item is
                not an object.
        """
        body = decoded_body(response)
        data = body.get("data") if isinstance(body, dict) else None
        if type(data) is not list:
            raise ExaPaginationError(
                f"Exa list reply without a data list on {_page(response)}; expected"
                " {data, hasMore, nextCursor}"
            )
        if data and set(map(type, data)) != _OBJECT_TYPES:
            bad = [(i, _JSON_TYPES.get(type(item), "?")) for i, item in enumerate(data)]
            bad = [(i, kind) for i, kind in bad if kind != "object"]
            listed = ", ".join(f"item {i} is {kind}" for i, kind in bad[:5])
            raise ExaPaginationError(
                f"Exa list reply on {_page(response)} has {len(bad)} item(s) in data that are"
                f" not objects ({listed}{', ...' if len(bad) > 5 else ''});"
                " expected import objects"
            )
        with self.stats.lock:
            self.stats.pages += 1
        return data

    def pages(
        self, path: str, page_size: int | None, params: dict[str, Any] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the ``data`` list of every page of a list endpoint, first to last.

        Pages are fetched and decoded one page ahead in a background thread, so that waiting
        for the next page overlaps with converting and writing the current one (the cursor
        chain itself is strictly sequential).

        Raises:
            ExaAPIError: a 429/5xx or network error (a body past ``body_timeout`` included)
                that outlasted every retry, or a redirect.
            ExaPaginationError: a malformed page, or ``max_pages``/``max_seconds`` reached.
            ExaError: see :func:`raise_for_exa_status`.
        """
        return prefetched(self._pages(path, page_size, params), settings.PAGES_AHEAD)

    def _pages(
        self, path: str, page_size: int | None, params: dict[str, Any] | None = None
    ) -> Generator[list[dict[str, Any]], None, None]:
        """The pages, fetched in the calling thread.

        Args:
            path: the list endpoint.
            page_size: ``limit``; None sends no ``limit`` (the server's default), for a list
                that documents none (a monitor's runs).
            params: more query parameters (a list value is sent as a repeated key, as
                ``types=a&types=b``, what the events list expects).

        Raises:
            ExaAPIError: a 429/5xx or network error that outlasted every retry.
            ExaError: see :meth:`pages`.
        """
        hooks: Hooks = {"response": [self._count, self._read_body, raise_for_exa_status]}
        try:
            yield from self.paginate(
                path,
                params={**({} if page_size is None else {"limit": page_size}), **(params or {})},
                hooks=hooks,
                data_selector="data",
                allow_redirects=False,
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

    def first_page(self, path: str, page_size: int) -> list[dict[str, Any]]:
        """The first page of a list only: one request, no page fetched ahead."""
        pages = self._pages(path, page_size)
        try:
            return next(pages, [])
        finally:
            pages.close()

    def chains(
        self,
        paths: dict[str, str],
        page_size: int | None,
        concurrency: int,
        until: Callable[[str, list[dict[str, Any]]], bool] | None = None,
    ) -> Iterator[tuple[str, list[dict[str, Any]] | BaseException | None]]:
        """Read several cursor chains at once: yield ``(key, page)`` as pages arrive.

        Each chain (e.g. one webset's items) is read in order by one worker; up to
        ``concurrency`` chains are read at a time, and a bounded queue keeps at most two pages
        per worker waiting, so memory stays flat however many chains there are. Every request
        goes through the same retrying session (429 ``Retry-After`` is honoured per request).

        Args:
            paths: the list endpoint of each chain, by key.
            page_size: ``limit`` (None: the server's default).
            concurrency: chains read at once.
            until: called (in the worker) with each page of a chain; True ends that chain
                after the page, as if it were the last (a newest-first list read back only to
                what is already stored).

        Yields:
            ``(key, page)`` for each page of a chain, in the chain's order; then ``(key, None)``
            when the chain ended normally (or ``until`` ended it), or ``(key, error)`` when its
            list answered 404 (the parent was deleted while it was read).

        Raises:
            ExaError: any other error of any chain; the other workers stop at their next page.
        """
        if not paths:
            return
        # dlt's retrying session keeps 50 connections per host: enough for MAX_CONCURRENCY
        workers = max(1, min(concurrency, len(paths)))
        todo: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        for item in paths.items():
            todo.put(item)
        box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2 * workers)
        stop = threading.Event()

        def put(entry: tuple[str, Any]) -> bool:
            while not stop.is_set():
                try:
                    box.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            while not stop.is_set():
                try:
                    key, path = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    for page in self._pages(path, page_size):
                        if not put((key, page)):
                            return
                        if until is not None and until(key, page):
                            break
                    end: Any = None
                except ExaAPIError as exc:
                    if exc.status != 404:
                        put((key, _Failed(exc)))
                        return
                    end = exc
                except BaseException as exc:  # re-raised in the consumer
                    put((key, _Failed(exc)))
                    return
                if not put((key, end)):
                    return

        threads = [
            threading.Thread(target=work, name=f"exa-chain-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        remaining = len(paths)
        try:
            while remaining:
                key, item = box.get()
                if isinstance(item, _Failed):
                    raise item.error
                if item is None or isinstance(item, BaseException):
                    remaining -= 1
                yield key, item
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=5)


class SharedList:
    """A list endpoint read whole once per load and shared by the resources that need it.

    The websets listing feeds four tables (websets, their searches, enrichments and items),
    the monitors listing two (monitors and their runs), the webhooks listing two (webhooks
    and their attempts): each is requested once per load, by whichever resource runs first.

    Args:
        path: the list endpoint.
        page_size: its ``limit``.

    Attributes:
        server_date: the ``Date`` header that came with the listing.
    """

    def __init__(self, path: str, page_size: int) -> None:
        self.path, self.page_size = path, page_size
        self._lock = threading.Lock()
        self._load: Any = object()
        self._rows: list[dict[str, Any]] = []
        self.server_date: str | None = None

    def get(self, client: ExaRESTClient, load_id: str | None) -> list[dict[str, Any]]:
        """Every object (a complete listing), read through ``client`` if not yet in this load.

        Outside a pipeline (``load_id`` None) it is read every time.
        """
        with self._lock:
            if load_id is None or load_id != self._load:
                rows: list[dict[str, Any]] = []
                for page in client.pages(self.path, self.page_size):
                    rows.extend(page)
                self._rows, self._load = rows, load_id
                self.server_date = client.stats.server_date
            return self._rows


@dataclass(frozen=True)
class _Failed:
    """An error a chain worker hands to the consumer, to be raised there."""

    error: BaseException


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
