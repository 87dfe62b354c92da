from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.journal import Record
from engine.core.journal import read_records
from engine.core.journal_verify import verify
from engine.runtime.cli import main

PAGE = 4096


@pytest.fixture(scope="session")
def original(tmp_path_factory) -> tuple[bytes, list[Record]]:
    path = tmp_path_factory.mktemp("journal") / "run.db"
    code = main(
        [
            "run",
            "--pair",
            "ETH-SOL",
            "--cycles",
            # enough cycles that the cut window of the deep tier (the last 12 pages)
            # stays clear of the first pages (schema, payload dictionary)
            "13",
            "--clock",
            "virtual",
            "--seed",
            "3",
            "--journal",
            str(path),
            "--quiet",
        ]
    )
    assert code == 0
    assert verify(path).ok
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0
    raw = path.read_bytes()
    assert int.from_bytes(raw[16:18], "big") == PAGE
    return raw, list(read_records(path))
