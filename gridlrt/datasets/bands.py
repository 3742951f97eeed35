"""Frequencies from subband numbers: which LOFAR band filter (clock and Nyquist zone) an
observation used decides what subband N means.

A subband number alone does not give a frequency: subband 100 is 19.5 MHz in the LBA at the
200 MHz clock, 119.5 MHz in HBA_110_190 and 219.5 MHz in HBA_210_250. Entries made from names
(an ``srm.txt``, a storage listing, a pipeline stage) get their centre frequency from the band
the user names, and are marked ``frequency_estimated`` so nobody mistakes them for what a
measurement set says (the catalogue's ``ms info`` frequencies are never overwritten).

``gridlrt data`` assumes **HBA_110_190** (200 MHz clock, zone 2: 100-200 MHz, subbands of
195.3125 kHz) unless told otherwise (``--band``): most LOFAR observations in the archive are
HBA low-band observations. The table caption says when frequencies are estimates and from
which band; ``--band none`` shows only frequencies that are known.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel

from gridlrt.datasets.model import Dataset, subband_frequency_hz
from gridlrt.errors import InputError


class Band(BaseModel):
    """A LOFAR band filter: the sampling clock (MHz) and the Nyquist zone it samples."""

    name: str
    clock_mhz: float
    zone: int

    @property
    def subband_width_hz(self) -> float:
        return self.clock_mhz * 1e6 / 1024

    def frequency_hz(self, subband: int) -> float:
        """Centre frequency of ``subband`` in this band."""
        return subband_frequency_hz(subband, clock_mhz=self.clock_mhz, zone=self.zone)

    def describe(self) -> str:
        return f"{self.name}, {self.clock_mhz:g} MHz clock"


#: LOFAR's band filters (the ``filterSelection`` of an observation) -> clock and zone
BANDS: Final = {
    b.name: b
    for b in (
        Band(name="LBA_10_90", clock_mhz=200, zone=1),
        Band(name="LBA_30_90", clock_mhz=200, zone=1),
        Band(name="LBA_10_70", clock_mhz=160, zone=1),
        Band(name="LBA_30_70", clock_mhz=160, zone=1),
        Band(name="HBA_110_190", clock_mhz=200, zone=2),
        Band(name="HBA_170_230", clock_mhz=160, zone=3),
        Band(name="HBA_210_250", clock_mhz=200, zone=3),
    )
}
ALIASES: Final = {"LBA": "LBA_10_90", "HBA": "HBA_110_190", "HBA-LOW": "HBA_110_190",
                  "HBA-HIGH": "HBA_210_250", "HBA-MID": "HBA_170_230"}  # fmt: skip
DEFAULT_BAND: Final = "HBA_110_190"
NO_BAND: Final = "none"


def parse_band(text: str) -> Band | None:
    """The band ``text`` names (``HBA_110_190``, ``LBA``, ``HBA-high``, case-insensitive),
    None for ``none``; :class:`InputError` listing the names otherwise."""
    key = text.strip().upper().replace(" ", "")
    if key == NO_BAND.upper():
        return None
    key = ALIASES.get(key, key)
    if key in BANDS:
        return BANDS[key]
    names = ", ".join([*BANDS, *ALIASES, NO_BAND])
    raise InputError(f"--band {text!r}: not a LOFAR band filter; give one of {names}")


def with_estimated_frequencies(dataset: Dataset, band: Band | None) -> tuple[Dataset, int]:
    """``dataset`` with a centre frequency (and the subband's bandwidth) for each entry that
    has a subband but no frequency, marked ``frequency_estimated: true``; and how many got
    one. Known frequencies are kept. ``band`` None: the dataset unchanged."""
    if band is None:
        return dataset, 0
    entries = []
    estimated = 0
    for entry in dataset.entries:
        if entry.subband is not None and entry.frequency_hz is None:
            entry = entry.model_copy(
                update={
                    "frequency_hz": band.frequency_hz(entry.subband),
                    "bandwidth_hz": entry.bandwidth_hz or band.subband_width_hz,
                }
            )
            setattr(entry, "frequency_estimated", True)  # noqa: B010 - an extra field
            estimated += 1
        entries.append(entry)
    return dataset.model_copy(update={"entries": entries}), estimated
