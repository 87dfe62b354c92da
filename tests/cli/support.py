"""Helpers for the CLI-level tests of issue 12 (operational safety): every test runs
`dnpair` as a subprocess, on the virtual clock where it can, with few cycles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DNPAIR = str(Path(sys.executable).with_name("dnpair"))
HALTING_FAULTS = "[orders]\nreject = 0.4\n"  # tests/replay/scenarios.py one_leg_reject
HALTING_SEED = "4"


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("DN_", "NADO_"))}
    out.update(extra)
    return out


def dnpair(
    *args: str, timeout: float = 60, cwd: Path | None = None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DNPAIR, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=env(**extra_env),
    )


def virtual_run(journal: Path, *extra: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return dnpair(
        "run",
        "--pair",
        "ETH-SOL",
        "--clock",
        "virtual",
        "--quiet",
        "--journal",
        str(journal),
        *extra,
        **extra_env,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The refusal: exit 2, no traceback, one line on stderr."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]
