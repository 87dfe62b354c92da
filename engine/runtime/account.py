"""One engine per account and per journal; a HALT that sticks to the account.

Locks are `fcntl.flock` on small files, taken before any network I/O and held for the
life of the process (the kernel drops them when it dies, even on SIGKILL):

- the journal lock: `JOURNAL.lock` beside the journal;
- the account lock: one file per account in the account's state folder. A Nado account
  is (network, gateway, signer address, subaccount name) and its state folder is
  `$DNPAIR_STATE_DIR`, else `~/.dnpair/`, so two engines with different journals (in
  any folder) still cannot trade one subaccount. The simulated venue lives inside the
  process: its account is the journal (the journal lock covers it) and its state folder
  is `.dnpair/` beside the journal (`runs/.dnpair/` for `make run`).

A lock file holds the holder's pid, journal and start time, so a refused engine can
name it. A HALT writes `halted-ACCOUNT.json` into the state folder; every later
`dnpair run` on that account (any journal) is refused until an operator resumes
(`dnpair resume --journal J`, or `dnpair run --resume`). A flatten (`--cycles 0`) is
always allowed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import IO
from typing import Any

import attrs

__all__ = [
    "STATE_ENV",
    "Account",
    "HaltMarker",
    "LockHeld",
    "ProcessLock",
    "clear_halts_for_journal",
    "global_state_dir",
    "sim_account",
]

STATE_ENV = "DNPAIR_STATE_DIR"


class LockHeld(Exception):
    """Another engine holds the lock; the message names it."""


def global_state_dir() -> Path:
    raw = os.environ.get(STATE_ENV)
    return Path(raw) if raw else Path.home() / ".dnpair"


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@attrs.frozen
class Account:
    """Who trades: `key` is what makes two engines the same account (shown to operators;
    it holds no secret), `state` where its lock and halt marker live."""

    key: str
    state: Path
    locked: bool = True  # False: the journal lock is the account lock (the sim)

    @property
    def slug(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()[:16]

    @property
    def lock_path(self) -> Path:
        return self.state / f"account-{self.slug}.lock"

    @property
    def halt_path(self) -> Path:
        return self.state / f"halted-{self.slug}.json"


def sim_account(journal: str) -> Account:
    folder = Path(journal).resolve().parent
    return Account(key=f"sim:{folder}", state=folder / ".dnpair", locked=False)


class ProcessLock:
    """An exclusive, non-blocking flock; `acquire` raises LockHeld naming the holder."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fh: IO[str] | None = None

    def acquire(self, journal: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = self.path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise LockHeld(f"{self.path}: cannot create the lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = _holder(fh.read())
            fh.close()
            raise LockHeld(
                f"another engine holds {self.what} ({holder}); stop it first "
                "(Ctrl-C in its terminal, or `dnpair flatten --journal J`)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "journal": journal, "since": _stamp()}) + "\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()  # closing drops the flock; the file stays (harmless)
            self._fh = None


def _holder(text: str) -> str:
    try:
        data = json.loads(text)
        return f"pid {data['pid']}, journal {data['journal']}, started {data['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


@attrs.frozen
class HaltMarker:
    account: str
    journal: str
    reason: str
    since: str

    def describe(self) -> str:
        return (
            f"the account ({self.account}) HALTED at {self.since} on journal {self.journal} "
            f"({self.reason}) and no operator has resumed it; check the venue "
            f"(`dnpair status --journal {self.journal}`), flatten if needed (`dnpair flatten`), "
            f"then `dnpair resume --journal {self.journal}` (or run again with --resume)"
        )


def read_halt(account: Account) -> HaltMarker | None:
    try:
        data = json.loads(account.halt_path.read_text(encoding="utf-8"))
        return HaltMarker(
            account=str(data["account"]),
            journal=str(data["journal"]),
            reason=str(data["reason"]),
            since=str(data["since"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # An unreadable marker still means a halt: refuse rather than trade.
        return HaltMarker(account.key, "?", "halt marker unreadable", "?")


def write_halt(account: Account, journal: str, reason: str) -> None:
    data: dict[str, Any] = {
        "account": account.key,
        "journal": journal,
        "reason": reason,
        "since": _stamp(),
    }
    account.state.mkdir(parents=True, exist_ok=True)
    tmp = account.halt_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(account.halt_path)


def clear_halt(account: Account) -> None:
    with contextlib.suppress(FileNotFoundError):
        account.halt_path.unlink()


def clear_halts_for_journal(journal: str) -> list[HaltMarker]:
    """Remove the halt markers naming `journal` (its folder's and the global state)."""
    target = str(Path(journal).resolve())
    cleared = []
    for folder in (Path(journal).resolve().parent / ".dnpair", global_state_dir()):
        for path in sorted(folder.glob("halted-*.json")) if folder.is_dir() else []:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and str(Path(str(data.get("journal"))).resolve()) == target:
                path.unlink(missing_ok=True)
                cleared.append(
                    HaltMarker(str(data.get("account")), target, str(data.get("reason")), "?")
                )
    return cleared


__all__ += ["clear_halt", "read_halt", "write_halt"]
