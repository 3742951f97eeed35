"""Settings: defaults, config file, environment and options, in that order of priority."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.config import load_settings, redact_url, strip_credentials, url_credentials
from gridlrt.errors import ConfigError


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("GRIDLRT_POOL", "GRIDLRT_CONFIG", "GRIDLRT_STORAGE_ROOT"):
        monkeypatch.delenv(name, raising=False)


def test_default_is_embedded_pool_under_user_data_dir(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.pool == f"sqlite:///{tmp_path / 'data' / 'gridlrt' / 'pool.sqlite'}"
    assert settings.pool_kind == "embedded"
    assert settings.sqlite_path == tmp_path / "data" / "gridlrt" / "pool.sqlite"
    assert settings.storage_root.startswith("file:///")


def test_priority_file_then_env_then_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'pool = "http://127.0.0.1:5984/from_file"\nstorage_root = "dav://store/lofar"\n'
    )
    settings = load_settings(config_file=config)
    assert settings.pool.endswith("/from_file")
    assert settings.pool_kind == "couchdb"
    assert settings.storage_root == "dav://store/lofar"

    monkeypatch.setenv("GRIDLRT_POOL", "http://127.0.0.1:5984/from_env")
    assert load_settings(config_file=config).pool.endswith("/from_env")
    assert load_settings(config_file=config).storage_root == "dav://store/lofar"

    chosen = load_settings(config_file=config, pool="sqlite:////tmp/x.sqlite")
    assert chosen.pool == "sqlite:////tmp/x.sqlite"


def test_gridlrt_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('[gridlrt]\npool = "https://couch.example.org:6984/tokens"\n')
    monkeypatch.setenv("GRIDLRT_CONFIG", str(config))
    assert load_settings().pool == "https://couch.example.org:6984/tokens"


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        ("mysql://db/x", "must start with sqlite:///, http:// or https://"),
        ("sqlite://relative.sqlite", "three slashes"),
        ("http://127.0.0.1:5984", "needs a database name"),
    ],
)
def test_bad_pool_urls_are_one_line_errors(pool: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(pool=pool)
    message = str(err.value)
    assert expected in message
    assert message.startswith("--pool: ")
    assert "\n" not in message


def test_bad_config_file_names_file_and_key(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("pool = [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_settings(config_file=broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('pools = "sqlite:////tmp/p"\n')
    with pytest.raises(ConfigError, match=r"unknown\.toml: pools: unknown setting"):
        load_settings(config_file=unknown)


def test_password_in_pool_url_is_redacted_in_errors() -> None:
    assert redact_url("https://ann:s3cret@couch:6984/db") == "https://ann:***@couch:6984/db"
    assert redact_url("sqlite:////tmp/p.sqlite") == "sqlite:////tmp/p.sqlite"
    with pytest.raises(ConfigError) as err:
        load_settings(pool="ftp://ann:s3cret@couch/db")
    assert "s3cret" not in str(err.value)


# A password pasted raw into a URL: '#', '?', '/' and '@' would end the userinfo for urlsplit.
RAW_PASSWORDS = [
    ("http://alice:p#ss?w@127.0.0.1:5984/db", "p#ss?w", "http://127.0.0.1:5984/db"),
    ("http://alice:?w#x@127.0.0.1:5984/db", "?w#x", "http://127.0.0.1:5984/db"),
    ("https://ann:a/b@couch.example.org:6984/db", "a/b", "https://couch.example.org:6984/db"),
    ("https://ann:p@ss@couch:6984/db", "p@ss", "https://couch:6984/db"),
    ("https://ann:x/y@z#q?r@couch:6984/db", "x/y@z#q?r", "https://couch:6984/db"),
    ("http://ann:p#1@[::1]:5984/db", "p#1", "http://[::1]:5984/db"),
    ("https://ann:s3cret@couch:6984/db?x=1", "s3cret", "https://couch:6984/db?x=1"),
    ("https://ann:%23enc%2F@couch/db", "#enc/", "https://couch/db"),
]


@pytest.mark.parametrize(("url", "password", "bare"), RAW_PASSWORDS)
def test_raw_delimiters_in_a_password_are_found_and_hidden(
    url: str, password: str, bare: str
) -> None:
    user = url.split("://", 1)[1].split(":", 1)[0]
    found = url_credentials(url)
    assert found == (bare, user, password)
    assert strip_credentials(url) == bare
    shown = redact_url(url)
    assert shown == bare.replace("://", f"://{user}:***@", 1)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////tmp/p.sqlite",
        "sqlite:///home/a:b@c/pool.sqlite",  # an '@' in a path is no userinfo
        "file:///data/x:y#z@host/file",
        "dav://webdav.example.org/out/user@example.org/f.tar",
        "http://127.0.0.1:5984/db#fragment",
        "srm://srm.grid.sara.nl:8443/srm/managerv2?SFN=/pnfs/grid.sara.nl/data/x.tar",
        "https://token@host/x",  # a user name alone is shown (stripped by strip_credentials)
    ],
)
def test_urls_without_a_password_are_shown_as_they_are(url: str) -> None:
    assert redact_url(url) == url
    assert url_credentials(url).password is None


def test_a_raw_password_in_the_pool_url_is_accepted_and_never_shown() -> None:
    settings = load_settings(pool="http://alice:p#ss?w@127.0.0.1:5984/lofar_tokens")
    assert settings.pool_kind == "couchdb"
    assert strip_credentials(settings.pool) == "http://127.0.0.1:5984/lofar_tokens"
    with pytest.raises(ConfigError) as err:
        load_settings(pool="http://alice:p#ss?w@127.0.0.1:5984/")
    assert "needs a database name" in str(err.value) and "ss?w" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_settings(pool="ftp://alice:p#ss?w@couch/db")
    assert "ss?w" not in str(err.value) and "alice:***@" in str(err.value)
