#!/usr/bin/env bash
# Creates the TPU VM (one v5litepod-8 host: 8 v5e chips, 16 GiB HBM each).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
  --project="$PROJECT" --accelerator-type="$ACCELERATOR" \
  --version="$RUNTIME"
