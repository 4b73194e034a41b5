"""Offline emulator of the Exa Websets **Imports** API (``/websets/v0/imports``).

Faithful to the recorded real behaviour described in ``docs/exa-api.md``, quirks included, and
fast enough never to be the bottleneck of a benchmark. Use it in-process::

    from exa_source.emulator import Emulator

    with Emulator(api_key="k", imports=1000, seed=0) as emu:
        ...  # point the client at emu.base_url

or as a process: ``python -m exa_source.emulator --port 0 --api-key k --imports 1000``.
"""

from .server import Emulator, EmulatorStats, Fault, FaultKind, FaultList
from .store import (
    SEED_ANCHOR,
    Clock,
    ImportNotFoundError,
    ImportStore,
    InvalidTransitionError,
    Page,
    encode_ulid,
    iso_ms,
    parse_time,
)

__all__ = [
    "SEED_ANCHOR",
    "Clock",
    "Emulator",
    "EmulatorStats",
    "Fault",
    "FaultKind",
    "FaultList",
    "ImportNotFoundError",
    "ImportStore",
    "InvalidTransitionError",
    "Page",
    "encode_ulid",
    "iso_ms",
    "parse_time",
]
