#!/usr/bin/env bash
# Starts a training run on the TPU VM, detached, logging to run.log.
#
#   ./launch.sh in-process   one process, the judge on chips 4-7 of its mesh
#   ./launch.sh subprocess   the judge server in its own process on chips 4-7
#
# Chip split on a v5litepod-8 (2x4 chips): the policy/reference mesh takes
# chips 0-3 (fsdp=1, tp=4), the judge mesh chips 4-7 (tp=4). In the
# two-process variant each process is shown only its chips through
# TPU_VISIBLE_CHIPS, TPU_CHIPS_PER_PROCESS_BOUNDS=2,2,1,
# TPU_PROCESS_BOUNDS=1,1,1 and its own TPU_PROCESS_PORT (8476 trainer, 8477
# judge); orchestrator/devices.py sets them.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

placement="${1:-in-process}"
case "$placement" in
  in-process|subprocess) ;;
  *) echo "usage: $0 in-process|subprocess [--set KEY=VALUE ...]" >&2; exit 2 ;;
esac
shift || true
extra=""
for arg in "$@"; do extra+=" $(printf '%q' "$arg")"; done

tpu_ssh "cd $REPO_DIR && nohup .venv/bin/grar train \
  --config configs/tpu-v5e8.yaml --set judge.placement=$placement$extra \
  > run.log 2>&1 &"
echo "started; follow it with: gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --command='tail -f $REPO_DIR/run.log'"
