"""``gridlrt data get`` and ``gridlrt data put``: a whole dataset fetched or uploaded, with
one progress bar, resume, and one line per failed file.

Plain functions, registered on ``data_app`` in :mod:`gridlrt.cli.data`;
:mod:`gridlrt.datasets.transfer` does the work.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated

import typer

from gridlrt.cli.common import SubbandsOption, console
from gridlrt.cli.storage import open_storage, transfer_bar
from gridlrt.datasets.transfer import (
    DatasetProgress,
    FailureCallback,
    FileFailure,
    ProgressCallback,
    TransferPlan,
    TransferReport,
    get_dataset,
    plan_get,
    plan_put,
    put_dataset,
)
from gridlrt.errors import GridlrtError
from gridlrt.sizes import format_bytes
from gridlrt.storage.gfal import DEFAULT_RETRIES, DEFAULT_TRANSFER_TIMEOUT

ToDirOption = Annotated[
    str,
    typer.Option("--to", help="The local directory to fetch into (created).", show_default=False),
]
ToUrlOption = Annotated[
    str,
    typer.Option(
        "--to",
        help="The storage directory to upload into (davs://, srm://, file://, a path).",
        show_default=False,
    ),
]
ParallelOption = Annotated[
    int, typer.Option("--parallel", "-j", min=1, help="Copies in flight at once.")
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume/--no-resume",
        help="Skip files already there with the right size (and adler32 when the dataset "
        "records one); --no-resume copies everything again.",
    ),
]
ChecksumsOption = Annotated[
    bool,
    typer.Option(
        "--checksums/--no-checksums",
        help="Compare files with the adler32 the dataset records (reads every local file "
        "once); --no-checksums compares sizes only.",
    ),
]
RetriesOption = Annotated[
    int, typer.Option("--retries", min=0, help="Extra attempts after a transient failure.")
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Seconds one file transfer may take (more than 0).")
]
DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Show what would be copied and skipped, and the bytes."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="The outcome (or plan) as JSON.")]


@contextlib.contextmanager
def dataset_progress(label: str) -> Iterator[tuple[ProgressCallback, FailureCallback]]:
    """A rich progress bar on stderr (bytes, speed, ETA, files done/failed/skipped) and a
    failure printer (one line per failed file, above the bar). Drawn only on a terminal;
    failure lines are printed either way."""
    progress, task = transfer_bar(label)

    def update(report: DatasetProgress) -> None:
        failed = f", {report.files_failed} failed" if report.files_failed else ""
        skipped = f", {report.files_skipped} skipped" if report.files_skipped else ""
        progress.update(
            task,
            total=report.bytes_total or None,
            completed=report.bytes_done,
            files=f"{report.files_done}/{report.files_total} files{failed}{skipped}",
        )

    def failed(failure: FileFailure) -> None:
        progress.console.print(
            f"failed: {failure.line()}", highlight=False, soft_wrap=True, markup=False
        )

    with progress:
        yield update, failed


def _print_plan(plan: TransferPlan, verb: str, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "destination": plan.destination,
                    "copy": [f.model_dump() for f in plan.to_copy],
                    "skip": [f.model_dump() for f in plan.to_skip],
                    "bytes_to_copy": plan.bytes_to_copy,
                    "bytes_skipped": plan.bytes_skipped,
                }
            )
        )
        return
    for f in plan.files:
        size = format_bytes(f.size) if f.size is not None else "size unknown"
        if f.action == "copy":
            why = f"; {f.reason}" if f.reason else ""
            line = f"would {verb} {f.name} ({size}) <- {f.src}{why}"
            if verb == "put":
                line = f"would put {f.name} ({size}) -> {f.dst}{why}"
        else:
            line = f"would skip {f.name} ({size}): {f.reason}"
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    unknown = sum(1 for f in plan.to_copy if f.size is None)
    console.print(
        f"{len(plan.to_copy)} file(s) to {verb} ({format_bytes(plan.bytes_to_copy)}"
        + (f", {unknown} of unknown size" if unknown else "")
        + f"), {len(plan.to_skip)} already there ({format_bytes(plan.bytes_skipped)}) "
        f"in {plan.destination}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


def _finish(report: TransferReport, verb: str, as_json: bool) -> None:
    """Print the outcome; exit 1 (one line) when any file failed."""
    if as_json:
        typer.echo(report.model_dump_json(exclude={"dataset"}))
    else:
        rate = f", {report.rate / 1e6:.1f} MB/s" if report.bytes_copied else ""
        console.print(
            f"{verb} {len(report.copied)} file(s) ({format_bytes(report.bytes_copied)} in "
            f"{report.seconds:.1f} s{rate}), skipped {len(report.skipped)} already there"
            + (f", unpacked {len(report.unpacked)}" if report.unpacked else "")
            + (f", {len(report.failed)} failed" if report.failed else "")
            + f": {report.destination}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        if report.dataset_file:
            console.print(
                f"dataset: {report.dataset_file}", highlight=False, soft_wrap=True, markup=False
            )
    if report.failed:
        total = len(report.copied) + len(report.skipped) + len(report.failed)
        raise GridlrtError(
            f"{len(report.failed)} of {total} file(s) failed (listed above); rerun the "
            "same command to retry them, what is there is skipped"
        )


def get_command(
    dataset: Annotated[
        str,
        typer.Argument(
            metavar="DATASET",
            help="A dataset file (.jsonl/.csv), a list file (an srm.txt, URLs one per line), "
            "or another source gridlrt data list takes.",
            show_default=False,
        ),
    ],
    to: ToDirOption,
    subbands: SubbandsOption = None,
    parallel: ParallelOption = 4,
    resume: ResumeOption = True,
    checksums: ChecksumsOption = True,
    unpack: Annotated[
        bool,
        typer.Option(
            "--unpack",
            help="Unpack LTA measurement-set tarballs once verified: the measurement set "
            "appears only when complete; the tarball is removed.",
        ),
    ] = False,
    retries: RetriesOption = DEFAULT_RETRIES,
    timeout: TimeoutOption = DEFAULT_TRANSFER_TIMEOUT,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Fetch a dataset into a local directory: parallel verified copies, one progress bar,
    and DIR/dataset.jsonl listing what is there (the local copy is a dataset too).

    Rerun the same command after an interruption: files already there with the right size
    (and adler32, when the dataset records one) are skipped, and only the rest is copied. A
    copy killed midway never leaves a file under its final name. A file that cannot be
    copied is one line; the others go on, and the exit code is 1.

    Examples:

        gridlrt data get srm.txt --to /data/L700701 --subbands 100..119 -j 8

        gridlrt data get L700701.jsonl --to raw/ --unpack

        gridlrt data get L700701.jsonl --to raw/ --dry-run
    """
    from gridlrt.cli.data import selected

    chosen = selected(dataset, subbands)
    store = open_storage(retries, timeout)
    if dry_run:
        plan = plan_get(
            chosen, to, storage=store, resume=resume, checksums=checksums, unpack=unpack,
            parallel=parallel,
        )  # fmt: skip
        _print_plan(plan, "get", as_json)
        return
    with dataset_progress("getting") as (update, failed):
        report = get_dataset(
            chosen, to, storage=store, parallel=parallel, resume=resume, checksums=checksums,
            unpack=unpack, on_progress=update, on_failure=failed,
        )  # fmt: skip
    _finish(report, "got", as_json)


def put_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="DIR|DATASET",
            help="A local directory (its dataset.jsonl when it has one, else its files and "
            "*.MS measurement-set directories, each uploaded whole), or a dataset file of "
            "local (file://) entries.",
            show_default=False,
        ),
    ],
    to: ToUrlOption,
    parallel: ParallelOption = 4,
    resume: ResumeOption = True,
    checksums: ChecksumsOption = True,
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            help="Write the uploaded files as a dataset here (.jsonl or .csv).",
            show_default=False,
        ),
    ] = None,
    retries: RetriesOption = DEFAULT_RETRIES,
    timeout: TimeoutOption = DEFAULT_TRANSFER_TIMEOUT,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Upload local files into a storage directory: parallel verified copies, each written
    under a temporary name and renamed once verified, one progress bar; files already there
    with the same size are skipped (--no-resume: uploaded again).

    Examples:

        gridlrt data put /data/L700701 --to davs://webdav.grid.surfsara.nl/pnfs/.../L700701/

        gridlrt data put /data/L700701/dataset.jsonl --to dav://host/lofar/L700701 -o up.jsonl
    """
    from pathlib import Path

    from gridlrt.datasets.model import write_dataset

    store = open_storage(retries, timeout)
    if dry_run:
        plan = plan_put(
            source, to, storage=store, resume=resume, checksums=checksums, parallel=parallel
        )
        _print_plan(plan, "put", as_json)
        return
    with dataset_progress("putting") as (update, failed):
        report = put_dataset(
            source, to, storage=store, parallel=parallel, resume=resume, checksums=checksums,
            on_progress=update, on_failure=failed,
        )  # fmt: skip
    if output is not None:
        report.dataset_file = str(write_dataset(Path(output), report.dataset))
    _finish(report, "put", as_json)
