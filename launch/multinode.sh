#!/usr/bin/env bash
# One node of a multi-node gradwire job: torchrun with c10d rendezvous on MASTER_ADDR.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 LOCAL_ADDR=10.0.0.1 SOCKET_IFNAME=eth0 \
#       launch/multinode.sh -m train --recipe mlp
#
# Variables (required unless a default is shown):
#   NNODES            number of nodes
#   NODE_RANK         this node's index, 0..NNODES-1; node 0 hosts the rendezvous store
#   MASTER_ADDR       node 0's address (the rendezvous endpoint)
#   MASTER_PORT       rendezvous port (default 29500)
#   NPROC_PER_NODE    processes on this node (default 1; one per GPU on GPU nodes)
#   LOCAL_ADDR        this node's own address, advertised to the others (default: none; set it when
#                     the hostname resolves to loopback, or torchrun advertises an unreachable name)
#   SOCKET_IFNAME     interface for gloo and NCCL traffic (exported as GLOO_/NCCL_SOCKET_IFNAME)
#   RDZV_ID           job id shared by all nodes (default gradwire); give each job its own: a worker
#                     restarted by torchrun continues the run whose folder carries this id
#   RDZV_WAIT         seconds a non-host node waits for the rendezvous endpoint (default 120)
#   MAX_RESTARTS      torchrun --max-restarts (default 0); pair with train.resume=auto and --run-dir
#   PYTHON            interpreter whose torch to use (default python3)
#
# Trust boundary: the c10d store and gloo/NCCL traffic are unauthenticated and unencrypted.
# Anyone who reaches MASTER_PORT can join or disrupt the job. Keep MASTER_ADDR, LOCAL_ADDR and
# SOCKET_IFNAME on a private network, and never expose the port to an untrusted one.
set -euo pipefail

missing=()
for var in NNODES NODE_RANK MASTER_ADDR; do
    [ -n "${!var:-}" ] || missing+=("$var")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "gradwire: error: launch/multinode.sh needs ${missing[*]} (see the top of the script)" >&2
    exit 2
fi
[ $# -gt 0 ] || { echo "gradwire: error: launch/multinode.sh needs a program, e.g. -m train --recipe mlp" >&2; exit 2; }

PYTHON=${PYTHON:-python3}
MASTER_PORT=${MASTER_PORT:-29500}
if [ -n "${SOCKET_IFNAME:-}" ]; then
    export GLOO_SOCKET_IFNAME="$SOCKET_IFNAME" NCCL_SOCKET_IFNAME="$SOCKET_IFNAME"
fi

extra=()
[ -n "${LOCAL_ADDR:-}" ] && extra+=("--local_addr=$LOCAL_ADDR")
if [ "$NODE_RANK" = "0" ]; then
    # Without is_host the store only starts where the hostname resolves to MASTER_ADDR.
    extra+=("--rdzv_conf=is_host=1")
else
    # A bounded wait for the endpoint, then one clear line (torchrun alone would retry for minutes).
    "$PYTHON" - "$MASTER_ADDR" "$MASTER_PORT" "${RDZV_WAIT:-120}" <<'PY' || exit 2
import ctypes, signal, socket, sys, time
try:  # end with this script (a killed testbed's parent-death SIGTERM ends the script)
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG, Linux only
except (AttributeError, OSError):
    pass
host, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + wait
while True:
    try:
        socket.create_connection((host, port), timeout=2).close()
        break
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit(f"gradwire: error: rendezvous endpoint {host}:{port} cannot be reached after {wait:g} s ({e})")
        time.sleep(0.5)
PY
fi

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --nproc-per-node="${NPROC_PER_NODE:-1}" \
    --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv-id="${RDZV_ID:-gradwire}" \
    --max-restarts="${MAX_RESTARTS:-0}" "${extra[@]}" "$@"
