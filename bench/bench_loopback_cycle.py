"""(g) BUILD+UNWIND over loopback against `dnpair venue serve`: real sockets, real signing.

Starts the venue server as a subprocess, runs `dnpair run --venue nado` against it for a
few cycles, and reads each cycle's active time (BUILD spawn → done, UNWIND spawn → done,
hold excluded) from the journal. Prints one JSON line; a measurement, not a test.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.journal import read_records

KEY = "0x" + "11" * 32  # throwaway test key, never a real one
CYCLES = 6
DNPAIR = str(Path(sys.executable).with_name("dnpair"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def active_ms(journal: Path) -> list[float]:
    spawned: dict[str, int] = {}
    per_cycle: dict[str, float] = {}
    for rec in read_records(journal):
        if rec.machine != "engine" or rec.kind not in ("note", "event"):
            continue
        data = rec.data
        mid = str(data.get("machine", ""))
        if data.get("note") == "spawn" and mid.startswith(("build:", "unwind:")):
            spawned[mid] = rec.ts
        elif data.get("kind") == "machine_finished" and mid in spawned:
            cycle = re.sub(r"^(build|unwind):", "", mid)
            per_cycle[cycle] = (rec.ts - spawned.pop(mid)) / 1e6
    # build and unwind ids differ; pair them in order: (b1, u1), (b2, u2), ...
    times = list(per_cycle.values())
    return [times[i] + times[i + 1] for i in range(0, len(times) - 1, 2)]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [DNPAIR, "venue", "serve", "--port", "0", "--seed", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip().removeprefix("listening on ")
            journal = Path(tmp) / "loop.db"
            env = {**os.environ, "NADO_PRIVATE_KEY": KEY, "DN_HOLD_S": "0.5", "DN_PAUSE_S": "0.2"}
            args = ["run", "--pair", "ETH-SOL", "--venue", "nado", "--gateway", url]
            args += ["--cycles", str(CYCLES), "--journal", str(journal), "--quiet"]
            done = subprocess.run(
                [DNPAIR, *args, "--log-json", "off"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            cycles = active_ms(journal)[1:]  # the first cycle warms connections up
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(
        json.dumps(
            {
                "bench": "cycle_time_loopback_venue_serve",
                "exit_code": done.returncode,
                "cycles": len(cycles),
                "active_ms_p50": round(statistics.median(cycles), 1) if cycles else None,
                "active_ms_p99": round(pct(cycles, 0.99), 1) if cycles else None,
                "note": "BUILD+UNWIND without the hold; loopback sockets, EIP-712 signing "
                "and the server's signature checks included; first cycle excluded",
            }
        )
    )


if __name__ == "__main__":
    main()
