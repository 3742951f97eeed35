#!/bin/sh
# gridlrt pilots as a Slurm array job, rendered by `gridlrt submit --backend slurm`.
# Each array task is one pilot: it claims tokens of step {step} from the pool until none is
# left or its time is up. Credentials are read from a 0600 file, never from this script.
#SBATCH --job-name={job_name}
#SBATCH --array=0-{last_index}{array_cap}
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={walltime}
#SBATCH --output={run_dir}/slurm-%A_%a.out
#SBATCH --open-mode=append
{extra_directives}
set -eu
{credentials_export}
export OPENBLAS_NUM_THREADS="${{OPENBLAS_NUM_THREADS:-1}}"
export GRIDLRT_JOB_ID="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
echo "gridlrt pilot $GRIDLRT_JOB_ID on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
exec {python} -m gridlrt worker run {worker_args}
