#!/usr/bin/env bash
# Copies this checkout to the TPU VM and installs it with jax's TPU runtime.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
top="$(cd "$(dirname "$0")/../.." && pwd)"

tar -C "$top" --exclude=.venv --exclude=runs --exclude=.git -czf /tmp/grar.tgz .
gcloud compute tpus tpu-vm scp /tmp/grar.tgz "$TPU_NAME":grar.tgz \
  --zone="$ZONE" --project="$PROJECT"
# Same pins as on CPU, plus libtpu through jax's "tpu" extra.
jax_version="$(grep '^jax==' "$top/constraints.txt" | cut -d= -f3)"
tpu_ssh "mkdir -p $REPO_DIR && tar -xzf grar.tgz -C $REPO_DIR && cd $REPO_DIR \
  && python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt \
     -e . 'jax[tpu]==$jax_version'"
