#!/usr/bin/env bash
# N processes of a gradwire job on this machine: a thin torchrun --standalone wrapper.
#
#   launch/local.sh 2 -m train --recipe mlp
#
# Variables:
#   NPROC_PER_NODE  processes when the first argument is not a number (default 2)
#   MAX_RESTARTS    torchrun --max-restarts (default 0): restart the group when a worker dies;
#                   pair with --run-dir and train.resume=auto so it continues from a checkpoint
#   PYTHON          interpreter whose torch to use (default python3)
set -euo pipefail
nproc=${NPROC_PER_NODE:-2}
if [[ ${1:-} =~ ^[0-9]+$ ]]; then nproc=$1; shift; fi
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "gradwire: error: launch/local.sh needs a program, e.g. -m train --recipe mlp" >&2; exit 2; }
exec "${PYTHON:-python3}" -m torch.distributed.run --standalone --nproc-per-node="$nproc" \
    --max-restarts="${MAX_RESTARTS:-0}" "$@"
