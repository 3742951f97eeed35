"""The dataset catalogue (LEDDB's idea, in the pool): what every uploaded measurement set holds,
so listing a stage's products needs no file access.

When a pilot uploads an output measurement set (a DP3 step's ``msout``, packed as
``.MS.tar``, or any kept ``*.MS``) it reads the set on the node before packing
(:func:`gridlrt.worker.msinfo.catalogue_fields`: frequency, bandwidth, channels, time range,
stations, flagged fraction) and, once the token is done, records one
:class:`~gridlrt.datasets.model.DatasetEntry` per upload: its URL, size and checksum (from the
upload), what the set holds, and who made it (step, pipeline run, stage, token; parents: the
token's inputs).

**Storage**: pool side records of kind :data:`KIND` (``"dataset"``), the record id being the
output URL, so a token that is reset and redone overwrites its records instead of adding
more. Each record carries index keys (:func:`index_keys`: ``obsid:<L>``, ``step:<name>``,
``run:<run>``, ``stage:<run>/<stage>``), so :func:`find` reads only the records of the most
selective key it is given (an SQL index on SQLite, a view on CouchDB), never the whole pool;
PiCaS's views and gridlrt's token views never see a record. Frequency alone reads every
dataset record (one range read).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from gridlrt.datasets.model import Dataset, DatasetEntry, entry_for_url
from gridlrt.errors import InputError
from gridlrt.tokens import Token, TokenPool

log = logging.getLogger(__name__)

KIND: Final = "dataset"
#: the field of a record that says when it was written (seconds since the epoch)
RECORDED: Final = "recorded"


def output_entry(
    url: str,
    *,
    token: Token,
    fields: Mapping[str, Any],
    size: int | None = None,
    checksum: str | None = None,
) -> DatasetEntry:
    """The catalogue entry of one uploaded output: the name's observation, SAP and subband,
    the measurement set's ``fields`` (see :func:`gridlrt.worker.msinfo.catalogue_fields`;
    the name's observation id wins over the set's), the upload's size and checksum, and the
    token that made it."""
    named = entry_for_url(url)
    known = {k: v for k, v in fields.items() if v is not None and getattr(named, k, None) is None}
    return entry_for_url(
        url,
        size=size,
        checksum=checksum,
        **known,
        step=token.step,
        pipeline=token.pipeline,
        stage=token.stage,
        token=token.id,
        parents=list(token.inputs),
    )


def index_keys(entry: DatasetEntry) -> list[str]:
    """The keys :func:`find` looks an entry up by."""
    keys = []
    if entry.obsid is not None:
        keys.append(f"obsid:{entry.obsid}")
    if entry.step:
        keys.append(f"step:{entry.step}")
    if entry.pipeline:
        keys.append(f"run:{entry.pipeline}")
        if entry.stage:
            keys.append(f"stage:{entry.pipeline}/{entry.stage}")
    return keys


def record(pool: TokenPool, entries: Sequence[DatasetEntry], *, now: float | None = None) -> int:
    """Write (or overwrite, by URL) the catalogue records of ``entries``; how many."""
    if not entries:
        return 0
    moment = time.time() if now is None else now
    bodies: dict[str, dict[str, Any]] = {}
    keys: dict[str, list[str]] = {}
    for entry in entries:
        body = entry.model_dump(mode="json", exclude_none=True)
        body[RECORDED] = moment
        bodies[entry.url] = body
        keys[entry.url] = index_keys(entry)
    pool.put_records(KIND, bodies, keys)
    return len(bodies)


def forget(pool: TokenPool, urls: Iterable[str]) -> int:
    """Remove the records of ``urls`` (files that were deleted); how many existed."""
    return sum(1 for url in urls if pool.delete_record(KIND, url))


# --- queries ---------------------------------------------------------------------------------


class Query(BaseModel):
    """What ``gridlrt data find`` asks; every given field must match."""

    obsid: int | None = None
    step: str | None = None
    pipeline: str | None = None
    stage: str | None = None
    freq_low_hz: float | None = None
    freq_high_hz: float | None = None

    def key(self) -> str | None:
        """The most selective index key this query names (None: read every record)."""
        if self.pipeline and self.stage:
            return f"stage:{self.pipeline}/{self.stage}"
        if self.obsid is not None:
            return f"obsid:{self.obsid}"
        if self.pipeline:
            return f"run:{self.pipeline}"
        if self.step:
            return f"step:{self.step}"
        return None

    def matches(self, entry: DatasetEntry) -> bool:
        """Whether ``entry`` fits every field given (a frequency range holds the entry's
        centre frequency, ends included; an entry of unknown frequency does not match one)."""
        if self.obsid is not None and entry.obsid != self.obsid:
            return False
        for field in ("step", "pipeline", "stage"):
            wanted = getattr(self, field)
            if wanted is not None and getattr(entry, field) != wanted:
                return False
        if self.freq_low_hz is not None or self.freq_high_hz is not None:
            freq = entry.frequency_hz
            if freq is None:
                return False
            if self.freq_low_hz is not None and freq < self.freq_low_hz:
                return False
            if self.freq_high_hz is not None and freq > self.freq_high_hz:
                return False
        return True

    def describe(self) -> str:
        """``obsid=700701 stage=run1/average 110-130 MHz`` (``all`` when nothing is asked)."""
        parts = [
            f"{name}={value}"
            for name, value in (
                ("obsid", self.obsid),
                ("step", self.step),
                ("pipeline", self.pipeline),
                ("stage", self.stage),
            )
            if value is not None
        ]
        if self.freq_low_hz is not None or self.freq_high_hz is not None:
            low = "" if self.freq_low_hz is None else f"{self.freq_low_hz / 1e6:g}"
            high = "" if self.freq_high_hz is None else f"{self.freq_high_hz / 1e6:g}"
            parts.append(f"{low}..{high} MHz")
        return " ".join(parts) or "all"


_UNITS: Final = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}
_NUMBER: Final = r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_RANGE: Final = re.compile(
    rf"^\s*(?P<low>{_NUMBER})?\s*(?P<sep>\.\.|-)?\s*(?P<high>{_NUMBER})?\s*(?P<unit>[kKmMgG]?[hH][zZ])?\s*$"
)


def parse_frequency_range(text: str) -> tuple[float | None, float | None]:
    """``110..130MHz`` -> (110e6, 130e6) in Hz; ``120MHz`` is one frequency (both ends),
    ``110..`` / ``..130`` are open ends; ``-`` works as the separator too; the unit (Hz, kHz,
    MHz, GHz; default MHz) applies to both numbers. :class:`InputError` otherwise."""
    found = _RANGE.match(text)
    if not found or not (found["low"] or found["high"]):
        raise InputError(
            f"--freq {text!r}: give a frequency range such as 110..130MHz, 120MHz, 110.. "
            "(units Hz, kHz, MHz, GHz; MHz when none)"
        )
    scale = _UNITS[(found["unit"] or "MHz").lower()]
    low = float(found["low"]) * scale if found["low"] else None
    high = float(found["high"]) * scale if found["high"] else None
    if not found["sep"]:
        high = low
    if low is not None and high is not None and low > high:
        raise InputError(f"--freq {text!r}: the low end is above the high end")
    return low, high


def entries(pool: TokenPool, query: Query | None = None) -> list[DatasetEntry]:
    """The catalogued entries that match ``query`` (all without), by observation, SAP,
    subband and URL. A record that is not a valid entry is skipped with a warning."""
    query = query or Query()
    found: list[DatasetEntry] = []
    for body in pool.records(KIND, query.key()):
        body = {k: v for k, v in body.items() if k != RECORDED}
        try:
            entry = DatasetEntry.model_validate(body)
        except ValidationError as exc:
            log.warning("skipping a damaged catalogue record %s: %s", body.get("url", "?"), exc)
            continue
        if query.matches(entry):
            found.append(entry)
    return sorted(found, key=_order)


def _order(entry: DatasetEntry) -> tuple[int, int, int, str]:
    return (
        entry.obsid if entry.obsid is not None else -1,
        entry.sap if entry.sap is not None else -1,
        entry.subband if entry.subband is not None else -1,
        entry.url,
    )


def find(pool: TokenPool, query: Query | None = None) -> Dataset:
    """The catalogue's entries that match ``query`` as a :class:`Dataset`."""
    query = query or Query()
    return Dataset(
        name=f"catalogue: {query.describe()}", source=pool.url, entries=entries(pool, query)
    )
