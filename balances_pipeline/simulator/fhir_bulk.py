"""Bulk Data `$export` jobs of a simulated FHIR practice (FHIR Bulk Data Access 2.0).

Kick-off `GET [base]/Group/<group>/$export?_type=Account[,Patient][&_since=<instant>]` with
`Prefer: respond-async` answers `202` with `Content-Location: /fhir/<practice>/bulk/<job>`.
The job's NDJSON files are written at kick-off (the resources as they were then). Polling
the status URL answers `202` with `Retry-After` and `X-Progress` for the practice's
`fhir_bulk_polls` polls, then `200` with the manifest (`transactionTime`, `request`,
`requiresAccessToken: true`, `output`, `error`). Accounts are split over at least two
files when there are two or more (at most `fhir_bulk_file_accounts` a file). Files
(`/fhir/<practice>/bulk/<job>/<n>.ndjson`, `application/fhir+ndjson`) need the bearer
token. `DELETE` of the status URL cancels the job (or deletes its files): `202`, then the
job and its files are gone (404).
"""

from __future__ import annotations

import math
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from balances_pipeline.simulator.fhir_data import fhir_json

MAX_JOBS = 16
EXPORT_TYPES = ("Account", "Patient")
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})


@dataclass
class ExportJob:
    id: str
    request_url: str
    transaction_time: str
    files: list[tuple[str, bytes, int]]  # (resource type, NDJSON, resources)
    polls_left: int
    polls_total: int
    done_polls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def poll(self) -> bool:
        """One status request: True once the export is complete."""
        with self.lock:
            if self.polls_left > 0:
                self.polls_left -= 1
                self.done_polls += 1
                return False
            return True

    @property
    def progress(self) -> str:
        share = 100 * self.done_polls // max(self.polls_total + 1, 1)
        return f"{share}% (in progress)"


def ndjson_files(
    resource_type: str, resources: list[dict[str, Any]], per_file: int
) -> list[tuple[str, bytes, int]]:
    """`resources` as NDJSON files: at least two when there are two or more."""
    if not resources:
        return []
    size = max(1, min(per_file, math.ceil(len(resources) / 2)))
    files = []
    for start in range(0, len(resources), size):
        chunk = resources[start : start + size]
        data = b"".join(fhir_json(resource) + b"\n" for resource in chunk)
        files.append((resource_type, data, len(chunk)))
    return files


class BulkJobs:
    """A practice's export jobs, the newest MAX_JOBS kept."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, ExportJob] = OrderedDict()
        self._lock = threading.Lock()

    def add(
        self,
        request_url: str,
        transaction_time: str,
        files: list[tuple[str, bytes, int]],
        polls: int,
    ) -> ExportJob:
        job = ExportJob(secrets.token_hex(8), request_url, transaction_time, files, polls, polls)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_JOBS:
                self._jobs.popitem(last=False)
        return job

    def get(self, job_id: str) -> ExportJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def delete(self, job_id: str) -> bool:
        with self._lock:
            return self._jobs.pop(job_id, None) is not None


def manifest(job: ExportJob, status_url: str) -> dict[str, Any]:
    return {
        "transactionTime": job.transaction_time,
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [
            {"type": rtype, "url": f"{status_url}/{n}.ndjson", "count": count}
            for n, (rtype, _, count) in enumerate(job.files, start=1)
        ],
        "error": [],
    }


def export_types(raw: list[str] | None) -> list[str]:
    """The `_type` parameter's resource types (ValueError names a bad one)."""
    if raw is None:
        return list(EXPORT_TYPES)
    types: list[str] = []
    for value in raw:
        for name in value.split(","):
            name = name.strip()
            if name not in EXPORT_TYPES:
                raise ValueError(f"_type {name!r} is not supported (Account, Patient)")
            if name not in types:
                types.append(name)
    if not types:
        raise ValueError("_type is empty")
    return types
