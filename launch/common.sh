# Shared by every launch script: environment defaults, config check, per-rank logging, job summary.
# Sourced, never run. Variables a site may set: VENV, CFG, OUTPUT_DIR (else the config's), LOG_DIR, NCCL_*, OMP_NUM_THREADS.
# SFD_TRAIN_CMD replaces `slowfast-dist train` (tests only: a command that writes no summary).

SFD_ROOT="${SFD_ROOT:-$(pwd)}"
if [ -f "${VENV:-$SFD_ROOT/.venv}/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "${VENV:-$SFD_ROOT/.venv}/bin/activate"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
# INIT,GRAPH,ENV puts the ring/channel lines into each rank's log for `slowfast-dist nccl-report`.
export NCCL_DEBUG="${NCCL_DEBUG:-INFO}"
export NCCL_DEBUG_SUBSYS="${NCCL_DEBUG_SUBSYS:-INIT,GRAPH,ENV}"
export LOG_DIR="${LOG_DIR:-$SFD_ROOT/logs}"
export SFD_TRAIN_CMD="${SFD_TRAIN_CMD:-slowfast-dist train}"

# sfd_check_cfg CFG: fail at once (exit 2) instead of starting ranks that would all fail.
sfd_check_cfg() {
    if [ -z "${1:-}" ] || [ ! -f "$1" ]; then
        echo "launch: error: config '${1:-}' does not exist (set CFG=path/to/config.yaml)" >&2
        exit 2
    fi
}

# sfd_prepare CFG [KEY VALUE ...]: check CFG, then set SFD_ARGS (the trainer's arguments) and export
# OUTPUT_DIR as the trainer will see it. The trainer takes OUTPUT_DIR from the config, not the
# environment, so a site's $OUTPUT_DIR becomes an override unless the command line already has one.
# Also fails fast (exit 2) on a bad config key instead of starting ranks that would all fail.
sfd_prepare() {
    sfd_check_cfg "${1:-}"
    local cfg="$1"; shift
    SFD_ARGS=(--cfg "$cfg" "$@")
    local a has=0
    for a in "$@"; do [ "$a" = OUTPUT_DIR ] && has=1; done
    if [ "$has" = 0 ] && [ -n "${OUTPUT_DIR:-}" ]; then SFD_ARGS+=(OUTPUT_DIR "$OUTPUT_DIR"); fi
    OUTPUT_DIR="$(python -c 'import sys
from slowfast_dist.errors import UserError
from slowfast_dist.config import load_config
try:
    print(load_config(sys.argv[1], sys.argv[2:]).OUTPUT_DIR)
except UserError as e:
    sys.exit("launch: error: %s" % e)' "${SFD_ARGS[@]:1}")" || exit 2
    export OUTPUT_DIR
}

# sfd_summary: print the JOB SUMMARY line from $OUTPUT_DIR/summary.json written by rank 0.
sfd_summary() {
    local f="$OUTPUT_DIR/summary.json"
    if [ ! -f "$f" ]; then
        echo "JOB SUMMARY missing: $f was not written (see the per-rank logs under $LOG_DIR)" >&2
        return 1
    fi
    python -c 'import json,sys; s=json.load(open(sys.argv[1]))
print("JOB SUMMARY nodes=%s ranks=%s wall=%ss last_loss=%s mAP=%s" % (s.get("nodes"), s.get("ranks"),
      s.get("wall_time_s"), s.get("last_loss"), s.get("mAP")))' "$f"
}

# sfd_run CMD...: run the launcher CMD, passing on to it the stop signals this script gets (TERM,
# USR1, USR2: what a scheduler sends before it ends or preempts a job; the trainer then checkpoints
# and exits 75). Sets SFD_RC to its exit status.
sfd_run() {
    "$@" &
    local pid=$! s
    for s in TERM USR1 USR2; do trap "kill -s $s $pid 2>/dev/null || true" "$s"; done
    SFD_RC=0
    wait "$pid" || SFD_RC=$?
    while kill -0 "$pid" 2>/dev/null; do  # a trapped signal ended `wait` early: wait again
        SFD_RC=0
        wait "$pid" || SFD_RC=$?
    done
    trap - TERM USR1 USR2
}

# sfd_preempted RC: true, saying so, when the trainer stopped on a signal after a checkpoint (75).
sfd_preempted() {
    [ "${1:-0}" = 75 ] || return 1
    echo "launch: stopped on a signal after a checkpoint in $OUTPUT_DIR/checkpoints; the same job resumes it" >&2
}

# `bash launch/common.sh --rank-exec CMD...` (what mpirun.sh starts on every rank): run CMD with its
# output in $LOG_DIR/<jobid>/<host>.rank<R>.log, R from OpenMPI or MPICH.
if [ "${1:-}" = "--rank-exec" ]; then
    shift
    R="${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK:-0}}}"
    D="$LOG_DIR/${SFD_JOB_ID:-local}"; mkdir -p "$D"
    exec "$@" >"$D/$(hostname -s).rank$R.log" 2>&1
fi
