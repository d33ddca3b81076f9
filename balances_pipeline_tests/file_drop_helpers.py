"""Helpers of the file-drop tests: a practices file of file_drop practices, files with an
mtime in the past (settled) or now (still being written)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from balances_pipeline.config import Practice, PracticesFile, load_practices
from balances_pipeline.simulator.aging_files import AGING_FILE_COLUMNS

COLUMNS = dict(AGING_FILE_COLUMNS)  # the simulator's exports: the same headers
HEADER = "Guarantor ID,Guarantor,0-30,31-60,61-90,90+,Total Balance,Ins Est,W/O Est"
HOUR = 3600


def source(folder: Path, **overrides: Any) -> dict[str, Any]:
    return {"type": "file_drop", "folder": str(folder), "pattern": "aging_*.csv",
            "columns": dict(COLUMNS), "settle_seconds": 60, **overrides}


def practice_entry(practice_id: str, folder: Path, **overrides: Any) -> dict[str, Any]:
    return {"id": practice_id, "name": practice_id.title(), "timezone": "America/Chicago",
            "source": source(folder, **overrides)}


def practices_file(path: Path, entries: list[dict[str, Any]]) -> PracticesFile:
    path.write_text(yaml.safe_dump({"practices": entries}, sort_keys=False), encoding="utf-8")
    return load_practices(path)


def practice(tmp_path: Path, folder: Path, **overrides: Any) -> Practice:
    return practices_file(
        tmp_path / "practices.yaml", [practice_entry("sunrise", folder, **overrides)]
    ).practices[0]


def drop(folder: Path, name: str, content: str | bytes, age_seconds: float = HOUR,
         encoding: str = "utf-8") -> Path:
    """Write a file as if it was written `age_seconds` ago (0: just now)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = content.encode(encoding) if isinstance(content, str) else content
    path.write_bytes(data)
    when = time.time() - age_seconds
    os.utime(path, (when, when))
    return path


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\r\n".join([header, *rows]) + "\r\n"
