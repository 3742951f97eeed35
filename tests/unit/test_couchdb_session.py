"""The CouchDB pool's HTTP session reads the environment once (proxies and ``no_proxy``, a CA
bundle, .netrc) instead of on every request, and still honours all of it: the session's
settings, and the direct urllib3 path the pool sends through (``CouchDBPool.http``)."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest
from requests.utils import DEFAULT_CA_BUNDLE_PATH

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
    pool = CouchDBPool(URL)
    assert pool.http.session.proxies["https"] == "http://squid.example.org:3128"
    assert pool.http.session.trust_env is False  # read once, not per request
    assert pool.http.direct is None  # through the proxy: requests sends


def test_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://squid.example.org:3128")
    monkeypatch.setenv("NO_PROXY", ".example.org")
    pool = CouchDBPool(URL)
    assert "https" not in pool.http.session.proxies
    assert pool.http.direct is not None


def test_a_ca_bundle_in_the_environment_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "grid-ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    pool = CouchDBPool(URL)
    assert pool.http.session.verify == str(bundle)
    assert pool.http.direct is not None
    assert pool.http.direct.ca_certs == str(bundle)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    pool = CouchDBPool(URL)
    assert pool.http.session.verify is True
    assert pool.http.direct is not None
    assert pool.http.direct.ca_certs == DEFAULT_CA_BUNDLE_PATH
    tls = pool.http.direct.tls()  # made from it at the first connection
    assert tls.verify_mode is ssl.CERT_REQUIRED and tls.check_hostname


def test_netrc_credentials_are_used_unless_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine couch.example.org login lofar password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    pool = CouchDBPool(URL)
    assert pool.http.session.auth == ("lofar", "from-netrc")
    assert pool.http.headers["Authorization"] == basic("lofar", "from-netrc")
    given = CouchDBPool(URL, auth=("me", "given"))
    assert given.http.session.auth == ("me", "given")
    assert given.http.headers["Authorization"] == basic("me", "given")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
