"""gridlrt.tokens.create.create_tokens: ``gridlrt tokens create`` as a library call, on an
embedded (SQLite) pool in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.config import Settings, load_settings
from gridlrt.errors import ConfigError, InputError
from gridlrt.tokens import Token, open_pool
from gridlrt.tokens.create import create_tokens

SRM = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GRIDLRT_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("GRIDLRT_POOL", raising=False)
    return load_settings(
        pool=f"sqlite:///{tmp_path / 'pool.sqlite'}", storage_root="file:///data/out"
    )


@pytest.fixture
def srm_txt(tmp_path: Path) -> Path:
    path = tmp_path / "srm.txt"
    lines = ["# L229507", ""] + [
        f"{SRM}/L229507_SB{sb:03d}_uv.dppp.MS_3d78b8f1.tar" for sb in range(100, 105)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def broken() -> Settings:
    raise ConfigError("none.toml: pool: broken")


def test_dry_run_plans_everything_and_touches_no_pool(
    settings: Settings, srm_txt: Path, tmp_path: Path
) -> None:
    parset = tmp_path / "extra.parset"
    parset.write_text("msin.datacolumn=DATA\n")
    seen: list[tuple[str, str]] = []
    result = create_tokens(
        settings, srm_txt, step="average", per_token=2, fields=["avg_freqstep=4"],
        attach=[parset], check=lambda t, s: seen.append((t.id, s.storage_root)), dry_run=True,
    )  # fmt: skip
    assert result.dry_run and result.pool_url is None and result.created == []
    assert [t.id for t in result.tokens] == [
        "average_L229507_SB100..L229507_SB101",
        "average_L229507_SB102..L229507_SB103",
        "average_L229507_SB104",
    ]
    assert [len(t.inputs) for t in result.tokens] == [2, 2, 1]
    assert all(t.to_doc()["avg_freqstep"] == 4 for t in result.tokens)  # JSON value: a number
    assert result.attachments == [parset]
    assert seen == [("average_L229507_SB100..L229507_SB101", "file:///data/out")]
    assert not (tmp_path / "pool.sqlite").exists()


def test_create_then_attach_only_to_new_tokens(
    settings: Settings, srm_txt: Path, tmp_path: Path
) -> None:
    note = tmp_path / "note.txt"
    note.write_text("first\n")
    first = create_tokens(settings, srm_txt, step="average", attach=[note])
    assert first.pool_url == settings.pool and not first.dry_run
    assert len(first.created) == 5 and first.duplicates == []
    more = srm_txt.read_text() + f"{SRM}/L229507_SB105_uv.dppp.MS_3d78b8f1.tar\n"
    srm_txt.write_text(more)
    note.write_text("second\n")
    again = create_tokens(settings, srm_txt, step="average", attach=[note])
    assert again.created == ["average_L229507_SB105"]
    assert sorted(again.duplicates) == sorted(first.created)
    with open_pool(settings) as pool:
        assert pool.attachment("average_L229507_SB100", "note.txt") == b"first\n"
        assert pool.attachment("average_L229507_SB105", "note.txt") == b"second\n"
        assert pool.overview().total() == 6


def test_a_failing_check_creates_nothing(settings: Settings, srm_txt: Path, tmp_path: Path) -> None:
    def check(token: Token, chosen: Settings) -> None:
        raise InputError(f"step average: unknown placeholder {{nope}} in {token.id}")

    with pytest.raises(InputError, match="unknown placeholder"):
        create_tokens(settings, srm_txt, step="average", check=check)
    assert not (tmp_path / "pool.sqlite").exists()


def test_problems_come_in_the_order_the_command_has_always_reported_them(
    settings: Settings, srm_txt: Path, tmp_path: Path
) -> None:
    # the inputs before the settings: a missing inputs file wins over a broken config
    with pytest.raises(InputError, match="no such file"):
        create_tokens(broken, tmp_path / "missing.txt", step="average")
    # then --field, then the step name
    with pytest.raises(InputError, match="--field lock: reserved token field"):
        create_tokens(broken, srm_txt, step="bad step", fields=["lock=1"])
    with pytest.raises(InputError, match="step name 'bad step'"):
        create_tokens(broken, srm_txt, step="bad step")
    # a damaged line (a NUL byte) is named before the settings are read
    damaged = tmp_path / "damaged.txt"
    damaged.write_text(srm_txt.read_text() + f"{SRM}/L229507_SB106\x00.tar\n")
    with pytest.raises(InputError, match=r"damaged\.txt:8: NUL byte"):
        create_tokens(broken, damaged, step="average")
    # then the settings, then the check, then the attachments (even for a dry run)
    with pytest.raises(ConfigError):
        create_tokens(broken, srm_txt, step="average")
    with pytest.raises(InputError, match=r"^--attach .*absent\.txt: No such file"):
        create_tokens(settings, srm_txt, step="average", attach=[tmp_path / "absent.txt"],
                      dry_run=True)  # fmt: skip
    assert not (tmp_path / "pool.sqlite").exists()
