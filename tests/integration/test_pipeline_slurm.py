"""A three-stage pipeline on the real one-node Slurm fixture: ``gridlrt submit -b slurm -n 2``
without ``--step`` starts two pilots that take whatever token is ready, so they run every
stage of the run (a scatter over six LTA-style inputs on WebDAV, a gather of all its outputs,
one token after the gather), waiting while tokens wait for parents the other pilot works on.
The pool demands credentials (pouchdb-server behind a Basic-auth gate); outputs go to WebDAV.

Checked at the end: every token done at its first attempt, the gather's payload saw every
scatter output exactly once in subband order (and nothing else: no log), the last stage read
the gather's output, provenance (parents' ids, output URLs, sizes, checksums where WebDAV has
them) is in the tokens, and the password is in no argv, pilot environment, job file or token.
"""

from __future__ import annotations

import json
import stat
import zlib
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

from gridlrt.tokens import TokenStatus
from gridlrt.tokens.couchdb import CouchDBPool
from tests.gridlrt_cli import cli_env, gridlrt, job_states, wait_jobs_finished
from tests.lofar_inputs import put_input
from tests.secrets_watch import ProcWatcher, files_containing
from tests.services.couchdb import SecuredCouchDB
from tests.services.slurm import SlurmCluster
from tests.services.webdav import WebDAV

SUBBANDS = range(6)
RUN = "three"

PIPELINE = """
name = "three-stages"
description = "scatter over the inputs, gather them all, one report after the gather"
[inputs]
subbands = "LTA tarballs of one observation"

[[stage]]
name = "prep"        # scatter: one token per subband
step = "pl-prep"
over = "subbands"

[[stage]]
name = "combine"     # gather all: one token whose inputs are every prep output
step = "pl-combine"
over = "prep"
gather = "all"

[[stage]]
name = "report"      # one-to-one after the gather
step = "pl-report"
over = "combine"
"""

# Each step writes one small file; {root}/{pipeline}/{stage}/{name} keeps stages apart.
STEPS = {
    # the unpacked measurement set must be there; the file names the subband, token and input
    "pl-prep": (
        "ms-tarball",
        ["sh", "-c", 'test -d "$1" && printf "SB%s %s %s\\n" "$2" "$3" "$4" > "$5"', "sh",
         "{msin}", "{subband}", "{token_id}", "{input}", "{workdir}/prep_SB{subband}.txt"],
        "prep_SB{subband}.txt",
    ),
    # every downloaded input, in the token's order: one line per file, its name first
    "pl-combine": (
        "file",
        ["sh", "-c", 'for f in $1; do printf "%s: " "$(basename "$f")"; cat "$f"; done > "$2"',
         "sh", "{local_inputs}", "{workdir}/combined.txt"],
        "combined.txt",
    ),
    "pl-report": (
        "file",
        ["sh", "-c", 'printf "read %s: %s lines\\n" "$2" "$(wc -l < "$1")" > "$3" && '
         'cat "$1" >> "$3"', "sh", "{msin}", "{input}", "{workdir}/report.txt"],
        "report.txt",
    ),
}  # fmt: skip


def write_steps(steps_dir: Path) -> Path:
    steps_dir.mkdir(parents=True, exist_ok=True)
    for name, (inputs, command, keep) in STEPS.items():
        (steps_dir / f"{name}.toml").write_text(
            f'name = "{name}"\nkind = "command"\ntimeout = "5m"\nmax_attempts = 1\n'
            f"command = {json.dumps(command)}\n"
            f'[inputs]\nkind = "{inputs}"\n'
            f'[outputs]\nkeep = ["{keep}"]\nurl = "{{root}}/{{pipeline}}/{{stage}}/{{name}}"\n'
        )
    return steps_dir


def adler32(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()) & 0xFFFFFFFF:08x}"


def test_three_stage_pipeline_drained_by_two_slurm_pilots(
    slurm: SlurmCluster,
    secured_couchdb: SecuredCouchDB,
    webdav: WebDAV,
    make_ms: Callable[..., Path],
    tmp_path: Path,
) -> None:
    url = secured_couchdb.new_database()
    pool = CouchDBPool(url, (secured_couchdb.username, secured_couchdb.password))
    pool.init()
    area = f"pipeline-{uuid4().hex[:8]}"
    inputs = {
        sb: put_input(
            webdav, area, make_ms(obsid=800003, subband=sb, channels=4, timeslots=2), tmp_path
        )
        for sb in SUBBANDS
    }
    listing = tmp_path / "subbands.txt"
    listing.write_text("".join(f"{u}\n" for u in reversed(inputs.values())))  # any order
    definition = tmp_path / "three.toml"
    definition.write_text(PIPELINE)
    steps = write_steps(tmp_path / "steps")
    root = webdav.dav_url(f"{area}/results")
    env = cli_env(
        tmp_path,
        GRIDLRT_POOL=url,
        # given to the submitting command only: pilots get them as the 0600 file
        GRIDLRT_POOL_USERNAME=secured_couchdb.username,
        GRIDLRT_POOL_PASSWORD=secured_couchdb.password,
        GRIDLRT_STORAGE_ROOT=root,
        SLURM_CONF=slurm.env["SLURM_CONF"],
    )
    created = json.loads(gridlrt(env, "pipeline", "create", str(definition), "--name", RUN,
                                 "-i", f"subbands={listing}", "--steps-dir", str(steps),
                                 "--json").stdout)  # fmt: skip
    assert [(p["name"], p["tokens"]) for p in created["plan"]] == [
        ("prep", 6),
        ("combine", 1),
        ("report", 1),
    ]

    sized = gridlrt(env, "submit", "-b", "slurm", "--pipeline", RUN, "--steps-dir", str(steps),
                    "--dry-run")  # fmt: skip
    assert f"-n auto: 6 pilot(s) for pipeline run {RUN}" in sized.stderr  # the widest stage
    assert "checked step(s) pl-combine, pl-prep, pl-report" in sized.stderr

    with ProcWatcher(secured_couchdb.password) as watcher:
        result = gridlrt(env, "submit", "-b", "slurm", "-n", "2", "--steps-dir", str(steps),
                         "--walltime", "30m", "--json")  # fmt: skip
        record = json.loads(result.stdout)
        assert (record["step"], record["pipeline"]) == (None, None)
        assert "-slurm-any-" in record["id"] and len(record["job_ids"]) == 2
        final = wait_jobs_finished(env, record["id"], timeout=400)

    tokens = {t.id: t for t in pool.tokens()}
    assert set(job_states(final).values()) == {"completed"}, (final, pool.stage_counts())
    assert {t.status for t in tokens.values()} == {TokenStatus.DONE}, {
        t.id: (t.status.value, t.error[-1].message if t.error else "") for t in tokens.values()
    }
    assert len(tokens) == 8
    for token in tokens.values():  # each processed once, by one of the two pilots
        assert [a.outcome for a in token.attempts] == ["done"], token.id
    job_ids = set(record["job_ids"])
    assert {t.attempts[0].job_id for t in tokens.values()} <= job_ids

    prep = sorted((t for t in tokens.values() if t.stage == "prep"), key=lambda t: t.group["label"])
    [combine] = [t for t in tokens.values() if t.stage == "combine"]
    [report] = [t for t in tokens.values() if t.stage == "report"]
    # stage 1: each output names its own input
    for sb, token in zip(SUBBANDS, prep, strict=True):
        [output] = token.output
        assert output == f"{root}/{RUN}/prep/prep_SB{sb:03d}.txt"
        assert webdav.path(output).read_text() == f"SB{sb:03d} {token.id} {inputs[sb]}\n"

    # stage 2: its input is exactly the prep outputs, in subband order; its payload read each
    prep_outputs = [t.output[0] for t in prep]
    assert combine.input == prep_outputs
    [combined_url] = combine.output
    combined = webdav.path(combined_url).read_text().splitlines()
    assert combined == [
        f"prep_SB{sb:03d}.txt: SB{sb:03d} {t.id} {inputs[sb]}"
        for sb, t in zip(SUBBANDS, prep, strict=True)
    ]
    # provenance: every parent's id, step and outputs (size; adler32 when WebDAV answers)
    assert [p.id for p in combine.provenance] == [t.id for t in prep]
    for parent, token in zip(combine.provenance, prep, strict=True):
        assert (parent.step, parent.status, parent.group) == ("pl-prep", "done", "input")
        [out] = parent.outputs
        assert out.url == token.output[0]
        local = webdav.path(out.url)
        assert out.size == local.stat().st_size
        assert out.checksum in (None, adler32(local))

    # stage 3 read the combined file, and knows where it came from
    assert report.input == [combined_url]
    assert [p.id for p in report.provenance] == [combine.id]
    [out] = report.provenance[0].outputs
    assert out.url == combined_url and out.size == webdav.path(combined_url).stat().st_size
    text = webdav.path(report.output[0]).read_text().splitlines()
    assert text == [f"read {combined_url}: 6 lines", *combined]

    # secrets: not in any argv or pilot environment, job file, output or token
    assert watcher.pilots_seen and watcher.hits == []
    run_dir = Path(record["run_dir"])
    cred = run_dir / "pool.cred"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert files_containing(secured_couchdb.password, run_dir, skip=(cred,)) == []
    assert files_containing(secured_couchdb.password, webdav.path(area)) == []
    script = (run_dir / "slurm.sh").read_text()
    assert "--step " not in script and "#SBATCH --job-name=gridlrt-any" in script
    for token in tokens.values():
        assert secured_couchdb.password not in json.dumps(token.to_doc())
    table = gridlrt(env, "jobs", "status").stdout
    assert record["id"] in table and " any " in table
