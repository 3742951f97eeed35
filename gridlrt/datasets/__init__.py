"""The datasets room (LEDAMA's half of gridlrt): what you have, where, how big, and whether it
is all there.

A *dataset* is a list of measurement sets (or their LTA tarballs) with subband, frequency,
size, checksum and location: one observation's raw subbands, a pipeline stage's averaged
subbands, the bands of a run. :mod:`gridlrt.datasets.model` owns the model and its file
format (JSON lines, documented there; CSV for spreadsheets) and the pure functions over it
(selection by subband ranges, the summary with totals, frequency coverage and missing
subbands). The other modules make datasets from places and act on them:

* :mod:`~gridlrt.datasets.sources` - a ``SOURCE`` into a dataset: a dataset file, an
  ``srm.txt`` or URL list, a storage directory (one gfal2 listing per directory), a pipeline
  stage's outputs in the pool (``pool:RUN/STAGE``);
* :mod:`~gridlrt.datasets.bands` - frequencies of subbands in LOFAR's filter bands;
* :mod:`~gridlrt.datasets.check` - completeness, sizes, checksums; comparing two datasets;
* :mod:`~gridlrt.datasets.catalogue` - what pilots record of every output measurement set
  (LEDDB's idea), and queries over it; :mod:`~gridlrt.datasets.quality` - flags per subband;
* :mod:`~gridlrt.datasets.transfer` - verified, resumable, parallel get and put;
* :mod:`~gridlrt.datasets.cleanup` - removal plans that never take a file a token needs.

Every one of them goes through :mod:`gridlrt.storage` (gfal2) and :mod:`gridlrt.tokens` (the
pool), never around them.
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
