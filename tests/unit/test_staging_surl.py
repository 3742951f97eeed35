"""SURLs and SRM lists: parsing real-looking LTA lists from all three sites, conversions
between URL forms, grouping, sorting and subband selection, and line-numbered errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gridlrt.errors import InputError
from gridlrt.staging.lists import parse_srm_text, read_srm_list
from gridlrt.staging.surl import (
    URL_FORMS,
    group_by_observation,
    group_by_site,
    parse_surl,
    select_subbands,
    sort_surls,
    to_surl,
)

SARA = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507"
JUELICH = (
    "srm://lofar-srm.fz-juelich.de:8443/pnfs/fz-juelich.de/data/lofar/ops/projects/lc7_012/583127"
)
POZNAN = "srm://lta-head.lofar.psnc.pl:8443/lofar/ops/projects/lc6_004/555005"


def sara(sb: int) -> str:
    return f"{SARA}/L229507_SB{sb:03d}_uv.dppp.MS_3d78b8f1.tar"


def juelich(sb: int) -> str:
    return f"{JUELICH}/L583127_SB{sb:03d}_uv.MS_c0a9adfa.tar"


def poznan(sb: int, sap: int = 0) -> str:
    return f"{POZNAN}/L555005_SAP{sap:03d}_SB{sb:03d}_uv.MS_805a38ae.tar"


# --- one SURL ----------------------------------------------------------------------------------


def test_sara_surl_fields_and_forms() -> None:
    s = parse_surl(sara(100))
    assert s.site.key == "sara" and s.site.name == "SARA" and s.site.known
    assert (s.host, s.port) == ("srm.grid.sara.nl", 8443)
    assert s.path == (
        "/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507/"
        "L229507_SB100_uv.dppp.MS_3d78b8f1.tar"
    )
    assert (s.project, s.obsid, s.sap, s.subband, s.suffix) == (
        "lc2_035",
        229507,
        None,
        100,
        "3d78b8f1",
    )
    assert s.name == "L229507_SB100"
    assert s.filename == "L229507_SB100_uv.dppp.MS_3d78b8f1.tar"
    assert s.gfal() == f"srm://srm.grid.sara.nl:8443/srm/managerv2?SFN={s.path}"
    assert s.gsiftp() == f"gsiftp://gridftp.grid.sara.nl:2811{s.path}"
    assert s.https() == (
        "https://lofar-download.grid.surfsara.nl/lofigrid/SRMFifoGet.py?surl=" + sara(100)
    )
    assert s.webdav() == f"https://webdav.grid.surfsara.nl:2880{s.path}"


def test_juelich_and_poznan() -> None:
    j = parse_surl(juelich(10))
    assert (j.site.name, j.obsid, j.subband, j.suffix) == ("Jülich", 583127, 10, "c0a9adfa")
    assert j.gsiftp().startswith("gsiftp://lofar-gridftp.fz-juelich.de:2811/pnfs/fz-juelich.de/")
    assert j.https() == (
        "https://lofar-download.fz-juelich.de/webserver-lofar/SRMFifoGet.py?surl=" + juelich(10)
    )
    p = parse_surl(poznan(302, sap=2))
    assert (p.site.key, p.site.name, p.obsid, p.sap, p.subband) == (
        "poznan",
        "Poznań",
        555005,
        2,
        302,
    )
    assert p.name == "L555005_SAP002_SB302"
    assert p.gsiftp() == (
        "gsiftp://gridftp.lofar.psnc.pl:2811/lofar/ops/projects/lc6_004/555005/"
        "L555005_SAP002_SB302_uv.MS_805a38ae.tar"
    )
    assert p.https() is not None and p.https().startswith(  # type: ignore[union-attr]
        "https://lta-download.lofar.psnc.pl/lofigrid/SRMFifoGet.py?surl=srm://lta-head"
    )


def test_gfal_form_parses_to_the_same_surl() -> None:
    s = parse_surl(sara(7))
    assert parse_surl(s.gfal()) == s
    assert parse_surl(s.gfal()).url == sara(7)


@pytest.mark.parametrize("make", [sara, juelich, poznan])
def test_every_form_converts_back(make: object) -> None:
    original = parse_surl(make(42))  # type: ignore[operator]
    for form in URL_FORMS:
        url = original.form(form)
        assert url is not None
        assert to_surl(url) == original, form
        assert to_surl(url).form("srm") == original.url


def test_unknown_host_is_another_dcache() -> None:
    s = parse_surl(
        "srm://dcache.example.org:8444/pnfs/example.org/data/lofar/L123456_SB001_uv.MS.tar"
    )
    assert not s.site.known
    assert s.site.key == "dcache.example.org" and s.site.name == "dcache.example.org"
    assert (s.port, s.obsid, s.subband, s.suffix) == (8444, 123456, 1, None)
    assert (
        s.gsiftp()
        == "gsiftp://dcache.example.org:2811/pnfs/example.org/data/lofar/L123456_SB001_uv.MS.tar"
    )
    assert s.https() is None
    assert (
        s.webdav()
        == "https://dcache.example.org:2880/pnfs/example.org/data/lofar/L123456_SB001_uv.MS.tar"
    )


def test_port_defaults_and_host_case_and_double_slashes() -> None:
    s = parse_surl(
        "srm://SRM.GRID.SARA.NL//pnfs//grid.sara.nl/data/lofar/x/229507/L229507_SB001_uv.MS.tar"
    )
    assert (
        s.url
        == "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/x/229507/L229507_SB001_uv.MS.tar"
    )
    assert s.site.key == "sara"


def test_non_subband_files_keep_observation_from_directory() -> None:
    bf = parse_surl(
        "srm://lta-head.lofar.psnc.pl:8443/lofar/ops/projects/lt10_004/658456/"
        "L658456_SAP000_B000_P012_bf_03c23eb1.tar"
    )
    assert (bf.obsid, bf.sap, bf.subband, bf.suffix) == (658456, 0, None, "03c23eb1")
    other = parse_surl(f"{SARA}/inspection.tar")
    assert (other.obsid, other.subband, other.name) == (229507, None, "inspection.tar")


def test_webdav_door_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    s = parse_surl(sara(1))
    monkeypatch.setenv("GRIDLRT_WEBDAV_DOOR_SARA", "https://door.example:2881/")
    assert s.webdav() == f"https://door.example:2881{s.path}"
    assert to_surl(s.webdav()) == s
    assert s.webdav(door="https://other:443") == f"https://other:443{s.path}"
    other = parse_surl("srm://my-dcache.example.org:8443/pnfs/x/L1_SB001_uv.MS.tar")
    monkeypatch.setenv("GRIDLRT_WEBDAV_DOOR_MY_DCACHE_EXAMPLE_ORG", "https://dav.example.org")
    assert other.webdav() == "https://dav.example.org/pnfs/x/L1_SB001_uv.MS.tar"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("https://example.org/file.tar", ""),
        ("srm://", "no host name"),
        ("srm:///pnfs/grid.sara.nl/file.tar", "no host name"),
        ("srm://srm.grid.sara.nl:8443", "no file path"),
        ("srm://srm.grid.sara.nl:8443/pnfs/dir/", "no file path"),
        ("srm://srm.grid.sara.nl:port/pnfs/x.tar", "bad port"),
        ("srm://srm.grid.sara.nl:8443/srm/managerv2", "without ?SFN="),
        ("srm://srm.grid.sara.nl:8443/pnfs/x.tar?x=1", "unexpected query"),
    ],
)
def test_bad_surls(text: str, why: str) -> None:
    with pytest.raises(InputError) as err:
        parse_surl(text)
    assert str(err.value).startswith(f"not an SRM URL: {text}")
    assert why in str(err.value)


def test_to_surl_refuses_what_it_cannot_map() -> None:
    with pytest.raises(InputError, match="cannot turn"):
        to_surl("ftp://example.org/x.tar")


# --- lists ----------------------------------------------------------------------------------


def realistic_list() -> str:
    """A mixed-site list as users assemble them: comments, blanks, junk, duplicates."""
    return "\n".join(
        [
            "# LTA catalogue export, project lc2_035",
            "",
            *[sara(sb) for sb in (102, 100, 101)],
            f'  "{sara(103)}",  ',  # quoted, with a trailing comma
            f'<a href="{sara(104)}">L229507 SB104</a>',
            f"1 {juelich(10)}",
            f"{juelich(11)}\t# second Jülich file",
            poznan(302),
            sara(100),  # duplicate
            parse_surl(sara(101)).gfal(),  # duplicate in another form
            "   ",
            "#" + sara(999),  # commented out
        ]
    )


def test_realistic_mixed_list(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        result = parse_srm_text(realistic_list(), "srm.txt")
    assert result.problems == []
    assert [s.name for s in result.surls] == [
        "L229507_SB102", "L229507_SB100", "L229507_SB101", "L229507_SB103", "L229507_SB104",
        "L583127_SB010", "L583127_SB011", "L555005_SAP000_SB302",
    ]  # fmt: skip
    assert result.lines == [3, 4, 5, 6, 7, 8, 9, 10]
    assert [(d.line, d.first_line) for d in result.duplicates] == [(11, 4), (12, 5)]
    assert "srm.txt:11: duplicate of line 4" in caplog.text

    by_site = group_by_site(result.surls)
    assert list(by_site) == ["sara", "juelich", "poznan"]
    assert [s.subband for s in by_site["sara"]] == [100, 101, 102, 103, 104]
    groups = group_by_observation(result.surls)
    assert [(g.site.key, g.obsid, g.subband_ranges) for g in groups] == [
        ("sara", 229507, "100..104"),
        ("juelich", 583127, "10,11"),
        ("poznan", 555005, "302"),
    ]
    ordered = sort_surls(result.surls)
    assert [s.subband for s in ordered] == [
        10,
        11,
        302,
        100,
        101,
        102,
        103,
        104,
    ]  # juelich < poznan < sara


def test_select_subbands_with_ledama_ranges() -> None:
    surls = [parse_surl(sara(sb)) for sb in range(0, 20)] + [parse_surl(f"{SARA}/inspection.tar")]
    assert [s.subband for s in select_subbands(surls, "0..6..2")] == [0, 2, 4, 6]
    assert [s.subband for s in select_subbands(surls, "1-3,7")] == [1, 2, 3, 7]
    assert [s.subband for s in select_subbands(surls, [19, 25])] == [19]
    assert select_subbands(surls, "100..200") == []


def test_windows_line_endings_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "srm.txt"
    path.write_bytes(("\ufeff" + "\r\n".join([sara(1), "", juelich(2), "# end"]) + "\r\n").encode())
    result = read_srm_list(path)
    assert [s.url for s in result.surls] == [sara(1), juelich(2)]
    assert result.lines == [1, 3]


def test_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    lines = [sara(sb) for sb in range(100, 116)]  # lines 1..16
    lines.append("L229507_SB116_uv.dppp.MS_3d78b8f1.tar")  # line 17: no srm://
    lines += [sara(117), "gsiftp://gridftp.grid.sara.nl:2811/pnfs/x.tar"]  # line 19 bad too
    path = tmp_path / "srm.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        read_srm_list(path)
    assert str(err.value) == (
        f"{path}:17: not an SRM URL: L229507_SB116_uv.dppp.MS_3d78b8f1.tar (and 1 more bad line(s))"
    )
    lenient = read_srm_list(path, strict=False)
    assert [p.line for p in lenient.problems] == [17, 19]
    assert len(lenient.surls) == 17
    assert lenient.problems[1].render("srm.txt") == (
        "srm.txt:19: not an SRM URL: gsiftp://gridftp.grid.sara.nl:2811/pnfs/x.tar"
    )


def test_broken_srm_url_on_a_line(tmp_path: Path) -> None:
    path = tmp_path / "srm.txt"
    path.write_text(f"{sara(1)}\nsrm://:8443/pnfs/x.tar\n")
    with pytest.raises(
        InputError, match=r"srm\.txt:2: not an SRM URL: srm://:8443/pnfs/x.tar \(no host name\)$"
    ):
        read_srm_list(path)


def test_unknown_hosts_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "srm.txt"
    path.write_text(
        "srm://dcache.example.org:8443/pnfs/example.org/lofar/123/L123_SB000_uv.MS_0badcafe.tar\n"
        + sara(0)
        + "\n"
    )
    result = read_srm_list(path)
    assert [s.site.key for s in result.surls] == ["dcache.example.org", "sara"]
    assert list(group_by_site(result.surls)) == ["dcache.example.org", "sara"]


@pytest.mark.parametrize("content", ["", "\n\n", "# only comments\n\n# nothing else\n", "\r\n"])
def test_empty_list_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "srm.txt"
    path.write_text(content)
    with pytest.raises(
        InputError, match=r"srm\.txt: no SRM URLs \(expected one srm:// URL per line"
    ):
        read_srm_list(path)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.txt: no such file"):
        read_srm_list(tmp_path / "nope.txt")
    binary = tmp_path / "srm.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81srm")
    with pytest.raises(InputError, match="not a text file"):
        read_srm_list(binary)
    with pytest.raises(InputError, match="is a directory"):
        read_srm_list(tmp_path)


def test_tokens_input_name_still_works() -> None:
    from gridlrt.tokens.create import input_name

    assert input_name(sara(100)) == "L229507_SB100"
    assert input_name(poznan(302)) == "L555005_SAP000_SB302"
