"""Is a dataset all there and intact? (LEDAMA's CheckData and CompareData.)

:func:`check_dataset` looks for five kinds of :class:`Problem`, one per line:

* ``missing``: an expected subband has no entry (per observation and SAP; expected are the
  subbands the caller names, else every one between the lowest and the highest present), or
  an entry's file is not on storage;
* ``short``: the file on storage is smaller than the dataset records, or empty;
  ``size``: it is larger than recorded;
* ``corrupt``: its checksum differs from the recorded one (only with ``checksums``, and only
  where the endpoint computes checksums: file:// does, dCache does, a plain WebDAV server
  does not; then a note says the check was by size);
* ``duplicate``: two entries for one subband (same observation, SAP and subband), or the same
  URL twice;
* ``unreachable``: storage did not answer about the file (endpoint down, permission denied).

Every file is looked at once, the stats (and checksum queries) in parallel. A measurement set
directory's size is the sum of its files. Nothing is changed.

:func:`compare_datasets` matches two datasets by subband (observation, SAP, subband; the file
name for entries without one) and size: only in A, only in B, sizes differ, the same.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, Field

from gridlrt.config import redact_url
from gridlrt.datasets.model import Dataset, DatasetEntry
from gridlrt.datasets.sources import DEFAULT_JOBS, tree_size
from gridlrt.errors import InputError, StorageError, StorageNotFound
from gridlrt.staging.ranges import format_ranges

if TYPE_CHECKING:
    from gridlrt.storage import Storage

ProblemKind = Literal["missing", "short", "size", "corrupt", "duplicate", "unreachable"]
PROBLEM_KINDS: Final = ("missing", "short", "size", "corrupt", "duplicate", "unreachable")


class Problem(BaseModel):
    """One thing wrong with a dataset."""

    kind: ProblemKind
    label: str = Field(description="L700701_SB100, or the file name")
    url: str = ""
    detail: str

    def line(self) -> str:
        """``SHORT      L700701_SB101: 1000 bytes on storage, 2000 recorded (davs://...)``"""
        where = f" ({self.url})" if self.url else ""
        return f"{self.kind.upper():<11} {self.label}: {self.detail}{where}"


class CheckReport(BaseModel):
    """What :func:`check_dataset` found."""

    dataset: str
    files: int
    expected: str = Field(description="the subbands expected, as ranges")
    stat_checked: int = Field(description="files whose existence and size were looked at")
    checksum_checked: int = Field(description="files whose checksum was compared")
    problems: list[Problem]
    notes: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        found = dict.fromkeys(PROBLEM_KINDS, 0)
        for problem in self.problems:
            found[problem.kind] += 1
        return found

    def summary_line(self) -> str:
        checked = f"{self.files} file(s); {self.stat_checked} checked on storage" + (
            f", {self.checksum_checked} by checksum" if self.checksum_checked else ""
        )
        if self.ok:
            return f"OK: {checked}; no problems"
        counts = ", ".join(f"{n} {kind}" for kind, n in self.counts().items() if n)
        return f"PROBLEMS: {len(self.problems)} ({counts}); {checked}"


def _groups(dataset: Dataset) -> dict[tuple[int | None, int | None], list[DatasetEntry]]:
    groups: dict[tuple[int | None, int | None], list[DatasetEntry]] = defaultdict(list)
    for entry in dataset.entries:
        if entry.subband is not None:
            groups[(entry.obsid, entry.sap)].append(entry)
    return groups


def _subband_label(obsid: int | None, sap: int | None, subband: int) -> str:
    head = f"L{obsid}" if obsid is not None else ""
    head += f"_SAP{sap:03d}" if sap is not None else ""
    return f"{head}_SB{subband:03d}" if head else f"SB{subband:03d}"


def completeness(dataset: Dataset, expected: Sequence[int] | None = None) -> list[Problem]:
    """``missing`` problems for expected subbands without an entry, per observation and SAP
    (``expected`` None: between the lowest and highest subband present in each)."""
    problems = []
    groups = _groups(dataset)
    if expected is not None and not groups:
        groups[(None, None)] = []
    for (obsid, sap), entries in sorted(groups.items(), key=lambda kv: str(kv[0])):
        present = {e.subband for e in entries if e.subband is not None}
        if expected is not None:
            wanted: Sequence[int] = expected
        else:
            wanted = range(min(present), max(present) + 1)
        for subband in wanted:
            if subband not in present:
                problems.append(
                    Problem(
                        kind="missing",
                        label=_subband_label(obsid, sap, subband),
                        detail="no entry for this subband",
                    )
                )
    return problems


def duplicates(dataset: Dataset) -> list[Problem]:
    """``duplicate`` problems: a subband (observation, SAP, subband) or a URL more than once."""
    problems = []
    by_key: dict[tuple[int | None, int | None, int | None], list[DatasetEntry]] = defaultdict(list)
    by_url: dict[str, int] = defaultdict(int)
    for entry in dataset.entries:
        by_url[entry.url] += 1
        if entry.subband is not None:
            by_key[entry.key].append(entry)
    for entries in by_key.values():
        urls = list(dict.fromkeys(e.url for e in entries))
        if len(urls) > 1:
            problems.append(
                Problem(
                    kind="duplicate",
                    label=entries[0].label,
                    detail=f"{len(urls)} entries: " + ", ".join(redact_url(u) for u in urls),
                )
            )
    for url, n in by_url.items():
        if n > 1:
            problems.append(
                Problem(
                    kind="duplicate", label=url.rsplit("/", 1)[-1], url=redact_url(url),
                    detail=f"the same URL {n} times",
                )
            )  # fmt: skip
    return problems


def _algorithm(checksum: str) -> tuple[str, str]:
    algorithm, _, value = checksum.rpartition(":")
    return (algorithm or "adler32").lower(), value.strip().lower()


def _same(a: str, b: str) -> bool:
    try:
        return int(a, 16) == int(b, 16)
    except ValueError:
        return a == b


class _Looked(BaseModel):
    problems: list[Problem] = Field(default_factory=list)
    stat: bool = False
    checksum: bool = False
    no_checksum: str = ""  # the endpoint that gives none


def _look(entry: DatasetEntry, storage: Storage, checksums: bool) -> _Looked:
    """Existence, size and (with ``checksums``) checksum of one entry's file on storage."""
    from gridlrt.storage.urls import endpoint

    shown = redact_url(entry.url)
    looked = _Looked()

    def problem(kind: ProblemKind, detail: str) -> _Looked:
        looked.problems.append(Problem(kind=kind, label=entry.label, url=shown, detail=detail))
        return looked

    try:
        info = storage.stat(entry.url)
        size = tree_size(storage, entry.url) if info.is_dir else info.size
    except StorageNotFound:
        return problem("missing", "not on storage")
    except StorageError as err:
        return problem("unreachable", str(err).replace(entry.url, shown))
    looked.stat = True
    if entry.size is not None and size != entry.size:
        kind: ProblemKind = "short" if size < entry.size else "size"
        return problem(kind, f"{size} bytes on storage, {entry.size} recorded")
    if size == 0 and not info.is_dir:
        return problem("short", "empty (0 bytes)")
    if not checksums or not entry.checksum or info.is_dir:
        return looked
    algorithm, recorded = _algorithm(entry.checksum)
    try:
        actual = storage.checksum(entry.url, algorithm)
    except StorageError as err:
        return problem("unreachable", str(err).replace(entry.url, shown))
    if actual is None:
        looked.no_checksum = endpoint(entry.url)
        return looked
    looked.checksum = True
    if not _same(actual, recorded):
        return problem("corrupt", f"{algorithm} {actual} on storage, {recorded} recorded")
    return looked


def check_dataset(
    dataset: Dataset,
    storage: Storage | None,
    *,
    expected: Sequence[int] | None = None,
    checksums: bool = False,
    jobs: int = DEFAULT_JOBS,
) -> CheckReport:
    """Every problem of ``dataset`` (see the module docstring), in dataset order: the
    completeness and duplicate problems first, then each file's. ``storage`` None: only
    completeness and duplicates (nothing is looked at)."""
    if jobs < 1:
        raise InputError(f"--jobs {jobs}: give 1 or more requests in flight")
    problems = completeness(dataset, expected) + duplicates(dataset)
    unique = list({e.url: e for e in dataset.entries}.values())
    looked: list[_Looked] = []
    if storage is not None and unique:
        with ThreadPoolExecutor(min(jobs, len(unique)), thread_name_prefix="gridlrt-check") as pool:
            looked = list(pool.map(lambda e: _look(e, storage, checksums), unique))
    for result in looked:
        problems.extend(result.problems)
    notes = []
    without = sorted({r.no_checksum for r in looked if r.no_checksum})
    if without:
        notes.append(f"no checksums at {', '.join(without)}: checked by size there")
    if checksums and not any(e.checksum for e in dataset.entries):
        notes.append("the dataset records no checksums: checked by size (list with --checksums)")
    if expected is not None:
        expected_text = format_ranges(expected)
    else:
        expected_text = "; ".join(
            f"{format_ranges(range(min(s), max(s) + 1))}"
            for s in ({e.subband for e in entries if e.subband is not None}
                      for entries in _groups(dataset).values())
        )  # fmt: skip
    return CheckReport(
        dataset=dataset.name or dataset.source,
        files=len(dataset.entries),
        expected=expected_text,
        stat_checked=sum(r.stat for r in looked),
        checksum_checked=sum(r.checksum for r in looked),
        problems=problems,
        notes=notes,
    )


# --- compare -------------------------------------------------------------------------------


class Difference(BaseModel):
    """One subband (or file) that is not the same in A and B."""

    kind: Literal["only_a", "only_b", "size"]
    label: str
    size_a: int | None = None
    size_b: int | None = None
    url_a: str = ""
    url_b: str = ""

    def line(self, a: str = "A", b: str = "B") -> str:
        if self.kind == "only_a":
            return f"ONLY IN {a}  {self.label} ({self.url_a})"
        if self.kind == "only_b":
            return f"ONLY IN {b}  {self.label} ({self.url_b})"
        return f"SIZE DIFFERS {self.label}: {self.size_a} bytes in {a}, {self.size_b} in {b}"


class Comparison(BaseModel):
    """What :func:`compare_datasets` found."""

    a: str
    b: str
    files_a: int
    files_b: int
    same: int = Field(description="in both, sizes equal (or unknown on one side)")
    unknown_size: int = Field(description="of those, how many could not be compared by size")
    differences: list[Difference]

    @property
    def equal(self) -> bool:
        return not self.differences

    def counts(self) -> dict[str, int]:
        found = {"only_a": 0, "only_b": 0, "size": 0}
        for difference in self.differences:
            found[difference.kind] += 1
        return found

    def summary_line(self) -> str:
        c = self.counts()
        verdict = "EQUAL" if self.equal else "DIFFERENT"
        unknown = f" ({self.unknown_size} of unknown size)" if self.unknown_size else ""
        return (
            f"{verdict}: {self.same} the same{unknown}, {c['only_a']} only in A, "
            f"{c['only_b']} only in B, {c['size']} of another size "
            f"(A {self.files_a} file(s), B {self.files_b})"
        )


def compare_key(entry: DatasetEntry) -> str:
    """What makes entries of two datasets "the same": observation, SAP and subband (the
    label), else the file name."""
    return entry.label if entry.subband is not None else (entry.name or entry.url)


def compare_datasets(a: Dataset, b: Dataset) -> Comparison:
    """Match ``a`` and ``b`` by :func:`compare_key`, then by size (LEDAMA's CompareData).
    Differences come in ``a``'s order, then ``b``'s leftovers."""
    in_b: dict[str, DatasetEntry] = {}
    for entry in b.entries:
        in_b.setdefault(compare_key(entry), entry)
    seen: set[str] = set()
    differences = []
    same = unknown = 0
    for entry in a.entries:
        key = compare_key(entry)
        if key in seen:
            continue
        seen.add(key)
        other = in_b.get(key)
        if other is None:
            differences.append(
                Difference(kind="only_a", label=key, size_a=entry.size, url_a=redact_url(entry.url))
            )
        elif entry.size is not None and other.size is not None and entry.size != other.size:
            differences.append(
                Difference(
                    kind="size", label=key, size_a=entry.size, size_b=other.size,
                    url_a=redact_url(entry.url), url_b=redact_url(other.url),
                )
            )  # fmt: skip
        else:
            same += 1
            unknown += entry.size is None or other.size is None
    for key, entry in in_b.items():
        if key not in seen:
            differences.append(
                Difference(kind="only_b", label=key, size_b=entry.size, url_b=redact_url(entry.url))
            )
    return Comparison(
        a=a.name or a.source, b=b.name or b.source,
        files_a=len(a.entries), files_b=len(b.entries),
        same=same, unknown_size=unknown, differences=differences,
    )  # fmt: skip
