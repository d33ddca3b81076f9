"""The `source` block of a file-drop practice (`type: file_drop`, docs/sources.md)."""

from __future__ import annotations

import codecs
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from balances_pipeline.plain_text import forbidden_character
from balances_pipeline.sources.source_config import Produces, SourceConfig, Strict

# Our fields a file may map (CSV header -> field); any subset that gives a balance.
MONEY_FIELDS = ("bucket_0_30", "bucket_31_60", "bucket_61_90", "bucket_over_90",
                "bucket_91_120", "bucket_over_120", "balance_total", "insurance_estimate",
                "writeoff_estimate")


class FileColumns(Strict):
    """Which CSV header holds each of our fields."""

    account_id: str = Field(min_length=1)
    account_name: str | None = None
    bucket_0_30: str | None = None
    bucket_31_60: str | None = None
    bucket_61_90: str | None = None
    bucket_over_90: str | None = None
    bucket_91_120: str | None = None
    bucket_over_120: str | None = None
    balance_total: str | None = None
    insurance_estimate: str | None = None
    writeoff_estimate: str | None = None

    @model_validator(mode="after")
    def _gives_a_balance(self) -> FileColumns:
        buckets = [self.bucket_0_30, self.bucket_31_60, self.bucket_61_90]
        over_90 = self.bucket_over_90 or (self.bucket_91_120 and self.bucket_over_120)
        if self.balance_total is None and not (all(buckets) and over_90):
            raise ValueError("columns must give a balance: balance_total, or every bucket "
                             "(bucket_0_30, bucket_31_60, bucket_61_90 and bucket_over_90 "
                             "or bucket_91_120 with bucket_over_120)")
        if self.bucket_over_90 and (self.bucket_91_120 or self.bucket_over_120):
            raise ValueError("map bucket_over_90, or bucket_91_120 and bucket_over_120, "
                             "not both")
        if bool(self.bucket_91_120) != bool(self.bucket_over_120):
            raise ValueError("bucket_91_120 and bucket_over_120 go together")
        headers = [value for value in self.model_dump().values() if value]
        if len(headers) != len(set(headers)):
            raise ValueError("each CSV header may be mapped to one field only")
        return self


class FileDropSource(SourceConfig):
    type: Literal["file_drop"]
    folder: Path
    pattern: str = Field(default="*.csv", min_length=1, max_length=200)
    columns: FileColumns
    date_format: str = "%Y-%m-%d"
    as_of_column: str | None = Field(default=None, min_length=1)
    encoding: str = "utf-8"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    settle_seconds: float = Field(default=60, ge=0, le=86400)
    # A larger file fails the sync (the file is read into memory once: what is parsed is
    # exactly what is hashed).
    max_file_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, le=4 * 1024**3)

    @field_validator("folder")
    @classmethod
    def _absolute(cls, value: Path, info: ValidationInfo) -> Path:
        """A relative folder is relative to the practices file's folder."""
        if value.is_absolute():
            return value
        base = (info.context or {}).get("base_dir")
        if base is None:
            raise ValueError("must be an absolute path")
        return (Path(base) / value).resolve()

    @field_validator("pattern")
    @classmethod
    def _file_name_pattern(cls, value: str) -> str:
        if "/" in value or value.startswith("."):
            raise ValueError("must be a file name pattern (no '/', not hidden)")
        return value

    @field_validator("pattern")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        if forbidden_character(value):
            raise ValueError("must not contain control or formatting characters")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(f"{value!r} is not a text encoding")
        return value

    @field_validator("delimiter")
    @classmethod
    def _usable_delimiter(cls, value: str) -> str:
        if value in "\"\r\n" or value.isalnum() or not value.isprintable() and value != "\t":
            raise ValueError("must be one printable character such as ',', ';', '|' or a tab"
                             " (not a quote, a letter or a digit)")
        return value

    @field_validator("date_format")
    @classmethod
    def _date_format_gives_a_date(cls, value: str) -> str:
        sample = date(2031, 12, 24)
        try:
            parsed = datetime.strptime(sample.strftime(value), value).date()
        except ValueError:
            parsed = None
        if parsed != sample:
            raise ValueError("must give a year, a month and a day (e.g. '%m/%d/%Y')")
        return value

    @model_validator(mode="after")
    def _as_of_column_not_mapped(self) -> FileDropSource:
        if self.as_of_column and self.as_of_column in self.columns.model_dump().values():
            raise ValueError("as_of_column must not be a header mapped in columns")
        return self

    @property
    def produces(self) -> Produces:
        return "account_balances"

    @property
    def source_mode(self) -> str:
        return "file_drop"
