"""Run the emulator as a process.

``python -m exa_source.emulator --host 127.0.0.1 --port 0 --api-key K --imports N
[--websets W --items-per-webset M] [--monitors K] [--webhooks H] [--seed S] [--no-quirk]
[--idle-timeout SECONDS]``
prints exactly one line, the base URL (with the real port when ``--port 0``), logs to stderr,
serves until SIGINT/SIGTERM and exits 0. A non-loopback ``--host`` logs a warning: the emulator
has no real authentication.
``exa-source emulator`` runs the same :func:`main` (same flags, same behaviour).
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from types import FrameType

from .server import IDLE_TIMEOUT_S, Emulator


def _positive_seconds(text: str) -> float:
    """Parse a positive, finite number of seconds (argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def build_parser(prog: str = "python -m exa_source.emulator") -> argparse.ArgumentParser:
    """Return the emulator's argument parser; ``prog`` is the command shown in its usage."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Emulator of the Exa Websets API: prints its base URL on stdout,"
        " logs to stderr, serves until SIGINT/SIGTERM.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--api-key", default="test-key", help="the key clients must send")
    parser.add_argument("--imports", type=int, default=0, help="imports to seed")
    parser.add_argument("--websets", type=int, default=0, help="websets to seed")
    parser.add_argument(
        "--items-per-webset", type=int, default=0, help="items in each seeded webset"
    )
    parser.add_argument(
        "--monitors", type=int, default=0, help="monitors to seed over the seeded websets"
    )
    parser.add_argument("--webhooks", type=int, default=0, help="webhooks to seed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample data")
    parser.add_argument(
        "--no-quirk",
        action="store_true",
        help="last list page says hasMore:false (the real API said hasMore:true)",
    )
    parser.add_argument(
        "--no-credits-key", action="append", default=[], help="a key that answers 402"
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive_seconds,
        default=IDLE_TIMEOUT_S,
        help="close connections silent this long, or whose request takes longer to arrive "
        "(default %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", help="log level (stderr)")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m exa_source.emulator") -> int:
    """Parse arguments, serve until SIGINT/SIGTERM, return the exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        prog: the command shown in usage and errors (``exa-source emulator`` from the CLI).

    Returns:
        0 once stopped by SIGINT or SIGTERM.
    """
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    emu = Emulator(
        api_key=args.api_key,
        imports=args.imports,
        seed=args.seed,
        host=args.host,
        port=args.port,
        quirk_last_page=not args.no_quirk,
        no_credits_keys=tuple(args.no_credits_key),
        idle_timeout=args.idle_timeout,
        websets=args.websets,
        items_per_webset=args.items_per_webset,
        monitors=args.monitors,
        webhooks=args.webhooks,
    ).start()
    print(emu.base_url, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
