#!/usr/bin/env bash
# Grid Engine (ABCI classic / Univa / Son of GE). Submit:
#   qsub -g GROUP launch/sge.sh configs/demo.yaml [KEY VALUE ...]     (ABCI: rt_F=N nodes)
#   qsub -pe mpi 2 launch/sge.sh configs/demo.yaml [KEY VALUE ...]    (plain GE with a PE; drop the
#   rt_F line below unless your site defines that resource). qsub passes no environment by default:
#   add -v OUTPUT_DIR=...,LOG_DIR=...,OMP_NUM_THREADS=... (or -V) for settings from your shell.
# Edit rt_F (nodes) and h_rt. Hosts come from $PE_HOSTFILE. Logs: $LOG_DIR/$JOB_ID/<host>.rank<R>.log.
#$ -l rt_F=2
#$ -l h_rt=01:00:00
#$ -cwd
#$ -j y
#$ -S /bin/bash
# Before suspending or ending the job Grid Engine sends SIGUSR1/SIGUSR2 (-notify): the ranks
# checkpoint and stop (exit 75), and this script exits 99, which makes Grid Engine reschedule the
# job (-r y); the new run resumes from that step.
#$ -notify
#$ -r y
set -euo pipefail
export SFD_ROOT="$(pwd)"
# Config: $CFG (qsub -v CFG=...), else a first argument ending in .yaml, else configs/demo.yaml.
if [ -z "${CFG:-}" ] && [[ "${1:-}" == *.y*ml ]]; then CFG="$1"; shift; fi
CFG="${CFG:-configs/demo.yaml}"
HF="$(mktemp)"
# Each host once per slot: the hostfile form both OpenMPI and MPICH read the same way.
if [ -n "${PE_HOSTFILE:-}" ]; then awk '{for (i = 0; i < $2; i++) print $1}' "$PE_HOSTFILE" > "$HF"; else hostname > "$HF"; fi
export SFD_JOB_ID="${JOB_ID:-sge}" NP="${NP:-${NSLOTS:-1}}" HOSTFILE="$HF" CFG
. launch/common.sh
sfd_run launch/mpirun.sh "$@"
[ "$SFD_RC" = 75 ] && exit 99
exit "$SFD_RC"
