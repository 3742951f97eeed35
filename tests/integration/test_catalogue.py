"""The dataset catalogue end to end: real pilots run DP3 on synthetic LOFAR sets (with flags
set in the input) against both pools and the WebDAV server, and record what the outputs
hold; ``gridlrt data find`` and ``data quality`` read it back; a redone token overwrites its
records; a catalogue that cannot be written never fails a token; PiCaS never sees a record."""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import pytest
import requests
from casacore import tables

from gridlrt.datasets import catalogue
from gridlrt.datasets.model import DatasetEntry, read_dataset
from gridlrt.datasets.sources import SourceContext, load_dataset
from gridlrt.errors import PoolError
from gridlrt.storage import Storage
from gridlrt.tokens import TokenPool, TokenStatus, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.sqlite import SQLitePool
from gridlrt.worker.msinfo import MJD_EPOCH, ms_info
from gridlrt.worker.pilot import Pilot, PilotOptions
from gridlrt.worker.steps import load_step
from tests.gridlrt_cli import cli_env, gridlrt
from tests.lofar_inputs import put_input
from tests.services.couchdb import CouchDB
from tests.services.webdav import WebDAV

OBSID = 229507


def flag_channels(ms: Path, channels: slice) -> None:
    """Set FLAG for ``channels`` of every row (all times, baselines, correlations)."""
    with tables.table(str(ms), readonly=False, ack=False) as main:
        flags = main.getcol("FLAG")
        flags[:, channels, :] = True
        main.putcol("FLAG", flags)


def measured_flags(ms: Path) -> float:
    """The flagged fraction of ``ms`` counted here, independently of gridlrt."""
    with tables.table(str(ms), ack=False) as main:
        return float(np.mean(main.getcol("FLAG")))


def fetch_ms(url: str, into: Path) -> Path:
    local = into / url.rsplit("/", 1)[-1]
    into.mkdir(parents=True, exist_ok=True)
    Storage().copy(url, local.as_uri())
    with tarfile.open(local) as tar:
        tar.extractall(into, filter="data")
    return into / local.name.removesuffix(".tar")


def run_pilot(pool: TokenPool, root: str, tmp_path: Path) -> None:
    options = PilotOptions(workroot=tmp_path / "scratch", heartbeat_interval=1.0)
    Pilot(pool, load_step, Storage(), storage_root=root, options=options).run()


def average_tokens(
    pool: TokenPool, webdav: WebDAV, area: str, tmp_path: Path, make_ms: Callable[..., Path]
) -> dict[int, str]:
    """Two subbands for the ``average`` step of run ``run1``, stage ``avg``: SB100 with its
    first quarter of channels flagged (25 % once averaged 4 to 1), SB101 unflagged."""
    ids = {}
    for subband in (100, 101):
        ms = make_ms(obsid=OBSID, subband=subband, channels=64, timeslots=10)
        if subband == 100:
            flag_channels(ms, slice(0, 16))
        url = put_input(webdav, area, ms, tmp_path / f"sb{subband}")
        token_id = f"avg_L{OBSID}_SB{subband}"
        pool.create(
            [
                new_token(
                    token_id,
                    inputs=url,
                    step="average",
                    fields={"pipeline": "run1", "stage": "avg"},
                )
            ]
        )
        ids[subband] = token_id
    return ids


def test_a_pilot_catalogues_its_outputs_and_a_redo_overwrites(
    pool: TokenPool,
    webdav: WebDAV,
    tmp_path: Path,
    make_ms: Callable[..., Path],
) -> None:
    area = f"cat-{uuid4().hex[:8]}"
    ids = average_tokens(pool, webdav, area, tmp_path, make_ms)
    run_pilot(pool, webdav.dav_url(f"{area}/results"), tmp_path)

    found = catalogue.entries(pool)
    assert [e.subband for e in found] == [100, 101]
    for entry, expected_flags in zip(found, (0.25, 0.0), strict=True):
        token = pool.get(ids[entry.subband or 0])
        assert token.status is TokenStatus.DONE
        (upload,) = [u for u in token.uploads if u.url == entry.url]
        assert token.output == [entry.url]
        assert (entry.size, entry.checksum) == (upload.size, upload.checksum)
        assert entry.size and entry.size > 0
        assert (entry.step, entry.pipeline, entry.stage, entry.token) == (
            "average", "run1", "avg", token.id,
        )  # fmt: skip
        assert entry.parents == token.inputs
        assert entry.kind == "ms-tarball" and entry.obsid == OBSID
        # what the uploaded set really holds
        out = fetch_ms(entry.url, tmp_path / "check" / str(entry.subband))
        info = ms_info(out)
        assert entry.channels == info.channels == 16
        assert entry.stations == len(info.stations) == 4
        assert entry.frequency_hz == pytest.approx(info.central_frequency_hz)
        assert entry.bandwidth_hz == pytest.approx(info.bandwidth_hz)
        assert entry.start_time == pytest.approx((info.start_utc - MJD_EPOCH).total_seconds())
        assert entry.end_time == pytest.approx((info.end_utc - MJD_EPOCH).total_seconds())
        assert measured_flags(out) == pytest.approx(expected_flags)
        assert entry.flagged_fraction == pytest.approx(expected_flags)
        attempt = token.current_attempt
        assert attempt is not None and "catalogue" in attempt.timings

    # queries: by stage, observation, step, frequency (SB100 ~ 119.53 MHz, SB101 ~ 119.73)
    def subbands(**query: Any) -> list[int | None]:
        return [e.subband for e in catalogue.entries(pool, catalogue.Query(**query))]

    assert subbands(pipeline="run1", stage="avg") == [100, 101]
    assert subbands(pipeline="run1", stage="other") == []
    assert subbands(obsid=OBSID, step="average") == [100, 101]
    assert subbands(obsid=OBSID + 1) == []
    low, high = catalogue.parse_frequency_range("119.5..119.6MHz")
    assert subbands(freq_low_hz=low, freq_high_hz=high) == [100]
    assert subbands(obsid=OBSID, freq_low_hz=119.6e6) == [101]
    # the stage as a data source: upload records plus what the catalogue knows of each set
    stage = load_dataset("pool:run1/avg", SourceContext(pool=pool))
    assert [(e.subband, e.channels, e.frequency_hz) for e in stage.entries] == [
        (e.subband, 16, e.frequency_hz) for e in found
    ]
    assert [e.flagged_fraction for e in stage.entries] == pytest.approx([0.25, 0.0])

    # reset and redo SB100: the record is overwritten, not added to
    before = pool.records(catalogue.KIND)
    assert pool.reset(ids=[ids[100]]) == [ids[100]]
    run_pilot(pool, webdav.dav_url(f"{area}/results"), tmp_path)
    assert len(pool.get(ids[100]).attempts) == 2
    after = pool.records(catalogue.KIND)
    assert len(after) == len(before) == 2
    recorded = {r["subband"]: r[catalogue.RECORDED] for r in after}
    assert recorded[100] > {r["subband"]: r[catalogue.RECORDED] for r in before}[100]
    assert subbands(pipeline="run1", stage="avg") == [100, 101]


def test_a_catalogue_that_cannot_be_written_never_fails_a_token(
    pool: TokenPool,
    webdav: WebDAV,
    tmp_path: Path,
    make_ms: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    area = f"cat-{uuid4().hex[:8]}"
    ids = average_tokens(pool, webdav, area, tmp_path, make_ms)

    def unreadable(path: Path) -> dict[str, Any]:
        raise RuntimeError("the set is unreadable")

    def unwritable(*args: object, **kwargs: object) -> None:
        raise PoolError("the pool refuses records")

    caplog.set_level(logging.WARNING, logger="gridlrt.worker.pilot")
    monkeypatch.setattr("gridlrt.worker.msinfo.catalogue_fields", unreadable)
    run_pilot(pool, webdav.dav_url(f"{area}/results"), tmp_path)
    assert all(pool.get(i).status is TokenStatus.DONE for i in ids.values())
    assert pool.records(catalogue.KIND) == []
    assert "not described (the set is unreadable)" in caplog.text

    monkeypatch.undo()
    monkeypatch.setattr(type(pool), "put_records", unwritable)
    pool.reset(ids=list(ids.values()), statuses=None)
    run_pilot(pool, webdav.dav_url(f"{area}/results"), tmp_path)
    assert all(pool.get(i).status is TokenStatus.DONE for i in ids.values())
    assert "not written (the pool refuses records)" in caplog.text


# --- data find and data quality on a catalogue of many records --------------------------------


def seeded_entries(n_subbands: int = 20) -> list[DatasetEntry]:
    """Two runs' worth of catalogue entries: run1/avg of L1 and L2, run2/flag of L1;
    SB100+i at 100 + 0.2 i MHz, flagged i/20."""
    made = []
    for run, stage, step, obsid in (
        ("run1", "avg", "average", 1),
        ("run1", "avg", "average", 2),
        ("run2", "flag", "flag-average", 1),
    ):
        for i in range(n_subbands):
            made.append(
                DatasetEntry(
                    url=f"file:///store/{run}/L{obsid}_SB{100 + i:03d}_uv.{step}.MS.tar",
                    name=f"L{obsid}_SB{100 + i:03d}_uv.{step}.MS.tar",
                    kind="ms-tarball",
                    obsid=obsid,
                    subband=100 + i,
                    frequency_hz=100e6 + 0.2e6 * i,
                    bandwidth_hz=195312.5,
                    channels=16,
                    size=1000 + i,
                    flagged_fraction=i / 20,
                    pipeline=run,
                    stage=stage,
                    step=step,
                    token=f"{run}_{obsid}_{i}",
                )
            )
    return made


def pool_url(pool: TokenPool) -> str:
    return pool.db_url if isinstance(pool, CouchDBPool) else pool.url


def test_data_find_filters_and_writes_a_dataset(pool: TokenPool, tmp_path: Path) -> None:
    assert catalogue.record(pool, seeded_entries()) == 60
    env = cli_env(tmp_path, GRIDLRT_POOL=pool_url(pool))

    def found(*args: str) -> list[tuple[int, int]]:
        out = json.loads(gridlrt(env, "data", "find", *args, "--json").stdout)
        return [(e["obsid"], e["subband"]) for e in out["dataset"]["entries"]]

    assert len(found()) == 60
    stage = ("--pipeline", "run1", "--stage", "avg")
    assert found(*stage, "--obsid", "L2", "--subbands", "100..101") == [(2, 100), (2, 101)]
    assert found("--step", "flag-average", "--freq", "102.9..103.5MHz") == [
        (1, 115), (1, 116), (1, 117),
    ]  # fmt: skip
    assert found("--obsid", "1", "--freq", "0.10375..0.10385GHz") == [(1, 119), (1, 119)]
    assert found("--pipeline", "run3") == []

    written = tmp_path / "avg.jsonl"
    table = gridlrt(env, "data", "find", "--pipeline", "run1", "--stage", "avg", "-o", str(written))
    assert "40 file(s)" in table.stdout and "L1_SB100_uv.average.MS.tar" in table.stdout
    dataset = read_dataset(written)
    assert len(dataset) == 40
    flags = [e.flagged_fraction or 0.0 for e in dataset.entries]
    assert min(flags) == 0.0 and max(flags) == pytest.approx(0.95)
    assert all(e.channels == 16 and e.stage == "avg" for e in dataset.entries)
    assert catalogue.RECORDED not in (dataset.entries[0].model_extra or {})

    bad = gridlrt(env, "data", "find", "--stage", "avg", check=False)
    assert bad.returncode != 0 and "--stage needs --pipeline" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = gridlrt(env, "data", "find", "--freq", "high", check=False)
    assert bad.returncode != 0 and "--freq 'high'" in bad.stderr


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_data_quality_table_json_and_png(pool: TokenPool, tmp_path: Path) -> None:
    catalogue.record(pool, seeded_entries())
    env = cli_env(tmp_path, GRIDLRT_POOL=pool_url(pool))
    args = ("data", "quality", "--pipeline", "run2", "--stage", "flag")

    out = json.loads(gridlrt(env, *args, "--threshold", "70%", "--json").stdout)
    assert out["threshold"] == 0.7
    assert [r["subband"] for r in out["rows"]] == list(range(100, 120))  # frequency order
    assert out["bad"] == [f"L1_SB{sb}" for sb in range(115, 120)]  # 75..95 % flagged

    png = tmp_path / "flags.png"
    table = gridlrt(env, *args, "--png", str(png)).stdout
    assert "20 file(s), 20 with a flagged fraction; 9 flagged above 50 %" in table
    line = next(t for t in table.splitlines() if " 119 " in t)
    assert "95.0 %" in line and "█" * 19 in line
    width, height = png_size(png)
    assert width > 500 and height > 300

    # a dataset file (e.g. data find -o) as the source
    written = tmp_path / "run2.jsonl"
    gridlrt(env, "data", "find", "--pipeline", "run2", "-o", str(written))
    again = json.loads(gridlrt(env, "data", "quality", str(written), "--json").stdout)
    assert again["bad"] == [f"L1_SB{sb}" for sb in range(111, 120)]  # above 50 %

    bad = gridlrt(env, "data", "quality", check=False)
    assert bad.returncode != 0 and "say which measurement sets" in bad.stderr


# --- the pool: records by key on both backends, and PiCaS never sees them ---------------------


def test_records_stay_out_of_picas_and_token_views(couchdb: CouchDB) -> None:
    pool = CouchDBPool(couchdb.new_database("catalogue"))
    pool.init()
    pool.create(new_token(f"t{i}", inputs=f"L1_SB{i:03d}", step="avg") for i in range(4))
    catalogue.record(pool, seeded_entries(5))

    def view(name: str, **params: str) -> list[dict[str, Any]]:
        url = f"{pool.db_url}/_design/Monitor/_view/{name}"
        return list(requests.get(url, params=params, timeout=60).json()["rows"])

    assert len(view("todo")) == 4 and view("done") == [] and view("error") == []
    assert {r["key"]: r["value"] for r in view("overview_total", group="true")} == {"todo": 4}
    assert pool.overview().total() == 4 and len(list(pool.tokens())) == 4
    assert not pool.overview().malformed
    assert len(view("gridlrt_status", reduce="false")) == 4
    keyed = view("gridlrt_records", key=json.dumps(["gridlrt_dataset", "stage:run2/flag"]))
    assert len(keyed) == 5


def test_records_by_key_without_the_records_view(couchdb: CouchDB) -> None:
    """A pool initialised before the records view: reading by key falls back to reading all;
    `pool init` adds the view."""
    pool = CouchDBPool(couchdb.new_database("oldpool"))
    pool.init()
    design_url = f"{pool.db_url}/_design/Monitor"
    design = requests.get(design_url, timeout=10).json()
    del design["views"]["gridlrt_records"]
    design["gridlrt_version"] = 4
    requests.put(design_url, json=design, timeout=10).raise_for_status()
    catalogue.record(pool, seeded_entries(3))
    query = catalogue.Query(pipeline="run1", stage="avg")
    assert [(e.obsid, e.subband) for e in catalogue.entries(pool, query)] == [
        (1, 100), (1, 101), (1, 102), (2, 100), (2, 101), (2, 102),
    ]  # fmt: skip
    pool.init()
    assert "gridlrt_records" in requests.get(design_url, timeout=10).json()["views"]
    assert len(catalogue.entries(pool, query)) == 6


def test_an_embedded_pool_from_before_record_keys_gets_them(tmp_path: Path) -> None:
    """An SQLite pool made before the keys table: records by key work without `pool init`."""
    path = tmp_path / "old.sqlite"
    old = SQLitePool(path)
    old.init()
    old._db.execute("DROP TABLE record_keys")
    old.close()
    pool = SQLitePool(path)
    catalogue.record(pool, seeded_entries(2))
    assert len(catalogue.entries(pool, catalogue.Query(obsid=2))) == 2


def test_cli_without_the_demo_extra_still_runs() -> None:
    """``data find`` is a UI command but imports no matplotlib unless a plot is asked."""
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "import gridlrt.cli.app, gridlrt.cli.data_catalogue\n"
        "print('matplotlib' in sys.modules and sys.modules['matplotlib'] is not None)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
