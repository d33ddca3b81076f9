"""`verify_tls` is the practice's setting, whatever the environment says.

requests merges environment settings into every request: with `REQUESTS_CA_BUNDLE` or
`CURL_CA_BUNDLE` set, that bundle replaced a session's `verify=False`, so `verify_tls:
false` (and its warning) said one thing while the connection did another. Tested against
a real HTTPS server on loopback with a self-signed certificate made here with `openssl`.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balances_pipeline.config import Practice
from balances_pipeline.sources.errors import SourceError, TransientSourceError
from balances_pipeline.sources.http import build_session
from balances_pipeline.sources.opendental.client import OpenDentalClient
from balances_pipeline_tests.opendental_fake import (
    AS_OF,
    AUTHORIZATION,
    FakeOpenDental,
    aging_row,
    collect,
    keys_fixture,  # noqa: F401 - a pytest fixture
    make_practice,
    patient_row,
)
from balances_pipeline_tests.raw_http_server import RawServer, drip_body

PROXY_VARIABLES = (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "all_proxy", "no_proxy",
)
BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
# urllib3 warns on every unverified request; the client logs its own warning (tested here).
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
TLS_FAILED = (
    "practice test_practice: /patients offset 0: TLS handshake or certificate verification failed"
)


def _self_signed(directory: Path, name: str, common_name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={common_name}",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture(name="certificates", scope="module")
def certificates_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    server_cert, server_key = _self_signed(directory, "server", "127.0.0.1")
    unrelated_ca, _ = _self_signed(directory, "unrelated", "Unrelated Test CA")
    return {"cert": server_cert, "key": server_key, "unrelated_ca": unrelated_ca}


def _server_context(certificates: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates["cert"], certificates["key"])
    return context


@pytest.fixture(name="clean_env")
def clean_env_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES + BUNDLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(name="https_server")
def https_server_fixture(
    certificates: dict[str, Path], clean_env: None
) -> Iterator[FakeOpenDental]:
    fake = FakeOpenDental({"/patients": [patient_row(1, 1), patient_row(2, 1)]})
    fake._server.socket = _server_context(certificates).wrap_socket(
        fake._server.socket, server_side=True
    )
    fake.start()
    yield fake
    fake.stop()


def https_url(server: FakeOpenDental) -> str:
    return server.url.replace("http://", "https://", 1)


def practice_at(url: str, verify_tls: bool, **source: Any) -> Practice:
    return make_practice(url, **source).model_copy(update={"verify_tls": verify_tls})


def client(server: FakeOpenDental, verify_tls: bool) -> OpenDentalClient:
    """The client as a sync builds it: its own session, from the practice's settings."""
    return OpenDentalClient(practice_at(https_url(server), verify_tls, max_retries=1))


@pytest.mark.parametrize("variable", BUNDLE_VARIABLES)
def test_verify_tls_false_is_not_overridden_by_a_ca_bundle_in_the_environment(
    https_server: FakeOpenDental, certificates: dict[str, Path], keys: None,
    monkeypatch: pytest.MonkeyPatch, variable: str, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(variable, str(certificates["unrelated_ca"]))
    with caplog.at_level(logging.WARNING), client(https_server, verify_tls=False) as reader:
        found = reader.check_connection()
    assert (found["rows"], found["requests"], found["retries"]) == (2, 1, 0)
    assert "TLS certificate verification is turned off" in caplog.text


def test_verify_tls_false_with_a_session_built_elsewhere(
    https_server: FakeOpenDental, certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The practice's setting is sent with every request, whatever the session's default.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates["unrelated_ca"]))
    practice = practice_at(https_url(https_server), verify_tls=False)
    session = build_session(max_retries=0, verify_tls=True)
    reader = OpenDentalClient(practice, authorization=AUTHORIZATION, session=session)
    assert reader.check_connection()["rows"] == 2


@pytest.mark.parametrize("bundle", [None, "unrelated_ca"])
def test_verify_tls_true_fails_on_a_self_signed_certificate(
    https_server: FakeOpenDental, certificates: dict[str, Path], keys: None,
    monkeypatch: pytest.MonkeyPatch, bundle: str | None,
) -> None:
    if bundle is not None:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates[bundle]))
    with client(https_server, verify_tls=True) as reader:
        with pytest.raises(SourceError) as raised:
            reader.check_connection()
        assert str(raised.value) == TLS_FAILED
        assert not isinstance(raised.value, TransientSourceError)
        assert (reader.stats.requests, reader.stats.retries) == (1, 0)


def test_verify_tls_true_uses_a_ca_bundle_from_the_environment(
    https_server: FakeOpenDental, certificates: dict[str, Path], keys: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The environment may say which CAs to trust (a private CA); it never turns checks off.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates["cert"]))
    with client(https_server, verify_tls=True) as reader:
        assert reader.check_connection()["rows"] == 2


def test_proxies_from_the_environment_still_apply(
    clean_env: None, keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The "proxy" answers the absolute-form request itself: the upstream host does not exist.
    proxy = FakeOpenDental({"/reports/Aging": [aging_row(1)]}).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/api/v1"))
        practice = make_practice("http://opendental.invalid/api/v1", max_retries=0)
        with OpenDentalClient(practice) as reader:
            rows, _ = collect(reader.aging_report_pages(AS_OF))
    finally:
        proxy.stop()
    assert [row.guarantor_id for row in rows] == [1]
    assert [seen.path for seen in proxy.seen] == ["/reports/Aging"]


def test_a_session_reads_the_proxy_settings_once_per_host(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Settings are kept per host: NO_PROXY still sends one host direct while another goes
    # through the proxy, request after request, in one session.
    proxy = FakeOpenDental({"/reports/Aging": [aging_row(1)]}).start()
    direct = FakeOpenDental({"/reports/Aging": [aging_row(2)]}).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/api/v1"))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        session = build_session(max_retries=0, verify_tls=True)
        headers = {"Authorization": AUTHORIZATION}
        for _ in range(3):
            assert session.get("http://opendental.invalid/api/v1/reports/Aging",
                               headers=headers).json()[0]["PatNum"] == 1
            assert session.get(f"{direct.url}/reports/Aging",
                               headers=headers).json()[0]["PatNum"] == 2
        monkeypatch.delenv("HTTP_PROXY")  # read once: the session keeps what it found
        assert session.get("http://opendental.invalid/api/v1/reports/Aging",
                           headers=headers).status_code == 200
    finally:
        proxy.stop()
        direct.stop()
    assert len(proxy.seen) == 4
    assert len(direct.seen) == 3


def test_the_deadline_cuts_a_tls_connection_too(
    certificates: dict[str, Path], clean_env: None
) -> None:
    server = RawServer(drip_body(6), tls=_server_context(certificates))
    try:
        practice = practice_at(
            server.url, False, max_retries=0, timeout_seconds=0.5, request_deadline_seconds=1
        )
        session = build_session(max_retries=0, verify_tls=False)
        reader = OpenDentalClient(practice, authorization=AUTHORIZATION, session=session)
        started = time.monotonic()
        with pytest.raises(TransientSourceError, match=r"response not complete after 1 s"):
            collect(reader.aging_report_pages(AS_OF))
        assert time.monotonic() - started < 2.5
    finally:
        server.close()
