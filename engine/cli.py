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
    from engine.journal_verify import truncate_torn_tail
    from engine.journal_verify import verify

    report = verify(args.path)
    print(report.describe(args.path))
    if report.status == "torn_tail" and args.truncate:
        done = truncate_torn_tail(args.path)
        print(f"{args.path}: {done.detail}")
        return EXIT_OK
    return EXIT_OK if report.ok else EXIT_FAIL


def _cmd_journal_export(args: argparse.Namespace) -> int:
    from engine.journal import export_jsonl
    from engine.journal import read_records
    from engine.journal_verify import verify

    report = verify(args.path)
    if report.status in ("missing", "corrupt"):
        print(report.describe(args.path), file=sys.stderr)
        return EXIT_FAIL
    records = list(read_records(args.path))[: report.intact]
    n = export_jsonl(records, args.jsonl)
    print(f"exported {n} records to {args.jsonl}")
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    from engine.journal import read_records
    from engine.journal_verify import verify
    from engine.replay import replay_records

    report = verify(args.path)
    if report.status in ("missing", "corrupt"):
        print(report.describe(args.path), file=sys.stderr)
        return EXIT_FAIL
    if report.status == "torn_tail":
        print(report.describe(args.path), file=sys.stderr)
    records = list(read_records(args.path))[: report.intact]
    result = replay_records(records)
    if result.ok:
        print(f"replay ok: {result.records} records, {result.events_fed} events fed")
        return EXIT_OK
    assert result.divergence is not None
    print(result.divergence.describe())
    if result.error:
        print(f"  note: {result.error}")
    return EXIT_FAIL


def _cmd_diagrams(args: argparse.Namespace) -> int:
    from engine.diagrams import write_diagrams

    differing = write_diagrams(Path(args.out), check=args.check)
    if args.check:
        if differing:
            print("diagrams out of date: " + ", ".join(differing), file=sys.stderr)
            print("run `make diagrams` and commit the result", file=sys.stderr)
            return EXIT_FAIL
        print("diagrams up to date")
        return EXIT_OK
    print(f"wrote {len(differing)} changed file(s) to {args.out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dnpair", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("replay", help="re-run a journal through fresh machines and compare")
    p.add_argument("path")
    p.set_defaults(func=_cmd_replay)

    journal = sub.add_parser("journal", help="inspect a journal")
    jsub = journal.add_subparsers(dest="journal_command", required=True, parser_class=_Parser)
    v = jsub.add_parser("verify", help="check the hash chain (exit 0 iff intact)")
    v.add_argument("path")
    v.add_argument("--truncate", action="store_true", help="drop a torn tail")
    v.set_defaults(func=_cmd_journal_verify)
    e = jsub.add_parser("export", help="write the journal as JSON lines")
    e.add_argument("path")
    e.add_argument("--jsonl", required=True, metavar="OUT")
    e.set_defaults(func=_cmd_journal_export)

    d = sub.add_parser("diagrams", help="render every machine to Mermaid (and SVG)")
    d.add_argument("--out", default="diagrams")
    d.add_argument("--check", action="store_true", help="exit 1 if committed files differ")
    d.set_defaults(func=_cmd_diagrams)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
