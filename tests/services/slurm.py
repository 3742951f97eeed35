"""The ``slurm`` fixture: a real one-node Slurm cluster (munged + slurmctld + slurmd).

This module owns everything about that cluster: the munge key, the ``slurm.conf``, the three
daemons and their logs, all under one session temp dir. Nothing in ``/etc/slurm``,
``/etc/munge`` or ``/run/munge`` is read or written, and both Slurm ports are free ports, so
the cluster does not clash with any other Slurm or munge on the machine. Clients (``sbatch``,
``squeue``, ``scancel``, ``scontrol``, ``sinfo``) find it through ``SLURM_CONF`` in
:attr:`SlurmCluster.env`; ``AuthInfo=socket=...`` in that file points them at our munged.

Job-state queries on this cluster (there is no slurmdbd, ``AccountingStorageType`` is ``none``):

* ``squeue`` works. By default it lists only pending/running/completing jobs, so a job (or every
  task of an array) has *left the queue* when ``squeue -h -j ID`` prints nothing.
  ``squeue -t all`` and ``scontrol show job`` also show finished jobs (COMPLETED, FAILED,
  CANCELLED, TIMEOUT, ...) for as long as slurmctld keeps their records (``MinJobAge``,
  purged by a periodic sweep); after that they answer "Invalid job id specified".
* Plain ``sacct`` does NOT work: it needs slurmdbd and says
  "Slurm accounting storage is disabled" (exit code 1).
* ``jobcomp/filetxt`` appends one line per finished job (``JobId=... JobState=...
  ExitCode=... ArrayJobId=... ArrayTaskId=...``) to :attr:`SlurmCluster.jobcomp_log`; that file
  is the durable record of final states here. ``sacct -c`` (``--completion``) reads it, e.g.
  ``sacct -c -P -o jobid,state,exitcode``, but only for *finished* jobs, and it lists array
  tasks under their raw job ids (``-j ARRAY_ID`` matches one task only) while printing
  "Unknown type ArrayJobId" errors to stderr (exit code still 0).

Batch jobs start within about a second of submission (``batch_sched_delay=0``); the very first
job after slurmctld starts may wait about 3 s for the first scheduling pass.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.services.process import ServiceProcess, free_port, log_tail

PARTITION = "debug"
CLUSTER_NAME = "gridlrt-test"
# Environment variables that would steer the clients somewhere else (e.g. when the tests
# themselves run inside a Slurm job).
_CLIENT_ENV_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SACCT_")
# AF_UNIX socket paths are limited to 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


def _binary(name: str) -> str:
    """Absolute path of a Slurm/munge program; fail the fixture if it is not installed."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if found is None:
        pytest.fail(
            f"slurm fixture: `{name}` not found (install slurm-wlm and munge)", pytrace=False
        )
    return found


@dataclass
class SlurmCluster:
    """A running one-node Slurm cluster.

    Pass :attr:`env` to every client call, e.g.
    ``subprocess.run(["sbatch", "--parsable", script], env=cluster.env)``.
    """

    conf: Path  # the slurm.conf (also in env["SLURM_CONF"])
    env: dict[str, str]  # full environment for sbatch/squeue/scancel/scontrol/sinfo
    workdir: Path  # session temp dir holding conf, state, spool and logs
    partition: str  # the only (and default) partition
    node: str  # the only node's name (this host's short hostname)
    jobcomp_log: Path  # jobcomp/filetxt output: one line per finished job
    processes: list[ServiceProcess] = field(default_factory=list, repr=False)

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client (``cluster.run("squeue", "-h")``) against this cluster."""
        result = subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def queued(self, job_id: str) -> list[str]:
        """Ids (``123`` or ``123_4``) of the job's tasks still pending/running/completing."""
        result = self.run("squeue", "-h", "-r", "-j", job_id, "-o", "%i", check=False)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:  # record already purged: long gone
                return []
            raise AssertionError(f"squeue -j {job_id} failed: {result.stderr.strip()}")
        return result.stdout.split()

    def job_states(self, job_id: str) -> dict[str, str]:
        """``{task id: state}`` for a job or array, finished tasks included while kept.

        Finished jobs are only visible until slurmctld purges them (``MinJobAge``); an empty
        dict means "unknown to slurmctld", not "failed".
        """
        result = self.run(
            "squeue", "-h", "-r", "-t", "all", "-j", job_id, "-o", "%i %T", check=False
        )
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return {}
            raise AssertionError(f"squeue -j {job_id} failed: {result.stderr.strip()}")
        return dict(line.split(maxsplit=1) for line in result.stdout.splitlines() if line)

    def wait_jobs_gone(self, job_id: str, timeout: float = 120.0) -> None:
        """Poll squeue until no task of ``job_id`` is pending/running/completing."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.queued(job_id)
            if not left:
                return
            if time.monotonic() > deadline:
                queue = self.run("squeue", "-a", "-r", check=False).stdout
                raise AssertionError(
                    f"job {job_id} still queued after {timeout:.0f} s: {left}\n{queue}\n"
                    f"slurmd log tail:\n{log_tail(self.workdir / 'slurmd.log')}"
                )
            time.sleep(0.2)

    def cancel_all(self, timeout: float = 60.0) -> None:
        """scancel every job in the partition and wait until the queue is empty."""
        self.run("scancel", f"--partition={self.partition}", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.run("squeue", "-h", "-o", "%i", check=False)
            if result.returncode != 0 or not result.stdout.strip():
                return  # empty, or slurmctld is gone: stop_slurm kills any stray steps
            time.sleep(0.2)


def _client_env(conf: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLIENT_ENV_PREFIXES)}
    env["SLURM_CONF"] = str(conf)
    return env


def _write_conf(workdir: Path, node: str, munge_socket: Path) -> Path:
    ctld_port, slurmd_port = free_port(), free_port()
    while slurmd_port == ctld_port:
        slurmd_port = free_port()
    for sub in ("state", "spool"):
        (workdir / sub).mkdir(mode=0o755, exist_ok=True)
    # An empty plugstack.conf of our own: otherwise /etc/slurm/plugstack.conf (next to the
    # default slurm.conf) would be used by the job steps.
    plugstack = workdir / "plugstack.conf"
    plugstack.write_text("")
    settings: Sequence[tuple[str, str | int | Path]] = [
        ("ClusterName", CLUSTER_NAME),
        ("SlurmctldHost", f"{node}(127.0.0.1)"),
        ("SlurmctldPort", ctld_port),
        ("SlurmdPort", slurmd_port),
        ("SlurmUser", "root"),
        ("SlurmdUser", "root"),
        ("AuthType", "auth/munge"),
        ("AuthInfo", f"socket={munge_socket}"),
        ("CredType", "cred/munge"),
        ("StateSaveLocation", workdir / "state"),
        ("SlurmdSpoolDir", workdir / "spool"),
        ("SlurmctldPidFile", workdir / "slurmctld.pid"),
        ("SlurmdPidFile", workdir / "slurmd.pid"),
        # No SlurmctldLogFile: with -D slurmctld logs to stderr, i.e. to slurmctld.log via
        # ServiceProcess. slurmd gets a log file because its slurmstepds log only there.
        ("SlurmdLogFile", workdir / "slurmd.log"),
        ("SlurmctldDebug", "info"),
        ("SlurmdDebug", "info"),
        ("PlugStackConfig", plugstack),
        ("ProctrackType", "proctrack/linuxproc"),
        ("TaskPlugin", "task/none"),
        ("SelectType", "select/cons_tres"),
        ("SelectTypeParameters", "CR_Core"),
        ("SchedulerType", "sched/backfill"),
        ("SchedulerParameters", "batch_sched_delay=0"),
        ("JobAcctGatherType", "jobacct_gather/none"),
        ("AccountingStorageType", "accounting_storage/none"),
        ("JobCompType", "jobcomp/filetxt"),
        ("JobCompLoc", workdir / "jobcomp.log"),
        ("MpiDefault", "none"),
        ("MailProg", shutil.which("true") or "/bin/true"),
        ("SwitchType", "switch/none"),
        ("ReturnToService", 2),
        ("SlurmdTimeout", 30),
        ("InactiveLimit", 0),
        ("KillWait", 2),
        ("MinJobAge", 60),
        ("TmpFS", workdir),
        (
            "NodeName",
            f"{node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN",
        ),
        ("PartitionName", f"{PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP"),
    ]
    conf = workdir / "slurm.conf"
    conf.write_text("".join(f"{key}={value}\n" for key, value in settings))
    return conf


def _start_munged(workdir: Path) -> tuple[ServiceProcess, Path]:
    munge_dir = workdir / "munge"
    munge_dir.mkdir(mode=0o700)
    key = munge_dir / "munge.key"
    mungekey = shutil.which("mungekey") or shutil.which("mungekey", path="/usr/sbin:/sbin")
    if mungekey is not None:
        made = subprocess.run(
            [mungekey, "--create", f"--keyfile={key}"], capture_output=True, text=True
        )
        if made.returncode != 0:
            pytest.fail(f"slurm fixture: mungekey failed: {made.stderr}", pytrace=False)
    else:  # munge < 0.5.14 has no mungekey
        key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = munge_dir / "munge.socket"
    if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
        pytest.fail(f"slurm fixture: munge socket path too long for AF_UNIX: {sock}", pytrace=False)
    argv = [
        _binary("munged"),
        "--foreground",
        # --force: the socket dir is not world-executable (pytest temp dirs are 0700), which
        # munged only accepts when forced; nothing outside workdir needs to reach the socket.
        "--force",
        f"--socket={sock}",
        f"--key-file={key}",
        f"--pid-file={munge_dir / 'munged.pid'}",
        f"--log-file={munge_dir / 'munged.log'}",
        f"--seed-file={munge_dir / 'munged.seed'}",
    ]
    proc = ServiceProcess("munged", argv, workdir / "munged.out", cwd=workdir).start()
    munge, unmunge = _binary("munge"), _binary("unmunge")

    def ready() -> bool:
        if not sock.exists():
            return False
        cred = subprocess.run(
            [munge, f"--socket={sock}", "--no-input"], capture_output=True, timeout=5
        )
        check = subprocess.run(
            [unmunge, f"--socket={sock}"], input=cred.stdout, capture_output=True, timeout=5
        )
        return cred.returncode == 0 and check.returncode == 0

    proc.wait_ready(ready, timeout=30)
    return proc, sock


def _node_state(env: dict[str, str], node: str) -> str:
    result = subprocess.run(
        ["sinfo", "-h", "-N", "-n", node, "-o", "%T"],
        env=env, capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return result.stdout.strip() if result.returncode == 0 else ""


def _wait_node_idle(slurmd: ServiceProcess, env: dict[str, str], node: str, ctld_log: Path) -> None:
    """Wait for the node to register as idle; fail at once if slurmctld rejects it."""

    rejected = ""

    def idle() -> bool:
        nonlocal rejected
        state = _node_state(env, node)
        if state.startswith(("inval", "drain")):  # e.g. slurm.conf claims more CPUs than exist
            rejected = state
            return True
        return state == "idle"

    try:
        slurmd.wait_ready(idle, timeout=60)
        if not rejected:
            return
        headline = f"slurm node {node} is {rejected}"
    except pytest.fail.Exception as exc:
        headline = str(exc.msg)
    # Why a node does not register is often only in slurmctld's log.
    show = subprocess.run(
        ["scontrol", "show", "node", node], env=env, capture_output=True, text=True, timeout=10
    )
    pytest.fail(
        f"{headline}\nscontrol show node:\n{show.stdout}{show.stderr}\n"
        f"slurmctld log {ctld_log}:\n{log_tail(ctld_log)}",
        pytrace=False,
    )


def start_slurm(workdir: Path) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under ``workdir``; fail unless the node is idle."""
    started = time.monotonic()
    node = socket.gethostname().split(".")[0]
    processes: list[ServiceProcess] = []
    try:
        munged, munge_socket = _start_munged(workdir)
        processes.append(munged)
        conf = _write_conf(workdir, node, munge_socket)
        env = _client_env(conf)
        ctld = ServiceProcess(
            "slurmctld",
            [_binary("slurmctld"), "-D", "-i", "-f", str(conf)],
            workdir / "slurmctld.log",
            env=env,
            cwd=workdir,
        ).start()
        processes.append(ctld)
        ping = ["scontrol", "ping"]
        ctld.wait_ready(
            lambda: "UP" in subprocess.run(
                ping, env=env, capture_output=True, text=True, timeout=10
            ).stdout,
            timeout=60,
        )  # fmt: skip
        slurmd = ServiceProcess(
            "slurmd",
            [_binary("slurmd"), "-D", "-N", node, "-f", str(conf)],
            workdir / "slurmd.out",
            env=env,
            cwd=workdir,
        ).start()
        processes.append(slurmd)
        _wait_node_idle(slurmd, env, node, workdir / "slurmctld.log")
    except BaseException:
        for proc in reversed(processes):
            proc.stop()
        raise
    print(
        f"slurm cluster {CLUSTER_NAME} (node {node}, conf {conf}) ready in "
        f"{time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return SlurmCluster(
        conf=conf,
        env=env,
        workdir=workdir,
        partition=PARTITION,
        node=node,
        jobcomp_log=workdir / "jobcomp.log",
        processes=processes,
    )


def _leftover_pids(conf: Path) -> list[int]:
    """Processes whose environment points at our ``conf``: slurmstepds and job processes.

    slurmstepd runs in a session of its own, so stopping slurmd's process group does not reach
    it (nor the job under it); its environment (inherited from slurmd, and for the job from
    ``cluster.env`` via sbatch) carries our ``SLURM_CONF``, which no other process has.
    """
    marker = b"SLURM_CONF=" + os.fsencode(conf)
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            environ = (proc_dir / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(proc_dir.name))
    return pids


def stop_slurm(cluster: SlurmCluster) -> None:
    """Cancel whatever is left, stop slurmd, slurmctld and munged, then kill stray steps."""
    try:
        cluster.cancel_all()
    finally:
        for proc in reversed(cluster.processes):
            proc.stop()
        for pid in _leftover_pids(cluster.conf):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A one-node Slurm cluster for the whole session (see the module docstring)."""
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        stop_slurm(cluster)
