"""Journal damage (RELIABILITY P3, P4) on a real `dnpair run` journal (SQLite, WAL).

Torn tail: cut the file at byte offsets across its last pages (every offset of the
final page in the deep tier) → `journal verify` reports a torn tail and keeps an intact
prefix equal to the original records; `--truncate` recovers a journal that verifies ok;
the intact prefix replays (a prefix ending mid-step is not a divergence).
Corruption: flip bytes mid-file → verify refuses (corrupt) or, if the byte was not part
of any record, reads exactly the original records; `dnpair run` on a corrupt journal
exits 2 and says it refuses to trade.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.core.journal import HASH_BYTES
from engine.core.journal import read_records
from engine.core.journal_verify import truncate_torn_tail
from engine.core.journal_verify import verify
from engine.core.replay import replay_records
from engine.runtime.cli import main
from tests.tiers import deep

PAGE = 4096


def _cuts(size: int, last_page_stride: int, pages: int, page_stride: int) -> list[int]:
    final_page = range(size - PAGE, size, last_page_stride)
    earlier = range(max(size - pages * PAGE, PAGE), size - PAGE, page_stride)
    return sorted(set(final_page) | set(earlier))


def _torn_tails(tmp_path: Path, original, cuts: list[int]) -> dict[int, int]:
    raw, records = original
    path = tmp_path / "cut.db"
    replayed: dict[int, int] = {}  # intact count → records replayed
    for cut in cuts:
        path.write_bytes(raw[:cut])
        report = verify(path)
        assert report.status == "torn_tail", f"cut at {cut}: {report}"
        assert 0 < report.intact < len(records)
        if report.intact in replayed:
            continue
        truncate_torn_tail(path)
        again = verify(path)
        assert again.status == "ok", f"cut at {cut}: {again}"
        assert again.intact == report.intact
        kept = list(read_records(path))
        assert kept == records[: report.intact], f"cut at {cut}: the prefix changed"
        result = replay_records(kept)
        assert result.ok, f"cut at {cut}: {result.divergence and result.divergence.describe()}"
        replayed[report.intact] = result.records
    return replayed


def test_S_P3_torn_tail_at_offsets_across_the_last_pages_is_reported_truncated_and_replays(
    tmp_path, original
):
    raw, _ = original
    # A sample (the deep tier below cuts at every offset of the final page): each of the 6
    # pages holds ~60 records, so every sampled page still yields its own intact prefix.
    cuts = _cuts(len(raw), last_page_stride=37, pages=6, page_stride=257)
    assert len(cuts) > 150
    prefixes = _torn_tails(tmp_path, original, cuts)
    assert len(prefixes) > 5  # many different intact prefixes were exercised


@deep
@pytest.mark.slow
def test_S_P3_deep_every_offset_of_the_final_page_and_a_fine_stride_before(tmp_path, original):
    raw, _ = original
    cuts = _cuts(len(raw), last_page_stride=1, pages=12, page_stride=17)
    assert len(cuts) > 6_000
    _torn_tails(tmp_path, original, cuts)


def test_S_P3_cli_verify_reports_the_torn_tail_truncate_recovers_replay_passes(
    tmp_path, original, capsys
):
    raw, _ = original
    path = tmp_path / "torn.db"
    path.write_bytes(raw[: len(raw) - 1234])
    assert main(["journal", "verify", str(path)]) == 1
    assert "TORN TAIL" in capsys.readouterr().out
    assert main(["journal", "verify", "--truncate", str(path)]) == 0
    assert "truncated to" in capsys.readouterr().out
    assert main(["journal", "verify", str(path)]) == 0
    assert main(["replay", str(path)]) == 0
    assert "replay ok" in capsys.readouterr().out


def _payload_offsets(raw: bytes, needle: bytes) -> list[int]:
    out, at = [], raw.find(needle)
    while at >= 0:
        out.append(at)
        at = raw.find(needle, at + 1)
    return out


def test_S_P4_flipped_byte_inside_a_mid_file_record_is_corrupt_and_run_refuses(
    tmp_path, original, capsys
):
    raw, records = original
    size = len(raw)
    # A byte of a record's payload in the middle third of the file: valid records follow.
    # Payloads are stored deflated; a record's payload ends just before its stored hash
    # (HASH_BYTES raw bytes; prev_hash, when stored, comes between): find them by hashes.
    h = HASH_BYTES
    ends = [
        o - (0 if o - h < 0 or raw[o - h : o] != bytes.fromhex(r.prev_hash) else h)
        for r in records
        if '"armed":' in r.payload  # transitions that armed a deadline: deflated payloads
        for o in _payload_offsets(raw, bytes.fromhex(r.hash))
    ]
    spots = [o - 3 for o in ends if size / 3 < o < 2 * size / 3]
    assert spots
    damaged = bytearray(raw)
    damaged[spots[0]] ^= 0x01  # a deflated payload byte: inflates wrong or not at all
    path = tmp_path / "flipped.db"
    path.write_bytes(bytes(damaged))
    report = verify(path)
    assert report.status == "corrupt", report
    assert main(["journal", "verify", str(path)]) == 1
    assert "CORRUPT" in capsys.readouterr().out
    code = main(["run", "--pair", "ETH-SOL", "--clock", "virtual", "--journal", str(path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "CORRUPT" in err
    assert "refusing to trade on a damaged journal" in err


@pytest.mark.parametrize("stride", [509])
def test_S_P4_no_flip_anywhere_mid_file_is_read_as_a_silently_different_journal(
    tmp_path, original, stride
):
    raw, records = original
    path = tmp_path / "flip.db"
    statuses: dict[str, int] = {}
    for offset in range(PAGE, len(raw) - PAGE, stride):
        damaged = bytearray(raw)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        for side in ("-wal", "-shm"):
            Path(str(path) + side).unlink(missing_ok=True)
        report = verify(path)
        statuses[report.status] = statuses.get(report.status, 0) + 1
        if report.status == "ok":
            # The byte belonged to no record (free space, slack): nothing may differ.
            assert list(read_records(path)) == records, f"flip at {offset} went unnoticed"
        else:
            assert report.status in ("corrupt", "torn_tail"), report
            # A flip in the table's structure can leave every record intact and still be
            # caught (a row numbered backwards): loud, never a silently different journal.
            assert report.intact < len(records) or report.status == "corrupt", report
    assert statuses.get("corrupt", 0) > 0


def test_restore_from_a_backup_copy_is_byte_identical(tmp_path, original):
    # Sanity for the fixture: the damage tests start from an intact, complete journal.
    raw, records = original
    path = tmp_path / "copy.db"
    path.write_bytes(raw)
    shutil.copyfile(path, tmp_path / "copy2.db")
    assert verify(tmp_path / "copy2.db").intact == len(records)
