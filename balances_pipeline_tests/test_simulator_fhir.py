"""The simulator's FHIR endpoint over loopback: Account searches, balances, Bulk Data."""

from __future__ import annotations

import json
import re
from datetime import UTC, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import requests

from balances_pipeline.simulator import Faults, SimulatorServer
from balances_pipeline_tests.simulator_fhir_helpers import (  # noqa: F401 - fixtures too
    DEV,
    STATIC,
    TERMS,
    _no_faults,
    balances,
    decimal_json,
    get,
    issue,
    matches,
    search_all,
    sim,
)

D = Decimal
ZERO = D("0.00")


def aging_rows(sim: SimulatorServer, practice: str, customer_key: str) -> dict[int, dict]:
    """The Open Dental `/reports/Aging` of the office's today, over HTTP: the independent path."""
    as_of = sim.now(practice).date().isoformat()
    rows: list[dict] = []
    while True:
        reply = requests.get(f"{sim.url}/reports/Aging",
                             params={"DateAsOf": as_of, "Offset": len(rows)},
                             headers={"Authorization": f"ODFHIR {DEV}/{customer_key}"},
                             timeout=30)
        page = json.loads(reply.text, parse_float=Decimal)
        rows.extend(page)
        if len(page) < 100:
            return {row["PatNum"]: row for row in rows}


# -- searchset paging ----------------------------------------------------------------------


def test_search_pages_through_next_links_with_a_stable_total(sim: SimulatorServer) -> None:
    bundles = search_all(sim, _count=40)
    accounts = sim.fhir_accounts("peds")
    assert len(bundles) >= 4
    assert {b["total"] for b in bundles} == {len(accounts)}
    assert all(b["type"] == "searchset" and b["resourceType"] == "Bundle" for b in bundles)
    assert all(len(matches([b])) == 40 for b in bundles[:-1])
    ids = [r["id"] for r in matches(bundles)]
    assert ids == sorted(accounts, key=int) and len(set(ids)) == len(ids)
    next_urls = [link["url"] for b in bundles for link in b["link"] if link["relation"] == "next"]
    assert len(next_urls) == len(bundles) - 1
    assert all(re.search(r"/r4/Account\?_page=[\w-]+$", url) for url in next_urls)
    reply = get(sim, "Account", _count=5)
    assert reply.headers["Content-Type"].startswith("application/fhir+json")


def test_count_default_cap_and_refusals(sim: SimulatorServer) -> None:
    total = len(sim.fhir_accounts("peds"))
    assert len(matches([get(sim, "Account").json()])) == 50
    assert len(matches([get(sim, "Account", _count=5000).json()])) == min(total, 1000)
    only_total = get(sim, "Account", _count=0).json()
    assert only_total["total"] == total and "entry" not in only_total
    for params in ({"_count": "ten"}, {"_count": "-1"}, {"_sort": "_lastUpdated"},
                   {"status": "closed"}, {"_include": "Account:subject"},
                   {"_lastUpdated": "ge2026-13-01"}, {"_lastUpdated": "yesterday"}):
        reply = get(sim, "Account", **params)
        assert reply.status_code == 400, params
        assert issue(reply), params
    expired = get(sim, "Account", _page="no-such-page")
    assert expired.status_code == 410 and issue(expired)


def test_status_active_lists_the_accounts_that_owe_or_moved(sim: SimulatorServer) -> None:
    accounts = sim.fhir_accounts("peds")
    active = matches(search_all(sim, status="active", _count=200))
    assert [r["id"] for r in active] == [a.id for a in accounts.values() if a.status == "active"]
    inactive = [a for a in accounts.values() if a.status == "inactive"]
    assert inactive, "the seeded practice has dormant, settled families"
    assert all(not a.has_balance for a in inactive)


# -- _include and names --------------------------------------------------------------------


def test_include_brings_the_guarantor_patient_whose_name_some_accounts_lack(
    sim: SimulatorServer,
) -> None:
    bundles = search_all(sim, _count=100, _include="Account:guarantor")
    accounts = sim.fhir_accounts("peds")
    without_display = 0
    for bundle in bundles:
        included = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]
                    if e["search"]["mode"] == "include"}
        assert all(r["resourceType"] == "Patient" for r in included.values())
        for account in matches([bundle]):
            party = account["guarantor"][0]["party"]
            patient = included[party["reference"].removeprefix("Patient/")]
            name = f"{patient['name'][0]['family']}, {patient['name'][0]['given'][0]}"
            assert name == accounts[account["id"]].name
            if "display" in party:
                assert party["display"] == name
            else:
                without_display += 1
            assert set(patient) == {"resourceType", "id", "meta", "name"}  # no PHI
    assert 0 < without_display < len(accounts) // 3
    plain = search_all(sim, _count=100)
    assert all(e["search"]["mode"] == "match" for b in plain for e in b["entry"])


# -- balances -------------------------------------------------------------------------------


def test_money_is_exact_two_decimal_json_numbers(sim: SimulatorServer) -> None:
    for version in ("r4", "r5"):
        text = get(sim, "Account", version=version, _count=200).text
        values = re.findall(r'"value":([^,}]+)', text)
        assert values
        assert all(re.fullmatch(r"-?\d+\.\d{2}", v) for v in values), values[:5]


def test_r4_extension_and_r5_native_balance_carry_the_same_amounts(sim: SimulatorServer) -> None:
    r4 = {r["id"]: r for r in matches(search_all(sim, "peds", "r4", _count=500))}
    r5 = {r["id"]: r for r in matches(search_all(sim, "peds", "r5", _count=500))}
    assert r4.keys() == r5.keys()
    with_balance = 0
    for account_id, r4_account in r4.items():
        assert "balance" not in r4_account
        assert "extension" not in r5[account_id]
        assert balances(r4_account) == balances(r5[account_id])
        with_balance += bool(balances(r4_account))
    assert with_balance > len(r4) // 5


def test_amounts_equal_the_open_dental_aging_report(sim: SimulatorServer) -> None:
    aging = aging_rows(sim, "peds", "cust-peds")
    served = {r["id"]: balances(r) for r in matches(search_all(sim, _count=1000))}
    expected = sim.fhir_accounts("peds")
    total_only = 0
    for account_id, entries in served.items():
        figures = expected[account_id]
        row = aging.get(int(account_id))
        if not entries:
            assert row is None or (row["BalTotal"] == 0 and row["InsPayEst"] == 0)
            continue
        assert row is not None, account_id
        per_term = {t: sum((v for (agg, term), (v, _) in entries.items() if term == t), ZERO)
                    for t in TERMS}
        assert sum(per_term.values()) == row["BalTotal"]
        assert per_term["current"] == row["Bal_0_30"]
        assert per_term["30"] == row["Bal_31_60"]
        assert per_term["60"] == row["Bal_61_90"]
        assert per_term["90"] + per_term["120"] == row["BalOver90"]
        aggregates = {agg for agg, _ in entries}
        if int(account_id) % 17 == 0:
            total_only += 1
            assert aggregates == {"total"} and not figures.split
            assert all(not estimate for _, estimate in entries.values())
            continue
        assert aggregates == {"patient", "insurance"}
        insurance = sum((v for (agg, _), (v, _) in entries.items() if agg == "insurance"), ZERO)
        patient = sum((v for (agg, _), (v, _) in entries.items() if agg == "patient"), ZERO)
        assert insurance == row["InsPayEst"]
        assert patient == row["BalTotal"] - row["InsPayEst"]  # write-off estimates stay here
        assert all(est == (agg == "insurance") for (agg, _), (_, est) in entries.items())
        assert tuple(entries[("insurance", t)][0] for t in TERMS) == figures.insurance
        assert tuple(entries[("patient", t)][0] for t in TERMS) == figures.patient
    assert total_only > 0
    owing = {str(p) for p, r in aging.items() if r["BalTotal"] != 0 or r["InsPayEst"] != 0}
    assert owing <= {i for i, e in served.items() if e}


# -- incremental reads ----------------------------------------------------------------------


def test_last_updated_ge_returns_only_the_changed_accounts(sim: SimulatorServer) -> None:
    zone = ZoneInfo("Asia/Kolkata")
    ledger = sim.ledger("kolkata")
    before = sim.now("kolkata").replace(tzinfo=zone)
    accounts = sim.fhir_accounts("kolkata")
    payer, deleted_from = [a for a in accounts.values() if a.balance_total > 20][:2]
    old_total = payer.balance_total
    ledger.add_row("paysplits", {"PatNum": payer.guarantor, "SplitAmt": D("10.00"),
                                 "DatePay": sim.now("kolkata").date().isoformat()})
    splits = [r for r in ledger.paysplits if r["PatNum"] == deleted_from.guarantor]
    adjustments = [r for r in ledger.adjustments if r["PatNum"] == deleted_from.guarantor]
    if splits:
        ledger.delete_row("paysplits", splits[0]["SplitNum"])
    elif adjustments:
        ledger.delete_row("adjustments", adjustments[0]["AdjNum"])
    else:
        ledger.add_row("adjustments", {"PatNum": deleted_from.guarantor, "AdjAmt": D("-1.00"),
                                       "AdjDate": sim.now("kolkata").date().isoformat()})
    changed = {payer.id, deleted_from.id}
    as_utc = before.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    as_local = before.isoformat(timespec="seconds")  # +05:30, sent encoded as %2B
    for value in (as_utc, as_local):
        found = matches(search_all(sim, "kolkata", token="static-kolkata",
                                   _lastUpdated=f"ge{value}"))
        assert {r["id"] for r in found} == changed, value
    resource = next(r for r in found if r["id"] == payer.id)
    assert resource["meta"]["lastUpdated"].endswith("+05:30")
    assert sim.fhir_accounts("kolkata")[payer.id].balance_total == old_total - D("10.00")
    later = (before + timedelta(hours=1)).isoformat(timespec="seconds")
    assert matches(search_all(sim, "kolkata", token="static-kolkata",
                              _lastUpdated=f"ge{later}")) == []
    url = f"{sim.fhir_url('kolkata')}/Account?_lastUpdated=ge{as_local}"  # '+' not encoded
    unencoded = requests.get(url, headers={"Authorization": "Bearer static-kolkata"}, timeout=10)
    assert unencoded.status_code == 400 and "%2B" in issue(unencoded)


def test_last_updated_is_the_newest_family_stamp_in_the_office_offset(
    sim: SimulatorServer,
) -> None:
    ledger = sim.ledger("peds")
    family: dict[int, int] = {r["PatNum"]: r["Guarantor"] for r in ledger.patients}
    newest: dict[int, str] = {}
    for name in ("patients", "procedurelogs", "claimprocs", "paysplits", "adjustments"):
        table = ledger.table(name)
        for row in table:
            g = family.get(row["PatNum"], row["PatNum"])
            newest[g] = max(newest.get(g, ""), row[table.stamp_field])
    resources = matches(search_all(sim, _count=1000))
    for resource in resources:
        stamp = newest[int(resource["id"])]
        denver = stamp.replace(" ", "T")
        assert resource["meta"]["lastUpdated"][:19] == denver
        assert resource["meta"]["lastUpdated"][19:] in ("-07:00", "-06:00")


# -- Bulk Data $export ----------------------------------------------------------------------


def test_bulk_export_polls_then_ndjson_files_equal_the_search(sim: SimulatorServer) -> None:
    kickoff = "Group/all/$export"
    refused = get(sim, kickoff, _type="Account")
    assert refused.status_code == 400 and "respond-async" in issue(refused)
    async_ = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
    unknown = get(sim, "Group/nope/$export", headers=async_, _type="Account")
    assert unknown.status_code == 404 and issue(unknown)
    assert get(sim, kickoff, headers=async_, _type="Claim").status_code == 400
    started = get(sim, kickoff, headers=async_, _type="Account")
    assert started.status_code == 202
    status_url = started.headers["Content-Location"]
    assert get(sim, status_url, token=None).status_code == 401
    for _ in range(2):
        poll = get(sim, status_url)
        assert poll.status_code == 202
        assert poll.headers["Retry-After"] == "0" and poll.headers["X-Progress"]
    done = get(sim, status_url)
    assert done.status_code == 200
    manifest = done.json()
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/r4/Group/all/$export?_type=Account")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[67]:00", manifest["transactionTime"])
    outputs = manifest["output"]
    assert len(outputs) >= 2 and {o["type"] for o in outputs} == {"Account"}
    exported = []
    for output in outputs:
        assert get(sim, output["url"], token=None).status_code == 401
        file = get(sim, output["url"])
        assert file.status_code == 200
        assert file.headers["Content-Type"].startswith("application/fhir+ndjson")
        lines = file.text.splitlines()
        assert len(lines) == output["count"]
        exported.extend(json.loads(line, parse_float=Decimal) for line in lines)
    assert exported == matches(search_all(sim, _count=1000))
    cancel = requests.delete(status_url, headers={"Authorization": f"Bearer {STATIC}"},
                             timeout=10)
    assert cancel.status_code == 202
    assert get(sim, status_url).status_code == 404
    assert get(sim, outputs[0]["url"]).status_code == 404


def test_bulk_since_and_r5_export(sim: SimulatorServer) -> None:
    async_ = {"Prefer": "respond-async"}
    accounts = sorted(sim.fhir_accounts("peds").values(), key=lambda a: a.last_updated)
    since = accounts[-5].last_updated.isoformat()
    started = get(sim, "Group/all/$export", version="r5", headers=async_, _type="Account",
                  _since=since)
    assert started.status_code == 202
    status_url = started.headers["Content-Location"]
    while (poll := get(sim, status_url)).status_code == 202:
        pass
    exported = [json.loads(line, parse_float=Decimal) for o in poll.json()["output"]
                for line in get(sim, o["url"]).text.splitlines()]
    searched = matches(search_all(sim, version="r5", _lastUpdated=f"ge{since}"))
    assert exported == searched and 5 <= len(exported) < len(accounts)
    assert all("extension" not in r for r in exported)


# -- errors, faults, request log --------------------------------------------------------------


def test_unknown_practice_paths_and_methods_are_operation_outcomes(sim: SimulatorServer) -> None:
    base = sim.fhir_url("peds")
    root = base.rsplit("/fhir/", 1)[0]
    cases = [
        (f"{root}/fhir/nobody/r4/Account", 404),
        (f"{root}/fhir/dental_only/r4/Account", 404),  # no FHIR settings: no FHIR endpoint
        (f"{root}/fhir/peds/r3/Account", 404),
        (f"{base}/Claim", 404),
        (f"{base}/Account/999999", 404),
    ]
    for url, status in cases:
        reply = requests.get(url, headers={"Authorization": f"Bearer {STATIC}"}, timeout=10)
        assert reply.status_code == status, url
        assert issue(reply)
    posted = requests.post(f"{base}/Account", headers={"Authorization": f"Bearer {STATIC}"},
                           timeout=10)
    assert posted.status_code == 405 and issue(posted)
    one = next(iter(sim.fhir_accounts("peds").values()))
    read = decimal_json(get(sim, f"Account/{one.id}"))
    assert read["id"] == one.id and read["resourceType"] == "Account"
    metadata = get(sim, "metadata", token=None)
    assert metadata.status_code == 200 and metadata.json()["fhirVersion"] == "4.0.1"


def test_faults_apply_to_fhir_requests(sim: SimulatorServer) -> None:
    sim.set_faults("peds", Faults(rate_limit_next=1, retry_after_seconds=3, server_error_next=1))
    limited = get(sim, "Account", _count=1)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert issue(limited)
    assert get(sim, "Account", _count=1).status_code == 503
    assert get(sim, "Account", _count=1).status_code == 200
    sim.set_faults("peds", Faults(truncated_body_next=1))
    complete = False
    try:
        truncated = get(sim, "Account", _count=20)
        json.loads(truncated.text)
        complete = True
    except (requests.RequestException, ValueError):
        pass
    assert not complete


def test_fhir_requests_are_in_the_request_log(sim: SimulatorServer) -> None:
    before = sim.request_count("peds", "fhir/r4/Account")
    pages = search_all(sim, _count=100)
    assert sim.request_count("peds", "fhir/r4/Account") == before + len(pages)
    last = [r for r in sim.requests if r.endpoint == "fhir/r4/Account"][-1]
    assert last.practice_id == "peds" and last.status == 200 and "_page" in last.params
    get(sim, "Account", token="wrong")
    assert sim.requests[-1].status == 401 and sim.requests[-1].practice_id == "peds"
