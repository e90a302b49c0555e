"""Plan a training job on a cluster, per strategy: memory per GPU, bytes per GPU per step on each
tier, comm and exposed comm (a replay of the step's schedule) per NIC rate, the smallest NIC rate
that keeps exposed comm under the target, time to train, GPUs for a deadline, storage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from train.comm.plan.network import GPU, Topology
from train.comm.plan.replay import predict, required_rate
from train.comm.plan.schedule import bucket_timeline, sharded_timeline

STRATEGIES = ("ddp", "fsdp", "fsdp-noreshard", "hsdp")
NIC_RATES_GBIT = (25, 50, 100, 200, 400, 800)
USABLE_MEMORY = 0.9  # of HBM: the CUDA context, NCCL buffers and allocator fragmentation take the rest


@dataclass
class Job:
    """What is trained: parameters per shard unit (root last), FLOPs, activations, precision."""
    name: str
    unit_params: list[int]              # in forward order; a held root last (schedule.sharded_timeline)
    unit_flops_per_token: list[float]   # forward, per unit
    root_held: bool                     # the last unit is a root kept gathered from forward to backward
    model_flops_per_token: float        # forward + backward, as MFU counts
    act_bytes_per_token: dict | None    # {"full", "checkpointed"}; None when the shape is unknown
    tokens_per_gpu: float               # per GPU per step
    dtype_bytes: int                    # parameters and gradients on the wire
    reduce_bytes: int                   # gradient reductions
    bucket_bytes: float = 25 * 2**20
    unit: str = "tokens"                # what tokens_per_gpu counts ("samples" for image models)

    @property
    def params(self) -> int:
        return sum(self.unit_params)


@dataclass
class Cluster:
    gpu: GPU
    nodes: int
    topology: Topology
    tflops: float
    mfu: float  # model FLOPs / peak while computing (the kernels' efficiency)

    @property
    def world(self) -> int:
        return self.nodes * self.topology.gpus_per_node


def memory(job: Job, strategy: str, shard: int, checkpointing: bool) -> dict:
    """Bytes per GPU: parameters in the wire dtype, gradients in the reduction dtype, Adam's two
    moments in fp32 plus an fp32 master copy when the parameters are narrower (ZeRO's 16 B/param
    for bf16). Sharded strategies divide them by the shard size and hold unsharded buffers: a held
    root, the current and the prefetched unit, one unit's unsharded gradients (FSDP without
    resharding keeps every unit gathered from forward to backward instead)."""
    p, b, rb = job.params, job.dtype_bytes, job.reduce_bytes
    states = {"param_bytes": p * b / shard, "grad_bytes": p * rb / shard,
              "optim_bytes": p * (8 + (4 if b < 4 else 0)) / shard}
    root = job.unit_params[-1] if job.root_held else 0
    others = (job.unit_params[:-1] if job.root_held else job.unit_params) or [0]
    if strategy == "ddp" or shard == 1:
        working = 0.0
    elif strategy == "fsdp-noreshard":
        working = p * b + max(job.unit_params) * rb
    else:
        working = (root + 2 * max(others)) * b + max(job.unit_params) * rb
    act = job.act_bytes_per_token
    acts = {k: v * job.tokens_per_gpu for k, v in act.items()} if act else {"full": 0.0, "checkpointed": 0.0}
    total = sum(states.values()) + working + acts["checkpointed" if checkpointing else "full"]
    return {**states, "working_bytes": working, "activation_bytes": acts["full"],
            "activation_checkpointed_bytes": acts["checkpointed"], "activations_known": act is not None,
            "activation_checkpointing": checkpointing, "per_gpu_bytes": total}


def timeline(job: Job, cluster: Cluster, strategy: str, shard: int, checkpointing: bool) -> dict:
    rate = cluster.tflops * 1e12 * cluster.mfu / 1e3  # FLOPs per ms while computing
    unit_ms = [f * job.tokens_per_gpu / rate for f in job.unit_flops_per_token]
    if strategy == "ddp":
        fwd = sum(unit_ms)
        return bucket_timeline(job.params * job.reduce_bytes, job.bucket_bytes, fwd, fwd * (3 if checkpointing else 2))
    unit_bytes = [n * job.dtype_bytes for n in job.unit_params]
    return sharded_timeline("hsdp" if strategy == "hsdp" else "fsdp", unit_bytes, unit_ms, shard,
                            cluster.world // shard, job.reduce_bytes / job.dtype_bytes,
                            reshard_after_forward=strategy != "fsdp-noreshard", recompute=checkpointing,
                            root_held=job.root_held)


def shard_size(job: Job, cluster: Cluster, strategy: str, asked: int | None, checkpointing: str) -> int:
    """fsdp: the world; hsdp: as asked, else gpus-per-node, grown by whole nodes (dividing the
    world) until the model fits (8 GPUs cannot hold a 70B model's states): without activation
    checkpointing if some shard size allows it (recompute costs a third more compute), else with."""
    if strategy == "ddp":
        return 1
    if strategy != "hsdp":
        return cluster.world
    if asked:
        return asked
    g = cluster.topology.gpus_per_node
    sizes = [g * k for k in range(1, cluster.nodes + 1) if cluster.nodes % k == 0]
    for ckpt in {"auto": (False, True), "on": (True,), "off": (False,)}[checkpointing]:
        for s in sizes:
            if fits(memory(job, strategy, s, ckpt), cluster):
                return s
    return g


def fits(mem: dict, cluster: Cluster) -> bool:
    return mem["per_gpu_bytes"] <= USABLE_MEMORY * cluster.gpu.memory_bytes


def plan_strategy(job: Job, cluster: Cluster, strategy: str, *, rates_bit_s: list[float], target: float,
                  checkpointing: str = "auto", shard: int | None = None) -> dict:
    s = shard_size(job, cluster, strategy, shard, checkpointing)
    ckpt = checkpointing == "on"
    mem = memory(job, strategy, s, ckpt)
    if checkpointing == "auto" and not fits(mem, cluster) and job.act_bytes_per_token:
        ckpt, mem = True, memory(job, strategy, s, True)
    mem["fits"] = fits(mem, cluster)
    mem["usable_bytes"] = USABLE_MEMORY * cluster.gpu.memory_bytes
    tl = [timeline(job, cluster, strategy, s, ckpt)]
    world, topo = cluster.world, cluster.topology
    rows = []
    for rate in rates_bit_s:
        r = predict(tl, world, topo.at_rate(rate), s)
        mfu = job.model_flops_per_token * job.tokens_per_gpu / (r["step_ms"] / 1e3 * cluster.tflops * 1e12)
        rows.append({"nic_gbit_s": rate / 1e9, "comm_ms": r["comm_ms"], "comm_intra_ms": r["comm_intra_ms"],
                     "comm_inter_ms": r["comm_inter_ms"], "exposed_ms": r["exposed_ms"], "step_ms": r["step_ms"],
                     "exposed_pct": r["exposed_pct"], "mfu": mfu,
                     "tokens_per_s": job.tokens_per_gpu * world / (r["step_ms"] / 1e3)})
    any_rate = predict(tl, world, topo, s)  # bytes do not depend on the rate
    # nothing leaves the node: any NIC will do (0) if NVLink meets the target; else the bisection
    # (None: no rate is enough)
    if any_rate["inter_bytes"]:
        need = required_rate(tl, world, topo, target, shard_size=s)
    else:
        need = 0.0 if any_rate["exposed_pct"] <= 100 * target else None
    return {"strategy": strategy, "shard_size": s, "replicate_size": world // s, "memory": mem,
            "bytes_per_gpu_per_step": {"intra_node": any_rate["intra_bytes"], "inter_node": any_rate["inter_bytes"],
                                       "ops": per_op(tl[0], world, topo, s)},
            "compute_ms": tl[0]["step_ms"], "rates": rows,
            "required": {"target_exposed": target, "nic_gbit_s": need / 1e9 if need is not None else None}}


def per_op(tl: dict, world: int, topo: Topology, shard: int) -> dict:
    """Calls, sent bytes and wire bytes per tier of each op in one step, per GPU."""
    out: dict = {}
    if "buckets" in tl:
        items = [("all_reduce", b["sent_bytes"], topo.group(world)) for b in tl["buckets"]]
    else:
        groups = {"shard": topo.group(shard), "replicate": topo.group(world // shard, stride=shard)}
        items = [(o["op"], o["sent_bytes"], groups[o["group"]]) for o in tl["ops"]]
    for op, nbytes, group in items:
        cost = topo.op_cost(op, nbytes, group)
        row = out.setdefault(op, {"calls": 0, "sent_bytes": 0.0, "intra_node": 0.0, "inter_node": 0.0,
                                  "group_size": group.size, "nodes": group.nodes, "algorithm": cost.algorithm})
        row["calls"] += 1
        row["sent_bytes"] += nbytes
        row["intra_node"] += cost.intra_bytes
        row["inter_node"] += cost.inter_bytes
    return out


def headline(result: dict, job: Job, cluster: Cluster, *, train_tokens: float | None, deadline_days: float | None,
             checkpoint_s: float, bytes_per_token: float) -> dict:
    """At the smallest standard NIC rate that meets the target (else the fastest evaluated):
    time to train, GPUs for a deadline, storage bandwidth."""
    need = result["required"]["nic_gbit_s"]
    rows = result["rates"]
    ok = [r for r in rows if need is not None and r["nic_gbit_s"] >= need * 0.999]
    row = min(ok, key=lambda r: r["nic_gbit_s"]) if ok else max(rows, key=lambda r: r["nic_gbit_s"])
    out = {"nic_gbit_s": row["nic_gbit_s"], "meets_target": bool(ok), "step_ms": row["step_ms"], "mfu": row["mfu"],
           "tokens_per_s": row["tokens_per_s"]}
    if train_tokens:
        days = train_tokens / row["tokens_per_s"] / 86400
        out["train_tokens"], out["days_to_train"] = train_tokens, days
        if deadline_days:
            g = cluster.topology.gpus_per_node
            nodes = math.ceil(cluster.nodes * days / deadline_days)
            out["deadline_days"], out["gpus_for_deadline"] = deadline_days, nodes * g
    ckpt = job.params * (4 + 8)  # fp32 weights and Adam's two moments: what a restart needs
    out["storage"] = {"checkpoint_bytes": ckpt, "checkpoint_write_s": checkpoint_s,
                      "write_gbyte_s": ckpt / checkpoint_s / 1e9,
                      "write_gbyte_s_per_node": ckpt / checkpoint_s / 1e9 / cluster.nodes,
                      "bytes_per_token": bytes_per_token,
                      "read_gbyte_s": row["tokens_per_s"] * bytes_per_token / 1e9}
    return out
