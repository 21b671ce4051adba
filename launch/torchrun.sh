#!/usr/bin/env bash
# torchrun, one node or several:  NPROC=4 CFG=configs/demo.yaml launch/torchrun.sh [KEY VALUE ...]
# Multi-node: run on each node with NNODES=N NODE_RANK=i MASTER_ADDR=host MASTER_PORT=29500.
# Logs: $LOG_DIR/<jobid>/ (torchrun --log-dir, one file per local rank).
set -euo pipefail
export SFD_ROOT="$(pwd)"
. launch/common.sh
CFG="${CFG:-${1:?usage: CFG=cfg.yaml launch/torchrun.sh [KEY VALUE ...]}}"
[ "${1:-}" = "$CFG" ] && shift
sfd_prepare "$CFG" "$@"
D="$LOG_DIR/${SFD_JOB_ID:-$(date +%Y%m%d-%H%M%S)}.node${NODE_RANK:-0}"; mkdir -p "$D"
# torchrun exits 1 whatever its workers returned; it copies the first failure (the ranks' message
# and exit status) into this file, from which the status is read back.
export TORCHELASTIC_ERROR_FILE="$D/error.json"
rm -f "$TORCHELASTIC_ERROR_FILE"
# shellcheck disable=SC2086
sfd_run torchrun --nnodes "${NNODES:-1}" --node-rank "${NODE_RANK:-0}" --nproc-per-node "${NPROC:-1}" \
    --master-addr "${MASTER_ADDR:-127.0.0.1}" --master-port "${MASTER_PORT:-29500}" \
    --log-dir "$D" --redirects 3 --tee 0 \
    --no-python \
    $SFD_TRAIN_CMD "${SFD_ARGS[@]}"
rc=$SFD_RC
if [ "$rc" != 0 ] && [ -f "$TORCHELASTIC_ERROR_FILE" ]; then
    rc=$(python -c 'import json, sys
m = json.load(open(sys.argv[1])).get("message", {})
print(m.get("errorCode") or 1 if isinstance(m, dict) else 1)' "$TORCHELASTIC_ERROR_FILE" || echo "$rc")
fi
echo "logs: $D/"
sfd_preempted "$rc" && exit "$rc"
sfd_summary || rc=${rc/#0/1}
exit "$rc"
