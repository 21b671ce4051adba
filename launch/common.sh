# Shared by every launch script: environment defaults, config check, per-rank logging, job summary.
# Sourced, never run. Variables a site may set: VENV, CFG, OUTPUT_DIR, LOG_DIR, NCCL_*, OMP_NUM_THREADS.
# SFD_TRAIN_CMD replaces `slowfast-dist train` for the scheduler tests' probe job only.

SFD_ROOT="${SFD_ROOT:-$(pwd)}"
if [ -f "${VENV:-$SFD_ROOT/.venv}/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "${VENV:-$SFD_ROOT/.venv}/bin/activate"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
# INIT,GRAPH,ENV puts the ring/channel lines into each rank's log for `slowfast-dist nccl-report`.
export NCCL_DEBUG="${NCCL_DEBUG:-INFO}"
export NCCL_DEBUG_SUBSYS="${NCCL_DEBUG_SUBSYS:-INIT,GRAPH,ENV}"
export OUTPUT_DIR="${OUTPUT_DIR:-$SFD_ROOT/output}"
export LOG_DIR="${LOG_DIR:-$SFD_ROOT/logs}"
export SFD_TRAIN_CMD="${SFD_TRAIN_CMD:-slowfast-dist train}"

# sfd_check_cfg CFG: fail at once (exit 2) instead of starting ranks that would all fail.
sfd_check_cfg() {
    if [ -z "${1:-}" ] || [ ! -f "$1" ]; then
        echo "launch: error: config '${1:-}' does not exist (set CFG=path/to/config.yaml)" >&2
        exit 2
    fi
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

# `bash launch/common.sh --rank-exec CMD...` (what mpirun.sh starts on every rank): run CMD with its
# output in $LOG_DIR/<jobid>/<host>.rank<R>.log, R from OpenMPI or MPICH.
if [ "${1:-}" = "--rank-exec" ]; then
    shift
    R="${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK:-0}}}"
    D="$LOG_DIR/${SFD_JOB_ID:-local}"; mkdir -p "$D"
    exec "$@" >"$D/$(hostname -s).rank$R.log" 2>&1
fi
