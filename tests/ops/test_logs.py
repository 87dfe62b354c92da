"""Structured logs: JSON lines with context, grep tags, and no private key anywhere."""

from __future__ import annotations

import json
import logging

from adapters.nado.signing import Secret
from engine.ops.logs import configure
from engine.ops.logs import register_secret
from engine.ops.logs import run_logger
from tests.ops.support import FAULTY
from tests.ops.support import run_session
from tests.ops.support import session

KEY = "0x" + "ab12" * 16


def test_json_lines_carry_context_and_console_is_the_message(tmp_path):
    logger = run_logger()
    lines: list[str] = []
    path = tmp_path / "log.jsonl"
    setup = configure(logger, console=lines.append, json_path=str(path))
    logger.warning(
        "[UNWIND] ETH filled but SOL failed",
        extra={"tag": "UNWIND", "cycle": 3, "machine": "unwind:session:5", "order_id": "o1"},
    )
    logger.info("file only", extra={"console": False})
    setup.close()
    assert lines == ["[UNWIND] ETH filled but SOL failed"]
    objs = [json.loads(x) for x in path.read_text().splitlines()]
    assert objs[0]["tag"] == "UNWIND"
    assert objs[0]["cycle"] == 3
    assert objs[0]["machine"] == "unwind:session:5"
    assert objs[0]["order_id"] == "o1"
    assert objs[0]["level"] == "warning"
    assert objs[1]["msg"] == "file only"


def test_the_private_key_never_reaches_a_log_line(tmp_path, monkeypatch):
    monkeypatch.setenv("NADO_PRIVATE_KEY", KEY)
    other = Secret("0x" + "cd34" * 16)
    register_secret(other)
    logger = run_logger()
    lines: list[str] = []
    path = tmp_path / "log.jsonl"
    setup = configure(logger, console=lines.append, json_path=str(path))
    logger.error("signer %s loaded", KEY)
    logger.error("bare %s", KEY[2:].upper())
    logger.info("in fields", extra={"fields": {"key": other.reveal(), "secret": other}})
    setup.close()
    text = "\n".join(lines) + path.read_text()
    for needle in (KEY, KEY[2:], KEY[2:].upper(), other.reveal(), other.reveal()[2:]):
        assert needle.lower() not in text.lower()
    assert text.count("********") >= 4


def test_journal_lines_keep_the_seeds_grep_tags(tmp_path):
    lines: list[str] = []
    # taker: seed 4 under FAULTY runs an emergency exit in this mode (its [EMERGENCY] line)
    taker = {"DN_EXECUTION": "taker"}
    s = session(tmp_path, cycles=12, seed=4, faults=FAULTY, lines=lines, env=taker)
    path = tmp_path / "run.log.jsonl"
    setup = configure(s.logger, json_path=str(path))
    run_session(s)
    setup.close()
    console = "\n".join(lines)
    for tag in ("[UNWIND]", "[RECOVERY]", "[EMERGENCY]", "[RATE_LIMIT]", "[BBO]", "[ALERT]"):
        assert tag in console, tag
    objs = [json.loads(x) for x in path.read_text().splitlines()]
    fills = [o for o in objs if o.get("tag") == "FILL"]
    assert fills
    assert all(o.get("order_id") and o.get("seq") for o in fills)
    assert any(isinstance(o.get("cycle"), int) for o in fills)  # cycle ids on cycle orders
    assert all(o["level"] in ("info", "warning", "error", "critical") for o in objs)


def test_quiet_sessions_print_no_transition_lines():
    lines: list[str] = []
    run_session(session(cycles=1, lines=lines, quiet=True))
    assert not any("→" in line for line in lines)


def test_a_broken_console_never_stops_the_run():
    def boom(_line: str) -> None:
        raise BrokenPipeError

    logger = run_logger()
    setup = configure(logger, console=boom)
    logger.log(logging.WARNING, "first")
    logger.log(logging.WARNING, "second")  # no exception, no traceback spam
    setup.close()


def _run_with_info_and_debug_logs(s, tmp_path):
    """Run session `s` with two JSON logs, one at INFO and one at DEBUG; their paths."""
    info, debug = tmp_path / "info.log.jsonl", tmp_path / "debug.log.jsonl"
    setups = [
        configure(s.logger, json_path=str(info)),
        configure(s.logger, json_path=str(debug), level=logging.DEBUG),
    ]
    run_session(s)
    for setup in setups:
        setup.close()
    return info, debug


def test_routine_lines_are_debug_in_the_json_log_and_still_on_the_console(tmp_path):
    """Issue 12 item 6: a cycle's ordinary transitions, order placements and routine notes
    are in the journal; in the JSON log they are DEBUG (left out of an INFO file). Fills
    and each cycle's end stay INFO; the console shows transitions as before."""
    lines: list[str] = []
    # taker: its UNWIND places from BUILD's verified position (a routine note checked below)
    s = session(tmp_path, cycles=2, lines=lines, env={"DN_EXECUTION": "taker"})
    info, debug = _run_with_info_and_debug_logs(s, tmp_path)
    at_info = [json.loads(x) for x in info.read_text().splitlines()]
    at_debug = [json.loads(x) for x in debug.read_text().splitlines()]
    assert all(o["level"] != "debug" for o in at_info)
    assert sum(o.get("tag") == "FILL" for o in at_info) >= 8  # 2 cycles x 2 legs x in/out
    ends = [o for o in at_info if o["msg"].endswith("→ idle (machine_finished)")]
    assert len(ends) == 2  # one INFO line per cycle
    assert not any("working → deciding" in o["msg"] for o in at_info)
    assert not any(o["msg"].split("] ", 1)[-1].startswith("build: ") for o in at_info)
    routine = [o for o in at_debug if o["level"] == "debug"]
    assert any("working → deciding" in o["msg"] for o in routine)
    assert any("built: venue position at target" in o["msg"] for o in routine)
    # taker: UNWIND places from BUILD's verified position every cycle (routine too)
    assert any("unwinding from the position BUILD verified" in o["msg"] for o in routine)
    assert not any("unwinding from the position BUILD verified" in o["msg"] for o in at_info)
    assert len(at_debug) == len(at_info) + len(routine)
    assert any("working → deciding" in line for line in lines)  # console unchanged


def test_maker_firsts_routine_read_first_is_debug_in_the_json_log(tmp_path):
    """With resting first rounds every UNWIND reads before it places ("the policy reads
    first"): routine, DEBUG in the JSON log (it kept maker_first's journal and log over
    10 KB per cycle); the note is still in the journal."""
    s = session(tmp_path, cycles=2, env={"DN_EXECUTION": "maker_first"})
    info, debug = _run_with_info_and_debug_logs(s, tmp_path)
    noted = [
        r
        for r in s.engine.journal.records()
        if r.kind == "note" and r.data["note"] == "unwind reads first"
    ]
    assert len(noted) == 2
    assert all(r.data["reason"] == "the policy reads first" for r in noted)
    assert "unwind reads first" not in info.read_text()
    at_debug = [json.loads(x) for x in debug.read_text().splitlines()]
    firsts = [o for o in at_debug if "unwind reads first" in o["msg"]]
    assert len(firsts) == 2
    assert all(o["level"] == "debug" for o in firsts)
