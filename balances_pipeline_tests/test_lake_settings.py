"""The DuckLake layout's two environment variables: both or neither, and never a password."""

from __future__ import annotations

import pytest

from balances_pipeline.settings import (
    CATALOG_ENV,
    DATA_PATH_ENV,
    LakeError,
    LakeSettings,
    Settings,
)

CATALOG = "postgres:dbname=lake host=db.internal user=balances"


def test_neither_set_is_the_one_machine_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    monkeypatch.delenv(DATA_PATH_ENV, raising=False)
    assert Settings.from_env().lake is None


def test_both_set_is_the_lake(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(CATALOG_ENV, CATALOG)
    monkeypatch.setenv(DATA_PATH_ENV, str(tmp_path / "data"))
    lake = Settings.from_env().lake
    assert lake == LakeSettings(CATALOG, str(tmp_path / "data"))
    assert lake.attach_sql() == (
        f"ATTACH 'ducklake:{CATALOG}' AS warehouse (DATA_PATH '{tmp_path / 'data'}',"
        " DATA_INLINING_ROW_LIMIT 0)"
    )
    assert lake.attach_sql(read_only=True) == (
        f"ATTACH 'ducklake:{CATALOG}' AS warehouse (READ_ONLY)"
    )


@pytest.mark.parametrize(("present", "missing"), [(CATALOG_ENV, DATA_PATH_ENV),
                                                  (DATA_PATH_ENV, CATALOG_ENV)])
def test_one_without_the_other_names_the_missing_one(
    monkeypatch: pytest.MonkeyPatch, present: str, missing: str
) -> None:
    monkeypatch.delenv(missing, raising=False)
    monkeypatch.setenv(present, CATALOG if present == CATALOG_ENV else "/srv/lake")
    with pytest.raises(LakeError, match=f"^{missing} is not set;") as raised:
        Settings.from_env()
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("catalog", [
    "postgres:dbname=lake host=db password=hunter2",
    "postgres:dbname=lake PASSWORD = hunter2 host=db",
    "postgres:password=hunter2",
])
def test_a_password_in_the_catalog_is_refused_without_echoing_it(catalog: str) -> None:
    with pytest.raises(LakeError, match="holds a password; give it to libpq") as raised:
        LakeSettings(catalog, "/srv/lake")
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(("catalog", "data_path"), [
    ("postgres:dbname=lake' host=db", "/srv/lake"),
    (CATALOG, "/srv/la'ke"),
])
def test_a_quote_is_refused(catalog: str, data_path: str) -> None:
    with pytest.raises(LakeError, match="cannot contain a quote"):
        LakeSettings(catalog, data_path)


def test_a_password_like_word_inside_another_is_no_password() -> None:
    assert LakeSettings("postgres:dbname=nopassword_here host=db", "/srv/lake").catalog
