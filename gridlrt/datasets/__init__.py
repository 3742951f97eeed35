"""The datasets room (LEDAMA's half of gridlrt): what you have, where, how big, and whether it
is all there.

A *dataset* is a list of measurement sets (or their LTA tarballs) with subband, frequency,
size, checksum and location: one observation's raw subbands, a pipeline stage's averaged
subbands, the bands of a run. :mod:`gridlrt.datasets.model` owns the model and its file
format (JSON lines, documented there; CSV for spreadsheets) and the pure functions over it
(selection by subband ranges, the summary with totals, frequency coverage and missing
subbands). The other modules make datasets from places (an ``srm.txt``, a storage directory,
a pipeline stage in the pool) and act on them (check, compare, get, remove); every one of
them goes through :mod:`gridlrt.storage` (gfal2) and :mod:`gridlrt.tokens` (the pool), never
around them.
"""

from gridlrt.datasets.model import (
    DATASET_FORMAT,
    Dataset,
    DatasetEntry,
    DatasetSummary,
    entry_for_url,
    read_dataset,
    select_subbands,
    summarize,
    write_dataset,
)

__all__ = [
    "DATASET_FORMAT",
    "Dataset",
    "DatasetEntry",
    "DatasetSummary",
    "entry_for_url",
    "read_dataset",
    "select_subbands",
    "summarize",
    "write_dataset",
]
