#!/usr/bin/env bash
# Stops the run (SIGTERM lets the judge finish in-flight work), then deletes
# the TPU VM unless KEEP_VM=1.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

tpu_ssh "pkill -TERM -f 'grar train' || true; pkill -TERM -f judge_server || true"
if [[ "${KEEP_VM:-0}" != 1 ]]; then
  gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" \
    --project="$PROJECT" --quiet
fi
