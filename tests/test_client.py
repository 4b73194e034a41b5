"""Unit tests of the HTTP layer: error mapping, once-only decoding, the cursor paginator."""

from __future__ import annotations

import threading
from collections.abc import Iterator
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


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_retryable_statuses_stay_http_errors(status: int) -> None:
    """429/5xx must reach dlt's retrying session as HTTPError (it retries those)."""
    html = b"<html><body><h1>502 Bad Gateway</h1>cloudflare</body></html>"
    with pytest.raises(HTTPError, match=str(status)) as info:
        raise_for_exa_status(response(status, html, "text/html"))
    assert info.value.response is not None


def test_good_body_is_decoded_once_and_malformed_is_retryable() -> None:
    resp = envelope("abc")
    raise_for_exa_status(resp)
    assert decoded_body(resp) is decoded_body(resp)
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
