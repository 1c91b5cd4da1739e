#!/usr/bin/env bash
# Settings shared by the TPU VM scripts; override any of them in the
# environment (e.g. `ZONE=europe-west4-b ./create.sh`).
set -euo pipefail

TPU_NAME="${TPU_NAME:-grar-v5e8}"
ZONE="${ZONE:-us-west4-a}"
PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null)}"
ACCELERATOR="${ACCELERATOR:-v5litepod-8}"
RUNTIME="${RUNTIME:-v2-alpha-tpuv5-lite}"
REPO_DIR="${REPO_DIR:-grar}"

tpu_ssh() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" \
    --project="$PROJECT" --command="$1"
}
