"""The connector's options: where the API key comes from, and the checks every option passes.

One place for both, so that the CLI, the Airflow DAG and a user's own ``exa_websets_source()``
resolve the key the same way and reject the same bad values with the same message, before any
request is sent.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

from exa_source import settings
from exa_source.exceptions import ExaConfigError

DeletionPolicy = Literal["soft", "hard", "off"]
POLICIES: tuple[DeletionPolicy, ...] = ("soft", "hard", "off")


def resolve_api_key(explicit: Any = None) -> str | None:
    """Return the Exa API key: ``explicit`` if given, else dlt config, else ``EXA_API_KEY``.

    dlt config covers ``SOURCES__EXA__API_KEY``, ``[sources.exa] api_key`` in
    ``.dlt/secrets.toml`` and dlt's other providers (e.g. the Airflow Variable
    ``dlt_secrets_toml``). ``EXA_API_KEY`` is what Exa's own SDKs read. This is the only
    function in the package that decides where the key comes from.

    Surrounding whitespace is stripped wherever the key comes from: a key pasted with a
    trailing newline (an env file, an escaped newline in secrets.toml) would otherwise reach the
    request header, and requests would quote it, key included, in its error message.

    Returns:
        The key without surrounding whitespace, or None when none is configured anywhere.
    """
    if explicit is not None and str(explicit).strip():
        return str(explicit).strip()
    import dlt
    from dlt.common.configuration.exceptions import ConfigFieldMissingException

    key: Any = None
    try:
        key = dlt.secrets.get(f"sources.{settings.SOURCE_NAME}.api_key")
    except ConfigFieldMissingException:
        pass
    if key is not None and str(key).strip():
        return str(key).strip()
    return os.environ.get(settings.API_KEY_ENV, "").strip() or None


def require_api_key(explicit: Any = None) -> str:
    """Return the key from :func:`resolve_api_key`, checked to be sendable as a header.

    Raises:
        ExaConfigError: no key is configured anywhere (the message says where to put one), or
            the key holds a control character or non-ASCII text inside it. The message gives
            the position and kind of the character, never the key.
    """
    key = resolve_api_key(explicit)
    if not key:
        raise ExaConfigError(settings.NO_KEY_MESSAGE)
    for position, char in enumerate(key, start=1):
        if not " " <= char <= "~":
            raise ExaConfigError(
                f"the Exa API key has a character that cannot travel in an HTTP header"
                f" (U+{ord(char):04X} at position {position} of {len(key)}); copy the key"
                " again from the Exa dashboard. The key is not shown here."
            )
    return key


def parse_timestamp(value: str | datetime, option: str = "initial_updated_at") -> datetime:
    """Parse an ISO-8601 timestamp option into an aware UTC datetime.

    Naive values are taken as UTC; ``Z`` and offsets are accepted.

    Raises:
        ExaConfigError: the value is not an ISO-8601 date or timestamp.
    """
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ExaConfigError(
                f"{option}={value!r} is not an ISO-8601 timestamp"
                " (e.g. 2025-01-01 or 2025-01-01T00:00:00Z)"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def validate_base_url(base_url: str) -> str:
    """Check the base URL: https, or plain http only on a loopback host.

    The key travels in a header of every request; over plain http anyone on the path reads it.

    Returns:
        The URL without a trailing slash.

    Raises:
        ExaConfigError: not an http(s) URL, or plain http to a non-loopback host.
    """
    parts = urlsplit(str(base_url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExaConfigError(f"base_url={base_url!r} is not an http(s) URL")
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ExaConfigError(
                f"base_url={base_url!r} uses plain http to a non-loopback host; the API key"
                " would travel in clear. Use https (plain http is allowed only for 127.0.0.1,"
                " ::1 or localhost, e.g. the bundled emulator)."
            )
    return str(base_url).rstrip("/")


def validate_page_size(page_size: Any) -> int:
    """Check that the page size is an integer the API accepts (1-200, ``docs/exa-api.md`` §3.1).

    Raises:
        ExaConfigError: out of range or not an integer.
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise ExaConfigError(f"page_size={page_size!r} must be an integer from 1 to 200")
    if not settings.MIN_PAGE_SIZE <= page_size <= settings.MAX_PAGE_SIZE:
        raise ExaConfigError(
            f"page_size={page_size} is outside {settings.MIN_PAGE_SIZE}-"
            f"{settings.MAX_PAGE_SIZE}, the range the Exa API accepts"
        )
    return page_size


def validate_policy(policy: Any) -> DeletionPolicy:
    """Check a deletion policy name.

    Raises:
        ExaConfigError: not one of soft, hard, off.
    """
    for known in POLICIES:
        if policy == known:
            return known
    raise ExaConfigError(f"deletions={policy!r} must be one of {', '.join(POLICIES)}")


def validate_concurrency(concurrency: Any) -> int:
    """Check the number of websets whose items are read at once (1-``MAX_CONCURRENCY``).

    Raises:
        ExaConfigError: out of range or not an integer.
    """
    top = settings.MAX_CONCURRENCY
    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= top
    ):
        raise ExaConfigError(f"concurrency={concurrency!r} must be an integer from 1 to {top}")
    return concurrency


_EVENT_TYPE = re.compile(r"[a-z_]+(\.[a-z_]+)+")


def validate_event_types(types: Any) -> tuple[str, ...] | None:
    """Check the event types the ``events`` table keeps; None (or empty, or ``all``) = all.

    Accepts a list, a comma-separated string (``monitor.run.created,monitor.run.completed``)
    or a JSON list in a string (how dlt passes ``SOURCES__EXA__EVENT_TYPES='["..."]'``).
    Only the shape is checked here (dotted lowercase names): the API answers a type it does
    not know with a 400 listing the valid ones, and types it adds later work unchanged.

    Raises:
        ExaConfigError: not a string or a list of strings, or a name of the wrong shape.
    """
    if types is None:
        return None
    if isinstance(types, str) and types.strip().startswith("["):
        try:
            types = json.loads(types)
        except ValueError:
            raise ExaConfigError(f"event_types={types!r} is not a valid JSON list") from None
    elif isinstance(types, str):
        types = [t.strip() for t in types.split(",")]
    if not isinstance(types, list | tuple) or not all(isinstance(t, str) for t in types):
        raise ExaConfigError(
            f"event_types={types!r} must be a list of event types or a comma-separated string"
        )
    names = tuple(sorted({t.strip() for t in types if t.strip()}))
    if not names or names == ("all",):
        return None
    bad = [t for t in names if not _EVENT_TYPE.fullmatch(t)]
    if bad:
        raise ExaConfigError(
            f"event_types: {', '.join(map(repr, bad))} is not an event type (e.g."
            " monitor.run.completed, webset.item.created; see docs/exa-api.md §4.2)"
        )
    return names


def validate_reconcile_days(days: Any) -> float:
    """Check how often every webset's items are scanned whole, in days (0 = every run).

    Raises:
        ExaConfigError: negative, not finite or not a number.
    """
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days < 36_500:
        raise ExaConfigError(
            f"items_reconcile_days={days!r} must be a number of days from 0 (every run) up"
        )
    return float(days)
