"""The planner from a description: build the job and the cluster, plan each strategy, say what was
assumed."""
from __future__ import annotations

from train.comm.plan import inputs
from train.comm.plan.cluster import NIC_RATES_GBIT, USABLE_MEMORY, headline, plan_strategy
from train.errors import UsageError


def assumptions(cluster, job) -> list[str]:
    g = cluster.topology.gpus_per_node
    return [
        f"a GPU's {g - 1} node peers are on the intra-node link; other nodes only through its own NIC "
        "(rail-optimised: all GPUs of a node use their NICs at once)",
        "collectives are hierarchical: an intra-node ring phase, then each GPU carries 1/(members per node) of the "
        "array across nodes; the phases add up (NCCL pipelines them in chunks: an upper bound by the intra-node "
        "time); latency grows with the nodes a group spans, not its GPUs",
        "all_reduce across nodes: NCCL's ring (2(m-1) steps) or double binary tree (2 log2 m steps), the faster "
        "unless --algorithm says; gathers and scatters: ring; same bytes per NIC either way",
        "FSDP/HSDP: shard units are the embedding, each layer and the head (a tied embedding and head: one root "
        "gathered once and kept to the end of backward); the next unit's all-gather is issued as a unit starts, "
        "a unit's reduce-scatter as its backward ends, HSDP's all-reduce across replicas after that",
        "DDP: gradient buckets ready uniformly through backward, all-reduced in index order",
        "collectives share each GPU's links: one at a time, in issue order; the rest of the step is compute",
        f"compute: model FLOPs (6 x params + attention per token) at {cluster.mfu:.2f} of "
        f"{cluster.tflops:g} TFLOP/s; backward = 2 x forward, 3 x with activation checkpointing (recompute)",
        "memory per GPU: params in the wire dtype, grads in the reduction dtype, Adam moments (8 B) + an fp32 "
        "master copy (4 B) for narrower params, divided by the shard size; unsharded buffers of two units "
        f"(and a held root); activations with flash attention; fits when <= {USABLE_MEMORY:.0%} of the GPU's memory",
        "optimizer step and data loading take no time; the NIC rate is per GPU, one direction",
        "checkpoint: fp32 weights + Adam moments (12 B/param) per save",
        "time to train and storage at the smallest standard NIC rate that meets the target; GPUs for a deadline "
        "keep each GPU's tokens per step (the global batch grows with them), in whole nodes",
    ]


def check_shard(args, cluster) -> None:
    s, g, w = args.shard_size, cluster.topology.gpus_per_node, cluster.world
    if s is None or "hsdp" not in args.strategies:
        return
    if w % s:
        raise UsageError(f"--shard-size {s} does not divide the {w} GPUs")
    if g % s and s % g:
        raise UsageError(f"--shard-size {s} must divide --gpus-per-node {g} or be a multiple of it")


def plan_cluster(args) -> dict:
    cluster = inputs.build_cluster(args)
    check_shard(args, cluster)
    job = inputs.build_job(args, cluster.world)
    if args.compute_ms:  # a measured or assumed compute time wins over FLOPs / throughput
        cluster.mfu = job.model_flops_per_token * job.tokens_per_gpu / (args.compute_ms / 1e3 * cluster.tflops * 1e12)
    rates = inputs.parse_rates(args.link or args.nic, "--link" if args.link else "--nic") or \
        [g * 1e9 for g in NIC_RATES_GBIT]
    vocab_big = (args.model in inputs.SHAPES and inputs.SHAPES[args.model].vocab > 65536) or (args.vocab or 0) > 65536
    bytes_per_token = args.bytes_per_token or (4 if vocab_big else 2)
    results = []
    for strategy in args.strategies:
        r = plan_strategy(job, cluster, strategy, rates_bit_s=rates, target=args.target_exposed,
                          checkpointing=args.activation_checkpointing, shard=args.shard_size)
        r["headline"] = headline(r, job, cluster, train_tokens=args.train_tokens, deadline_days=args.deadline_days,
                                 checkpoint_s=args.checkpoint_write_s, bytes_per_token=bytes_per_token)
        results.append(r)
    if not any(r["memory"]["fits"] for r in results):
        least = min(results, key=lambda r: r["memory"]["per_gpu_bytes"])
        raise UsageError(f"{job.name} fits no strategy of {', '.join(args.strategies)} on {cluster.world} "
                         f"{cluster.gpu.name} (least: {least['strategy']} needs "
                         f"{least['memory']['per_gpu_bytes'] / 1e9:.1f} GB per GPU, "
                         f"{least['memory']['usable_bytes'] / 1e9:.1f} GB usable); add GPUs or use a GPU with "
                         f"more memory")
    topo = cluster.topology
    info = {"source": "description", "model": job.name, "params": job.params, "dtype": args.dtype,
            "reduce_bytes": job.reduce_bytes, "gpu": cluster.gpu.name, "nodes": cluster.nodes,
            "gpus_per_node": topo.gpus_per_node, "world": cluster.world, "tflops": cluster.tflops, "mfu": cluster.mfu,
            "memory_bytes": cluster.gpu.memory_bytes, "tokens_per_gpu": job.tokens_per_gpu,
            "tokens_per_step": job.tokens_per_gpu * cluster.world, "intra_bit_s": topo.intra.rate_bit_s,
            "intra_efficiency": topo.intra.efficiency, "intra_latency_us": topo.intra.hop_latency_s * 1e6,
            "efficiency": topo.inter.efficiency, "hop_latency_us": topo.inter.hop_latency_s * 1e6,
            "host_gbit_s": topo.inter.host_bit_s / 1e9 if topo.inter.host_bit_s != float("inf") else None,
            "oversubscription": topo.oversubscription, "algorithm": topo.algorithm,
            "target_exposed": args.target_exposed, "calibration": args.calibration, "compute_ms": args.compute_ms,
            "unit": job.unit}
    return {"inputs": info, "assumptions": assumptions(cluster, job), "strategies": results}
