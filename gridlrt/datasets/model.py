"""Datasets as data: the model, its file format, and pure functions over it.

A :class:`Dataset` is an ordered list of :class:`DatasetEntry` - one measurement set or LTA
tarball each, with what LOFAR users ask of it first: which observation, SAP and subband, at
what frequency, how big, which checksum, where. Entries made from names alone (an ``srm.txt``)
know the subband and the URL; entries from storage also know the size (and the checksum when
the endpoint gives one); entries from the catalogue know what ``gridlrt ms info`` reads
(channels, time range, stations, flagged fraction) and which step made them.

**The file format** (``.jsonl``, LEDAMA's RefFile as JSON lines). The first line is the
header, every other line one entry, in order::

    {"format": "gridlrt-dataset/1", "name": "L700701 raw", "source": "srm.txt",
     "created": 1764480000.0}
    {"url": "srm://srm.grid.sara.nl/pnfs/.../L700701_SB100_uv.MS_3d78b8f1.tar",
     "name": "L700701_SB100_uv.MS_3d78b8f1.tar", "kind": "ms-tarball", "obsid": 700701,
     "subband": 100, "size": 1234, "site": "sara"}

(each JSON object on one line in the file; wrapped here).

Entry fields are those of :class:`DatasetEntry` (unknown ones are kept when read and written
back, so newer files survive older readers). ``.csv`` writes and reads the same entries as a
table (one column per field, the header as a ``#`` comment line), for spreadsheets.
Frequencies are Hz, sizes bytes, times MJD seconds (as in a measurement set), checksums
``<algorithm>:<hex>`` (``adler32:0a1b2c3d``, what dCache keeps).

Writing is atomic (a ``.part`` file renamed into place): a killed ``-o FILE`` never leaves a
half-written dataset under its name.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gridlrt.errors import InputError
from gridlrt.lofar_names import basename, name_fields
from gridlrt.staging.ranges import format_ranges, parse_ranges

DATASET_FORMAT: Final = "gridlrt-dataset/1"
#: one LOFAR subband at the 200 MHz clock (160 MHz clock: 156250 Hz)
SUBBAND_WIDTH_200MHZ: Final = 200e6 / 1024

EntryKind = Literal["ms", "ms-tarball", "file"]


class DatasetEntry(BaseModel):
    """One measurement set (or its LTA tarball, or another file) of a dataset."""

    model_config = ConfigDict(extra="allow")

    url: str = Field(description="where it is: srm://, davs://, file://, gsiftp://, ...")
    name: str = Field(default="", description="the file name (the URL's last part)")
    kind: EntryKind = "file"
    obsid: int | None = Field(default=None, description="the L number")
    sap: int | None = Field(default=None, description="sub-array pointing")
    subband: int | None = None
    frequency_hz: float | None = Field(default=None, description="centre frequency")
    bandwidth_hz: float | None = Field(default=None, description="total bandwidth")
    size: int | None = Field(default=None, ge=0, description="bytes")
    checksum: str | None = Field(default=None, description="<algorithm>:<hex>, e.g. adler32:...")
    site: str | None = Field(default=None, description="the storage host (LTA site key)")
    # what the catalogue adds (gridlrt ms info of the file when it was made)
    channels: int | None = None
    start_time: float | None = Field(default=None, description="MJD seconds")
    end_time: float | None = Field(default=None, description="MJD seconds")
    stations: int | None = None
    flagged_fraction: float | None = Field(default=None, ge=0, le=1)
    # who made it (pipeline products)
    pipeline: str | None = None
    stage: str | None = None
    step: str | None = None
    token: str | None = None
    parents: list[str] = Field(default_factory=list)

    @property
    def key(self) -> tuple[int | None, int | None, int | None]:
        """(obsid, sap, subband): what makes two entries "the same subband"."""
        return (self.obsid, self.sap, self.subband)

    @property
    def label(self) -> str:
        """``L700701_SB100`` (``_SAP000`` when known), else the file name."""
        if self.obsid is None or self.subband is None:
            return self.name or basename(self.url)
        sap = f"_SAP{self.sap:03d}" if self.sap is not None else ""
        return f"L{self.obsid}{sap}_SB{self.subband:03d}"


class Dataset(BaseModel):
    """A named list of entries and where it was made from."""

    name: str = ""
    source: str = Field(default="", description="what it was made from (a file, URL, run)")
    created: float = Field(default_factory=time.time, description="seconds since the epoch")
    entries: list[DatasetEntry] = Field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)


class DatasetSummary(BaseModel):
    """The totals ``gridlrt data list`` prints under its table."""

    files: int
    bytes: int = Field(description="sum of the known sizes")
    unknown_sizes: int = Field(description="entries whose size is not known")
    observations: list[int] = Field(description="obsids, sorted")
    subbands: str = Field(description="subbands present, as ranges (100..107,110)")
    missing: str = Field(
        description="subbands missing between the lowest and highest present (or of expected)"
    )
    duplicates: list[str] = Field(description="labels present more than once")
    frequency_low_hz: float | None = None
    frequency_high_hz: float | None = None
    flagged_fraction: float | None = Field(
        default=None, description="mean flagged fraction of the entries that know theirs"
    )


def subband_frequency_hz(subband: int, *, clock_mhz: float = 200.0, zone: int = 2) -> float:
    """Centre frequency of a subband: ``(zone - 1) * clock/2 + subband * clock/1024``
    (zone 1: LBA, 0-100 MHz at 200 MHz; zone 2: HBA 110-190; zone 3: HBA 210-250)."""
    clock = clock_mhz * 1e6
    return (zone - 1) * clock / 2 + subband * clock / 1024


def _kind(name: str) -> EntryKind:
    upper = name.upper()
    if upper.endswith(".TAR") and ".MS" in upper:
        return "ms-tarball"
    if upper.endswith(".MS"):
        return "ms"
    return "file"


def entry_for_url(url: str, **known: Any) -> DatasetEntry:
    """An entry from a URL and whatever else is known (``size=``, ``checksum=``, ...): the
    name, kind, obsid, SAP and subband come from the LOFAR file name, the site from the host."""
    name = basename(url)
    fields: dict[str, Any] = {"url": url, "name": name, "kind": _kind(name)}
    for key, value in name_fields(name).items():
        fields[key] = int(value)
    host = urlsplit(url).hostname
    if host:
        fields["site"] = _site_key(host)
    fields.update({k: v for k, v in known.items() if v is not None})
    return DatasetEntry.model_validate(fields)


def _site_key(host: str) -> str:
    from gridlrt.staging.surl import site_for_host

    return site_for_host(host).key


def select_subbands(dataset: Dataset, ranges: str | Iterable[int]) -> Dataset:
    """The entries whose subband is in ``ranges`` (``"100..107,110"``); entries without a
    subband are left out."""
    wanted = set(parse_ranges(ranges) if isinstance(ranges, str) else ranges)
    kept = [e for e in dataset.entries if e.subband is not None and e.subband in wanted]
    return dataset.model_copy(update={"entries": kept})


def summarize(dataset: Dataset, expected: Sequence[int] | None = None) -> DatasetSummary:
    """Totals, subbands present and missing (within ``expected``, else between the lowest and
    the highest present), labels present more than once, frequency range, mean flags."""
    entries = dataset.entries
    sizes = [e.size for e in entries if e.size is not None]
    subbands = sorted({e.subband for e in entries if e.subband is not None})
    if expected is not None:
        span: Iterable[int] = expected
    else:
        span = range(subbands[0], subbands[-1] + 1) if subbands else []
    present = set(subbands)
    # the same subband twice, or (files without a subband) the same URL twice: band.MS.tar in
    # several group directories is not a duplicate
    counts = Counter(e.label if e.subband is not None else e.url for e in entries)
    freqs = [e.frequency_hz for e in entries if e.frequency_hz is not None]
    flags = [e.flagged_fraction for e in entries if e.flagged_fraction is not None]
    return DatasetSummary(
        files=len(entries),
        bytes=sum(sizes),
        unknown_sizes=len(entries) - len(sizes),
        observations=sorted({e.obsid for e in entries if e.obsid is not None}),
        subbands=format_ranges(subbands),
        missing=format_ranges(sb for sb in span if sb not in present),
        duplicates=sorted(label for label, n in counts.items() if n > 1),
        frequency_low_hz=min(freqs) if freqs else None,
        frequency_high_hz=max(freqs) if freqs else None,
        flagged_fraction=sum(flags) / len(flags) if flags else None,
    )


# --- the file format -----------------------------------------------------------------------

_ENTRY_FIELDS: Final = tuple(DatasetEntry.model_fields)


def dumps_jsonl(dataset: Dataset) -> str:
    """The JSON-lines text of ``dataset`` (see the module docstring)."""
    header = {
        "format": DATASET_FORMAT,
        "name": dataset.name,
        "source": dataset.source,
        "created": dataset.created,
    }
    lines = [json.dumps(header)]
    lines += [_entry_json(e) for e in dataset.entries]
    return "\n".join(lines) + "\n"


def _entry_json(entry: DatasetEntry) -> str:
    data = entry.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    data.setdefault("url", entry.url)
    return json.dumps(data)


def dumps_csv(dataset: Dataset) -> str:
    """The CSV text: a ``#`` header line with the dataset's JSON header, then a table."""
    out = io.StringIO()
    header = {"format": DATASET_FORMAT, "name": dataset.name, "source": dataset.source}
    out.write("# " + json.dumps(header) + "\n")
    extra = sorted({k for e in dataset.entries for k in (e.model_extra or {})})
    columns = [*_ENTRY_FIELDS, *extra]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for entry in dataset.entries:
        row = entry.model_dump()
        row["parents"] = " ".join(entry.parents)
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return out.getvalue()


def write_dataset(path: Path, dataset: Dataset) -> Path:
    """Write ``dataset`` to ``path`` (``.csv``: CSV, else JSON lines), atomically."""
    text = dumps_csv(dataset) if path.suffix.lower() == ".csv" else dumps_jsonl(dataset)
    part = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        part.write_text(text, encoding="utf-8")
        part.replace(path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write the dataset ({exc.strerror})") from None
    return path


def _bad(path: Path, line: int, why: str) -> InputError:
    return InputError(f"{path}:{line}: {why}; a dataset file has a header line and one JSON "
                      "entry per line (gridlrt data list SOURCE -o FILE writes one)")  # fmt: skip


def loads_jsonl(text: str, path: Path = Path("dataset.jsonl")) -> Dataset:
    """A dataset from JSON-lines text; :class:`InputError` naming the line otherwise."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise _bad(path, 1, "empty")
    first_no, first = lines[0]
    try:
        header = json.loads(first)
    except json.JSONDecodeError as exc:
        raise _bad(path, first_no, f"not JSON ({exc.msg})") from None
    if not isinstance(header, dict) or header.get("format") != DATASET_FORMAT:
        raise _bad(path, first_no, f'the header line lacks "format": "{DATASET_FORMAT}"')
    entries = []
    for number, line in lines[1:]:
        try:
            entries.append(DatasetEntry.model_validate_json(line))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "entry"
            raise _bad(path, number, f"{where}: {err['msg']}") from None
    return Dataset(
        name=str(header.get("name", "")),
        source=str(header.get("source", "")),
        created=float(header.get("created") or 0.0),
        entries=entries,
    )


def loads_csv(text: str, path: Path = Path("dataset.csv")) -> Dataset:
    """A dataset from the CSV text :func:`dumps_csv` writes."""
    lines = text.splitlines()
    header: dict[str, Any] = {}
    if lines and lines[0].startswith("#"):
        try:
            header = json.loads(lines[0][1:])
        except json.JSONDecodeError:
            header = {}
        lines = lines[1:]
    entries = []
    for number, row in enumerate(csv.DictReader(lines), 2 + bool(header)):
        values: dict[str, Any] = {k: v for k, v in row.items() if k and v not in ("", None)}
        if "parents" in values:
            values["parents"] = str(values["parents"]).split()
        try:
            entries.append(DatasetEntry.model_validate(values, strict=False))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "row"
            raise InputError(f"{path}:{number}: {where}: {err['msg']}") from None
    return Dataset(
        name=str(header.get("name", "")), source=str(header.get("source", "")), entries=entries
    )


def is_dataset_file(path: Path) -> bool:
    """True when ``path`` is a file whose first line is a dataset header (JSON or CSV)."""
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return DATASET_FORMAT in first


def read_dataset(path: Path) -> Dataset:
    """A dataset file (``.csv`` or JSON lines); one-line :class:`InputError` otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such dataset file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the dataset ({exc.strerror})") from None
    if path.suffix.lower() == ".csv":
        return loads_csv(text, path)
    return loads_jsonl(text, path)
