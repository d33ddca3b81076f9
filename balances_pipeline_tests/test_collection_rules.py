"""Auto collection rules: first match wins, boundaries, exclusions, cooldown, and the hand-off."""

from __future__ import annotations

import csv
from datetime import date
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest
import yaml
from dagster import DagsterInstance, materialize

from balances_pipeline.config import CollectionRule, RulesError, load_practices, validate_rules
from balances_pipeline.defs.assets import build_sync_assets
from balances_pipeline.defs.partitions import practice_partitions
from balances_pipeline.defs.resources import resources_from
from balances_pipeline.pipeline.collections import evaluate_collection_targets, rules_table
from balances_pipeline.settings import Settings
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.staff.blocks import set_block
from balances_pipeline.staff.overrides import build_request, set_overrides
from balances_pipeline.storage.sql_files import load_sql
from balances_pipeline_tests.conftest import sync_practice
from balances_pipeline_tests.conftest import warehouse_query as query

# Each test runs in both layouts: on this machine, and the warehouse on DuckLake.
pytestmark = pytest.mark.usefixtures("both_layouts")

D = Decimal
AS_OF = date(2026, 11, 30)
MONEY = pa.decimal128(14, 2)


def rule(rule_id: str, action: str = "reminder", **thresholds) -> CollectionRule:
    return CollectionRule(id=rule_id, action=action, **thresholds)


def account(account_id: str, patient: str, days: int | None, **extra) -> dict:
    return {
        "practice_id": "p", "account_id": account_id, "patient_portion": D(patient),
        "days_outstanding": days, "insurance_estimate": D(extra.get("insurance", "0")),
        "has_rejected_rows": extra.get("rejected", False),
        "guarantor_status": extra.get("status", "Patient"),
    }


def decide(accounts: list[dict], rules: list[CollectionRule], blocked: set[str] = frozenset(),
           history: list[tuple[str, str, date]] = ()) -> dict[str, tuple]:
    """Run the decision SQL on hand-made inputs: account -> (rule, exclusion or None, reason)."""
    con = duckdb.connect()
    con.register("outstanding_balances", pa.Table.from_pylist(accounts, schema=pa.schema([
        ("practice_id", pa.string()), ("account_id", pa.string()),
        ("patient_portion", MONEY), ("days_outstanding", pa.int32()),
        ("insurance_estimate", MONEY), ("has_rejected_rows", pa.bool_()),
        ("guarantor_status", pa.string()),
    ])))
    con.register("rules_in", rules_table(rules))
    con.register("blocks_in", pa.table({
        "account_id": pa.array(sorted(blocked), pa.string()),
        "blocked": pa.array([True] * len(blocked), pa.bool_()),
        "reason": pa.array(["r"] * len(blocked), pa.string()),
    }))
    con.register("history_in", pa.table({
        "account_id": pa.array([h[0] for h in history], pa.string()),
        "rule_id": pa.array([h[1] for h in history], pa.string()),
        "as_of_date": pa.array([h[2] for h in history], pa.date32()),
    }))
    rows = con.execute(load_sql("collection_decisions"),
                       {"as_of_date": AS_OF, "evaluated_at": "2026-11-30 12:00:00+00"}).fetchall()
    names = [c[0] for c in con.description]
    found = [dict(zip(names, row, strict=True)) for row in rows]
    return {r["account_id"]: (r["rule_id"], r["exclusion"], r["reason"]) for r in found}


def test_the_first_matching_rule_decides_and_later_rules_are_not_tried() -> None:
    rules = [
        rule("collections", "collections_referral", min_patient_balance=D("200.00"),
             min_days_outstanding=91, exclude_insurance_pending=True),
        rule("reminder", min_patient_balance=D("25.00"), min_days_outstanding=31),
    ]
    decided = decide([
        account("a1", "500.00", 91),                      # both match: the first decides
        account("a2", "100.00", 91),                      # only the reminder matches
        account("a3", "500.00", 91, insurance="10.00"),   # first rule matches, then excludes
        account("a4", "10.00", 95),                       # no rule
    ], rules)
    assert decided["a1"][:2] == ("collections", None)
    assert decided["a2"][:2] == ("reminder", None)
    assert decided["a3"][:2] == ("collections", "insurance_pending")  # not the reminder
    assert "a4" not in decided
    assert decided["a1"][2] == "patient portion 500.00 ≥ 200.00 and 91 days ≥ 91 days"


@pytest.mark.parametrize(("patient", "days", "meets"), [
    ("25.00", 31, True),    # both thresholds exactly: passes
    ("24.99", 31, False),   # a cent below the amount
    ("25.00", 30, False),   # a day below
    ("25.00", 60, True),    # at the maximum
    ("25.00", 61, False),   # a day above the maximum
])
def test_thresholds_at_their_boundaries(patient, days, meets) -> None:
    rules = [rule("r", min_patient_balance=D("25.00"), min_days_outstanding=31,
                  max_days_outstanding=60)]
    assert ("x" in decide([account("x", patient, days)], rules)) is meets


def test_never_a_patient_portion_at_or_below_zero_nor_unknown_days() -> None:
    rules = [rule("anything", min_patient_balance=D("0.00"), min_days_outstanding=0)]
    decided = decide([account("zero", "0.00", 0), account("credit", "-5.00", 0),
                      account("no_days", "50.00", None), account("yes", "0.01", 0)], rules)
    assert set(decided) == {"yes"}


def test_each_exclusion_and_its_order() -> None:
    rules = [rule("r", min_patient_balance=D("1.00"), exclude_insurance_pending=True,
                  cooldown_days=14)]
    earlier = date(2026, 11, 20)
    decided = decide([
        account("blocked", "50", 40, status="Deceased"),  # blocked wins over deceased
        account("deceased", "50", 40, status="Deceased", rejected=True),
        account("bad_rows", "50", 40, rejected=True, insurance="5"),
        account("pending", "50", 40, insurance="5"),
        account("cooling", "50", 40),
        account("free", "50", 40),
    ], rules, blocked={"blocked"}, history=[("cooling", "r", earlier)])
    assert {k: v[1] for k, v in decided.items()} == {
        "blocked": "blocked", "deceased": "deceased", "bad_rows": "data_quality",
        "pending": "insurance_pending", "cooling": "cooldown", "free": None,
    }


def test_cooldown_reads_only_earlier_days_within_the_window() -> None:
    rules = [rule("r", min_patient_balance=D("1.00"), cooldown_days=14)]
    history = [
        ("same_day", "r", AS_OF),                   # today's own decision: not a cooldown
        ("edge", "r", date(2026, 11, 16)),          # as_of - 14: outside the window
        ("inside", "r", date(2026, 11, 17)),        # as_of - 13: inside
        ("other_rule", "other", date(2026, 11, 29)),
    ]
    accounts = [account(a, "50", 40) for a in ("same_day", "edge", "inside", "other_rule")]
    decided = decide(accounts, rules, history=history)
    assert {k: v[1] for k, v in decided.items()} == {
        "same_day": None, "edge": None, "inside": "cooldown", "other_rule": None,
    }


@pytest.mark.parametrize(("raw", "message"), [
    ([{"id": "r1", "action": "sue"}], "practice p1: rule 'r1': action: Input should be"),
    ([{"id": "r1", "action": "reminder", "colour": 1}], "rule 'r1': colour: unknown key"),
    ([{"id": "r1", "action": "reminder", "min_patient_balance": -1}],
     "rule 'r1': min_patient_balance: Input should be greater than or equal to 0"),
    ([{"id": "r1", "action": "reminder", "min_days_outstanding": 91,
       "max_days_outstanding": 60}], "rule 'r1': min_days_outstanding is greater than"),
    ([{"id": "r1", "action": "reminder"}, {"id": "r1", "action": "reminder"}],
     "practice p1: rule 'r1': duplicate rule id"),
    ([{"action": "reminder"}], "practice p1: rule #1: id: Field required"),
])
def test_invalid_rules_name_the_practice_and_the_rule(raw, message) -> None:
    with pytest.raises(RulesError) as raised:
        validate_rules("p1", raw)
    assert message in str(raised.value) and "\n" not in str(raised.value)


# --- through the pipeline, on the simulator ---------------------------------------------------

RULES = [
    {"id": "collections", "action": "collections_referral", "min_patient_balance": "200.00",
     "min_days_outstanding": 91, "cooldown_days": 30},
    {"id": "reminder", "action": "reminder", "min_patient_balance": "25.00",
     "min_days_outstanding": 0, "cooldown_days": 7},
]


@pytest.fixture
def with_rules(simulated):
    document = yaml.safe_load(simulated.practices_file.read_text())
    document["rule_sets"] = {"standard": RULES}
    for entry in document["practices"]:
        entry["collection_rules"] = "standard"
    document["practices"][1]["collection_rules"] = [{"id": "broken", "action": "sue"}]
    simulated.practices_file.write_text(yaml.safe_dump(document))
    return simulated


def targets(practice_id: str = "alpha_dental") -> dict[str, tuple]:
    return {row[0]: row[1:] for row in query(
        "SELECT account_id, rule_id, amount, reason FROM collection_targets WHERE practice_id = ?",
        [practice_id])}


def test_a_bad_rule_set_fails_only_its_practice(with_rules) -> None:
    practices = load_practices(with_rules.practices_file)
    resources = resources_from(Settings.from_env())
    assets = build_sync_assets(practice_partitions(practices))
    with DagsterInstance.ephemeral() as instance:
        bad = materialize(assets, partition_key="beta_dental", instance=instance,
                          resources=resources, raise_on_error=False)
        good = materialize(assets, partition_key="alpha_dental", instance=instance,
                           resources=resources)
    assert good.success and not bad.success
    [failure] = [e for e in bad.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "collection_targets"
    assert "practice beta_dental: rule 'broken': action: Input should be" in (
        failure.step_failure_data.error.message)
    assert query("SELECT count(*) FROM account_balances WHERE practice_id = 'beta_dental'")[0][0]
    assert len(targets("alpha_dental")) > 0
    materialization = good.asset_materializations_for_node("collection_targets")[0]
    assert materialization.metadata["rules"].value == 2
    assert materialization.metadata["dagster/row_count"].value == len(targets())


def test_targets_match_the_balances_and_the_export(with_rules, monkeypatch) -> None:
    monkeypatch.setenv("BALANCES_AS_OF", "2026-11-30")
    practices = load_practices(with_rules.practices_file)
    practice = practices.practice("alpha_dental")
    sync_practice(practice)
    outcome = evaluate_collection_targets(practice, practices, layout())
    balances = {row[0]: row[1:] for row in query(
        "SELECT account_id, patient_portion, days_outstanding FROM outstanding_balances"
        " WHERE practice_id = 'alpha_dental'")}
    expected = {}
    for account_id, (patient, days) in balances.items():
        if patient is None or patient <= 0 or days is None:
            continue
        if patient >= D("200.00") and days >= 91:
            expected[account_id] = "collections"
        elif patient >= D("25.00"):
            expected[account_id] = "reminder"
    found = targets()
    excluded = {row[0]: row[1] for row in query(
        "SELECT account_id, rule_id FROM collection_exclusions WHERE practice_id = 'alpha_dental'")}
    assert {k: v[0] for k, v in found.items()} | excluded == expected and expected
    assert not set(found) & set(excluded)
    assert set(query("SELECT exclusion FROM collection_exclusions")) <= {("deceased",)}
    assert all(v[1] == balances[k][0] for k, v in found.items())
    assert outcome.amount_targeted == sum(v[1] for v in found.values())
    with outcome.export_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert outcome.export_path.name == "collection_targets_2026-11-30.csv"
    assert list(rows[0]) == ["practice_id", "account_id", "as_of_date", "rule_id", "action",
                             "amount", "days_outstanding"]
    assert {r["account_id"]: (r["rule_id"], D(r["amount"])) for r in rows} == {
        k: (v[0], v[1]) for k, v in found.items()}
    assert not list(outcome.export_path.parent.glob(".*.tmp"))


def test_same_day_reevaluation_replaces_and_cooldown_spans_days(with_rules, monkeypatch) -> None:
    practices = load_practices(with_rules.practices_file)
    practice = practices.practice("alpha_dental")
    monkeypatch.setenv("BALANCES_AS_OF", "2026-11-30")
    sync_practice(practice)
    evaluate_collection_targets(practice, practices, layout())
    first = targets()
    evaluate_collection_targets(practice, practices, layout())
    assert first and targets() == first
    assert query("SELECT count(*) FROM collection_target_history")[0][0] == len(first)
    monkeypatch.setenv("BALANCES_AS_OF", "2026-12-03")  # three days later
    sync_practice(practice)
    evaluate_collection_targets(practice, practices, layout())
    # No account is targeted again by the rule that targeted it three days ago...
    day_three = targets()
    assert not {(k, v[0]) for k, v in day_three.items()} & {(k, v[0]) for k, v in first.items()}
    # ...those are the cooldown exclusions, and nothing else is.
    cooling = query("SELECT account_id, rule_id FROM collection_exclusions"
                    " WHERE exclusion = 'cooldown'")
    assert cooling and all(first[account][0] == rule_id for account, rule_id in cooling)
    monkeypatch.setenv("BALANCES_AS_OF", "2026-12-08")  # 8 days: reminders are free again
    sync_practice(practice)
    evaluate_collection_targets(practice, practices, layout())
    again = {(k, v[0]) for k, v in targets().items()}
    reminded_first = {(k, v[0]) for k, v in first.items() if v[0] == "reminder"}
    assert again & reminded_first  # a 7-day cooldown has passed for the reminders
    assert not {pair for pair in again if pair[1] == "collections"} & set(
        (k, v[0]) for k, v in first.items())  # the 30-day one has not
    history = query("SELECT as_of_date, count(*) FROM collection_target_history GROUP BY 1"
                    " ORDER BY 1")
    assert [row[0] for row in history] == [
        date(2026, 11, 30), date(2026, 12, 3), date(2026, 12, 8)]
    assert history[0][1] == len(first)


def test_an_override_below_the_threshold_or_a_block_removes_the_target(with_rules) -> None:
    practices = load_practices(with_rules.practices_file)
    practice = practices.practice("alpha_dental")
    sync_practice(practice)
    evaluate_collection_targets(practice, practices, layout())
    found = targets()
    [lowered, blocked] = sorted(k for k, v in found.items() if v[0] == "reminder")[:2]
    request = build_request(practices, "alpha_dental", lowered, "24.99", None, "plan", "amy")
    set_overrides(layout(), practices, [request])
    assert lowered not in targets()
    set_block(layout(), practices, "alpha_dental", blocked, True, "disputed", "amy")
    assert blocked not in targets()
    assert query("SELECT exclusion FROM collection_exclusions WHERE account_id = ?",
                 [blocked]) == [("blocked",)]
    set_block(layout(), practices, "alpha_dental", blocked, False, "resolved", "amy")
    assert blocked in targets()
    assert [row[0] for row in query(
        "SELECT blocked FROM account_blocks WHERE account_id = ? ORDER BY sequence",
        [blocked])] == [True, False]
