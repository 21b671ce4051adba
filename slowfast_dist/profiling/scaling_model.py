"""Analytic step/run-time model for data-parallel SlowFast training (no torch).

step = max(loader_step(workers), compute + exposed_allreduce(P))
allreduce (ring, alpha-beta): 2(P-1)/P * S / B + 2(P-1) * alpha, with B the intra-node (NVLink)
bandwidth for one node and the per-node IB bandwidth otherwise; hierarchical allreduce runs the
ring over nodes only (2(N-1) steps); overlap hides comm behind backward except the last bucket.
run = iterations * step + epochs * stall.

Limit: every per-step cost here grows at most linearly with the GPU count P, so doubling the nodes
at most doubles the step while halving the steps: the model cannot make 128 nodes slower than 64,
which the study reports (and attributes to IB congestion from untuned NCCL routes, without a figure
that would let one size it). See tests/test_scaling_model.py for the arithmetic.
"""
import math


def allreduce_s(gpus, nodes, grad_mb, intra_bw_gbs, inter_bw_gbs, alpha_hop_s, hierarchical=False):
    if gpus <= 1:
        return 0.0
    s = grad_mb / 1000.0
    bw = intra_bw_gbs if nodes == 1 else inter_bw_gbs
    steps = 2 * (nodes - 1) + 2 * (gpus // nodes - 1) * 0.05 if hierarchical and nodes > 1 else 2 * (gpus - 1)
    return 2 * (gpus - 1) / gpus * s / bw + steps * alpha_hop_s


def step_s(p, nodes, workers, overlap=False, fp16=False, hierarchical=False, alpha_scale=1.0):
    gpus = nodes * p["gpus_per_node"]
    grad = p["grad_mb"] / (2 if fp16 else 1)
    comm = allreduce_s(gpus, nodes, grad, p["intra_bw_gbs"], p["inter_bw_gbs"],
                       p["alpha_hop_s"] * alpha_scale, hierarchical)
    exposed = comm
    if overlap:
        last = comm * min(1.0, p["bucket_mb"] / grad)
        exposed = max(last, comm - p["backward_fraction"] * p["compute_s"])
    loader = p["loader_step_s"][workers]
    return max(loader, p["compute_s"] + exposed), comm


def run_row(p, nodes, persistent=True, t1=None, **kw):
    workers = p["workers_persistent"] if persistent else p["workers_baseline"]
    if nodes == 1 and persistent:
        workers = p["workers_baseline"]  # the study's 1-node run used 8 workers
    st, comm = step_s(p, nodes, workers, **kw)
    iters = math.ceil(p["labels"] / (p["batch_per_gpu"] * p["gpus_per_node"] * nodes)) * p["epochs"]
    stall = p["persistent_stall_s"] if persistent else p["epoch_stall_s"][workers]
    run = iters * st + p["epochs"] * stall
    c = p["compute_s"]
    return {"nodes": nodes, "gpus": nodes * p["gpus_per_node"], "step_s": round(st, 4),
            "run_time_s": round(run, 1), "compute_share": round(c / (c + comm), 4),
            "comm_share": round(comm / (c + comm), 4), "comm_s": round(comm, 4),
            "speedup": round(t1 / run, 2) if t1 else 1.0}


def baseline_1node(p):
    return run_row(p, 1, persistent=False)["run_time_s"]


def table(p, persistent=True):
    t1 = baseline_1node(p)
    return [run_row(p, n, persistent, t1) for n in p["nodes"]]


SCENARIOS = {"study": {}, "overlap": {"overlap": True}, "fp16": {"fp16": True},
             "hierarchical": {"hierarchical": True}, "fixed_routes": {"alpha_scale": 0.25},
             "all": {"overlap": True, "fp16": True, "hierarchical": True, "alpha_scale": 0.25}}


def predictions(p):
    t1 = baseline_1node(p)
    out = {}
    for name, kw in SCENARIOS.items():
        out[name] = [run_row(p, g // p["gpus_per_node"], True, t1, **kw)
                     for g in (16, 32, 64, 128, 256, 512)]
    return out
