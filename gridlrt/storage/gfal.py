"""The adapter over gfal2: :class:`Storage` is the only place in gridlrt that calls gfal2.

What it adds to gfal2:

* typed, one-line errors naming the URL and the cause (:mod:`gridlrt.storage.errors`);
* retries with exponential backoff and jitter (:mod:`gridlrt.retry`) on transient failures
  (timeouts, refused or lost connections, a copy that fails verification), never on "no
  such file" or "permission denied";
* verified copies: sizes always, adler32 where both ends answer it (file:// does, many
  WebDAV servers do not: then the result says ``verified="size"``);
* atomic copies: the data goes to ``<dst>.part-<hex>`` next to the destination, is verified,
  and only then renamed to its final name, so a reader never takes a half-written file for a
  result. Where the endpoint cannot rename, the copy is made in place and the result says so;
* many-file transfers with a bounded number in flight and a progress callback;
* bearer tokens (e.g. dCache macaroons) per URL prefix (:meth:`Storage.add_bearer`): handed
  to gfal2 as a ``BEARER`` credential of each context, so the token is sent as
  ``Authorization: Bearer ...`` to those URLs only, and never appears in a URL, a log line,
  an error message or a command line;
* the signal mask: creating a gfal2 context blocks almost every signal (SIGTERM, SIGINT,
  SIGCHLD, ...) in the calling thread, because the gridftp/srm plugins initialise globus; a
  child process started afterwards would inherit that mask and ignore SIGTERM. Every context
  here is created with the caller's mask saved and restored (:func:`new_context`).

gfal2 contexts are not shared between threads at the same time: each operation borrows a
context from a small pool (one per thread in flight) and gives it back afterwards.
X509_CERT_DIR (and the proxy in X509_USER_PROXY) are read when a context is created.

SRM, GridFTP and xrootd URLs are passed to gfal2 unchanged; they cannot be exercised on a
machine without a grid, so only their URL handling is tested here.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import signal
import stat as statmodule
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from gridlrt import __version__
from gridlrt.config import redact_url
from gridlrt.errors import (
    ChecksumMismatch,
    InputError,
    SizeMismatch,
    StorageError,
    StorageExists,
    StorageNotFound,
    StorageNotSupported,
    TransfersFailed,
    VerificationError,
)
from gridlrt.retry import Backoff, retry
from gridlrt.storage.errors import is_transient, storage_error
from gridlrt.storage.models import (
    BringOnlineResult,
    StatInfo,
    TransferProgress,
    TransferResult,
    Verified,
)
from gridlrt.storage.urls import (
    TEMP_MARKER,
    endpoint,
    is_temp_name,
    local_path,
    scheme_of,
    temp_url,
    to_url,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Location = str | PathLike[str]
ProgressCallback = Callable[[TransferProgress], None]

DEFAULT_TRANSFER_TIMEOUT = 3600.0
DEFAULT_OP_TIMEOUT = 120.0
DEFAULT_RETRIES = 3
CHECKSUM_TYPE = "ADLER32"
COPY_BUFFER = 1024 * 1024
PROGRESS_INTERVAL = 0.5
_BATCHES = itertools.count(1)


def _transient(exc: Exception) -> str | None:
    """The one-line error of a storage failure worth a retry, else None."""
    return str(exc) if isinstance(exc, StorageError) and is_transient(exc) else None


class _Stop(Exception):
    """Leaves copy_many's wait loop early (fail_fast)."""


def gfal2_module() -> Any:
    """The gfal2 binding, or a :class:`StorageError` that says how to get it."""
    try:
        import gfal2
    except ImportError as exc:
        raise StorageError(
            "the gfal2 Python binding is not available (Debian: apt-get install python3-gfal2 "
            "gfal2-plugin-file gfal2-plugin-http; `gridlrt doctor` shows what is missing)"
        ) from exc
    return gfal2


def new_context(op_timeout: float = DEFAULT_OP_TIMEOUT) -> Any:
    """A new gfal2 context; the calling thread's signal mask is the same before and after.

    ``op_timeout`` (seconds) bounds namespace operations (stat, list, mkdir, delete, rename,
    checksum queries): gfal2's ``CORE:NAMESPACE_TIMEOUT`` and the http plugin's
    ``OPERATION_TIMEOUT``.
    """
    gfal2 = gfal2_module()
    gfal2_log = logging.getLogger("gfal2")
    if gfal2_log.level == logging.NOTSET:  # gfal2/davix at INFO log every HTTP header
        gfal2_log.setLevel(logging.WARNING)
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        ctx = gfal2.creat_context()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
    seconds = max(1, int(op_timeout))
    options = (
        ("CORE", "NAMESPACE_TIMEOUT", seconds),
        ("HTTP PLUGIN", "OPERATION_TIMEOUT", seconds),
        # The buffer of gfal2's streamed copies. Measured here (1 GiB downloads from a local
        # WebDAV server, interleaved, page cache flushed before each): gfal2's default 4 MiB
        # ~350 MB/s, 1 MiB ~550 MB/s (curl ~520); uploads the same either way.
        ("CORE", "COPY_BUFFERSIZE", COPY_BUFFER),
    )
    for group, key, value in options:
        try:
            ctx.set_opt_integer(group, key, value)
        except gfal2.GError as exc:  # a plugin that is not installed has no option group
            log.debug("gfal2 option %s:%s not set: %s", group, key, exc.message)
    # gfal2 asks a https endpoint for a bearer token (macaroon) before every operation, for
    # third-party copies. gridlrt streams through this node and does not need one: off, it
    # saves a TLS round trip per operation and a warning per URL on endpoints without them.
    with contextlib.suppress(gfal2.GError):
        ctx.set_opt_boolean("HTTP PLUGIN", "RETRIEVE_BEARER_TOKEN", False)
    with contextlib.suppress(gfal2.GError, AttributeError):
        ctx.set_user_agent("gridlrt", __version__)
    return ctx


#: Schemes gfal2's http plugin treats alike; a credential set for one prefix is looked up by
#: the URL as written, so it is set for each spelling.
_SAME_SERVER = {"https": "davs", "davs": "https", "http": "dav", "dav": "http"}


def bearer_prefixes(prefix: str) -> list[str]:
    """The URL prefixes a bearer token for ``prefix`` is set for: ``prefix`` itself (with a
    ``/`` after the host when it names only a server) and its dav(s)/http(s) twin. Only
    http(s) and dav(s) URLs take bearer tokens (:class:`InputError` otherwise)."""
    parts = urlsplit(prefix)
    if parts.scheme.lower() not in _SAME_SERVER or not parts.netloc:
        raise InputError(
            f"a bearer token needs an http(s):// or dav(s):// URL prefix with a host, "
            f"not {redact_url(prefix)!r}"
        )
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise InputError(
            f"bearer token prefix {redact_url(prefix)!r}: give only scheme://host[:port]/path"
        )
    scheme = parts.scheme.lower()
    rest = f"{parts.netloc.lower()}{parts.path or '/'}"
    return [f"{scheme}://{rest}", f"{_SAME_SERVER[scheme]}://{rest}"]


def _local_file_mode(src: str, dst: str) -> None:
    """gfal2's file plugin creates every file 0755; make a local copy 0644, or 0755 only when
    its local source is executable."""
    target = local_path(dst)
    if target is None:
        return
    source = local_path(src)
    executable = source is not None and os.access(source, os.X_OK) and source.is_file()
    with contextlib.suppress(OSError):
        target.chmod(0o755 if executable else 0o644)


def _label(urls: list[str]) -> str:
    """How a request about many URLs is named in an error message."""
    return urls[0] if len(urls) == 1 else f"{urls[0]} (and {len(urls) - 1} more)"


def _in_pool(thread_name: str, prefix: str) -> bool:
    """True if ``thread_name`` is a thread of the pool made with ``thread_name_prefix=prefix``
    (``<prefix>_<n>``)."""
    head, underscore, number = thread_name.rpartition("_")
    return head == prefix and bool(underscore) and number.isdigit()


def _same_checksum(a: str, b: str) -> bool:
    """Checksums as hex strings, compared case- and leading-zero-insensitively."""
    try:
        return int(a, 16) == int(b, 16)
    except ValueError:
        return a.strip().lower() == b.strip().lower()


class Storage:
    """Files on any storage gfal2 reaches: ``file://``, ``dav(s)://``, ``http(s)://``, and
    ``srm://``, ``gsiftp://``, ``root://`` passed through.

    Every method takes URLs (a local path is accepted and becomes ``file:///abs``) and
    raises a :class:`gridlrt.errors.StorageError` subclass on failure.

    :param transfer_timeout: default seconds a single copy may take (gfal2 transfer timeout).
    :param op_timeout: seconds a namespace operation (stat, list, ...) may take.
    :param retries: default extra attempts after a transient failure.
    :param backoff: first retry delay in seconds; doubled each time, times a jitter in
        [0.5, 1) (:class:`gridlrt.retry.Backoff`).
    :param backoff_max: the longest delay between two attempts.
    :param context_factory: makes gfal2 contexts (tests may pass a stand-in).
    :param sleep: how to wait between attempts (tests may record instead).
    :param bearer: URL prefix -> bearer token (e.g. a dCache macaroon), as
        :meth:`add_bearer` takes them.
    """

    def __init__(
        self,
        *,
        transfer_timeout: float = DEFAULT_TRANSFER_TIMEOUT,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        context_factory: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        bearer: Mapping[str, str] | None = None,
    ) -> None:
        if retries < 0:
            raise InputError(f"retries must be 0 or more, not {retries}")
        self.transfer_timeout = transfer_timeout
        self.op_timeout = op_timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._factory = context_factory or (lambda: new_context(op_timeout))
        self._sleep = sleep
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._busy: list[Any] = []
        self._no_checksum: set[tuple[str, str]] = set()
        self._no_rename: set[str] = set()
        self._writing: dict[str, Path] = {}  # thread name -> local file gfal2 is writing
        self.retry_count = 0  # transient failures retried over this object's life
        self._bearers: dict[str, str] = {}  # URL prefix -> token (never logged or shown)
        self._bearer_generation = 0
        self._context_generation: dict[int, int] = {}  # id(context) -> bearers it has
        for prefix, token in (bearer or {}).items():
            self.add_bearer(prefix, token)
        # One context right away: errors about gfal2 itself surface at construction, and
        # the signal mask is settled before any child process is started.
        self._release(self._acquire())

    # -- contexts ---------------------------------------------------------------------------

    def _acquire(self) -> Any:
        with self._lock:
            ctx = self._idle.pop() if self._idle else None
        if ctx is None:
            ctx = self._factory()
        self._give_bearers(ctx)
        with self._lock:
            self._busy.append(ctx)
        return ctx

    # -- bearer tokens ------------------------------------------------------------------------

    def add_bearer(self, prefix: str, token: str) -> None:
        """Send ``token`` as ``Authorization: Bearer <token>`` with every request to a URL
        starting with ``prefix`` (``https://host:port/`` or a deeper path; its ``davs://``
        twin too), e.g. a dCache macaroon for the WebDAV door of an LTA site.

        The token lives only in this object and in its gfal2 contexts (gfal2's ``BEARER``
        credential, set with ``cred_set`` on each context): never in a URL, so never in a log
        line, an error message or a result. URLs outside ``prefix`` never see it.
        """
        if not token or any(c.isspace() for c in token):
            raise InputError(f"the bearer token for {redact_url(prefix)} is empty or has spaces")
        prefixes = bearer_prefixes(prefix)
        with self._lock:
            for each in prefixes:
                self._bearers[each] = token
            self._bearer_generation += 1

    @property
    def bearer_prefixes(self) -> list[str]:
        """The URL prefixes that get a bearer token (the tokens themselves are not shown)."""
        with self._lock:
            return sorted(self._bearers)

    def _give_bearers(self, ctx: Any) -> None:
        """Set every bearer token on ``ctx`` that it does not have yet."""
        with self._lock:
            generation = self._bearer_generation
            if self._context_generation.get(id(ctx), 0) == generation:
                return
            bearers = list(self._bearers.items())
        gfal2 = gfal2_module()
        for prefix, token in bearers:
            try:
                ctx.cred_set(prefix, ctx.cred_new("BEARER", token))
            except (gfal2.GError, AttributeError) as exc:
                raise StorageError(
                    f"gfal2 here cannot take a bearer token for {prefix} "
                    f"({getattr(exc, 'message', None) or type(exc).__name__}); gfal2 >= 2.20 "
                    "with its http plugin is needed"
                ) from None
        with self._lock:
            self._context_generation[id(ctx)] = generation

    def _release(self, ctx: Any) -> None:
        with self._lock:
            self._busy.remove(ctx)
            self._idle.append(ctx)

    @contextlib.contextmanager
    def _context(self) -> Iterator[Any]:
        ctx = self._acquire()
        try:
            yield ctx
        finally:
            self._release(ctx)

    def cancel(self) -> None:
        """Ask gfal2 to abort every operation in progress on this object (from any thread).

        A moving transfer stops at once (its copy raises "cancelled", never retried); a
        request waiting on a server that does not answer ends at its timeout.
        """
        with self._lock:
            busy = list(self._busy)
        for ctx in busy:
            with contextlib.suppress(Exception):
                ctx.cancel()

    def _call(self, op: str, urls: str | tuple[str, ...], method: str, *args: Any) -> Any:
        """``ctx.<method>(*args)`` with gfal2 errors turned into gridlrt errors."""
        gfal2 = gfal2_module()
        with self._context() as ctx:
            try:
                return getattr(ctx, method)(*args)
            except gfal2.GError as exc:
                raise storage_error(op, urls, exc.code, exc.message) from exc

    # -- retries ----------------------------------------------------------------------------

    def _retrying(self, fn: Callable[[], T], retries: int | None = None) -> tuple[T, int]:
        """Run ``fn`` until it works or fails for good; returns (result, attempts made).

        Transient failures (:func:`~gridlrt.storage.errors.is_transient`) are retried
        ``retries`` more times under a :class:`~gridlrt.retry.Backoff` from ``backoff`` up to
        ``backoff_max`` seconds; an error after more than one attempt says how many."""
        limit = self.retries if retries is None else retries
        backoff = Backoff(tries=limit + 1, base=self.backoff, cap=self.backoff_max)
        attempts = 0

        def once() -> T:
            nonlocal attempts
            attempts += 1
            return fn()

        def retried(problem: str, attempt: int, delay: float) -> None:
            with self._lock:
                self.retry_count += 1
            log.warning(
                "%s (attempt %d of %d); retrying in %.1f s", problem, attempt, limit + 1, delay
            )

        try:
            result = retry(once, backoff, transient=_transient, on_retry=retried, sleep=self._sleep)
        except StorageError as err:
            if attempts > 1:
                raise type(err)(f"{err} (after {attempts} attempts)") from err
            raise
        return result, attempts

    # -- namespace --------------------------------------------------------------------------

    def stat(self, url: Location) -> StatInfo:
        """Size, type and modification time of ``url``. Missing: :class:`StorageNotFound`."""
        target = self._checked(url)

        def once() -> StatInfo:
            st = self._call("stat", target, "stat", target)
            is_dir = statmodule.S_ISDIR(st.st_mode)
            return StatInfo(
                size=0 if is_dir else int(st.st_size),
                is_dir=is_dir,
                mtime=float(st.st_mtime),
                mode=int(st.st_mode),
            )

        return self._retrying(once)[0]

    def exists(self, url: Location) -> bool:
        """True if ``url`` exists (file or directory). Other failures raise."""
        try:
            self.stat(url)
        except StorageNotFound:
            return False
        return True

    def listdir(self, url: Location) -> list[str]:
        """The names in directory ``url``, sorted (no ``.``/``..``)."""
        target = self._checked(url)
        names: list[str] = self._retrying(lambda: self._call("list", target, "listdir", target))[0]
        return sorted(n for n in names if n not in (".", ".."))

    def scandir(self, url: Location) -> list[tuple[str, StatInfo]]:
        """The names in directory ``url`` with their stat, from one listing (gfal2's
        ``readpp``: one PROPFIND for WebDAV, one MLSD for GridFTP, one ``ls -l`` for SRM),
        sorted by name (no ``.``/``..``). Where a protocol cannot, :class:`StorageNotSupported`
        (then :meth:`listdir` and :meth:`stat` each name)."""
        target = self._checked(url)
        gfal2 = gfal2_module()

        def once() -> list[tuple[str, StatInfo]]:
            found: list[tuple[str, StatInfo]] = []
            with self._context() as ctx:
                try:
                    handle = ctx.opendir(target)
                    while True:
                        dirent, st = handle.readpp()
                        if dirent is None:
                            break
                        if dirent.d_name in (".", ".."):
                            continue
                        is_dir = statmodule.S_ISDIR(st.st_mode)
                        info = StatInfo(
                            size=0 if is_dir else int(st.st_size),
                            is_dir=is_dir,
                            mtime=float(st.st_mtime),
                            mode=int(st.st_mode),
                        )
                        found.append((dirent.d_name, info))
                except gfal2.GError as exc:
                    raise storage_error("list", target, exc.code, exc.message) from exc
            return sorted(found, key=lambda item: item[0])

        return self._retrying(once)[0]

    def mkdir(self, url: Location, parents: bool = True) -> None:
        """Create directory ``url``. ``parents=True``: also its parents, and fine if it exists."""
        target = self._checked(url)
        if parents:
            self._retrying(lambda: self._call("mkdir", target, "mkdir_rec", target, 0o755))
        else:
            self._retrying(lambda: self._call("mkdir", target, "mkdir", target, 0o755))

    def delete(self, url: Location, *, recursive: bool = False, missing_ok: bool = False) -> bool:
        """Remove the file or directory ``url``; True if something was removed.

        A directory must be empty unless ``recursive`` (then its contents go first).
        A missing ``url`` raises :class:`StorageNotFound` unless ``missing_ok``.
        """
        target = self._checked(url)
        try:
            info = self.stat(target)
        except StorageNotFound:
            if missing_ok:
                return False
            raise
        if not info.is_dir:
            self._retrying(lambda: self._call("delete", target, "unlink", target))
            return True
        children = self.listdir(target)
        if children and not recursive:
            raise StorageError(
                f"delete {redact_url(target)}: directory not empty ({len(children)} entries); "
                "delete them first or ask for a recursive delete"
            )
        for name in children:
            self.delete(f"{target.rstrip('/')}/{name}", recursive=True, missing_ok=True)
        self._retrying(lambda: self._call("delete", target, "rmdir", target))
        return True

    def rename(self, src: Location, dst: Location) -> None:
        """Rename ``src`` to ``dst`` on the same endpoint (replacing ``dst`` if it exists)."""
        a, b = self._checked(src), self._checked(dst)
        self._retrying(lambda: self._call("rename", (a, b), "rename", a, b))

    def checksum(self, url: Location, algorithm: str = CHECKSUM_TYPE) -> str | None:
        """The endpoint's checksum of ``url`` (lower-case hex), or None when the endpoint or
        protocol does not compute ``algorithm`` (remembered per endpoint)."""
        target = self._checked(url)
        key = (endpoint(target), algorithm.upper())
        if key in self._no_checksum:
            return None
        try:
            value: str = self._retrying(
                lambda: self._call("checksum", target, "checksum", target, algorithm.upper())
            )[0]
        except StorageNotSupported:
            log.debug("%s: no %s checksums at %s", redact_url(target), algorithm, key[0])
            with self._lock:
                self._no_checksum.add(key)
            return None
        return value.strip().lower()

    def getxattr(self, url: Location, name: str) -> str:
        """Extended attribute ``name`` of ``url``, e.g. dCache's ``user.status`` (ONLINE,
        NEARLINE, ONLINE_AND_NEARLINE) for SRM URLs."""
        target = self._checked(url)
        value: str = self._retrying(
            lambda: self._call(f"getxattr {name}", target, "getxattr", target, name)
        )[0]
        return value.strip()

    # -- tape (SRM / dCache) ------------------------------------------------------------------

    def bring_online(
        self,
        urls: Sequence[Location],
        pin_time: int,
        timeout: int,
        *,
        asynchronous: bool = True,
    ) -> BringOnlineResult:
        """Ask the endpoint to stage ``urls`` from tape and pin them for ``pin_time`` seconds.

        Passes through to ``gfal2.bring_online(urls, pin_time, timeout, async)``; the request
        itself gives up after ``timeout`` seconds. With ``asynchronous`` (the default) it
        returns at once: poll with :meth:`bring_online_poll` and the returned token. Per-URL
        failures are in ``errors``; a failure of the whole request raises. Only SRM (and
        some dCache http endpoints with the tape REST API) support it.
        """
        targets = [self._checked(u) for u in urls]
        if not targets:
            return BringOnlineResult(online={})
        if pin_time <= 0 or timeout <= 0:
            raise InputError(
                f"bring_online: pin_time and timeout must be > 0 seconds, "
                f"not {pin_time} and {timeout}"
            )
        statuses, token = self._call(
            "bring_online",
            _label(targets),
            "bring_online",
            targets,
            int(pin_time),
            int(timeout),
            bool(asynchronous),
        )
        return self._online_result(targets, statuses, token)

    def bring_online_poll(self, urls: Sequence[Location], token: str) -> BringOnlineResult:
        """Poll an asynchronous :meth:`bring_online` request: which ``urls`` are online now."""
        targets = [self._checked(u) for u in urls]
        if not targets:
            return BringOnlineResult(token=token, online={})
        statuses = self._call(
            "bring_online_poll", _label(targets), "bring_online_poll", targets, token
        )
        return self._online_result(targets, statuses, token)

    def release(self, urls: Sequence[Location], token: str) -> None:
        """Release the pins a :meth:`bring_online` request with ``token`` placed."""
        for url in urls:
            target = self._checked(url)
            self._call("release", target, "release", target, token)

    def _online_result(
        self, targets: list[str], statuses: Iterable[Any], token: str | None
    ) -> BringOnlineResult:
        gfal2 = gfal2_module()
        online: dict[str, bool] = {}
        errors: dict[str, str] = {}
        for url, status in zip(targets, statuses, strict=False):
            if isinstance(status, gfal2.GError):
                if status.code == 11:  # EAGAIN: still queued
                    online[url] = False
                else:
                    err = storage_error("bring_online", url, status.code, status.message)
                    errors[url] = str(err)
            else:
                online[url] = int(status) == 1
        return BringOnlineResult(token=token or "", online=online, errors=errors)

    # -- copies -----------------------------------------------------------------------------

    def verify(
        self, src: Location, dst: Location, *, checksum: bool = True
    ) -> tuple[Verified, str | None]:
        """Compare ``dst`` with ``src``: sizes always, adler32 where both ends answer it.

        Returns ``("adler32", checksum)`` or ``("size", None)``; raises
        :class:`SizeMismatch` or :class:`ChecksumMismatch` when they differ.
        """
        how, value, _size = self._verify(self._checked(src), self._checked(dst), checksum)
        return how, value

    def _verify(self, a: str, b: str, checksum: bool) -> tuple[Verified, str | None, int]:
        src_size, dst_size = self.stat(a).size, self.stat(b).size
        if src_size != dst_size:
            raise SizeMismatch(
                f"verify {redact_url(b)}: {dst_size} bytes, but the source "
                f"{redact_url(a)} has {src_size} bytes"
            )
        if not checksum:
            return "size", None, dst_size
        # The remote end first: when it cannot answer (often, and then remembered), the
        # local file is not read at all.
        remote_first = sorted((a, b), key=lambda url: url.startswith("file://"))
        sums: dict[str, str | None] = {}
        for url in remote_first:
            sums[url] = self.checksum(url)
            if sums[url] is None:
                return "size", None, dst_size
        src_sum, dst_sum = sums[a], sums[b]
        assert src_sum is not None and dst_sum is not None
        if not _same_checksum(src_sum, dst_sum):
            raise ChecksumMismatch(
                f"verify {redact_url(b)}: adler32 {dst_sum}, but the source "
                f"{redact_url(a)} has adler32 {src_sum}"
            )
        return "adler32", src_sum, dst_size

    def _filecopy(self, src: str, dst: str, timeout: float, shown: str) -> None:
        """One gfal2 copy of ``src`` to ``dst`` (errors name ``shown``, the final name)."""
        gfal2 = gfal2_module()
        with self._context() as ctx:
            params = ctx.transfer_parameters()
            params.overwrite = True
            params.create_parent = True
            params.timeout = max(1, int(timeout))
            try:
                ctx.filecopy(params, src, dst)
            except gfal2.GError as exc:
                raise storage_error("copy", (src, shown), exc.code, exc.message) from exc

    def _discard(self, url: str) -> None:
        """Best effort removal of a temporary or broken copy (no retries, never raises: it
        runs while another error is on its way to the caller, which it must not replace)."""
        try:
            with self._context() as ctx:
                ctx.unlink(url)
        except Exception as exc:  # best effort, whatever went wrong (a gfal2 error or not)
            if getattr(exc, "code", None) != errno.ENOENT:
                message = str(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
                shown = redact_url(url)
                log.warning("could not remove %s: %s", shown, message.replace(url, shown))

    def remove_stale_parts(self, url: Location) -> list[str]:
        """Delete the temporaries that earlier, killed copies to ``url`` left beside it
        (``<name>.part-<hex>``, as :func:`~gridlrt.storage.urls.temp_url` names them);
        returns their URLs.

        Only siblings named exactly ``<basename of url>.part-`` + 8 hex digits are touched
        (``a.txt.part-0123abcd``, not ``a.txt.partial`` or ``b.txt.part-0123abcd``). Call it
        when nothing else may be writing ``url`` (a token is held by one pilot at a time):
        a temporary of a copy still in progress would go too. A missing parent directory
        means nothing to remove; other failures raise.
        """
        return self._remove_stale_parts([self._checked(url)])

    def _remove_stale_parts(self, targets: Sequence[str]) -> list[str]:
        """:meth:`remove_stale_parts` for many URLs, listing each parent directory once."""
        wanted: dict[str, dict[str, str]] = {}  # parent -> name as listed -> target
        for target in targets:
            if temp_url(target) is None or target.endswith("/"):
                continue  # no temporaries are made for this URL's shape
            parent, name = target.rsplit("/", 1)
            if parent.endswith(":/"):  # file:///name: the root directory
                parent += "/"
            names = wanted.setdefault(parent, {})
            names[name] = names[unquote(name)] = target
        removed: list[str] = []
        for parent, names in wanted.items():
            try:
                listed = self.listdir(parent)
            except StorageNotFound:
                continue
            for candidate in listed:
                head, marker, tail = candidate.rpartition(TEMP_MARKER)
                if not is_temp_name(candidate) or head not in names:
                    continue
                stale = f"{names[head]}{marker}{tail}"
                if self.delete(stale, missing_ok=True):
                    log.info("removed %s, left by an earlier copy", redact_url(stale))
                    removed.append(stale)
        return removed

    def copy(
        self,
        src: Location,
        dst: Location,
        *,
        overwrite: bool = True,
        verify: bool = True,
        timeout: float | None = None,
        retries: int | None = None,
        atomic: bool = True,
        checksum: bool = True,
        clean_parts: bool = True,
    ) -> TransferResult:
        """Copy ``src`` to ``dst``, creating missing parent directories.

        :param overwrite: replace an existing ``dst``; False raises :class:`StorageExists`.
        :param verify: compare sizes (and adler32 where both ends answer) after the copy.
        :param timeout: seconds the transfer may take (default: ``transfer_timeout``).
        :param retries: extra attempts after transient failures (default: ``retries``).
        :param atomic: write ``<dst>.part-<hex>``, verify, then rename to ``dst``.
        :param checksum: also compare checksums, not only sizes.
        :param clean_parts: after an atomic copy, remove the ``<dst>.part-<hex>`` files that
            earlier, killed copies to ``dst`` left (:meth:`remove_stale_parts`; best effort).

        A copy that fails or is interrupted (any exception, Ctrl-C included) removes its own
        temporary, as far as the endpoint still answers, and raises the original error.
        """
        a, b = self._checked(src), self._checked(dst)
        if a == b:
            raise InputError(f"copy {redact_url(a)}: source and destination are the same")
        if b.endswith("/"):
            raise InputError(
                f"copy {redact_url(a)} -> {redact_url(b)}: the destination must name a file, "
                "not a directory"
            )
        if not overwrite and self.exists(b):
            raise StorageExists(
                f"copy {redact_url(a)} -> {redact_url(b)}: the destination exists "
                "(overwrite it explicitly)"
            )
        seconds = float(timeout if timeout is not None else self.transfer_timeout)
        notes: list[str] = []
        temp: str | None = None
        if atomic:
            if endpoint(b) in self._no_rename:
                notes.append(f"written in place: {endpoint(b)} cannot rename")
            else:
                temp = temp_url(b)
                if temp is None:
                    notes.append("written in place: the URL has a query string")
        started = time.monotonic()

        def attempt() -> tuple[Verified, str | None, int]:
            nonlocal temp
            target = temp or b
            local = local_path(target)
            if local is not None:
                with self._lock:
                    self._writing[threading.current_thread().name] = local
            try:
                self._filecopy(a, target, seconds, shown=b)
            finally:
                if local is not None:
                    with self._lock:
                        self._writing.pop(threading.current_thread().name, None)
            if not verify:
                how: Verified = "none"
                value: str | None = None
                size = self.stat(target).size
            else:
                try:
                    how, value, size = self._verify(a, target, checksum)
                except VerificationError:
                    self._discard(target)
                    raise
            if temp is not None:
                try:
                    self.rename(temp, b)
                except StorageNotSupported:
                    self._discard(temp)
                    with self._lock:
                        self._no_rename.add(endpoint(b))
                    notes.append(f"written in place: {endpoint(b)} cannot rename")
                    temp = None
                    return attempt()
            return how, value, size

        try:
            (how, value, size), attempts = self._retrying(attempt, retries)
        except BaseException:
            if temp is not None:
                self._discard(temp)
            raise
        elapsed = time.monotonic() - started
        _local_file_mode(a, b)
        if temp is not None and clean_parts:
            try:
                stale = self.remove_stale_parts(b)
            except StorageError as err:
                log.warning(
                    "could not remove what earlier copies left beside %s: %s", redact_url(b), err
                )
            else:
                if stale:
                    notes.append(f"removed {len(stale)} temporary file(s) of earlier copies")
        log.info(
            "copied %s -> %s (%d bytes, %.1f MB/s, verified %s)",
            redact_url(a), redact_url(b), size, size / max(elapsed, 1e-9) / 1e6, how,
        )  # fmt: skip
        return TransferResult(
            src=redact_url(a),
            dst=redact_url(b),
            size=size,
            seconds=elapsed,
            attempts=attempts,
            verified=how,
            checksum=value,
            atomic=temp is not None,
            note="; ".join(dict.fromkeys(notes)),
        )

    def copy_many(
        self,
        pairs: Iterable[tuple[Location, Location]],
        *,
        max_in_flight: int = 4,
        progress: ProgressCallback | None = None,
        overwrite: bool = True,
        verify: bool = True,
        timeout: float | None = None,
        retries: int | None = None,
        fail_fast: bool = False,
    ) -> list[TransferResult]:
        """Copy many ``(src, dst)`` pairs, at most ``max_in_flight`` at a time.

        Results come back in the order of ``pairs``. ``progress``, always called in the
        calling thread, gets the running totals after each finished file, and about every
        :data:`PROGRESS_INTERVAL` seconds while files move (``partial=True``; bytes already
        written by downloads to ``file://`` count, uploads count when finished). When it is
        given, source sizes are looked up first so that totals (and an ETA) are known.

        If any copy fails for good, the others still finish (unless ``fail_fast``) and
        :class:`TransfersFailed` lists the failures, with the successful results in
        ``.results``. Ctrl-C cancels the transfers in flight.
        """
        todo = [(self._checked(s), self._checked(d)) for s, d in pairs]
        if max_in_flight < 1:
            raise InputError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self._make_shared_parents([d for _, d in todo])
        results: list[TransferResult | None] = [None] * len(todo)
        failures: list[tuple[str, str, StorageError]] = []
        workers = min(max_in_flight, max(1, len(todo)))
        prefix = f"gridlrt-copy-{next(_BATCHES)}"
        with ThreadPoolExecutor(workers, thread_name_prefix=prefix) as pool:
            sizes = self._sizes([s for s, _ in todo], pool) if progress else [0] * len(todo)
            total = sum(sizes)
            futures: dict[Future[TransferResult], int] = {
                pool.submit(
                    self.copy, s, d, overwrite=overwrite, verify=verify,
                    timeout=timeout, retries=retries, clean_parts=False,
                ): i
                for i, (s, d) in enumerate(todo)
            }  # fmt: skip
            done_files = done_bytes = shown_bytes = 0

            def report(current: str, partial: bool) -> None:
                nonlocal shown_bytes
                moving = self._bytes_written(prefix) if partial else 0
                shown_bytes = max(shown_bytes, done_bytes + moving)  # never backwards
                assert progress is not None
                progress(
                    TransferProgress(
                        files_done=done_files, files_total=len(todo), bytes_done=shown_bytes,
                        bytes_total=max(total, shown_bytes), current=current, partial=partial,
                    )
                )  # fmt: skip

            pending = set(futures)
            try:
                while pending:
                    finished, pending = wait(
                        pending, timeout=PROGRESS_INTERVAL, return_when=FIRST_COMPLETED
                    )
                    if not finished and progress is not None:
                        report("", partial=True)
                    for future in finished:
                        index = futures[future]
                        try:
                            result = future.result()
                        except StorageError as err:
                            failures.append((*todo[index], err))
                            if fail_fast:
                                raise _Stop() from None
                            continue
                        results[index] = result
                        done_files += 1
                        done_bytes += result.size
                        if progress is not None:
                            report(result.dst, partial=False)
            except _Stop:
                for other in futures:
                    other.cancel()
                self.cancel()
            except BaseException:  # KeyboardInterrupt, or a progress callback that failed
                for other in futures:
                    other.cancel()
                self.cancel()
                raise
        done = [r for r in results if r is not None]
        # what killed copies to these destinations left: one listing per directory
        landed = [todo[i][1] for i, r in enumerate(results) if r is not None and r.atomic]
        try:
            self._remove_stale_parts(landed)
        except StorageError as err:
            log.warning("could not remove what earlier copies left beside the results: %s", err)
        if failures:
            first = failures[0][2]
            raise TransfersFailed(
                f"{len(failures)} of {len(todo)} transfer(s) failed; first: {first}",
                failures=failures,
                results=done,
            )
        return done

    def _bytes_written(self, prefix: str) -> int:
        """Bytes so far in the local files that the threads of the pool named ``prefix`` are
        writing: ``<prefix>_<n>``, as :class:`ThreadPoolExecutor` names them (so batch
        ``gridlrt-copy-1`` does not count the threads of ``gridlrt-copy-12``)."""
        with self._lock:
            paths = [p for name, p in self._writing.items() if _in_pool(name, prefix)]
        written = 0
        for path in paths:
            with contextlib.suppress(OSError):
                written += path.stat().st_size
        return written

    def _make_shared_parents(self, destinations: list[str]) -> None:
        """Create, one by one, the directories that several destinations share.

        Parallel copies into one new directory would all create it at once (gfal2's
        create_parent), and some servers answer such racing MKCOLs with an error (wsgidav:
        HTTP 500). Failures here are left for the copies themselves to report.
        """
        counts = Counter(
            d.rsplit("/", 1)[0] for d in destinations if urlsplit(d).path.count("/") > 1
        )
        for directory, n in counts.items():
            if n < 2 or ("?" in directory and "SFN=" not in directory):
                continue
            try:
                self.mkdir(directory, parents=True)
            except StorageError as err:
                log.debug("could not create %s ahead of the copies: %s", directory, err)

    def _sizes(self, urls: list[str], pool: ThreadPoolExecutor) -> list[int]:
        def size(url: str) -> int:
            try:
                return self.stat(url).size
            except StorageError:
                return 0  # the copy itself will report it

        return list(pool.map(size, urls))

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _checked(url: Location) -> str:
        target = to_url(url)
        scheme_of(target)
        return target
