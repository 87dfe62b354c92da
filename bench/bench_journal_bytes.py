"""Journal growth: bytes per cycle of the journal and the JSON-lines log together, at
default settings, for `dnpair run --clock virtual --cycles N` (a subprocess, exactly what
a user runs). Issue 12 item 6: the goal is at most 10 KB per cycle (it was ~33 KB, mostly
market-data events nobody read; 18 KB before the journal's version 2 layout and the routine
log lines at DEBUG); tests/cli/test_journal_growth.py holds it at the default
(`DN_EXECUTION=maker_first`; 11.4 KB before journal schema 4, 9.9 KB before schema 5) and
for `DN_EXECUTION=taker`.
Also reported for a wall-clock-length hold, where quotes pile up between steps. Prints JSON
lines; a measurement, not a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DNPAIR = str(Path(sys.executable).with_name("dnpair"))
GOAL_BYTES = 10_000


def measure(cycles: int, env: dict[str, str], label: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "b.db"
        run_env = {k: v for k, v in os.environ.items() if not k.startswith(("DN_", "NADO_"))}
        run_env.update(env)
        proc = subprocess.run(
            [DNPAIR, "run", "--pair", "ETH-SOL", "--clock", "virtual", "--quiet",
             "--cycles", str(cycles), "--journal", str(journal)],
            capture_output=True, text=True, env=run_env, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        files = [p for p in Path(tmp).iterdir() if p.name.startswith("b.")]
        # every segment (b.db, b.1.db …) and its WAL; not the -shm index or the lock file
        journal_bytes = sum(p.stat().st_size for p in files if p.name.endswith((".db", ".db-wal")))
        log_bytes = sum(p.stat().st_size for p in files if p.name.endswith(".log.jsonl"))
    per_cycle = (journal_bytes + log_bytes) / cycles
    return {
        "bench": "journal_bytes_per_cycle",
        "case": label,
        "cycles": cycles,
        "journal_bytes": journal_bytes,
        "log_bytes": log_bytes,
        "bytes_per_cycle": round(per_cycle),
        "goal_bytes_per_cycle": GOAL_BYTES,
        "within_goal": per_cycle <= GOAL_BYTES,
    }


def main() -> None:
    print(json.dumps(measure(50, {}, "default settings (maker_first)")))
    print(json.dumps(measure(50, {"DN_EXECUTION": "taker"}, "taker")))
    print(json.dumps(measure(20, {"DN_HOLD_S": "60"}, "hold 60 s")))


if __name__ == "__main__":
    main()
