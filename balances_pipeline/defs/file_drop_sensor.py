"""The file-drop sensor: a new settled aging file starts a sync of its practice.

Every ~30 s it lists the folder of each `file_drop` practice (names, sizes and mtimes
only: no file is opened or hashed here) and picks the file a sync would read
(`sources/file_drop/files.py`: the newest settled match). When that file's identity (name,
size, mtime in ns) differs from the one seen last for the practice, it requests a run of
`practice_sync_job` for the practice's partition, with a `run_key` derived from that
identity: one file launches one run, even if the cursor is lost (Dagster skips a run key
it has launched before). Files still being written are not looked at until they settle.

- Cursor: JSON `{practice_id: {"name", "size", "mtime_ns"}}` of the last file seen per
  practice (or `{"missing": true}` while its folder is missing).
- First evaluation after deploy (no cursor): the current file of every practice is new,
  so each practice syncs once. That is the safe side: the sensor cannot tell whether a
  sync already read that file (it does not hash), and the sync itself records the file's
  checksum in `sync_runs`, so a file already processed is not counted twice.
- A folder that is missing or unreadable is skipped with one log line when it becomes so
  (not every 30 s), and never stops the other practices.
- Run tags and keys carry ids and a digest of the file identity, never the file name, a
  path or any content. Practices are those of the practices file when the code location
  loaded, like the partitions and schedules.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from balances_pipeline.config import PracticesFile
from balances_pipeline.sources.errors import SourceError
from balances_pipeline.sources.file_drop.config import FileDropSource
from balances_pipeline.sources.file_drop.files import FileIdentity, FolderMissingError, select

SENSOR_NAME = "file_drop_new_files"
CHECK_INTERVAL_SECONDS = 30
TRIGGER_TAG = "balances/trigger"
FILE_TAG = "balances/file_identity"  # a digest of name, size and mtime: no name, no content
MISSING = {"missing": True}
UNREADABLE = {"unreadable": True}


def file_digest(practice_id: str, identity: FileIdentity) -> str:
    """A short, stable digest of which file it is (not of its bytes)."""
    text = f"{practice_id}\0{identity.name}\0{identity.size}\0{identity.mtime_ns}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def run_key(practice_id: str, identity: FileIdentity) -> str:
    return f"file_drop:{practice_id}:{file_digest(practice_id, identity)}"


def _load_cursor(cursor: str | None) -> dict[str, dict[str, Any]]:
    if not cursor:
        return {}
    try:
        loaded = json.loads(cursor)
    except ValueError:
        return {}  # a cursor from elsewhere: start afresh (run keys still dedupe)
    return {k: v for k, v in loaded.items() if isinstance(v, dict)} \
        if isinstance(loaded, dict) else {}


def evaluate(context: SensorEvaluationContext, practices: PracticesFile,
             now_ns: int | None = None) -> SensorResult | SkipReason:
    """One evaluation: a RunRequest per practice whose newest settled file is new."""
    seen = _load_cursor(context.cursor)
    cursor: dict[str, dict[str, Any]] = {}
    requests: list[RunRequest] = []
    for practice in practices.practices:
        source = practice.source
        if not isinstance(source, FileDropSource):
            continue
        before = seen.get(practice.id)
        try:
            chosen = select(practice.id, source, now_ns).newest_settled
        except FolderMissingError:
            if before != MISSING:
                context.log.warning(f"practice {practice.id}: drop folder {source.folder} "
                                    "does not exist; skipped until it does")
            cursor[practice.id] = MISSING
            continue
        except SourceError as error:
            if before != UNREADABLE:
                context.log.warning(f"{error}; skipped")
            cursor[practice.id] = UNREADABLE
            continue
        if chosen is None:
            if before is not None and "name" in before:
                cursor[practice.id] = before  # the file went away: remember it all the same
            continue
        cursor[practice.id] = chosen.as_json()
        if before == chosen.as_json():
            continue
        digest = file_digest(practice.id, chosen)
        context.log.info(f"practice {practice.id}: new settled file ({digest}); requesting "
                         "a sync")
        requests.append(RunRequest(
            run_key=run_key(practice.id, chosen),
            partition_key=practice.id,
            tags={TRIGGER_TAG: "file_drop", FILE_TAG: digest},
        ))
    new_cursor = json.dumps(cursor, sort_keys=True)
    if not requests:
        return SensorResult(skip_reason="no new settled file", cursor=new_cursor)
    return SensorResult(run_requests=requests, cursor=new_cursor)


def build_file_drop_sensor(practices: PracticesFile, job: Any) -> SensorDefinition | None:
    """The sensor, when at least one practice reads file drops (else None)."""
    if not any(isinstance(p.source, FileDropSource) for p in practices.practices):
        return None

    @sensor(
        name=SENSOR_NAME,
        job=job,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=CHECK_INTERVAL_SECONDS,
        description="Starts a practice's sync when a new aging file settles in its drop "
                    "folder (file_drop practices).",
    )
    def file_drop_new_files(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        return evaluate(context, practices)

    return file_drop_new_files
