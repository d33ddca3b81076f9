"""The simulator's aging files, read back by the file-drop reader: equal to the
simulator's own aging report (the rows `/reports/Aging` serves) to the cent."""

from __future__ import annotations

import os
import threading
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from balances_pipeline.simulator import SimPractice, SimulatorServer
from balances_pipeline.simulator.aging_files import (
    AgingFileError,
    format_money,
    source_block,
    write_aging_file,
)
from balances_pipeline.simulator.cli import main as simulator_main
from balances_pipeline.sources.errors import SourceError
from balances_pipeline.sources.file_drop.reader import FileDropClient
from balances_pipeline_tests.file_drop_helpers import HOUR, practices_file

AS_OF = date(2025, 3, 1)


def sim_rows(accounts: int = 120, seed: int = 5) -> list[dict]:
    server = SimulatorServer(
        [SimPractice(id="sim", customer_key="k", accounts=accounts, seed=seed, today=AS_OF)],
        developer_key="d",
    )
    try:
        return server.aging_report("sim", AS_OF)
    finally:
        server.stop()


def read_back(tmp_path: Path, folder: Path, settle_seconds: float = 60):
    practice = practices_file(tmp_path / "practices.yaml", [{
        "id": "sim", "name": "Sim", "timezone": "America/Denver",
        "source": source_block(folder, settle_seconds),
    }]).practices[0]
    with FileDropClient(practice) as client:
        pages = [page for iterator in client.account_balance_pages(None) for page in iterator]
        return [r for p in pages for r in p.rows], [r for p in pages for r in p.rejected], \
            client.facts()


def assert_same_as_report(rows, report) -> None:
    assert len(rows) == len(report) > 50
    for row, expected in zip(rows, report, strict=True):
        assert row.account_id == str(expected["PatNum"])
        assert row.account_name == expected["patName"]
        assert (row.bucket_0_30, row.bucket_31_60, row.bucket_61_90, row.bucket_over_90) == (
            expected["Bal_0_30"], expected["Bal_31_60"], expected["Bal_61_90"],
            expected["BalOver90"])
        assert (row.bucket_91_120, row.bucket_over_120) == (None, None)
        assert row.balance_total == expected["BalTotal"]
        assert row.insurance_estimate == expected["InsPayEst"]
        assert row.writeoff_estimate == expected["InsWoEst"]
        assert (row.balance_total - row.insurance_estimate - row.writeoff_estimate
                == expected["PatientPortion"])


def test_written_file_reads_back_as_the_aging_report(tmp_path: Path) -> None:
    report = sim_rows()
    folder = tmp_path / "drop"
    folder.mkdir()
    path = write_aging_file(report, folder, AS_OF, mtime=time.time() - HOUR)
    data = path.read_bytes()
    assert path.name == "aging_20250301.csv"
    assert data.count(b"\r\n") == len(report) + 1 and data.count(b"\n") == len(report) + 1
    assert b"(" in data  # credit balances as accounting negatives
    assert data.startswith(b"Guarantor ID,Guarantor,0-30,31-60,61-90,90+,Total Balance,"
                           b"Ins Est,W/O Est,Patient Portion,Report Date\r\n")
    accented = [r["patName"] for r in report if not r["patName"].isascii()]
    assert any("é" in name for name in accented) and any("ñ" in name for name in accented)
    assert "é".encode("cp1252") in data  # cp1252, not UTF-8
    rows, rejected, facts = read_back(tmp_path, folder)
    assert rejected == []
    assert_same_as_report(rows, report)
    assert facts.as_of_date == AS_OF and facts.source_file == path.name


@pytest.mark.parametrize(("amount", "text"), [
    ("0", "$0.00"), ("1234.56", "$1,234.56"), ("-12", "(12.00)"), ("-1234.5", "(1,234.50)"),
    ("1000000", "$1,000,000.00"),
])
def test_money_format(amount: str, text: str) -> None:
    assert format_money(Decimal(amount)) == text


def test_an_incomplete_or_slow_file_is_not_read(tmp_path: Path) -> None:
    report = sim_rows(accounts=40)
    folder = tmp_path / "drop"
    folder.mkdir()
    write_aging_file(report, folder, AS_OF, complete=False)
    with pytest.raises(SourceError, match="1 still being written"):
        read_back(tmp_path, folder)
    (folder / "aging_20250301.csv").unlink()

    writer = threading.Thread(target=write_aging_file, args=(report, folder, AS_OF),
                              kwargs={"write_seconds": 1.0})
    writer.start()
    try:
        while not (folder / "aging_20250301.csv").exists():
            time.sleep(0.01)
        with pytest.raises(SourceError, match="still being written"):
            read_back(tmp_path, folder, settle_seconds=5)
    finally:
        writer.join()


def test_write_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(AgingFileError, match="does not exist"):
        write_aging_file([], tmp_path / "nope", AS_OF)
    with pytest.raises(AgingFileError, match="plain, visible file name"):
        write_aging_file([], tmp_path, AS_OF, name="../x.csv")


def test_cli_writes_the_practice_report(tmp_path: Path, capsys) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(yaml.safe_dump({
        "developer_key_env": "UNSET_DEV_KEY_FOR_FILES",
        "practices": [{"id": "sim", "customer_key_env": "UNSET_CUSTOMER_KEY", "accounts": 120,
                       "seed": 5, "timezone": "America/Denver"}],
    }), encoding="utf-8")
    folder = tmp_path / "drop"
    folder.mkdir()
    code = simulator_main(["write-aging-file", "--practice", "sim", "--folder", str(folder),
                           "--as-of", "2025-03-01", "--config", str(config)])
    assert code == 0
    assert "aging_20250301.csv" in capsys.readouterr().out
    path = folder / "aging_20250301.csv"
    past = time.time() - HOUR
    os.utime(path, (past, past))
    rows, rejected, _ = read_back(tmp_path, folder)
    assert rejected == []
    assert_same_as_report(rows, sim_rows())  # the report the simulator serves

    for argv, message in [
        (["--practice", "other", "--folder", str(folder)], "unknown practice 'other'"),
        (["--practice", "sim", "--folder", str(tmp_path / "nope")], "does not exist"),
        (["--practice", "sim", "--folder", str(folder), "--name", ".hidden"], "file name"),
        (["--practice", "sim", "--folder", str(folder), "--encoding", "ascii"],
         "cannot be written in ascii"),
    ]:
        assert simulator_main(["write-aging-file", *argv, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        simulator_main(["write-aging-file", "--practice", "sim", "--folder", str(folder),
                        "--write-seconds", "-1"])
