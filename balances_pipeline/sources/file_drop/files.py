"""Which file of a practice's drop folder is its state, and reading it once, whole.

Shared by the reader (a sync) and the sensor (which only lists: name, size, mtime).

- **Candidates**: entries of the folder (not its subfolders) whose name matches `pattern`
  (`fnmatch`, case-sensitive), that are regular files. Hidden names (a leading `.`, as
  upload tools use for partial files) are ignored, and so are symbolic links: a link may
  point anywhere outside the folder, and its own mtime says nothing about when its target
  was written. FIFOs, sockets and devices are ignored too.
- **Settled**: not modified for `settle_seconds` (now − mtime ≥ settle_seconds; an mtime in
  the future, from a clock ahead of ours, is not settled yet).
- **The state**: the newest settled candidate, by mtime then name. Newer candidates still
  being written are skipped (counted, never read): the newest *settled* file is the state,
  as the contract says, so a sync running while the next export is written reads the
  previous one; the sensor starts another sync when the new one settles.
- **Reading**: the file is opened without following links and without blocking, checked to
  be the regular file that was listed (same size and mtime, still settled), read into
  memory in full (at most `max_file_bytes`), then checked not to have changed meanwhile.
  What is parsed and what is hashed are the same bytes; a file replaced by a rename while
  it is read does not mix: the open descriptor keeps the old one.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from balances_pipeline.sources.errors import SourceError
from balances_pipeline.sources.file_drop.config import FileDropSource

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, order=True)
class FileIdentity:
    """A candidate as listed: what the sensor compares, with no read of its content."""

    mtime_ns: int
    name: str
    size: int

    def settled(self, settle_seconds: float, now_ns: int) -> bool:
        return now_ns - self.mtime_ns >= settle_seconds * 1_000_000_000

    def as_json(self) -> dict[str, int | str]:
        return {"name": self.name, "size": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Selection:
    """The folder's matching files, and which one is the practice's state."""

    candidates: tuple[FileIdentity, ...]
    newest_settled: FileIdentity | None
    settled: int  # how many candidates have settled
    unsettled: int  # candidates newer than `newest_settled`, still being written


@dataclass(frozen=True)
class ReadFile:
    """The bytes of the chosen file, exactly as read, and their SHA-256."""

    identity: FileIdentity
    data: bytes
    sha256: str


class FolderMissingError(SourceError):
    """The practice's folder does not exist (not mounted yet, or a typo in the file)."""


def list_candidates(practice_id: str, source: FileDropSource) -> list[FileIdentity]:
    folder = source.folder
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        raise FolderMissingError(f"practice {practice_id}: folder {folder} does not exist") \
            from None
    except NotADirectoryError:
        raise SourceError(f"practice {practice_id}: {folder} is not a folder") from None
    except OSError as error:
        raise SourceError(
            f"practice {practice_id}: cannot read folder {folder} ({_reason(error)})"
        ) from None
    found = []
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not fnmatch.fnmatchcase(name, source.pattern):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:  # gone since the listing
            continue
        if stat.S_ISREG(info.st_mode):
            found.append(FileIdentity(info.st_mtime_ns, name, info.st_size))
    return sorted(found)


def select(practice_id: str, source: FileDropSource, now_ns: int | None = None) -> Selection:
    candidates = list_candidates(practice_id, source)
    now_ns = time.time_ns() if now_ns is None else now_ns
    settled = [c for c in candidates if c.settled(source.settle_seconds, now_ns)]
    newest = settled[-1] if settled else None
    unsettled = sum(1 for c in candidates if newest is None or c > newest)
    return Selection(tuple(candidates), newest, len(settled), unsettled)


def no_settled_file(practice_id: str, source: FileDropSource, selection: Selection) -> str:
    message = (f"practice {practice_id}: no settled file matching '{source.pattern}' in "
               f"{source.folder}")
    if selection.unsettled:
        message += (f" ({selection.unsettled} still being written: modified less than "
                    f"{source.settle_seconds:g} s ago)")
    return message


def read_whole(practice_id: str, source: FileDropSource, chosen: FileIdentity,
               now_ns: int | None = None) -> ReadFile:
    """The chosen file's bytes, read once, checked unchanged from listing to last byte."""
    path = Path(source.folder) / chosen.name
    where = f"practice {practice_id}: {chosen.name}"
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SourceError(f"{where}: became a symbolic link; not read") from None
        raise SourceError(f"{where}: cannot open ({_reason(error)})") from None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise SourceError(f"{where}: not a regular file any more; not read")
        now_ns = time.time_ns() if now_ns is None else now_ns
        if (before.st_size, before.st_mtime_ns) != (chosen.size, chosen.mtime_ns) and \
                not FileIdentity(before.st_mtime_ns, chosen.name, before.st_size).settled(
                    source.settle_seconds, now_ns):
            raise SourceError(f"{where}: changed since it was listed (still being written?);"
                              " the next sync reads it once settled")
        if before.st_size > source.max_file_bytes:
            raise SourceError(f"{where}: {before.st_size} bytes, more than max_file_bytes"
                              f" ({source.max_file_bytes})")
        chunks: list[bytes] = []
        total = 0
        digest = hashlib.sha256()
        while True:
            try:
                chunk = handle.read(READ_CHUNK)
            except OSError as error:
                raise SourceError(f"{where}: read failed ({_reason(error)})") from None
            if not chunk:
                break
            total += len(chunk)
            if total > source.max_file_bytes:
                raise SourceError(f"{where}: more than max_file_bytes ({source.max_file_bytes})"
                                  " bytes")
            digest.update(chunk)
            chunks.append(chunk)
        after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) \
            or total != before.st_size:
        raise SourceError(f"{where}: changed while it was read (still being written?); the"
                          " next sync reads it once settled")
    identity = FileIdentity(before.st_mtime_ns, chosen.name, before.st_size)
    return ReadFile(identity, b"".join(chunks), digest.hexdigest())


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__
