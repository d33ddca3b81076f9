"""The practices file: which practices we sync, from where, how often, with which rules.

Validated strictly: an unknown key or a bad value is a `PracticesFileError` whose one-line
message names the file and the key. Secrets never appear here, only the names of the
environment variables that hold them.
"""

from __future__ import annotations

import re
from datetime import time
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from balances_pipeline.sources.fhir.config import FhirSource
from balances_pipeline.sources.file_drop.config import FileDropSource
from balances_pipeline.sources.opendental.config import OpenDentalSource
from balances_pipeline.sources.source_config import (  # noqa: F401 - re-exported
    ENV_VAR_NAME_PATTERN,
    EnvVarName,
    Strict,
)

PRACTICE_ID_PATTERN = r"^[a-z][a-z0-9_]{1,62}$"
DEMO_PRACTICES_FILE = Path(__file__).parent / "demo" / "practices.yaml"


class PracticesFileError(ValueError):
    """The practices file is missing, unreadable or invalid (message: one line)."""


class SyncSchedule(Strict):
    frequency: Literal["daily", "hourly", "cron"] = "daily"
    at: str = "05:00"
    minute: int = Field(default=0, ge=0, le=59)
    cron: str | None = None

    @field_validator("at")
    @classmethod
    def _valid_time_of_day(cls, value: str) -> str:
        if not re.fullmatch(r"\d{2}:\d{2}", value):
            raise ValueError("must be HH:MM (24-hour local time)")
        hour, minute = (int(part) for part in value.split(":"))
        if hour > 23 or minute > 59:
            raise ValueError("must be HH:MM (24-hour local time)")
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from balances_pipeline.cron import is_valid_cron

        if not is_valid_cron(value):
            raise ValueError("must be a 5-field cron expression")
        return value

    @model_validator(mode="after")
    def _cron_only_with_cron_frequency(self) -> SyncSchedule:
        if self.frequency == "cron" and not self.cron:
            raise ValueError("frequency cron needs a cron expression")
        if self.frequency != "cron" and self.cron:
            raise ValueError("cron is only allowed with frequency: cron")
        return self

    @property
    def time_of_day(self) -> time:
        hour, minute = (int(part) for part in self.at.split(":"))
        return time(hour, minute)

    @property
    def cron_expression(self) -> str:
        """The schedule as a 5-field cron expression, in the practice's local time."""
        if self.frequency == "hourly":
            return f"{self.minute} * * * *"
        if self.frequency == "cron":
            return self.cron or ""
        return f"{self.time_of_day.minute} {self.time_of_day.hour} * * *"


# Each source type's model lives in its package; a new type is one more entry here.
Source = Annotated[OpenDentalSource | FhirSource | FileDropSource, Field(discriminator="type")]


class CollectionRule(Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    action: Literal["reminder", "final_notice", "collections_referral"]
    min_patient_balance: Decimal = Field(
        default=Decimal("0.01"), ge=0, lt=10**9, decimal_places=2
    )
    min_days_outstanding: int = Field(default=0, ge=0)
    max_days_outstanding: int | None = Field(default=None, ge=0)
    exclude_insurance_pending: bool = False
    cooldown_days: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> CollectionRule:
        if self.max_days_outstanding is not None and (
            self.min_days_outstanding > self.max_days_outstanding
        ):
            raise ValueError("min_days_outstanding is greater than max_days_outstanding")
        return self


class RulesError(ValueError):
    """A practice's collection rules are invalid (one line naming the practice and rule).

    Rules are validated per practice when they are evaluated, so one practice's bad rules
    fail only that practice's evaluation.
    """


RawRules = list[dict[str, Any]]


def validate_rules(practice_id: str, raw: RawRules) -> list[CollectionRule]:
    rules: list[CollectionRule] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        name = entry.get("id") if isinstance(entry, dict) else None
        label = f"rule {name!r}" if isinstance(name, str) else f"rule #{index + 1}"
        if not isinstance(entry, dict):
            raise RulesError(f"practice {practice_id}: {label}: expected a mapping")
        try:
            rule = CollectionRule.model_validate(entry)
        except ValidationError as exc:
            raise RulesError(f"practice {practice_id}: {label}: {_describe(exc)}") from None
        if rule.id in seen:
            raise RulesError(f"practice {practice_id}: {label}: duplicate rule id")
        seen.add(rule.id)
        rules.append(rule)
    return rules


class Practice(Strict):
    id: str = Field(pattern=PRACTICE_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    timezone: str
    sync: SyncSchedule = SyncSchedule()
    source: Source
    # Validated per practice at evaluation (`PracticesFile.rules_for`), not at load.
    collection_rules: str | RawRules | None = None
    max_rejected_fraction: float = Field(default=0.01, ge=0, le=1)
    # A sync with this much smaller a share of accounts than the previous successful one
    # (or with none) waits for a person (`balances sync accept-drop`): pipeline/collapse_guard.
    max_account_drop_fraction: float = Field(default=0.5, ge=0, le=1)
    history_days: int = Field(default=400, ge=1, le=36500)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    verify_tls: bool = True

    @field_validator("timezone")
    @classmethod
    def _iana_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class PracticesFile(Strict):
    practices: list[Practice] = Field(min_length=1)
    rule_sets: dict[str, RawRules] = {}

    @model_validator(mode="after")
    def _ids_unique(self) -> PracticesFile:
        seen: set[str] = set()
        for practice in self.practices:
            if practice.id in seen:
                raise ValueError(f"duplicate practice id {practice.id!r}")
            seen.add(practice.id)
        return self

    def practice(self, practice_id: str) -> Practice:
        for practice in self.practices:
            if practice.id == practice_id:
                return practice
        raise KeyError(f"unknown practice {practice_id!r}")

    @property
    def ids(self) -> list[str]:
        return [practice.id for practice in self.practices]

    def rules_for(self, practice: Practice) -> list[CollectionRule]:
        """The practice's rules in order (none: no rules). Raises `RulesError`."""
        rules = practice.collection_rules
        if rules is None:
            return []
        if isinstance(rules, str):
            if rules not in self.rule_sets:
                raise RulesError(f"practice {practice.id}: unknown rule set {rules!r}")
            return validate_rules(practice.id, self.rule_sets[rules])
        return validate_rules(practice.id, rules)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(
        f"[{part}]" if isinstance(part, int) else str(part) for part in first["loc"]
    ).replace(".[", "[")
    # Discriminated unions add the tag to the location ("source.opendental.page_size").
    location = re.sub(r"\.(opendental|fhir|file_drop)(?=\.|$)", "", location)
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    else:
        message = first["msg"].removeprefix("Value error, ")
    where = f"{location}: " if location else ""
    extra = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}{message}{extra}"


# Deeper than any practices file needs (practices → practice → source: 4 levels); a
# file nested thousands deep would otherwise exhaust the recursive YAML composer.
MAX_YAML_DEPTH = 50
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _YAMLRefusal(yaml.MarkedYAMLError):
    """Valid YAML the practices file refuses (a duplicate key, too deep): one line."""

    def __init__(self, message: str, mark: yaml.Mark) -> None:
        super().__init__(problem=message, problem_mark=mark)
        self.message = message


class PracticesLoader(yaml.SafeLoader):
    """`yaml.SafeLoader`, but a key given twice in one mapping (at any level) is an error
    instead of the last one silently winning, nesting is limited to `MAX_YAML_DEPTH`, and
    an impossible date is a YAML error with its line."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - PyYAML's signature
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YAMLRefusal(f"nested deeper than {MAX_YAML_DEPTH} levels",
                                   self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201, FBT002
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # `<<: *defaults`: explicit keys may override merged ones
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class reports an unhashable key
                if key in first_seen:
                    raise _YAMLRefusal(
                        f"duplicate key {key!r} (first at line {first_seen[key].line + 1})",
                        key_node.start_mark,
                    )
                first_seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node):  # noqa: ANN001, ANN201
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise _YAMLRefusal(f"invalid date {node.value!r} ({exc})", node.start_mark) from None


PracticesLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", PracticesLoader.construct_yaml_timestamp
)


def _read_yaml(path: Path) -> object:
    """The practices file's document; `PracticesFileError` (one line) if it is not UTF-8
    YAML the loader accepts."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PracticesFileError(f"{path}: cannot read practices file ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PracticesFileError(
            f"{path}: line {line} is not UTF-8 (byte 0x{data[exc.start]:02x}); save the file"
            " as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=PracticesLoader)  # noqa: S506 - a SafeLoader
    except _YAMLRefusal as exc:
        line = exc.problem_mark.line + 1
        raise PracticesFileError(f"{path}: line {line}: {exc.message}") from None
    except yaml.reader.ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        raise PracticesFileError(
            f"{path}: not valid YAML at line {line}: character U+{exc.character:04X} is not"
            " allowed"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        detail = f": {problem}" if problem else ""
        raise PracticesFileError(f"{path}: not valid YAML{line}{detail}") from None
    except RecursionError:
        raise PracticesFileError(f"{path}: nested too deeply") from None


def load_practices(path: Path) -> PracticesFile:
    """Read and validate the practices file (`Settings.practices_file`: the file named by
    `$BALANCES_PRACTICES_FILE`, or the bundled demo practices)."""
    document = _read_yaml(path)
    if not isinstance(document, dict):
        raise PracticesFileError(f"{path}: expected a mapping with a 'practices' list")
    try:
        # Relative paths in the file (a file drop's folder) are relative to its folder.
        return PracticesFile.model_validate(document, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise PracticesFileError(f"{path}: {_describe(exc)}") from None
