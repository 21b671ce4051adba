#!/usr/bin/env bash
# Grid Engine (ABCI classic / Univa / Son of GE). Submit:
#   qsub -g GROUP -v CFG=configs/demo.yaml launch/sge.sh          (ABCI: rt_F=N nodes)
#   qsub -pe mpi 2 -v CFG=configs/demo.yaml launch/sge.sh         (plain GE with a PE)
# Edit rt_F (nodes) and h_rt. Hosts come from $PE_HOSTFILE. Logs: $LOG_DIR/$JOB_ID/<host>.rank<R>.log.
#$ -l rt_F=2
#$ -l h_rt=01:00:00
#$ -cwd
#$ -j y
#$ -S /bin/bash
set -euo pipefail
export SFD_ROOT="$(pwd)"
CFG="${CFG:-configs/demo.yaml}"
HF="$(mktemp)"
if [ -n "${PE_HOSTFILE:-}" ]; then awk '{print $1" slots="$2}' "$PE_HOSTFILE" > "$HF"; else hostname > "$HF"; fi
export SFD_JOB_ID="${JOB_ID:-sge}" NP="${NP:-${NSLOTS:-1}}" HOSTFILE="$HF" CFG
exec launch/mpirun.sh "$@"
