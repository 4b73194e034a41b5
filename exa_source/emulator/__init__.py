"""Offline emulator of the Exa Websets API: imports, websets and their items.

Routes: ``/websets/v0/imports``, ``/websets/v0/websets`` (with ``.../{webset}/items``,
``.../searches`` and ``.../enrichments``), ``/websets/v0/monitors`` (with ``.../runs``),
``/websets/v0/webhooks`` (with ``.../attempts``) and ``/websets/v0/events``; searches,
enrichments, monitor runs and webhook attempts move only when driven
(``POST /_emulator/websets/step``, :meth:`WebsetStore.step`; ``POST /_emulator/monitors/step``,
:meth:`MonitorStore.step_monitors`; ``POST /_emulator/webhooks/step``,
:meth:`MonitorStore.step_webhooks`).

Faithful to the recorded real behaviour described in ``docs/exa-api.md``, quirks included, and
fast enough never to be the bottleneck of a benchmark. Use it in-process::

    from exa_source.emulator import Emulator

    with Emulator(api_key="k", imports=1000, websets=5, items_per_webset=200, seed=0) as emu:
        ...  # point the client at emu.base_url; emu.store (imports), emu.websets (websets),
        # emu.monitors (monitors, runs, webhooks, attempts)

or as a process: ``python -m exa_source.emulator --port 0 --api-key k --imports 1000
--websets 5 --items-per-webset 200 --monitors 10 --webhooks 3``.
"""

from .events import EVENT_TYPES, RETENTION_MS, EventLog, EventNotFoundError
from .monitors import (
    MONITOR_RUN_STATUSES,
    MonitorNotFoundError,
    MonitorStore,
    RunNotFoundError,
    WebhookNotFoundError,
)
from .server import (
    IDLE_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_UPLOAD_BYTES,
    Emulator,
    EmulatorStats,
    Fault,
    FaultKind,
    FaultList,
)
from .store import (
    CLOCK_MAX,
    CLOCK_MIN,
    SEED_ANCHOR,
    TIME_MAX,
    TIME_MIN,
    Clock,
    ImportNotFoundError,
    ImportStore,
    InvalidTransitionError,
    Page,
    TimeRangeError,
    encode_ulid,
    iso_ms,
    parse_time,
)
from .websets import (
    EnrichmentNotFoundError,
    ItemNotFoundError,
    SearchNotFoundError,
    WebsetConflictError,
    WebsetNotFoundError,
    WebsetStore,
)

__all__ = [
    "CLOCK_MAX",
    "CLOCK_MIN",
    "EVENT_TYPES",
    "IDLE_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "MAX_UPLOAD_BYTES",
    "MONITOR_RUN_STATUSES",
    "RETENTION_MS",
    "SEED_ANCHOR",
    "TIME_MAX",
    "TIME_MIN",
    "Clock",
    "Emulator",
    "EmulatorStats",
    "EnrichmentNotFoundError",
    "EventLog",
    "EventNotFoundError",
    "Fault",
    "FaultKind",
    "FaultList",
    "ImportNotFoundError",
    "ImportStore",
    "InvalidTransitionError",
    "ItemNotFoundError",
    "MonitorNotFoundError",
    "MonitorStore",
    "Page",
    "RunNotFoundError",
    "SearchNotFoundError",
    "TimeRangeError",
    "WebhookNotFoundError",
    "WebsetConflictError",
    "WebsetNotFoundError",
    "WebsetStore",
    "encode_ulid",
    "iso_ms",
    "parse_time",
]
