#!/usr/bin/env bash
# mpirun launch (OpenMPI or MPICH), usable inside any allocation or on one machine.
#   CFG=configs/demo.yaml NP=4 HOSTFILE=hosts launch/mpirun.sh SOLVER.MAX_EPOCH 1
# NP processes (one per GPU; or one per node with NUM_GPUS 4 NUM_SHARDS N: the trainer spawns
# local workers). Ranks/master come from OMPI_*/PMI_* in slowfast_dist.dist.env.init_distributed().
# Logs: $LOG_DIR/<jobid>/<host>.rank<R>.log. Extra arguments are KEY VALUE config overrides.
# SIGTERM/SIGUSR1/SIGUSR2 to this script reach every rank: they checkpoint and stop, exit status 75.
set -euo pipefail
cd "${SFD_ROOT:-$(pwd)}"
. launch/common.sh
CFG="${CFG:-${1:?usage: CFG=cfg.yaml launch/mpirun.sh [KEY VALUE ...]}}"
[ "${1:-}" = "$CFG" ] && shift
sfd_prepare "$CFG" "$@"
export SFD_JOB_ID="${SFD_JOB_ID:-$(date +%Y%m%d-%H%M%S)}"
MPIRUN="${MPIRUN:-mpirun}"
args=(-np "${NP:-1}")
[ -n "${HOSTFILE:-}" ] && args+=(-hostfile "$HOSTFILE")
if "$MPIRUN" --version 2>&1 | grep -q "Open MPI"; then
    args+=(-x PATH -x OMP_NUM_THREADS -x NCCL_DEBUG -x NCCL_DEBUG_SUBSYS
           -x OUTPUT_DIR -x LOG_DIR -x SFD_JOB_ID -x VIRTUAL_ENV)
    [ -n "${LD_LIBRARY_PATH:-}" ] && args+=(-x LD_LIBRARY_PATH)  # -x of an unset variable only warns
else
    args+=(-genvall)
fi
# shellcheck disable=SC2086
sfd_run "$MPIRUN" "${args[@]}" bash launch/common.sh --rank-exec $SFD_TRAIN_CMD "${SFD_ARGS[@]}"
rc=$SFD_RC
echo "logs: $LOG_DIR/$SFD_JOB_ID/"
sfd_preempted "$rc" && exit "$rc"
sfd_summary || rc=${rc/#0/1}
exit "$rc"
