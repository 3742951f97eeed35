"""The CouchDB pool's HTTP session reads the environment once (proxies and ``no_proxy``, a CA
bundle, .netrc) instead of on every request, and still honours all of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.tokens.couchdb import CouchDBPool

URL = "https://couch.example.org:6984/tokens"
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
ENVIRONMENT = (*PROXIES, *(p.lower() for p in PROXIES), "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_a_proxy_in_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://squid.example.org:3128")
    session = CouchDBPool(URL).session
    assert session.proxies["https"] == "http://squid.example.org:3128"
    assert session.trust_env is False  # read once, not per request


def test_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://squid.example.org:3128")
    monkeypatch.setenv("NO_PROXY", ".example.org")
    assert "https" not in CouchDBPool(URL).session.proxies


def test_a_ca_bundle_in_the_environment_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "grid-ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    assert CouchDBPool(URL).session.verify == str(bundle)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert CouchDBPool(URL).session.verify is True


def test_netrc_credentials_are_used_unless_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine couch.example.org login lofar password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert CouchDBPool(URL).session.auth == ("lofar", "from-netrc")
    assert CouchDBPool(URL, auth=("me", "given")).session.auth == ("me", "given")
