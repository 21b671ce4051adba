#!/usr/bin/env bash
# PBS Professional (ABCI 3.0 style). Submit:  qsub -v CFG=configs/demo.yaml launch/pbs.sh
# Edit the #PBS lines: queue, node count (select=N), walltime and your group (-P).
# One MPI process per node; each starts NUM_GPUS workers (study layout). Nodes come from
# $PBS_NODEFILE (init_distributed reads it). Logs: $LOG_DIR/$PBS_JOBID/<host>.rank<R>.log.
#PBS -q rt_HF
#PBS -l select=2
#PBS -l walltime=01:00:00
#PBS -P gXXXXXX
#PBS -j oe
# Rerunnable: a job the server preempts with requeue starts again and resumes from the checkpoint
# the ranks wrote on SIGTERM (exit status 75 = stopped with a checkpoint).
#PBS -r y
set -euo pipefail
cd "${PBS_O_WORKDIR:-$(pwd)}"
export SFD_ROOT="$(pwd)"
# Config: $CFG (qsub -v CFG=...), else a first argument ending in .yaml, else configs/demo.yaml.
if [ -z "${CFG:-}" ] && [[ "${1:-}" == *.y*ml ]]; then CFG="$1"; shift; fi
CFG="${CFG:-configs/demo.yaml}"
NPN="${NPN:-1}"   # processes per node
NODES=$(sort -u "$PBS_NODEFILE" | wc -l)
# Each host NPN times: one slot per line is what both OpenMPI and MPICH hostfiles agree on.
# Node-file order kept (first line = mother superior, where rank 0 then runs).
HF="$(mktemp)"; awk -v n="$NPN" '!seen[$1]++ {for (i = 0; i < n; i++) print $1}' "$PBS_NODEFILE" > "$HF"
export SFD_JOB_ID="${PBS_JOBID:-pbs}" NP=$((NODES * NPN)) HOSTFILE="$HF" CFG
exec launch/mpirun.sh "$@"
