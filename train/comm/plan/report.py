"""The planner's tables: a run replayed on other links, or a cluster plan per strategy."""
from __future__ import annotations

from train.comm.plan.costmodel import format_rate


def gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def print_replay(result: dict) -> None:
    i = result["inputs"]
    host = f", host ceiling {i['host_gbit_s']:.2f} Gbit/s" if i.get("host_gbit_s") else ""
    where = f"{i['world']} ranks, {i['gpus_per_node']} per node on {format_rate(i['intra_gbit_s'] * 1e9)}" \
        if i.get("gpus_per_node") else f"world {i['world']}"
    print(f"# gradwire plan: {i.get('model')} ({i.get('strategy', 'ddp')}) at {where} ({i['source']}, "
          f"hook {i.get('hook')}, "
          f"link efficiency {i['efficiency']:.2f}, {i['hop_latency_us']:.1f} us per hop{host})")
    print(f"{'link':>12} {'comm ms':>10} {'exposed ms':>11} {'step ms':>10} {'exposed %':>10} {'scaling eff':>12}")
    for r in result["rates"]:
        print(f"{format_rate(r['link_gbit_s'] * 1e9):>12} {r['comm_ms']:>10.2f} {r['exposed_ms']:>11.2f} "
              f"{r['step_ms']:>10.2f} {r['exposed_pct']:>10.1f} {r['scaling_efficiency']:>12.3f}")
    req = result["required"]
    need = format_rate(req["link_gbit_s"] * 1e9) if req["link_gbit_s"] else \
        "none (latency- or host-bound: no link rate is enough)"
    print(f"\nsmallest link for exposed comm <= {100 * req['target_exposed']:.0f}% of the step: {need}")
    print("assumptions: " + "; ".join(result["assumptions"]))


def print_cluster(result: dict) -> None:
    i = result["inputs"]
    print(f"# gradwire plan: {i['model']} ({i['params'] / 1e9:.3g} B params, {i['dtype']}, reductions in "
          f"{i['reduce_bytes']} B) on {i['nodes']} nodes x {i['gpus_per_node']} {i['gpu']} = {i['world']} GPUs; "
          f"{i['tokens_per_gpu']:,.0f} {i['unit']} per GPU per step ({i['tokens_per_step']:,.0f} per step)")
    pace = f"{i['compute_ms']:g} ms of compute per step (given)" if i.get("compute_ms") else \
        f"{i['tflops']:g} TFLOP/s peak at {i['mfu']:.2f} while computing"
    print(f"#   {pace}; intra-node "
          f"{format_rate(i['intra_bit_s'])} x {i['intra_efficiency']:.2f}, {i['intra_latency_us']:g} us/hop; NIC per GPU "
          f"x {i['efficiency']:.2f}, {i['hop_latency_us']:g} us/hop, oversubscription {i['oversubscription']:g}:1")
    for s in result["strategies"]:
        m = s["memory"]
        verdict = "fits" if m["fits"] else "DOES NOT FIT"
        print(f"\n## {s['strategy']} (shard {s['shard_size']} x replicate {s['replicate_size']}): "
              f"{gb(m['per_gpu_bytes'])} per GPU of {gb(m['usable_bytes'])} usable: {verdict}"
              f" (activation checkpointing {'on' if m['activation_checkpointing'] else 'off'})")
        acts = (f"activations {gb(m['activation_bytes'])} ({gb(m['activation_checkpointed_bytes'])} checkpointed)"
                if m["activations_known"] else "activations not estimated (unknown shape)")
        print(f"   params {gb(m['param_bytes'])}, grads {gb(m['grad_bytes'])}, optimizer {gb(m['optim_bytes'])}, "
              f"unsharded buffers {gb(m['working_bytes'])}, {acts}")
        b = s["bytes_per_gpu_per_step"]
        ops = "; ".join(f"{op} x{o['calls']} over {o['group_size']} ranks on {o['nodes']} nodes ({o['algorithm']}): "
                        f"{gb(o['intra_node'])} + {gb(o['inter_node'])}" for op, o in b["ops"].items())
        print(f"   wire bytes per GPU per step: intra-node {gb(b['intra_node'])}, inter-node {gb(b['inter_node'])} [{ops}]")
        print(f"   {'NIC/GPU':>11} {'comm ms':>10} {'intra ms':>9} {'inter ms':>10} {'exposed ms':>11} "
              f"{'step ms':>10} {'exposed %':>9} {'MFU':>6}")
        for r in s["rates"]:
            print(f"   {format_rate(r['nic_gbit_s'] * 1e9):>11} {r['comm_ms']:>10.1f} {r['comm_intra_ms']:>9.1f} "
                  f"{r['comm_inter_ms']:>10.1f} {r['exposed_ms']:>11.1f} {r['step_ms']:>10.1f} "
                  f"{r['exposed_pct']:>9.1f} {r['mfu']:>6.3f}")
        req = s["required"]
        need = "none (latency- or NVLink-bound: no NIC rate is enough)" if req["nic_gbit_s"] is None else \
            "any (no traffic leaves a node)" if req["nic_gbit_s"] == 0 else format_rate(req["nic_gbit_s"] * 1e9)
        print(f"   smallest NIC per GPU for exposed comm <= {100 * req['target_exposed']:.0f}% of the step: {need}")
        h = s["headline"]
        at = f"at {format_rate(h['nic_gbit_s'] * 1e9)}" + ("" if h["meets_target"] else " (misses the target)")
        line = f"   {at}: step {h['step_ms'] / 1e3:.2f} s, MFU {h['mfu']:.3f}, {h['tokens_per_s']:,.0f} tokens/s"
        if "days_to_train" in h:
            line += f", {h['train_tokens']:.3g} tokens in {h['days_to_train']:.1f} days"
        if "gpus_for_deadline" in h:
            line += f", {h['gpus_for_deadline']} GPUs for {h['deadline_days']:g} days"
        print(line)
        st = h["storage"]
        print(f"   storage: checkpoint {gb(st['checkpoint_bytes'])} per save -> {st['write_gbyte_s']:.1f} GB/s to write "
              f"it in {st['checkpoint_write_s']:g} s ({st['write_gbyte_s_per_node']:.2f} GB/s per node); data "
              f"{st['read_gbyte_s'] * 1e3:.1f} MB/s read at {st['bytes_per_token']:g} B/token")
    print("\nassumptions:\n- " + "\n- ".join(result["assumptions"]))
