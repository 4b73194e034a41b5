"""Unit tests of the HTTP layer: error mapping, once-only decoding, the cursor paginator."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from requests import HTTPError, PreparedRequest, Response

from exa_source.client import (
    ExaAPIError,
    ExaAuthError,
    ExaCreditsError,
    ExaCursorPaginator,
    ExaPaginationError,
    ExaRESTClient,
    MalformedResponseError,
    decoded_body,
    raise_for_exa_status,
)


def response(status: int, body: Any, content_type: str = "application/json") -> Response:
    resp = Response()
    resp.status_code = status
    resp._content = body if isinstance(body, bytes) else orjson.dumps(body)
    resp.headers["Content-Type"] = content_type
    resp.reason = "Reason"
    request = PreparedRequest()
    request.prepare(method="GET", url="http://127.0.0.1/websets/v0/imports?limit=200")
    resp.request = request
    resp.url = request.url or ""
    return resp


def envelope(cursor: str | None, has_more: Any = True, data: list[Any] | None = None) -> Response:
    return response(200, {"data": data or [], "hasMore": has_more, "nextCursor": cursor})


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (
            400,
            {"requestId": "ab", "error": "x-api-key header is invalid"},
            ExaAuthError,
            "Exa rejected the API key",
        ),
        (401, {"error": "Unauthorized"}, ExaAuthError, "Exa rejected the API key"),
        (402, {"error": "No credits", "tag": "NO_MORE_CREDITS"}, ExaCreditsError, "402"),
        (
            400,
            {
                "statusCode": 400,
                "message": ["limit must not be greater than 200"],
                "error": "Bad Request",
            },
            ExaAPIError,
            "limit must not be greater than 200",
        ),
        (
            404,
            {"statusCode": 404, "message": "Import not found"},
            ExaAPIError,
            "404.*Import not found",
        ),
        (409, {"error": {"type": "CONFLICT", "message": "exists"}}, ExaAPIError, "exists"),
    ],
)
def test_client_errors_become_clear_exa_errors(
    status: int, body: Any, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        raise_for_exa_status(response(status, body))


def test_a_rejected_key_carries_the_status_and_exas_message() -> None:
    with pytest.raises(ExaAuthError) as caught:
        raise_for_exa_status(response(400, {"requestId": "ab", "error": "x-api-key is invalid"}))
    assert (caught.value.status, caught.value.detail) == (400, "x-api-key is invalid")


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_retryable_statuses_stay_http_errors(status: int) -> None:
    """429/5xx must reach dlt's retrying session as HTTPError (it retries those)."""
    html = b"<html><body><h1>502 Bad Gateway</h1>cloudflare</body></html>"
    with pytest.raises(HTTPError, match=str(status)) as info:
        raise_for_exa_status(response(status, html, "text/html"))
    assert info.value.response is not None


def test_good_body_is_decoded_once_and_malformed_is_retryable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resp = envelope("abc")
    decoded: list[bytes] = []
    real_loads = orjson.loads

    def loads(data: Any) -> Any:
        decoded.append(data)
        return real_loads(data)

    monkeypatch.setattr(orjson, "loads", loads)
    raise_for_exa_status(resp)
    assert decoded == [resp.content]  # the hook decoded the body...
    body = decoded_body(resp)
    assert body == {"data": [], "hasMore": True, "nextCursor": "abc"}
    assert decoded_body(resp) is body
    assert len(decoded) == 1  # ...and nothing decodes it again
    # without the hook (or its cached body) the body is decoded on demand, once
    bare = envelope("xyz")
    assert decoded_body(bare)["nextCursor"] == "xyz" and decoded_body(bare) is decoded_body(bare)
    assert len(decoded) == 2
    monkeypatch.undo()
    with pytest.raises(MalformedResponseError):
        raise_for_exa_status(response(200, b'{"data": [{"id": "imp'))


def _run(paginator: ExaCursorPaginator, resp: Response) -> None:
    raise_for_exa_status(resp)
    paginator.update_state(resp, decoded_body(resp)["data"])


def test_paginator_stops_on_null_cursor_even_if_has_more() -> None:
    paginator = ExaCursorPaginator()
    _run(paginator, envelope("c1"))
    assert paginator.has_next_page
    _run(paginator, envelope(None, has_more=True))  # the recorded quirk
    assert not paginator.has_next_page


@pytest.mark.parametrize("cursor", ["", None])
def test_paginator_never_sends_an_empty_cursor(cursor: str | None) -> None:
    paginator = ExaCursorPaginator()
    _run(paginator, envelope(cursor))
    assert not paginator.has_next_page


def test_paginator_stops_on_has_more_false() -> None:
    paginator = ExaCursorPaginator()
    _run(paginator, envelope("c1", has_more=False))
    assert not paginator.has_next_page


def test_repeated_cursor_is_an_error_not_a_loop() -> None:
    paginator = ExaCursorPaginator()
    _run(paginator, envelope("c1"))
    with pytest.raises(ExaPaginationError, match="twice"):
        _run(paginator, envelope("c1"))


def test_missing_has_more_is_an_error() -> None:
    paginator = ExaCursorPaginator()
    resp = response(200, {"data": [], "nextCursor": "x"})
    raise_for_exa_status(resp)
    with pytest.raises(ExaPaginationError, match="hasMore"):
        paginator.update_state(resp, [])


def test_reply_without_data_list_is_an_error() -> None:
    client = ExaRESTClient("http://127.0.0.1:9", "k")
    resp = response(200, {"items": [], "hasMore": False, "nextCursor": None})
    raise_for_exa_status(resp)
    with pytest.raises(ExaPaginationError, match="data list"):
        client.extract_response(resp, "data")


def test_prefetched_keeps_order_and_reraises_where_it_happened() -> None:
    from exa_source.client import prefetched

    def pages() -> Iterator[int]:
        yield 1
        yield 2
        raise ExaAPIError("boom")

    got: list[int] = []
    with pytest.raises(ExaAPIError, match="boom"):
        for item in prefetched(pages(), depth=2):
            got.append(item)
    assert got == [1, 2]


def test_prefetched_stops_the_producer_when_the_consumer_stops() -> None:
    from exa_source.client import prefetched

    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            closed.set()

    stream = prefetched(endless(), depth=2)
    assert [next(stream), next(stream)] == [1, 2]
    stream.close()  # type: ignore[attr-defined]
    assert closed.wait(timeout=10)


def test_proxy_and_ca_settings_from_the_environment_are_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from exa_source.client import _ENV_SETTINGS

    for name in list(os.environ):
        if name.lower() in _ENV_SETTINGS:
            monkeypatch.delenv(name)
    assert not ExaRESTClient("http://127.0.0.1:9", "k").session.trust_env
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert ExaRESTClient("http://127.0.0.1:9", "k").session.trust_env


# --- hostile servers over real loopback HTTP ---------------------------------------------------

KEY = "test-key-0123456789abcdef"
PATH = "/websets/v0/imports"
FAST_RETRIES = {
    "RUNTIME__REQUEST_MAX_ATTEMPTS": "3",
    "RUNTIME__REQUEST_BACKOFF_FACTOR": "0.01",
    "RUNTIME__REQUEST_MAX_RETRY_DELAY": "0.1",
    "RUNTIME__REQUEST_TIMEOUT": "5",
}
Reply = Callable[["StandIn", BaseHTTPRequestHandler, int], None]


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Three attempts, ~10 ms apart, 5 s per-read timeout (``RUNTIME__REQUEST_*``)."""
    for name, value in FAST_RETRIES.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


class StandIn:
    """A loopback HTTP server standing in for Exa, misbehaving as the test scripts it.

    ``reply(server, handler, n)`` answers the ``n``-th request (from 1); the path and headers of
    every request are recorded first, in :attr:`seen`. :attr:`stopping` is set on exit, so a
    reply that drips forever can end.
    """

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without this, Nagle's algorithm and
                # the client's delayed ACK hold the body back ~40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                with stand_in._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    stand_in.seen.append((self.path, headers))
                    n = len(stand_in.seen)
                stand_in.reply(stand_in, self, n)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        return len(self.seen)

    def __enter__(self) -> StandIn:
        serve = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        serve.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    length: int | None = None,
) -> None:
    """Send a reply; ``length`` declares another Content-Length than the body's (then closes)."""
    handler.send_response(status)
    headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)
    if length is not None:
        handler.close_connection = True


def page(n: int, cursor: Any, has_more: Any = True, data: Any = None) -> bytes:
    return orjson.dumps(
        {
            "data": [{"id": f"import_{n}"}] if data is None else data,
            "hasMore": has_more,
            "nextCursor": cursor,
        }
    )


def scan(client: ExaRESTClient, within: float = 30.0) -> dict[str, Any]:
    """Run a full scan in a thread; it must end within ``within`` s (``pages`` or ``error``)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["pages"] = list(client.pages(PATH, 200))
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(within)
    assert not worker.is_alive(), f"the scan did not end within {within} s"
    return out


def scan_error(client: ExaRESTClient) -> BaseException:
    out = scan(client)
    assert "error" in out, f"the scan succeeded: {out['pages']!r:.200}"
    error: BaseException = out["error"]
    assert KEY not in str(error)
    return error


def test_a_redirect_to_another_origin_never_receives_the_key(
    fast_retries: pytest.MonkeyPatch,
) -> None:
    """requests strips only ``Authorization`` on a cross-host redirect, not ``x-api-key``."""

    def elsewhere(server: StandIn, handler: BaseHTTPRequestHandler, n: int) -> None:
        send(handler, 200, page(n, None, has_more=False))

    with StandIn(elsewhere) as other:
        location = f"{other.base_url}{PATH}?limit=200&signature=s3cr3t"

        def moved(server: StandIn, handler: BaseHTTPRequestHandler, n: int) -> None:
            send(handler, 302, b'{"message": "Found"}', {"Location": location})

        with StandIn(moved) as api:
            out = scan(ExaRESTClient(api.base_url, KEY))
    assert [h for _, h in other.seen if "x-api-key" in h] == []
    assert other.requests == 0
    assert api.requests == 1  # not retried either
    error = out.get("error")
    assert isinstance(error, ExaAPIError), out
    assert str(error).startswith(
        f"Exa answered 302 on GET {PATH}?limit=200 redirecting to http://127.0.0.1:{other.port};"
        " not followed: the API key would be sent to it."
    )
    assert "s3cr3t" not in str(error) and KEY not in str(error)


@pytest.mark.parametrize(
    ("status", "location", "origin"),
    [
        (301, "/websets/v0/imports/", "http://127.0.0.1:80"),
        (307, "http://user:pw@evil.example:8080/x?key=abc", "http://evil.example:8080"),
        (308, "https://[::1]/v0", "https://[::1]:443"),
        (303, "http://evil.example:99999/", "an unparseable Location"),
    ],
)
def test_a_redirect_names_only_the_origin(status: int, location: str, origin: str) -> None:
    resp = response(status, {"message": "moved"})
    resp.headers["Location"] = location
    with pytest.raises(ExaAPIError, match=f"redirecting to {re.escape(origin)}; not followed"):
        raise_for_exa_status(resp)


def test_a_redirect_without_location_is_an_error() -> None:
    with pytest.raises(ExaAPIError, match=r"Exa answered 302 .* without a Location"):
        raise_for_exa_status(response(302, {"message": "moved"}))


#: How a drip-fed body is framed: headers, then what is sent before the drip, then each drip.
DRIPS = {
    "Content-Length": ({"Content-Length": "1000000"}, b"", b" "),
    "chunked": ({"Transfer-Encoding": "chunked"}, b"", b"1\r\n \r\n"),
    # a gzip header announcing a file name, which never ends: the decoder emits nothing
    "gzip header": (
        {"Content-Length": "1000000", "Content-Encoding": "gzip"},
        b"\x1f\x8b\x08\x08\x00\x00\x00\x00\x00\xff",
        b"a",
    ),
}


@pytest.mark.parametrize("framing", list(DRIPS))
def test_a_body_drip_fed_past_the_deadline_ends_the_run(
    monkeypatch: pytest.MonkeyPatch, framing: str
) -> None:
    """A byte every 0.2 s never trips the 1 s per-read timeout; the whole-body deadline
    (default: the request timeout) does, and is retried like a timeout."""
    for name, value in {**FAST_RETRIES, "RUNTIME__REQUEST_TIMEOUT": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "2")
    headers, first, each = DRIPS[framing]

    def drip(server: StandIn, handler: BaseHTTPRequestHandler, n: int) -> None:
        handler.send_response(200)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(first)
        while not server.stopping.wait(0.2):
            try:
                handler.wfile.write(each)
                handler.wfile.flush()
            except OSError:  # the client gave up
                return

    with StandIn(drip) as api:
        client = ExaRESTClient(api.base_url, KEY)
        error = scan_error(client)
        assert api.requests == 2  # retried like a timeout
    assert isinstance(error, ExaAPIError)
    assert re.search(r"after 2 attempts: BodyTimeoutError: .*longer than 1 s", str(error))
    assert client.body_timeout == 1.0


def test_body_timeout_is_configurable() -> None:
    assert ExaRESTClient("http://127.0.0.1:9", "k", body_timeout=2.5).body_timeout == 2.5


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"max_pages": 25}, r"after 25 pages: the max_pages bound \(25\)"),
        ({"max_seconds": 0.5}, r"the max_seconds bound \(0\.5 s\)"),
    ],
)
def test_an_endless_cursor_chain_is_stopped_by_a_run_bound(
    fast_retries: pytest.MonkeyPatch, bounds: dict[str, Any], message: str
) -> None:
    """``hasMore: true`` with a fresh cursor forever: no repeated cursor, yet no end."""

    def endless(server: StandIn, handler: BaseHTTPRequestHandler, n: int) -> None:
        send(handler, 200, page(n, f"c{n}"))

    with StandIn(endless) as api:
        error = scan_error(ExaRESTClient(api.base_url, KEY, **bounds))
        requests = api.requests
    assert isinstance(error, ExaPaginationError)
    assert re.search(message, str(error)), error
    if "max_pages" in bounds:
        assert requests == 25


def test_run_bounds_have_defaults_and_are_validated() -> None:
    from exa_source import settings
    from exa_source.exceptions import ExaConfigError

    client = ExaRESTClient("http://127.0.0.1:9", "k")
    assert (client.max_pages, client.max_seconds) == (settings.MAX_PAGES, settings.MAX_SECONDS)
    for bad in ({"max_pages": 0}, {"max_pages": 1.5}, {"max_seconds": -1}, {"body_timeout": 0}):
        with pytest.raises(ExaConfigError):
            ExaRESTClient("http://127.0.0.1:9", "k", **bad)


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (
            b'{"data": [{"id": "import_\xff"}], "hasMore": false, "nextCursor": null}',
            "application/json",
            "not valid UTF-8 .at byte 25",
        ),
        (b"<!DOCTYPE html><html><body>Welcome</body></html>", "text/html", "not JSON"),
        (
            b'{"data": ' + b"[" * 1100 + b"]" * 1100 + b', "hasMore": false, "nextCursor": null}',
            "application/json",
            "nested deeper than 1024 levels",
        ),
    ],
    ids=["invalid UTF-8", "HTML with 200", "nested too deep"],
)
def test_a_complete_undecodable_body_fails_at_once(
    fast_retries: pytest.MonkeyPatch, body: bytes, content_type: str, reason: str
) -> None:
    def bad(server: StandIn, handler: BaseHTTPRequestHandler, n: int) -> None:
        send(handler, 200, body, {"Content-Type": content_type})

    with StandIn(bad) as api:
        error = scan_error(ExaRESTClient(api.base_url, KEY))
        assert api.requests == 1
    assert isinstance(error, ExaAPIError)
    assert f"GET {PATH}?limit=200" in str(error)
    assert re.search(reason, str(error)), error
    assert "not retried" in str(error)


@pytest.mark.parametrize(
    ("body", "length"),
    [
        (page(1, None, has_more=False), 10_000),  # Content-Length promises more, then a close
        (page(1, None, has_more=False)[:-9], None),  # the JSON ends mid-document
        (page(1, None, has_more=False)[:5] + "é".encode()[:1], None),  # cut inside a character
    ],
    ids=["short of Content-Length", "JSON cut short", "cut inside a UTF-8 character"],
)
def test_a_truncated_body_is_still_retried(
    fast_retries: pytest.MonkeyPatch, body: bytes, length: int | None
) -> None:
    def cut(server: StandIn, handler: BaseHTTPRequestHandler, n: int) -> None:
        send(handler, 200, body, length=length)

    with StandIn(cut) as api:
        error = scan_error(ExaRESTClient(api.base_url, KEY))
        assert api.requests == 3
    assert isinstance(error, ExaAPIError)
    assert "after 3 attempts" in str(error)


@pytest.mark.parametrize(
    ("cursor", "data", "message"),
    [
        (5, None, r"nextCursor that is not a string \(5\)"),
        ({"after": "x"}, None, r"nextCursor that is not a string \(\{'after': 'x'\}\)"),
        (
            "c2",
            [{"id": "import_1"}, None],
            r"1 item\(s\) in data that are not objects.*item 1 is null",
        ),
        (
            "c2",
            ["import_1", 7],
            r"2 item\(s\) in data that are not objects.*item 0 is string, item 1 is number",
        ),
    ],
    ids=["number cursor", "object cursor", "null item", "string item"],
)
def test_a_malformed_page_names_the_page(
    fast_retries: pytest.MonkeyPatch, cursor: Any, data: Any, message: str
) -> None:
    """The second page (requested with ``cursor=c1``) is malformed: the error names it."""

    def second_bad(server: StandIn, handler: BaseHTTPRequestHandler, n: int) -> None:
        send(handler, 200, page(n, "c1") if n == 1 else page(n, cursor, data=data))

    with StandIn(second_bad) as api:
        error = scan_error(ExaRESTClient(api.base_url, KEY))
        assert api.requests == 2
    assert isinstance(error, ExaPaginationError), repr(error)
    assert f"GET {PATH}?limit=200&cursor=c1" in str(error)
    assert re.search(message, str(error)), error
