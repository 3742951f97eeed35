"""Where datasets come from: a ``SOURCE`` argument of ``gridlrt data`` made into a
:class:`~gridlrt.datasets.model.Dataset`.

:func:`load_dataset` takes what a user types:

* a dataset file (``.jsonl`` / ``.csv`` with the ``gridlrt-dataset/1`` header) — read as is;
* a list file (an ``srm.txt`` from the LTA, or any list of URLs, one per line) — one entry per
  line, with what the file names say (observation, SAP, subband); no storage is touched.

Storage directories (listed through gfal2, with sizes) and a pipeline stage's outputs in the
pool are further sources, added beside these.
"""

from __future__ import annotations

from pathlib import Path

from gridlrt.datasets.model import Dataset, entry_for_url, is_dataset_file, read_dataset
from gridlrt.errors import InputError
from gridlrt.tokens.create import read_inputs


def dataset_from_list(path: Path) -> Dataset:
    """One entry per URL of a list file (``srm.txt`` or any URLs), in file order."""
    entries = [entry_for_url(url) for url in read_inputs(path)]
    return Dataset(name=path.stem, source=str(path), entries=entries)


def load_dataset(source: str) -> Dataset:
    """The dataset ``source`` names (see the module docstring); :class:`InputError` (one
    line) when it names nothing usable."""
    path = Path(source).expanduser()
    if path.is_file():
        return read_dataset(path) if is_dataset_file(path) else dataset_from_list(path)
    if path.is_dir():
        raise InputError(
            f"{source}: a directory; give a dataset file, an srm.txt, or the directory as a "
            f"URL (file://{path.absolute()})"
        )
    raise InputError(f"{source}: no such dataset file or list (an srm.txt, a dataset .jsonl)")
