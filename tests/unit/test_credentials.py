"""Credential files: parsed without ever showing values; refused when others can read them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.config import load_settings
from gridlrt.credentials import couchdb_auth, read_key_value_file
from gridlrt.errors import CredentialsError


def write_secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_stagingrc_and_awe_formats(tmp_path: Path) -> None:
    rc = write_secret(tmp_path / "stagingrc", "# LTA\nuser=ann\npassword = p=w:d#x\n\n  # end\n")
    assert read_key_value_file(rc) == {"user": "ann", "password": "p=w:d#x"}
    awe = write_secret(tmp_path / "Environment.cfg", "database_user : ann\ndatabase_password : x\n")
    assert read_key_value_file(awe) == {"database_user": "ann", "database_password": "x"}


def test_group_readable_file_is_refused_with_chmod_hint(tmp_path: Path) -> None:
    rc = write_secret(tmp_path / "stagingrc", "user=ann\npassword=hunter2\n", mode=0o644)
    with pytest.raises(CredentialsError, match=r"mode 0644\); run: chmod 600 .*stagingrc"):
        read_key_value_file(rc)


def test_malformed_line_names_line_not_value(tmp_path: Path) -> None:
    rc = write_secret(tmp_path / "stagingrc", "user=ann\nhunter2\n")
    with pytest.raises(CredentialsError) as err:
        read_key_value_file(rc)
    assert ":2: expected key=value" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_couchdb_auth_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRIDLRT_POOL_USERNAME", raising=False)
    monkeypatch.delenv("GRIDLRT_POOL_PASSWORD", raising=False)
    cred = tmp_path / "couchdb.cred"
    pool = "http://127.0.0.1:5984/tokens"
    assert couchdb_auth(load_settings(pool=pool, pool_credentials=cred)) is None

    write_secret(cred, "username=ann\npassword=from-file\n")
    assert couchdb_auth(load_settings(pool=pool, pool_credentials=cred)) == ("ann", "from-file")

    monkeypatch.setenv("GRIDLRT_POOL_USERNAME", "bob")
    monkeypatch.setenv("GRIDLRT_POOL_PASSWORD", "from-env")
    assert couchdb_auth(load_settings(pool=pool, pool_credentials=cred)) == ("bob", "from-env")

    write_secret(cred, "username=ann\n")
    monkeypatch.delenv("GRIDLRT_POOL_PASSWORD")
    with pytest.raises(CredentialsError, match=r"needs username=\.\.\. and password=\.\.\."):
        couchdb_auth(load_settings(pool=pool, pool_credentials=cred))


@pytest.mark.parametrize("password", ["p#ss", "p?ss", "p/ss", "p@ss", "a#b?c/d@e"])
def test_couchdb_auth_reads_a_raw_password_from_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.delenv("GRIDLRT_POOL_USERNAME", raising=False)
    monkeypatch.delenv("GRIDLRT_POOL_PASSWORD", raising=False)
    pool = f"http://ann:{password}@127.0.0.1:5984/tokens"
    settings = load_settings(pool=pool, pool_credentials=tmp_path / "absent.cred")
    assert couchdb_auth(settings) == ("ann", password)
