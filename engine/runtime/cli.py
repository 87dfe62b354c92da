"""`dnpair`: the command-line entry point. Exit codes: 0 ok, 1 failure/divergence,
2 bad arguments or configuration (nothing sent), 3 halted safely."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_HALTED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _cmd_journal_verify(args: argparse.Namespace) -> int:
    from engine.core.journal_verify import truncate_torn_tail
    from engine.core.journal_verify import verify

    report = verify(args.path)
    if report.status == "other_version":  # not damage: written by another dnpair
        print(report.describe(args.path), file=sys.stderr)
        return EXIT_USAGE
    print(report.describe(args.path))
    if report.status == "torn_tail" and args.truncate:
        from engine.runtime.account import LockHeld
        from engine.runtime.account import ProcessLock

        lock = ProcessLock(Path(args.path + ".lock"), f"the journal {args.path}")
        try:
            lock.acquire(args.path)  # never rewrite a journal an engine is writing
        except LockHeld as exc:
            print(f"dnpair journal verify: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            done = truncate_torn_tail(args.path)
        finally:
            lock.release()
        print(f"{args.path}: {done.detail}")
        return EXIT_OK
    return EXIT_OK if report.ok else EXIT_FAIL


def _cmd_journal_export(args: argparse.Namespace) -> int:
    from engine.core.journal import export_jsonl
    from engine.core.journal import read_records
    from engine.core.journal_verify import verify

    report = verify(args.path)
    if report.status in ("missing", "corrupt"):
        print(report.describe(args.path), file=sys.stderr)
        return EXIT_FAIL
    records = list(read_records(args.path))[: report.intact]
    n = export_jsonl(records, args.jsonl)
    print(f"exported {n} records to {args.jsonl}")
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    from engine.core.journal import read_records
    from engine.core.journal_verify import verify
    from engine.core.replay import replay_records

    report = verify(args.path)
    if report.status == "other_version":
        print(report.describe(args.path), file=sys.stderr)
        return EXIT_USAGE
    if report.status in ("missing", "corrupt"):
        print(report.describe(args.path), file=sys.stderr)
        return EXIT_FAIL
    if report.status == "torn_tail":
        print(report.describe(args.path), file=sys.stderr)
    records = list(read_records(args.path))[: report.intact]
    if not any(r.machine == "engine" and '"run_started"' in r.payload for r in records):
        notes = [
            str(r.data.get("note", "")) + (f": {r.data['reason']}" if "reason" in r.data else "")
            for r in records
            if r.kind == "note"
        ]
        said = f" ({'; '.join(notes)})" if notes else ""
        print(f"{args.path}: no run started in this journal{said}; nothing to replay")
        return EXIT_OK
    result = replay_records(records)
    if result.other_version is not None:
        from engine.core.journal import other_version_message

        print(other_version_message(args.path, result.other_version), file=sys.stderr)
        return EXIT_USAGE
    if result.ok:
        print(f"replay ok: {result.records} records, {result.events_fed} events fed")
        return EXIT_OK
    assert result.divergence is not None
    print(result.divergence.describe())
    if result.error:
        print(f"  note: {result.error}")
    return EXIT_FAIL


def _cmd_diagrams(args: argparse.Namespace) -> int:
    from engine.ops.diagrams import write_diagrams

    differing = write_diagrams(Path(args.out), check=args.check)
    if args.check:
        if differing:
            print("diagrams out of date: " + ", ".join(differing), file=sys.stderr)
            print("run `make diagrams` and commit the result", file=sys.stderr)
            return EXIT_FAIL
        print("diagrams up to date")
        return EXIT_OK
    print(f"wrote {len(differing)} changed file(s) to {args.out}")
    return _svgs(Path(args.out))


def _svgs(out: Path) -> int:
    import subprocess

    from engine.ops.diagrams import write_svgs

    try:
        written = write_svgs(out)
    except FileNotFoundError:
        print("SVG skipped: Graphviz 'dot' is not installed (apt-get install graphviz)")
        return EXIT_OK
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"SVG rendering failed: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"wrote {len(written)} SVG file(s) to {out}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.ops.ops_cli import ops_run_options
    from engine.runtime.config import ConfigError
    from engine.runtime.config import load_settings
    from engine.runtime.run import RunOptions
    from engine.runtime.run import UsageError
    from engine.runtime.run import parse_pair
    from engine.runtime.run import run

    try:
        if args.cycles is not None and args.cycles < 0:
            raise UsageError(f"--cycles: must be >= 0, got {args.cycles}")
        if args.faults is not None and not Path(args.faults).is_file():
            raise UsageError(f"--faults: no such file {args.faults}")
        if args.config is not None and not Path(args.config).is_file():
            raise UsageError(f"--config: no such file {args.config}")
        _check_output("--summary-json", args.summary_json)
        log_json = getattr(args, "log_json", None)
        if log_json not in (None, "", "off", "none"):
            _check_output("--log-json", log_json)
        _check_gateway(args.gateway)
        _check_port(getattr(args, "metrics_host", "127.0.0.1"), args.metrics_port)
        settings = load_settings(config_file=args.config, cli={"size_usd": args.size_usd})
        opts = RunOptions(
            pair=parse_pair(args.pair),
            venue=args.venue,
            # paper reads public prices: real ones unless a network or gateway is named
            network=args.network
            or ("mainnet" if args.venue == "paper" and not args.gateway else "local"),
            gateway=args.gateway,
            cycles=args.cycles,
            clock=args.clock,
            seed=args.seed,
            faults=args.faults,
            journal=args.journal,
            summary_json=args.summary_json,
            metrics_port=args.metrics_port,
            quiet=args.quiet,
            **ops_run_options(args),
        )
        return run(opts, settings)
    except (UsageError, ConfigError) as exc:
        print(f"dnpair run: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _check_output(flag: str, path: str | None) -> None:
    """A file the run writes at its end must be writable at its start."""
    from engine.runtime.run import UsageError

    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file path")
    if not p.parent.is_dir():
        raise UsageError(f"{flag} {path}: the folder {p.parent} does not exist; create it first")
    import os

    target = p if p.exists() else p.parent
    if not os.access(target, os.W_OK):
        raise UsageError(f"{flag} {path}: not writable by this user")


def _check_gateway(url: str | None) -> None:
    from urllib.parse import urlsplit

    from engine.ops.alerts import mask_url
    from engine.runtime.run import UsageError

    if url is None:
        return
    try:
        parts = urlsplit(url)
        has_userinfo = "@" in parts.netloc
    except ValueError:
        raise UsageError("--gateway: not a URL (expected http(s)://HOST[:PORT]/v1)") from None
    if has_userinfo:
        raise UsageError(
            f"--gateway: credentials in the URL are not supported (got {mask_url(url)} "
            "with a user part, not shown); expected http(s)://HOST[:PORT]/v1"
        )


def _check_port(host: str, port: int | None) -> None:
    import socket

    from engine.runtime.run import UsageError

    if port is None:
        return
    if not 0 <= port <= 65535:
        raise UsageError(f"--metrics-port: must be in [0, 65535], got {port}")
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"--metrics-port {port}: cannot listen on {host}:{port} ({exc.strerror}); "
                "pick a free port or 0"
            ) from None


def _cmd_venue_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from adapters.sim.faults import FaultProfile
    from adapters.sim.faults import FaultProfileError
    from adapters.sim.faults import load_profile
    from adapters.sim.products import resolve
    from adapters.sim.server import ServerOptions
    from adapters.sim.server import serve

    try:
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port: must be in [0, 65535], got {args.port}")
        profile = load_profile(args.faults) if args.faults else FaultProfile()
        symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip())
        resolve(symbols)
    except (FaultProfileError, ValueError) as exc:
        print(f"dnpair venue serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    opts = ServerOptions(
        host=args.host,
        port=args.port,
        seed=args.seed,
        profile=profile,
        symbols=symbols,
        check_times=not args.no_time_checks,
    )
    try:
        return asyncio.run(serve(opts))
    except OSError as exc:
        print(f"dnpair venue serve: {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return EXIT_OK


def _version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version

    try:
        return version("dnpair")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dnpair", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dnpair {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="trade one DN pair (sim venue by default)")
    r.add_argument("--pair", required=True, help="e.g. ETH-SOL")
    r.add_argument(
        "--venue",
        choices=("sim", "nado", "paper"),
        default="sim",
        help="sim (in-process simulator), nado (live, key from NADO_PRIVATE_KEY) or paper "
        "(live Nado prices, orders matched locally, no key, nothing executed)",
    )
    r.add_argument(
        "--network",
        choices=("local", "testnet", "mainnet"),
        help="Nado network (default local; mainnet for --venue paper without --gateway)",
    )
    r.add_argument("--gateway", help="gateway base URL, e.g. http://127.0.0.1:PORT/v1")
    r.add_argument("--cycles", type=int, help="stop after N cycles (default: until interrupted)")
    r.add_argument(
        "--clock",
        choices=("wall", "virtual"),
        default="wall",
        help="wall: real time; virtual: simulated time, as fast as the CPU allows (sim only)",
    )
    r.add_argument("--seed", type=int, default=0, help="sim market and fault seed")
    r.add_argument("--faults", metavar="FILE.toml", help="fault profile for the sim venue")
    r.add_argument("--journal", metavar="PATH", help="journal file (default runs/PAIR-N.db)")
    r.add_argument("--summary-json", metavar="PATH", help="write the run summary as JSON")
    r.add_argument("--config", metavar="FILE.toml", help="[engine] settings; DN_* env wins")
    r.add_argument("--size-usd", help="USD notional per leg (DN_SIZE_USD)")
    r.add_argument(
        "--metrics-port", type=int, help="serve Prometheus text on this port (0: pick one)"
    )
    r.add_argument("--quiet", action="store_true", help="no per-transition lines")
    r.set_defaults(func=_cmd_run)

    p = sub.add_parser("replay", help="re-run a journal through fresh machines and compare")
    p.add_argument("path", help="journal (.db or a .jsonl export)")
    p.set_defaults(func=_cmd_replay)

    journal = sub.add_parser("journal", help="inspect a journal")
    jsub = journal.add_subparsers(dest="journal_command", required=True, parser_class=_Parser)
    v = jsub.add_parser("verify", help="check the hash chain (exit 0 iff intact)")
    v.add_argument("path", help="journal (.db or a .jsonl export)")
    v.add_argument("--truncate", action="store_true", help="drop a torn tail")
    v.set_defaults(func=_cmd_journal_verify)
    e = jsub.add_parser("export", help="write the journal as JSON lines")
    e.add_argument("path", help="journal (.db)")
    e.add_argument("--jsonl", required=True, metavar="OUT", help="output JSON-lines file")
    e.set_defaults(func=_cmd_journal_export)

    d = sub.add_parser("diagrams", help="render every machine to Mermaid (and SVG)")
    d.add_argument("--out", default="diagrams", help="folder to write (default: diagrams)")
    d.add_argument("--check", action="store_true", help="exit 1 if committed files differ")
    d.set_defaults(func=_cmd_diagrams)

    from engine.harness.chaos import add_chaos_parser

    add_chaos_parser(sub)

    venue = sub.add_parser("venue", help="the simulated venue as a service")
    vsub = venue.add_subparsers(dest="venue_command", required=True, parser_class=_Parser)
    s = vsub.add_parser(
        "serve",
        help="serve the sim venue on loopback, speaking Nado's gateway protocol",
        description="First stdout line: `listening on http://HOST:PORT/v1` (the --gateway "
        "base). Positions persist while it runs. SIGINT/SIGTERM stop it (exit 0).",
    )
    s.add_argument("--host", default="127.0.0.1", help="bind address (loopback)")
    s.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    s.add_argument("--seed", type=int, default=0, help="market and fault seed")
    s.add_argument("--faults", metavar="FILE.toml", help="fault profile (times: s since start)")
    s.add_argument("--symbols", default="ETH-PERP,SOL-PERP", help="comma-separated products")
    s.add_argument(
        "--no-time-checks",
        action="store_true",
        help="accept expired orders and nonces past their recv_time",
    )
    s.set_defaults(func=_cmd_venue_serve)
    from engine.ops.ops_cli import add_ops_parsers

    add_ops_parsers(sub, r)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    if args.func is _cmd_run and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        # SIGTERM means what Ctrl-C means: flatten, verify, exit (not die with 143).
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        # Only before the run's own handlers are installed (start-up) or after they are
        # removed: no trading was in progress.
        print(f"dnpair {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
