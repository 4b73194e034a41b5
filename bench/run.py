"""Benchmark driver: ``.venv/bin/python bench/run.py --imports 100000 --repeat 3 --out bench/``.

Items mode: ``bench/run.py --items 1000000 --websets 50 --repeat 1 --out bench/items/`` seeds
the websets with N items in all and runs the items variants instead (see :func:`bench_items_n`).

For each N it starts ONE emulator process seeded with N imports, then runs every variant
(``bench/variants.py``) as its own child process against it, ``--repeat`` times each, one at a
time. For every child it measures, from the outside:

* wall: ``time.perf_counter()`` around the child, from ``Popen`` to ``os.wait4`` (interpreter
  start and imports included: what a user waits for);
* peak RSS: ``ru_maxrss`` of that child alone, from ``os.wait4(pid, 0)`` (KB on Linux);
* requests: list requests the emulator served during the child (stats reset before each child);

and collects the child's own timings (its ``BENCH_RESULT`` line). It prints a Markdown table per N
and a targets section, writes them to ``<out>/results.md`` (raw figures in ``results.json``) and
draws ``<out>/results.png``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.report import (  # noqa: E402
    VARIANT_LABELS,
    Measurement,
    render_chart,
    render_items_markdown,
    render_markdown,
)
from bench.variants import PAGE_SIZE, RESULT_PREFIX  # noqa: E402

API_KEY = "bench-key"
#: PostgreSQL of the test machine (override with DESTINATION__POSTGRES__CREDENTIALS).
PG_DSN = "postgresql://postgres:unused@127.0.0.1:5432/test"
LIST_ROUTE = "GET /websets/v0/imports"
ITEMS_ROUTE = "GET /websets/v0/websets/{id}/items"
#: What the CLI sets too (``exa_source.cli._defaults_for_cli``); every child gets it.
CHILD_ENV = {
    "RUNTIME__DLTHUB_TELEMETRY": "false",
    "PROVIDERS__ENABLE_AIRFLOW_SECRETS": "false",
    "RUNTIME__LOG_LEVEL": "WARNING",
}


class EmulatorProcess:
    """The emulator as a child process (``python -m exa_source.emulator``), with its controls."""

    def __init__(
        self, imports: int, log_path: Path, websets: int = 0, items_per_webset: int = 0
    ) -> None:
        #: N of the run: the imports, or in items mode the items in all
        self.imports = imports if not websets else websets * items_per_webset
        self._log = log_path.open("wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exa_source.emulator",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--api-key",
                API_KEY,
                "--imports",
                str(imports),
                "--websets",
                str(websets),
                "--items-per-webset",
                str(items_per_webset),
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError(f"emulator did not start (see {log_path})")
        self.base_url = line
        self.seed_seconds = time.perf_counter() - started

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call a ``/_emulator/...`` control endpoint and return its decoded JSON reply."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            return json.loads(reply.read())

    def list_requests(self) -> int:
        """Return the list requests served since the last stats reset."""
        return self.routes().get(LIST_ROUTE, 0)

    def routes(self) -> dict[str, int]:
        """Return the requests served per route since the last stats reset (API routes only)."""
        stats = self.control("GET", "/_emulator/stats")
        return {
            k: int(v) for k, v in stats["requests"].items() if not k.split(" ")[-1].startswith("/_")
        }

    def peak_rss_mb(self) -> float:
        """The emulator's peak RSS so far (``VmHWM``), in MB; 0 where /proc is not there."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        """Terminate the emulator (SIGTERM) and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class Setup:
    """What every exa-source child of one benchmark run shares.

    Attributes:
        destination: ``duckdb`` or ``postgres``.
        baseline: a folder holding an older revision's ``exa_source`` package (its ``old_*``
            variants import it instead of this tree's), or None.
        datasets: PostgreSQL datasets (schemas) created, dropped at the end.
    """

    destination: str = "duckdb"
    baseline: Path | None = None
    datasets: list[str] = field(default_factory=list)


def export_baseline(rev: str, into: Path) -> Path:
    """Write the ``exa_source`` package of git revision ``rev`` into ``into``; return it."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "exa_source"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_child(
    emulator: EmulatorProcess,
    key: str,
    workdir: Path,
    log_dir: Path,
    extra: Sequence[str] = (),
    setup: Setup | None = None,
    kind: str | None = None,
    route: str = LIST_ROUTE,
) -> Measurement:
    """Run one variant child against the emulator; measure its wall time and peak RSS.

    Args:
        emulator: the running emulator.
        key: the measurement's variant key.
        workdir: the child's working folder (pipelines and DuckDB file).
        log_dir: where the child's stderr goes.
        extra: more arguments for the child.
        setup: what every exa-source child shares (destination, baseline).
        kind: the child variant (``bench.variants``) when it is not derived from ``key``.
        route: the emulator route whose requests are the measurement's ``requests``.

    Raises:
        RuntimeError: the child failed or printed no result line.
    """
    setup = setup or Setup()
    if kind is None:
        is_exa = key.startswith(("exa_", "old_")) and key != "exa_py"
        kind = "exa_source" if is_exa else key
    else:
        is_exa = kind.startswith("exa_source")
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **CHILD_ENV}
    paths = [str(ROOT), env.get("PYTHONPATH")]
    if key.startswith("old_"):
        assert setup.baseline is not None, "old_* variants need --baseline"
        paths.insert(0, str(setup.baseline))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    if is_exa:
        dataset = "exa_websets"
        if setup.destination == "postgres":
            env.setdefault("DESTINATION__POSTGRES__CREDENTIALS", PG_DSN)
            dataset = f"bench_{workdir.name}".replace("-", "_")
            if dataset not in setup.datasets:
                setup.datasets.append(dataset)
        extra = [*extra, "--destination", setup.destination, "--dataset", dataset]
    cmd = [
        sys.executable,
        "-m",
        "bench.variants",
        kind,
        "--base-url",
        emulator.base_url,
        "--api-key",
        API_KEY,
        "--workdir",
        str(workdir),
        *extra,
    ]
    log_path = log_dir / f"{key}-{emulator.imports}-{time.monotonic_ns()}.log"
    emulator.control("DELETE", "/_emulator/stats")
    with log_path.open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=workdir, env=env)
        assert proc.stdout is not None
        try:
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    lines = [ln for ln in out.decode().splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{key} exited {proc.returncode}; log {log_path}:\n{tail}")
    child: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    routes = emulator.routes()
    return Measurement(
        key=key,
        imports=emulator.imports,
        wall_s=wall,
        peak_rss_kb=int(usage.ru_maxrss),
        requests=routes.get(route, 0),
        child=child,
        routes=routes,
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _show(m: Measurement) -> None:
    _say(
        f"  {m.key:<26} wall {m.wall_s:7.2f} s  work {m.child.get('work_s', 0):7.2f} s"
        f"  rss {m.peak_rss_kb / 1024:7.0f} MB  rows loaded {m.child.get('rows_loaded')}"
        f"  requests {m.requests}"
    )


def bench_one_n(
    imports: int,
    repeat: int,
    scratch: Path,
    variants: set[str],
    rest_api_max: int,
    exa_py_max: int,
    setup: Setup | None = None,
) -> dict[str, list[Measurement]]:
    """Run every selected variant ``repeat`` times against one emulator seeded with ``imports``.

    With a baseline, each exa-source run of this tree is paired with the same run of the older
    revision, one right after the other (the order alternates between repeats), each on its own
    destination: a full load, then no-change reruns, then reruns after the same 1% change.

    Returns:
        Measurements per variant key.
    """
    setup = setup or Setup()
    results: dict[str, list[Measurement]] = {}
    logs = scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _say(f"N={imports:,}: starting the emulator")
    emulator = EmulatorProcess(imports, logs / f"emulator-{imports}.log")
    _say(f"  emulator ready at {emulator.base_url} in {emulator.seed_seconds:.1f} s")
    expected_requests = math.ceil(imports / PAGE_SIZE)
    trees = ["exa", "old"] if setup.baseline is not None else ["exa"]

    def run(key: str, workdir: Path, extra: Sequence[str] = ()) -> Measurement:
        m = run_child(emulator, key, workdir, logs, extra, setup)
        results.setdefault(key, []).append(m)
        _show(m)
        return m

    def fresh(key: str, i: int) -> Path:
        return scratch / f"{key}-{imports}-{i}"

    def in_turn(i: int) -> list[str]:
        return trees if i % 2 == 0 else trees[::-1]

    try:
        if "ceiling" in variants:
            for i in range(repeat):
                run("ceiling", fresh("ceiling", i))
        if variants & {"exa_full", "exa_rerun0", "exa_rerun1"}:
            kept: dict[str, Path] = {}
            for i in range(repeat if "exa_full" in variants else 1):
                for tree in in_turn(i):
                    kept[tree] = fresh(tree, i)
                    m = run(f"{tree}_full", kept[tree])
                    if m.requests != expected_requests:
                        raise AssertionError(
                            f"{tree} sent {m.requests} list requests for {imports} imports;"
                            f" expected ceil(N/{PAGE_SIZE}) = {expected_requests}"
                        )
            if "exa_rerun0" in variants:
                for i in range(repeat):
                    for tree in in_turn(i):
                        run(f"{tree}_rerun0", kept[tree])
            if "exa_rerun1" in variants:
                for i in range(repeat):
                    # Runs are hours apart in real life: move the emulator's clock on first.
                    emulator.control("POST", "/_emulator/clock", {"advance": 3600})
                    emulator.control(
                        "POST", "/_emulator/mutate", {"update": imports // 100, "seed": i + 1}
                    )
                    for tree in in_turn(i):
                        run(f"{tree}_rerun1", kept[tree])
        if "rest_api" in variants:
            if imports <= rest_api_max:
                for i in range(repeat):
                    run("rest_api", fresh("rest", i))
            else:
                _say(f"  rest_api skipped at N={imports:,} (> --rest-api-max {rest_api_max:,})")
        if "exa_py" in variants:
            if imports <= exa_py_max:
                for i in range(repeat):
                    run("exa_py", fresh("exapy", i))
            else:
                _say(f"  exa_py skipped at N={imports:,} (> --exa-py-max {exa_py_max:,})")
    finally:
        emulator.stop()
        for path in scratch.iterdir():
            if path.is_dir() and path.name not in ("logs", "baseline"):
                shutil.rmtree(path, ignore_errors=True)
        drop_datasets(setup)
    return results


#: Items mode: ``--variants`` names -> (measurement key prefix, child variant, concurrency).
ITEMS_VARIANTS: dict[str, tuple[str, str, int]] = {
    "ceiling_items": ("ceiling_items", "ceiling_items", 1),
    "ceiling_items_c4": ("ceiling_items_c4", "ceiling_items", 4),
    "exa_source_items": ("exa_source_items", "exa_source_items", 4),
    "exa_source_items_c1": ("exa_source_items_c1", "exa_source_items", 1),
}


def _load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_items_n(
    items: int,
    websets: int,
    repeat: int,
    scratch: Path,
    variants: set[str],
    info: dict[str, Any],
    results: dict[str, list[Measurement]] | None = None,
    save: Callable[[], object] | None = None,
) -> dict[str, list[Measurement]]:
    """Run the items variants ``repeat`` times against one emulator seeded with ``items`` items.

    The emulator holds ``websets`` websets of ``items // websets`` items each. Each repeat runs,
    one after the other: the request-loop ceilings (1 and 4 threads), then per exa-source
    concurrency a full load into a fresh workdir and its no-change rerun (same workdir).
    ``info`` receives the emulator's seeding time and peak RSS and the machine load. Each
    measurement is added to ``results`` as it ends, and ``save`` (if any) is called then, so a
    long run stopped half-way keeps what it measured.

    Returns:
        Measurements per key (see :data:`bench.report.ITEMS_LABELS`).

    Raises:
        AssertionError: a full load did not read every page the ceiling read, or a no-change
            rerun loaded rows or read items.
    """
    per = items // websets
    results = {} if results is None else results
    logs = scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    info.update(websets=websets, items_per_webset=per, load_before=_load())
    _say(f"N={websets * per:,} items ({websets} websets x {per:,}): starting the emulator")
    emulator = EmulatorProcess(0, logs / f"emulator-items-{items}.log", websets, per)
    info["seed_s"] = round(emulator.seed_seconds, 2)
    _say(f"  emulator ready at {emulator.base_url} in {emulator.seed_seconds:.1f} s")
    ceiling_requests: int | None = None

    def run(key: str, kind: str, workdir: Path, conc: int) -> Measurement:
        m = run_child(
            emulator, key, workdir, logs, ["--concurrency", str(conc)], None, kind, ITEMS_ROUTE
        )
        results.setdefault(key, []).append(m)
        _show(m)
        if save is not None:
            save()
        return m

    try:
        for i in range(repeat):
            for name in ITEMS_VARIANTS:
                if name not in variants:
                    continue
                prefix, kind, conc = ITEMS_VARIANTS[name]
                workdir = scratch / f"{name}-{items}-{i}"
                if kind == "ceiling_items":
                    ceiling_requests = run(prefix, kind, workdir, conc).requests
                    continue
                full = run(f"{prefix}_full", kind, workdir, conc)
                if ceiling_requests is not None and full.requests != ceiling_requests:
                    raise AssertionError(
                        f"{name} sent {full.requests} item requests, the ceiling {ceiling_requests}"
                    )
                rerun = run(f"{prefix}_rerun0", kind, workdir, conc)
                if rerun.child.get("rows_loaded") or rerun.requests:
                    raise AssertionError(
                        f"{name} no-change rerun loaded {rerun.child.get('rows_loaded')} rows"
                        f" with {rerun.requests} item requests; expected 0 and 0"
                    )
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        info["emulator_rss_mb"] = round(emulator.peak_rss_mb(), 1)
        info["load_after"] = _load()
        emulator.stop()
    return results


def drop_datasets(setup: Setup) -> None:
    """Drop the PostgreSQL datasets (and their staging schemas) the children created."""
    if not setup.datasets:
        return
    import psycopg2

    dsn = os.environ.get("DESTINATION__POSTGRES__CREDENTIALS", PG_DSN)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for name in setup.datasets:
            cur.execute(f'drop schema if exists "{name}" cascade')
            cur.execute(f'drop schema if exists "{name}_staging" cascade')
    setup.datasets.clear()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the benchmark, write the results; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="exa-source vs the raw HTTP ceiling, dlt rest_api and exa-py",
    )
    parser.add_argument(
        "--imports",
        default="100000",
        help="imports to seed; a comma list runs several N (e.g. 10000,100000,1000000)",
    )
    parser.add_argument(
        "--items",
        default=None,
        help="items mode: items to seed in all (a comma list runs several sizes), spread over"
        " --websets websets; runs the items variants instead of the imports ones",
    )
    parser.add_argument(
        "--websets", type=int, default=50, help="items mode: websets the items are spread over"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median)")
    parser.add_argument("--out", default=str(ROOT / "bench"), help="results.md/.png/.json here")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma list among "
        + ", ".join(VARIANT_LABELS)
        + "; items mode: among "
        + ", ".join(ITEMS_VARIANTS)
        + " (default all)",
    )
    parser.add_argument(
        "--rest-api-max",
        type=int,
        default=100_000,
        help="skip rest_api above this N (its default path needs ~34 KB of RAM per import)",
    )
    parser.add_argument(
        "--destination",
        choices=("duckdb", "postgres"),
        default="duckdb",
        help="where exa-source loads (postgres: DESTINATION__POSTGRES__CREDENTIALS, default the"
        " local test server); the alternatives always load into DuckDB",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="also run the exa-source rows with the package of this git revision, side by side"
        " (e.g. a tag or commit of the code before a change)",
    )
    parser.add_argument(
        "--exa-py-max",
        type=int,
        default=100_000,
        help="skip exa-py above this N (its per-page INSERTs slow down as the table grows:"
        " ~30 s at 100k)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.items is not None:
        return items_main(parser, args)
    args.variants = args.variants or ",".join(VARIANT_LABELS)
    sizes = [int(x.replace("_", "")) for x in args.imports.split(",") if x.strip()]
    variants = {v.strip() for v in args.variants.split(",") if v.strip()}
    unknown = variants - set(VARIANT_LABELS)
    if unknown:
        parser.error(f"unknown variants: {sorted(unknown)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results: dict[int, dict[str, list[Measurement]]] = {}
    markdown = ""
    scratch = Path(tempfile.mkdtemp(prefix="exa_bench_"))
    setup = Setup(destination=args.destination)
    meta = {"destination": args.destination, "baseline": args.baseline}
    try:
        if args.baseline:
            setup.baseline = export_baseline(args.baseline, scratch / "baseline")
        # both trees start from compiled bytecode, whatever PYTHONDONTWRITEBYTECODE says
        for tree in filter(None, [ROOT / "exa_source", ROOT / "bench", setup.baseline]):
            compileall.compile_dir(str(tree), quiet=1)
        for n in sizes:
            results[n] = bench_one_n(
                n, args.repeat, scratch, variants, args.rest_api_max, args.exa_py_max, setup
            )
            markdown = write_results(results, args.repeat, out, meta)  # partial results survive
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(markdown)
    _say(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'results.png'}")
    return 0


def items_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The items mode of :func:`main`: run :func:`bench_items_n` per size, write the results."""
    sizes = [int(x.replace("_", "")) for x in args.items.split(",") if x.strip()]
    variants = {v.strip() for v in (args.variants or ",".join(ITEMS_VARIANTS)).split(",")}
    variants.discard("")
    if unknown := variants - set(ITEMS_VARIANTS):
        parser.error(f"unknown items variants: {sorted(unknown)}")
    if args.websets < 1 or any(n < args.websets for n in sizes):
        parser.error("--items must be at least --websets (>= 1)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, list[Measurement]]] = {}
    meta: dict[str, Any] = {"sizes": {}, "cpus": os.cpu_count()}
    markdown = ""
    scratch = Path(tempfile.mkdtemp(prefix="exa_bench_items_"))
    try:
        for tree in (ROOT / "exa_source", ROOT / "bench"):
            compileall.compile_dir(str(tree), quiet=1)
        for n in sizes:
            n_real = n // args.websets * args.websets
            info: dict[str, Any] = {}
            meta["sizes"][str(n_real)] = info
            results[n_real] = {}

            def save() -> str:
                return write_items_results(results, args.repeat, out, meta)

            bench_items_n(
                n, args.websets, args.repeat, scratch, variants, info, results[n_real], save
            )
            markdown = save()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(markdown)
    _say(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return 0


def write_items_results(
    results: dict[int, dict[str, list[Measurement]]],
    repeat: int,
    out: Path,
    meta: dict[str, Any],
) -> str:
    """Write the items mode's ``results.md`` and ``results.json``; return the Markdown."""
    markdown = render_items_markdown(results, repeat, meta)
    (out / "results.md").write_text(markdown)
    raw: dict[str, Any] = {
        str(n): {k: [asdict(m) for m in ms] for k, ms in r.items()} for n, r in results.items()
    }
    raw["meta"] = meta
    (out / "results.json").write_text(json.dumps(raw, indent=1))
    return markdown


def write_results(
    results: dict[int, dict[str, list[Measurement]]],
    repeat: int,
    out: Path,
    meta: dict[str, Any] | None = None,
) -> str:
    """Write ``results.md``, ``results.json`` and ``results.png``; return the Markdown."""
    markdown = render_markdown(results, repeat, meta or {})
    (out / "results.md").write_text(markdown)
    raw = {str(n): {k: [asdict(m) for m in ms] for k, ms in r.items()} for n, r in results.items()}
    (out / "results.json").write_text(json.dumps(raw, indent=1))
    render_chart(results, out / "results.png")
    return markdown


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit so that the running child and the emulator are stopped."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
