"""The storage layer (gridlrt.storage) through the real gfal2: file://, dav:// and davs://
against the ``webdav`` fixture, large and many small files, retries while the server is
killed and restarted, verification, typed errors, URL templates and the signal mask."""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import gfal2
import pytest

from gridlrt.errors import (
    ChecksumMismatch,
    InputError,
    SizeMismatch,
    StorageError,
    StorageExists,
    StorageNotFound,
    StoragePermissionDenied,
    StorageTimeout,
    StorageUnavailable,
    TransfersFailed,
    UnsupportedProtocol,
    VerificationError,
)
from gridlrt.storage import Storage, TransferProgress, TransferResult
from gridlrt.storage.errors import storage_error
from gridlrt.storage.urls import is_temp_name, temp_url, to_url
from tests.services.process import free_port
from tests.services.webdav import WebDAV

BIG = 200 * 1024 * 1024 + 4321  # >= 200 MB, not a multiple of any buffer size
CHUNK = 8 * 1024 * 1024
REPO = Path(__file__).resolve().parents[2]
SMALL_FILES = {"file": 200, "dav": 200, "davs": 60}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def adler32(path: Path) -> str:
    value = 1
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            value = zlib.adler32(chunk, value)
    return f"{value:08x}"


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A >= 200 MB file of random bytes and its sha256 (made once for this module)."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        left = BIG
        while left:
            chunk = os.urandom(min(CHUNK, left))
            fh.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return path, digest.hexdigest()


@pytest.fixture
def store(webdav: WebDAV) -> Storage:
    """A Storage made after the webdav fixture set X509_CERT_DIR (read at context creation)."""
    return Storage(retries=2, backoff=0.1, backoff_max=0.5)


def remote(webdav: WebDAV, scheme: str, rel: str, tmp_path: Path) -> str:
    """A destination URL of the given scheme; file:// goes under tmp_path."""
    if scheme == "file":
        return to_url(tmp_path / "remote" / rel)
    return {"dav": webdav.dav_url, "davs": webdav.davs_url}[scheme](rel)


def local_of(webdav: WebDAV, url: str) -> Path:
    """The local file behind a file:// URL or a URL of the fixture."""
    return Path(url[7:]) if url.startswith("file://") else webdav.path(url)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".part-" in p.name)


# --- the signal mask ----------------------------------------------------------------------

SIGNAL_SCRIPT = r"""
import os, signal, subprocess, sys, time
mode = sys.argv[1]
before = signal.pthread_sigmask(signal.SIG_BLOCK, ())
if mode == "storage":
    from gridlrt.storage import Storage
    Storage()
else:
    import gfal2
    gfal2.creat_context()
after = signal.pthread_sigmask(signal.SIG_BLOCK, ())
child = subprocess.Popen(["sleep", "30"])
status = open(f"/proc/{child.pid}/status").read()
child_blocked = int(next(l for l in status.splitlines() if l.startswith("SigBlk:")).split()[1], 16)
child.send_signal(signal.SIGTERM)
try:
    code = child.wait(5 if mode == "storage" else 1)
except subprocess.TimeoutExpired:
    child.kill()
    code = "ignored"
interrupted = False
if mode == "storage":
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(2)
    except KeyboardInterrupt:
        interrupted = True
print(len(before), len(after), child_blocked, code, interrupted)
"""


def run_signal_script(mode: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_SCRIPT, mode],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_plain_gfal2_context_blocks_signals_for_children() -> None:
    """What the adapter protects against: gfal2 alone leaves SIGTERM blocked in children."""
    before, after, child_blocked, code, _ = run_signal_script("gfal2")
    assert before == "0" and code == "ignored"
    assert int(after) > 10
    assert int(child_blocked) & (1 << (signal.SIGTERM - 1))


def test_storage_keeps_the_signal_mask() -> None:
    """After a Storage is made, SIGTERM still reaches a child and Ctrl-C still interrupts."""
    before, after, child_blocked, code, interrupted = run_signal_script("storage")
    assert (before, after, child_blocked) == ("0", "0", "0")
    assert code == str(-signal.SIGTERM)
    assert interrupted == "True"


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["file", "dav", "davs"])
def test_big_file_round_trip(
    webdav: WebDAV,
    store: Storage,
    big_file: tuple[Path, str],
    tmp_path: Path,
    scheme: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, digest = big_file
    url = remote(webdav, scheme, f"big-{uuid4().hex[:8]}/deeper/big.bin", tmp_path)

    up = store.copy(source, url)
    assert isinstance(up, TransferResult)
    assert (up.size, up.attempts, up.atomic) == (BIG, 1, True)
    # file:// answers adler32 on both ends; wsgidav does not (ENOSYS): size only, and said so
    assert up.verified == ("adler32" if scheme == "file" else "size")
    if scheme == "file":
        assert up.checksum == adler32(source)
    server_file = local_of(webdav, url)
    assert sha256(server_file) == digest
    assert leftovers(server_file.parent) == []
    assert store.stat(url).size == BIG
    assert store.listdir(url.rsplit("/", 1)[0]) == ["big.bin"]

    assert (source.stat().st_mode & 0o777) == 0o644
    if scheme == "file":
        assert (server_file.stat().st_mode & 0o777) == 0o644  # not gfal2's 0755

    back = tmp_path / "back" / "big.bin"
    reports: list[TransferProgress] = []
    monkeypatch.setattr("gridlrt.storage.gfal.PROGRESS_INTERVAL", 0.01)
    [down] = store.copy_many([(url, str(back))], progress=reports.append)
    assert (down.size, down.attempts, down.atomic) == (BIG, 1, True)
    # while the download runs, the bytes written so far are reported
    assert any(r.partial and 0 < r.bytes_done < BIG for r in reports)
    assert reports[-1].bytes_done == reports[-1].bytes_total == BIG
    assert not reports[-1].partial and reports[-1].files_done == 1
    assert sha256(back) == digest
    assert leftovers(back.parent) == []
    assert (back.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("scheme", ["file", "dav", "davs"])
def test_many_small_files_with_bounded_concurrency(
    webdav: WebDAV, tmp_path: Path, scheme: str
) -> None:
    # davix opens a new TLS connection for every davs request (about 40 ms each here), so
    # the https leg moves fewer files; http and file:// move 200.
    count = SMALL_FILES[scheme]
    sources = tmp_path / "small"
    sources.mkdir()
    sizes = [0, 1, *(int.from_bytes(os.urandom(2), "little") for _ in range(count - 2))]
    for i, size in enumerate(sizes):
        (sources / f"f{i:03d}.dat").write_bytes(os.urandom(size))
    base = remote(webdav, scheme, f"many-{uuid4().hex[:8]}", tmp_path)

    in_flight = 0
    peak = 0
    lock = threading.Lock()

    class Counting(Storage):
        def copy(self, src: Any, dst: Any, **kwargs: Any) -> TransferResult:
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            try:
                return super().copy(src, dst, **kwargs)
            finally:
                with lock:
                    in_flight -= 1

    reports: list[TransferProgress] = []
    store = Counting(retries=1, backoff=0.1)
    pairs = [(str(p), f"{base}/{p.name}") for p in sorted(sources.iterdir())]
    results = store.copy_many(pairs, max_in_flight=6, progress=reports.append)

    assert [r.dst for r in results] == [d for _, d in pairs]  # in the order given
    assert 2 <= peak <= 6
    per_file = [r for r in reports if not r.partial]
    assert len(per_file) == count
    assert [r.files_done for r in per_file] == list(range(1, count + 1))
    assert reports[-1].bytes_done == reports[-1].bytes_total == sum(sizes)
    assert all(a.bytes_done <= b.bytes_done for a, b in itertools.pairwise(reports))
    assert store.listdir(base) == sorted(p.name for p in sources.iterdir())
    for p in sources.iterdir():
        assert local_of(webdav, f"{base}/{p.name}").read_bytes() == p.read_bytes()

    # and back down again, into a fresh directory
    back = tmp_path / "back"
    down = store.copy_many([(d, str(back / Path(d).name)) for _, d in pairs], max_in_flight=4)
    assert len(down) == count
    for p in sources.iterdir():
        assert (back / p.name).read_bytes() == p.read_bytes()
    assert leftovers(back) == []


def test_copy_many_reports_failures_and_finishes_the_rest(
    webdav: WebDAV, store: Storage, tmp_path: Path
) -> None:
    good = tmp_path / "good.txt"
    good.write_text("good")
    base = webdav.dav_url(f"partial-{uuid4().hex[:8]}")
    missing = webdav.dav_url(f"missing-{uuid4().hex[:8]}.txt")
    pairs = [
        (str(good), f"{base}/a.txt"),
        (missing, str(tmp_path / "never.txt")),
        (str(good), f"{base}/b.txt"),
    ]
    with pytest.raises(TransfersFailed) as failed:
        store.copy_many(pairs, max_in_flight=2)
    assert "1 of 3 transfer(s) failed" in str(failed.value)
    assert missing in str(failed.value)
    [(src, _dst, err)] = failed.value.failures
    assert src == missing and isinstance(err, StorageNotFound)
    assert len(failed.value.results) == 2
    assert store.listdir(base) == ["a.txt", "b.txt"]
    assert not (tmp_path / "never.txt").exists()

    # fail_fast: the first failure stops what has not started yet
    pairs = [(missing, str(tmp_path / "never.txt"))] + [
        (str(good), f"{base}/fast-{i}.txt") for i in range(20)
    ]
    with pytest.raises(TransfersFailed) as stopped:
        store.copy_many(pairs, max_in_flight=1, fail_fast=True)
    assert len(stopped.value.failures) == 1 and len(stopped.value.results) < 20


# --- retries, interrupted transfers, atomicity ----------------------------------------------


def kill_when(
    webdav: WebDAV, ready: Callable[[], bool], restart_after: float | None
) -> threading.Thread:
    """A thread that SIGKILLs both servers once ``ready()``, then (optionally) restarts them."""

    def run() -> None:
        deadline = time.monotonic() + 60
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.002)
        webdav.stop(kill=True)
        if restart_after is not None:
            time.sleep(restart_after)
            webdav.start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def growing(directory: Path, prefix: str, at_least: int = 4 * 1024 * 1024) -> Callable[[], bool]:
    """True once a temporary ``<prefix>.part-*`` file in ``directory`` holds some data."""

    def check() -> bool:
        try:
            return any(
                p.name.startswith(prefix + ".part-") and p.stat().st_size >= at_least
                for p in directory.iterdir()
            )
        except FileNotFoundError:
            return False

    return check


@pytest.fixture
def running_webdav(webdav: WebDAV) -> Iterator[WebDAV]:
    """The webdav fixture, guaranteed running again after a test that kills it."""
    yield webdav
    if not webdav.running:
        webdav.start()


@pytest.mark.slow
def test_upload_survives_a_server_crash(running_webdav: WebDAV, big_file: tuple[Path, str]) -> None:
    webdav = running_webdav
    source, digest = big_file
    rel = f"crash-up-{uuid4().hex[:8]}"
    (webdav.root / rel).mkdir()
    url = webdav.dav_url(f"{rel}/big.bin")
    store = Storage(retries=8, backoff=0.3, backoff_max=2)
    killer = kill_when(webdav, growing(webdav.root / rel, "big.bin"), restart_after=0.5)

    result = store.copy(source, url)
    killer.join(60)

    assert result.attempts >= 2 and store.retry_count >= 1
    assert result.size == BIG and result.atomic
    assert sha256(webdav.path(f"{rel}/big.bin")) == digest
    assert leftovers(webdav.root / rel) == []  # the retry reused and renamed the temp name


@pytest.mark.slow
def test_download_survives_a_server_crash(
    running_webdav: WebDAV, big_file: tuple[Path, str], tmp_path: Path
) -> None:
    webdav = running_webdav
    source, digest = big_file
    rel = f"crash-down-{uuid4().hex[:8]}/big.bin"
    url = webdav.dav_url(rel)
    Storage().copy(source, url)
    store = Storage(retries=8, backoff=0.3, backoff_max=2)
    target = tmp_path / "down"
    target.mkdir()
    killer = kill_when(webdav, growing(target, "big.bin"), restart_after=0.5)

    result = store.copy(url, target / "big.bin")
    killer.join(60)

    assert result.attempts >= 2 and store.retry_count >= 1
    assert sha256(target / "big.bin") == digest
    assert leftovers(target) == []


@pytest.mark.slow
def test_killed_upload_never_leaves_a_file_under_the_final_name(
    running_webdav: WebDAV, big_file: tuple[Path, str], tmp_path: Path
) -> None:
    webdav = running_webdav
    source, _digest = big_file
    rel = f"killed-{uuid4().hex[:8]}"
    (webdav.root / rel).mkdir()
    url = webdav.dav_url(f"{rel}/big.bin")
    killer = kill_when(webdav, growing(webdav.root / rel, "big.bin"), restart_after=None)

    with pytest.raises(StorageUnavailable) as lost:
        Storage(retries=0).copy(source, url)
    killer.join(60)
    assert url in str(lost.value)
    assert not (webdav.root / rel / "big.bin").exists()
    # whatever the dead server kept is a temporary name, never the result
    assert all(is_temp_name(name) for name in os.listdir(webdav.root / rel))
    webdav.start()
    assert not Storage().exists(url)

    # the same for a download: the local final name never appears, the temp file is removed
    Storage().copy(source, url)
    target = tmp_path / "down"
    target.mkdir()
    killer = kill_when(webdav, growing(target, "big.bin"), restart_after=None)
    with pytest.raises(StorageUnavailable):
        Storage(retries=0).copy(url, target / "big.bin")
    killer.join(60)
    assert os.listdir(target) == []


@pytest.mark.slow
def test_cancel_stops_transfers_in_flight(webdav: WebDAV, big_file: tuple[Path, str]) -> None:
    """What Ctrl-C in copy_many does: gfal2 aborts the moving transfers at once."""
    source, _digest = big_file
    rel = f"cancel-{uuid4().hex[:8]}"
    (webdav.root / rel).mkdir()
    store = Storage(retries=3)
    ready = growing(webdav.root / rel, "big.bin", at_least=1024 * 1024)

    def cancel_soon() -> None:
        deadline = time.monotonic() + 60
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.002)
        store.cancel()

    canceller = threading.Thread(target=cancel_soon, daemon=True)
    canceller.start()
    started = time.monotonic()
    with pytest.raises(TransfersFailed) as stopped:
        store.copy_many([(str(source), webdav.dav_url(f"{rel}/big.bin"))])
    canceller.join(10)
    assert time.monotonic() - started < 10
    [(_src, _dst, err)] = stopped.value.failures
    assert "cancelled" in str(err) and store.retry_count == 0  # a cancel is not retried
    assert not (webdav.root / rel / "big.bin").exists()
    assert store.exists(webdav.dav_url(rel))  # the Storage still works afterwards


def test_unreachable_endpoint_is_retried_then_reported(tmp_path: Path) -> None:
    port = free_port()
    delays: list[float] = []
    store = Storage(retries=3, backoff=0.5, backoff_max=1.5, sleep=delays.append)
    url = f"dav://127.0.0.1:{port}/nowhere/x.bin"
    with pytest.raises(StorageUnavailable) as down:
        store.stat(url)
    message = str(down.value)
    assert url in message and "after 4 attempts" in message and "\n" not in message
    assert len(delays) == 3 and store.retry_count == 3
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0 and 0.75 <= delays[2] <= 1.5


def test_timeout_when_the_server_hangs(running_webdav: WebDAV, tmp_path: Path) -> None:
    webdav = running_webdav
    proc = webdav.http_process.proc
    assert proc is not None
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 1000)
    store = Storage(op_timeout=2, transfer_timeout=3, retries=0)
    os.kill(proc.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        started = time.monotonic()
        with pytest.raises(StorageTimeout) as hung:
            store.stat(webdav.dav_url("anything"))
        assert time.monotonic() - started < 15
        assert webdav.dav_url("anything") in str(hung.value)
        with pytest.raises(StorageTimeout):
            store.copy(small, webdav.dav_url(f"hang-{uuid4().hex[:8]}/small.bin"))
    finally:
        os.kill(proc.pid, signal.SIGCONT)


# --- verification ---------------------------------------------------------------------------


def test_verify_detects_a_corrupted_copy(webdav: WebDAV, store: Storage, tmp_path: Path) -> None:
    original = tmp_path / "original.bin"
    original.write_bytes(os.urandom(100_000))
    same_size = tmp_path / "same-size.bin"
    data = bytearray(original.read_bytes())
    data[50_000] ^= 0xFF
    same_size.write_bytes(bytes(data))

    assert store.verify(original, original) == ("adler32", adler32(original))
    with pytest.raises(ChecksumMismatch) as bad_sum:
        store.verify(original, same_size)
    assert str(same_size) in str(bad_sum.value) and str(original) in str(bad_sum.value)

    url = webdav.dav_url(f"verify-{uuid4().hex[:8]}/copy.bin")
    store.copy(original, url)
    assert store.verify(original, url) == ("size", None)  # wsgidav: no checksums
    with webdav.path(url).open("ab") as fh:
        fh.write(b"tail")
    with pytest.raises(SizeMismatch) as bad_size:
        store.verify(original, url)
    assert url in str(bad_size.value) and "100004 bytes" in str(bad_size.value)


class Corrupting(Storage):
    """Damages what gfal2 just wrote, on the first ``times`` copies (a faulty transfer)."""

    def __init__(self, webdav: WebDAV, times: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.webdav = webdav
        self.times = times
        self.written: list[str] = []

    def _filecopy(self, src: str, dst: str, timeout: float, shown: str) -> None:
        super()._filecopy(src, dst, timeout, shown)
        self.written.append(dst)
        if self.times > 0:
            self.times -= 1
            path = local_of(self.webdav, dst)
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01  # same size: only a checksum can tell
            path.write_bytes(bytes(data))


@pytest.mark.parametrize("scheme", ["file", "dav"])
def test_corrupted_upload_is_detected(webdav: WebDAV, tmp_path: Path, scheme: str) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(300_000))
    url = remote(webdav, scheme, f"corrupt-{uuid4().hex[:8]}/out.bin", tmp_path)
    final = local_of(webdav, url)
    if scheme == "dav":
        # wsgidav cannot checksum: make the damage visible to a size check as well
        class Truncating(Corrupting):
            def _filecopy(self, src: str, dst: str, timeout: float, shown: str) -> None:
                Storage._filecopy(self, src, dst, timeout, shown)
                if self.times > 0:
                    self.times -= 1
                    path = local_of(self.webdav, dst)
                    path.write_bytes(path.read_bytes()[:-10])

        store: Corrupting = Truncating(webdav, times=1, retries=0)
        expected: type[VerificationError] = SizeMismatch
    else:
        store = Corrupting(webdav, times=1, retries=0)
        expected = ChecksumMismatch

    with pytest.raises(expected) as caught:
        store.copy(source, url)
    assert url.rsplit("/", 1)[0] in str(caught.value)
    assert not final.exists()  # never renamed into place
    assert leftovers(final.parent) == []  # and the damaged temp file is gone

    store.times = 1
    store.retries = 2
    result = store.copy(source, url)  # a corrupted attempt is retried
    assert result.attempts == 2
    assert final.read_bytes() == source.read_bytes()


# --- temporaries: a failed copy removes its own, a finished one those of dead copies ---------


class _FailingAfterWrite:
    """A real gfal2 context whose ``filecopy`` writes the data to the temporary and then
    raises ``fail()`` (Ctrl-C or an error arriving at the end of the transfer); its
    ``unlink`` raises ``unlink_error`` when one is given."""

    def __init__(self, ctx: Any, fail: Callable[[], BaseException], unlink_error: Exception | None):
        self._ctx, self._fail, self._unlink_error = ctx, fail, unlink_error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def filecopy(self, params: Any, src: str, dst: str) -> None:
        self._ctx.filecopy(params, src, dst)
        if is_temp_name(dst.rsplit("/", 1)[-1]):
            raise self._fail()

    def unlink(self, url: str) -> None:
        if self._unlink_error is not None:
            raise self._unlink_error
        self._ctx.unlink(url)


FAILURES: dict[str, tuple[Callable[[], BaseException], type[BaseException]]] = {
    "ctrl-c": (KeyboardInterrupt, KeyboardInterrupt),
    "permission denied": (lambda: gfal2.GError("denied", errno.EACCES), StoragePermissionDenied),
    "connection lost": (lambda: gfal2.GError("lost", errno.ECONNRESET), StorageUnavailable),
}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("scheme", ["file", "dav"])
def test_a_failed_or_interrupted_copy_removes_its_temporary(
    webdav: WebDAV, tmp_path: Path, scheme: str, failure: str
) -> None:
    fail, expected = FAILURES[failure]
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(300_000))
    url = remote(webdav, scheme, f"failed-{uuid4().hex[:8]}/data.bin", tmp_path)
    store = Storage(
        retries=1, sleep=lambda _s: None,
        context_factory=lambda: _FailingAfterWrite(webdav.gfal2_context(), fail, None),
    )  # fmt: skip
    with pytest.raises(expected):
        store.copy(source, url)
    directory = local_of(webdav, url).parent
    assert directory.exists()  # the data was written (to a temporary) ...
    assert os.listdir(directory) == []  # ... and removed again


@pytest.mark.parametrize("scheme", ["file", "dav"])
def test_a_failing_clean_up_never_hides_the_error_and_the_next_copy_cleans(
    webdav: WebDAV, tmp_path: Path, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(100_000))
    url = remote(webdav, scheme, f"masked-{uuid4().hex[:8]}/data.bin", tmp_path)
    directory = local_of(webdav, url).parent
    for unlink_error in (RuntimeError("unlink broke"), gfal2.GError("server gone", errno.EIO)):
        store = Storage(
            retries=0,
            context_factory=lambda e=unlink_error: _FailingAfterWrite(  # type: ignore[misc]
                webdav.gfal2_context(), lambda: gfal2.GError("denied", errno.EACCES), e
            ),
        )
        with pytest.raises(StoragePermissionDenied, match="denied"):
            store.copy(source, url)
    assert "could not remove" in caplog.text and "unlink broke" in caplog.text
    left = leftovers(directory)
    assert len(left) == 2 and all(is_temp_name(name) for name in left)

    # the next copy to the same destination (a retry of the token) takes them away
    result = Storage().copy(source, url)
    assert os.listdir(directory) == ["data.bin"]
    assert "removed 2 temporary file(s) of earlier copies" in result.note
    assert local_of(webdav, url).read_bytes() == source.read_bytes()


@pytest.mark.parametrize("scheme", ["file", "dav", "davs"])
def test_remove_stale_parts(webdav: WebDAV, store: Storage, tmp_path: Path, scheme: str) -> None:
    base = remote(webdav, scheme, f"stale-{uuid4().hex[:8]}", tmp_path)
    url = f"{base}/out.txt"
    directory = local_of(webdav, url).parent
    assert store.remove_stale_parts(url) == []  # no directory yet: nothing to remove
    directory.mkdir(parents=True)
    stale = ["out.txt.part-0123abcd", "out.txt.part-deadbeef"]
    kept = [
        "out.txt",  # the result itself
        "out.txt.partial",  # not a temporary name
        "out.txt.part-xyz",  # not 8 hex digits
        "out.txt.part-0123abcd.part-00000000",  # a temporary of another destination
        "other.txt.part-0123abcd",  # another destination's
        "xout.txt.part-0123abcd",  # a name that only ends like ours
    ]
    for name in stale + kept:
        (directory / name).write_text(name)
    removed = store.remove_stale_parts(url)
    assert sorted(removed) == [f"{url}.part-0123abcd", f"{url}.part-deadbeef"]
    assert sorted(os.listdir(directory)) == sorted(kept)
    assert store.remove_stale_parts(url) == []

    # a finished atomic copy does the same for its destination, and only for it
    for name in stale:
        (directory / name).write_text(name)
    (directory / "other.txt.part-deadbeef").write_text("other")
    source = tmp_path / "out.txt"
    source.write_text("result\n")
    result = store.copy(source, url)
    assert result.atomic and "removed 2 temporary file(s)" in result.note
    assert sorted(os.listdir(directory)) == sorted([*kept, "other.txt.part-deadbeef"])
    assert (directory / "out.txt").read_text() == "result\n"
    # no clean-up when asked not to
    (directory / stale[0]).write_text("x")
    store.copy(source, url, clean_parts=False)
    assert stale[0] in os.listdir(directory)


@pytest.mark.parametrize("scheme", ["file", "dav"])
def test_copy_many_removes_stale_parts_with_one_listing_per_directory(
    webdav: WebDAV, store: Storage, tmp_path: Path, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = remote(webdav, scheme, f"stale-many-{uuid4().hex[:8]}", tmp_path)
    directory = local_of(webdav, base)
    directory.mkdir(parents=True)
    sources = []
    for i in range(5):
        (directory / f"f{i}.txt.part-{i:08x}").write_text("left by a killed copy")
        sources.append(tmp_path / f"f{i}.txt")
        sources[-1].write_text(f"file {i}\n")
    (directory / "other.txt.part-00000000").write_text("not ours")
    listed: list[str] = []
    real_listdir = store.listdir

    def counting_listdir(url: Any) -> list[str]:
        listed.append(str(url))
        return real_listdir(url)

    monkeypatch.setattr(store, "listdir", counting_listdir)
    store.copy_many([(src, f"{base}/{src.name}") for src in sources])
    assert sorted(os.listdir(directory)) == sorted(
        [src.name for src in sources] + ["other.txt.part-00000000"]
    )
    assert listed == [base]


def test_remove_stale_parts_with_special_names(
    webdav: WebDAV, store: Storage, tmp_path: Path
) -> None:
    """Percent-encoded names on WebDAV; a query string URL (no temporaries are made) is left."""
    rel = f"stale-{uuid4().hex[:8]}"
    (webdav.root / rel).mkdir()
    (webdav.root / rel / "a b.txt.part-0123abcd").write_text("x")
    url = webdav.dav_url(f"{rel}/a%20b.txt")
    assert store.remove_stale_parts(url) == [f"{url}.part-0123abcd"]
    assert os.listdir(webdav.root / rel) == []
    assert store.remove_stale_parts(webdav.http_url(f"{rel}/x?version=2")) == []


def test_bytes_written_counts_only_the_threads_of_its_batch(tmp_path: Path) -> None:
    """copy_many's progress: batch ``gridlrt-copy-1`` must not count ``gridlrt-copy-12``'s
    threads (nor a thread whose name merely starts the same)."""
    store = Storage()
    sizes = {
        "gridlrt-copy-1_0": 1,
        "gridlrt-copy-1_3": 10,
        "gridlrt-copy-12_0": 100,
        "gridlrt-copy-1_x": 1000,
        "gridlrt-copy-10": 10_000,
        "gridlrt-copy-1": 100_000,
    }
    for index, (thread, size) in enumerate(sizes.items()):
        path = tmp_path / f"f{index}"
        path.write_bytes(b"x" * size)
        store._writing[thread] = path
    assert store._bytes_written("gridlrt-copy-1") == 11
    assert store._bytes_written("gridlrt-copy-12") == 100


# --- namespace operations and typed errors -------------------------------------------------


@pytest.mark.parametrize("scheme", ["file", "dav", "davs"])
def test_namespace_operations(webdav: WebDAV, store: Storage, tmp_path: Path, scheme: str) -> None:
    base = remote(webdav, scheme, f"ns-{uuid4().hex[:8]}", tmp_path)
    assert not store.exists(base)
    store.mkdir(f"{base}/a/b/c")  # parents
    store.mkdir(f"{base}/a/b/c")  # and again: fine
    with pytest.raises(StorageExists):
        store.mkdir(f"{base}/a", parents=False)
    with pytest.raises(StorageNotFound):
        store.mkdir(f"{base}/x/y", parents=False)
    info = store.stat(f"{base}/a")
    assert info.is_dir and info.size == 0 and info.mtime > 1e9

    small = tmp_path / "small.txt"
    small.write_text("hello")
    store.copy(small, f"{base}/a/z.txt")
    store.copy(small, f"{base}/a/m.txt")
    assert store.listdir(f"{base}/a") == ["b", "m.txt", "z.txt"]
    assert store.stat(f"{base}/a/z.txt").size == 5 and not store.stat(f"{base}/a/z.txt").is_dir

    with pytest.raises(InputError, match="must name a file"):
        store.copy(small, f"{base}/a/")
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    store.copy(script, f"{base}/a/run.sh")
    store.copy(f"{base}/a/run.sh", tmp_path / "run-back.sh")
    mode = (tmp_path / "run-back.sh").stat().st_mode & 0o777
    if scheme == "file":  # a local executable source stays executable
        assert local_of(webdav, f"{base}/a/run.sh").stat().st_mode & 0o777 == 0o755
        assert mode == 0o755
    else:  # WebDAV keeps no modes: a plain 0644 file
        assert mode == 0o644
    store.delete(f"{base}/a/run.sh")
    with pytest.raises(StorageExists) as exists:
        store.copy(small, f"{base}/a/z.txt", overwrite=False)
    assert f"{base}/a/z.txt" in str(exists.value)

    store.rename(f"{base}/a/m.txt", f"{base}/a/z.txt")  # replaces the destination
    assert store.listdir(f"{base}/a") == ["b", "z.txt"]

    with pytest.raises(StorageError, match="not empty"):
        store.delete(f"{base}/a")
    assert store.delete(f"{base}/a/z.txt") is True
    with pytest.raises(StorageNotFound):
        store.delete(f"{base}/a/z.txt")
    assert store.delete(f"{base}/a/z.txt", missing_ok=True) is False
    assert store.delete(f"{base}/a", recursive=True) is True
    assert store.listdir(base) == []


def test_checksums(webdav: WebDAV, store: Storage, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(123_456))
    assert store.checksum(path) == adler32(path)
    url = webdav.dav_url(f"sum-{uuid4().hex[:8]}/data.bin")
    store.copy(path, url)
    assert store.checksum(url) is None  # wsgidav: ENOSYS
    assert store.checksum(url) is None  # remembered for the endpoint
    with pytest.raises(StorageNotFound):
        store.checksum(tmp_path / "missing.bin")


def test_missing_files_are_typed_and_named(webdav: WebDAV, store: Storage, tmp_path: Path) -> None:
    for url in (to_url(tmp_path / "missing.bin"), webdav.dav_url("missing-dir/missing.bin")):
        with pytest.raises(StorageNotFound) as stat_err:
            store.stat(url)
        assert url in str(stat_err.value) and "no such file" in str(stat_err.value)
        with pytest.raises(StorageNotFound) as copy_err:
            store.copy(url, tmp_path / "never.bin")
        assert url in str(copy_err.value)
        assert not (tmp_path / "never.bin").exists()
        assert leftovers(tmp_path) == []


def test_permission_denied_is_typed(store: Storage, tmp_path: Path) -> None:
    """We are root, so file modes do not stop us; sysfs does (EACCES/EPERM from the kernel)."""
    small = tmp_path / "small.txt"
    small.write_text("x")
    with pytest.raises(StoragePermissionDenied) as denied:
        store.copy(small, "file:///sys/gridlrt-test.txt", atomic=False)
    assert "file:///sys/gridlrt-test.txt" in str(denied.value)
    assert "permission denied" in str(denied.value)
    with pytest.raises(StoragePermissionDenied, match="not permitted"):
        store.mkdir("file:///sys/kernel/gridlrt-test/x")


def test_passwords_never_appear_in_messages(webdav: WebDAV, store: Storage) -> None:
    url = f"dav://alice:s3cret@127.0.0.1:{webdav.port}/missing-{uuid4().hex[:8]}"
    with pytest.raises(StorageError) as caught:
        store.stat(url)
    assert "s3cret" not in str(caught.value)
    assert "alice:***@" in str(caught.value)


def test_protocols(store: Storage, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedProtocol, match=r"ftp:// is not supported"):
        store.stat("ftp://example.org/x")
    with pytest.raises(UnsupportedProtocol):
        store.copy(tmp_path / "a", "s4://bucket/b")
    # grid protocols pass through to gfal2's own plugins unchanged
    surl = "srm://srm.grid.sara.nl:8443/srm/managerv2?SFN=/pnfs/grid.sara.nl/data/lofar/x.tar"
    assert to_url(surl) == surl
    assert temp_url(surl) is not None and temp_url(surl).startswith(surl + ".part-")  # type: ignore[union-attr]
    assert to_url("root://eos.example.org//eos/x") == "root://eos.example.org//eos/x"
    assert temp_url("https://lofar-download.example.org/get?surl=srm://x") is None
    assert to_url(Path("/tmp/a b").as_uri()) == "file:///tmp/a b"  # gfal2 wants it literal
    # a real call through the gsiftp plugin: a closed port is a typed, one-line error
    store_once = Storage(retries=0)
    with pytest.raises(StorageUnavailable) as refused:
        store_once.stat(f"gsiftp://127.0.0.1:{free_port()}/x")
    assert "\n" not in str(refused.value)
    # and srm without a proxy says so
    with pytest.raises(StoragePermissionDenied, match="voms-proxy-init"):
        store_once.stat(f"srm://127.0.0.1:{free_port()}/srm/managerv2?SFN=/pnfs/x")


def test_getxattr_and_bring_online_pass_through(store: Storage, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    with pytest.raises(StorageError, match=r"user\.status"):
        store.getxattr(path, "user.status")  # local files have no dCache locality
    # file:// has no tape: gfal2 answers per URL, and so do we
    urls = [to_url(path), to_url(tmp_path / "g.bin")]
    result = store.bring_online(urls, pin_time=60, timeout=30)
    assert set(result.errors) == set(urls) and not result.all_online
    assert "protocol not supported" in result.errors[urls[0]]
    with pytest.raises(InputError):
        store.bring_online(urls, pin_time=0, timeout=30)
    assert store.bring_online([], 60, 30).online == {}


def test_bring_online_arguments_and_answers() -> None:
    """What reaches gfal2 and how its answers are read (no SRM endpoint here)."""
    calls: list[tuple[Any, ...]] = []

    class FakeContext:
        def bring_online(self, *args: Any) -> tuple[list[Any], str]:
            calls.append(("bring_online", *args))
            return [1, 0, gfal2.GError("no such file", errno.ENOENT)], "token-42"

        def bring_online_poll(self, *args: Any) -> list[Any]:
            calls.append(("bring_online_poll", *args))
            return [1, gfal2.GError("still queued", errno.EAGAIN), 1]

        def cancel(self) -> None:
            pass

    store = Storage(context_factory=FakeContext)
    surls = [f"srm://srm.example.org:8443/pnfs/example.org/data/f{i}" for i in range(3)]
    first = store.bring_online(surls, pin_time=3600, timeout=86400)
    assert calls[0] == ("bring_online", surls, 3600, 86400, True)
    assert first.token == "token-42"
    assert first.online == {surls[0]: True, surls[1]: False}
    missing = storage_error("bring_online", surls[2], errno.ENOENT, "no such file")
    assert isinstance(missing, StorageNotFound)
    assert first.errors[surls[2]] == str(missing)
    assert "no such file" in first.errors[surls[2]]
    polled = store.bring_online_poll(surls, first.token)
    assert calls[1] == ("bring_online_poll", surls, "token-42")
    assert polled.online == {surls[0]: True, surls[1]: False, surls[2]: True}
    assert polled.errors == {}
    store.bring_online(surls[:1], 60, 120, asynchronous=False)
    assert calls[2] == ("bring_online", surls[:1], 60, 120, False)
