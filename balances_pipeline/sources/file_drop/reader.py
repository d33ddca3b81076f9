"""`FileDropClient`: a practice's newest settled aging export, read as its state.

Which file (`files.py`), how its bytes become rows (`parse.py`, `money.py`), and the
decisions behind both are in docs/sources.md, "Aging exports dropped as files".

A file drop is always a full read: `changed_since` is ignored and every sync reads the
whole chosen file (accounts it no longer lists leave the practice). The file is read into
memory once; `facts()` reports its name and the SHA-256 of exactly those bytes, so the
pipeline can tell a file it has already processed. Logs carry the practice id, the file
name and counts, never a cell.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date, datetime
from types import TracebackType
from typing import Any

from balances_pipeline.config import Practice
from balances_pipeline.sources.clients import ReadFacts
from balances_pipeline.sources.errors import SourceError
from balances_pipeline.sources.file_drop.config import FileDropSource
from balances_pipeline.sources.file_drop.files import (
    ReadFile,
    Selection,
    no_settled_file,
    read_whole,
    select,
)
from balances_pipeline.sources.file_drop.parse import ParseState, decode, pages
from balances_pipeline.sources.http import RequestStats
from balances_pipeline.sources.rows import Page, SourceBalanceRow

logger = logging.getLogger(__name__)
READ_PATH = "file"


class FileDropClient:
    """Reads a `file_drop` practice's state: the `AccountBalanceClient` of clients.py."""

    def __init__(self, practice: Practice) -> None:
        if not isinstance(practice.source, FileDropSource):
            raise TypeError(f"practice {practice.id}: not a file_drop source")
        self.practice = practice
        self.source: FileDropSource = practice.source
        self.stats = RequestStats()  # requests stay 0; pages are the batches yielded
        self.server_clock: datetime | None = None  # a file has no clock to resume from
        self._file: tuple[str, str] | None = None  # the file read: name, SHA-256
        self._state: ParseState | None = None

    def __repr__(self) -> str:
        return f"FileDropClient(practice={self.practice.id!r}, folder={str(self.source.folder)!r})"

    def __enter__(self) -> FileDropClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        pass  # nothing held open: the file was read whole, and only pages hold its text

    # -- the AccountBalanceClient protocol ------------------------------------------------

    def account_balance_pages(
        self, changed_since: datetime | None
    ) -> list[Iterator[Page[Any]]]:
        """Every account of the newest settled file (always a full read)."""
        chosen = self._read()
        return [self._pages(chosen)]

    def facts(self) -> ReadFacts:
        """The file read and its checksum; its report date once its pages were read."""
        if self._file is None or self._state is None:
            raise RuntimeError("facts() is known only after account_balance_pages()")
        return ReadFacts(
            as_of_date=self._state.as_of_date,
            source_file=self._file[0],
            source_checksum=self._file[1],
            read_path=READ_PATH,
        )

    def check_connection(self) -> dict[str, Any]:
        """The folder, its matching files and the one a sync would read: counts only."""
        selection = select(self.practice.id, self.source)
        found: dict[str, Any] = {
            "practice_id": self.practice.id,
            "folder": str(self.source.folder),
            "pattern": self.source.pattern,
            "matching_files": len(selection.candidates),
            "settled_files": selection.settled,
            "still_being_written": selection.unsettled,
        }
        if selection.newest_settled is None:
            return {**found, "file": None}
        read = self._read(selection)
        rows = rejected = 0
        for page in self._pages(read):
            rows += len(page.rows)
            rejected += len(page.rejected)
        assert self._state is not None
        found.update(file=read.identity.name, bytes=len(read.data), rows=rows,
                     rejected=rejected)
        if self.source.as_of_column:
            as_of = self._state.as_of_date
            found["as_of_date"] = as_of.isoformat() if as_of else None
        return found

    # -- reading ------------------------------------------------------------------------

    def _read(self, selection: Selection | None = None) -> ReadFile:
        selection = selection or select(self.practice.id, self.source)
        chosen = selection.newest_settled
        if chosen is None:
            raise SourceError(no_settled_file(self.practice.id, self.source, selection))
        if selection.unsettled:
            logger.info("practice %s: %d newer file(s) still being written; reading %s",
                        self.practice.id, selection.unsettled, chosen.name)
        read = read_whole(self.practice.id, self.source, chosen)
        self._file = (read.identity.name, read.sha256)
        self._state = ParseState()
        return read

    def _pages(self, read: ReadFile) -> Iterator[Page[SourceBalanceRow]]:
        state = self._state
        assert state is not None
        name = read.identity.name
        text = decode(self.practice.id, name, read.data, self.source.encoding)
        for page in pages(self.practice.id, name, text, self.source, self._today(), state):
            self.stats.pages += 1
            yield page
        logger.info("practice %s: %s read: %d rows, %d rejected, %d pages, %d bytes",
                    self.practice.id, name, state.rows, state.rejected, self.stats.pages,
                    len(read.data))

    def _today(self) -> date:
        """The practice-local date, which a report date may pass by one day at most."""
        return datetime.now(self.practice.zone).date()
