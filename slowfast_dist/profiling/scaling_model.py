"""Analytic step/run-time model for data-parallel SlowFast training (no torch).

step = max(loader_step(workers), compute + cast + exposed_comm)
comm (ring, alpha-beta) = 2(P-1)/P * W / B + latency, with B the intra-node (NVLink) bandwidth for one
node and the per-node IB bandwidth otherwise; hierarchical allreduce runs the ring over nodes only.
run = iterations * step + epochs * stall.

The DDP options (the trainer's config keys DDP.BUCKET_CAP_MB, DDP.COMM_HOOK,
DDP.GRADIENT_AS_BUCKET_VIEW) enter as follows:
- W, the bytes on the wire, is the fp32 gradient halved by a bf16/fp16 comm hook.
- The buckets give calls = ceil(gradient / BUCKET_CAP_MB MiB) allreduces a step. latency =
  steps * alpha is fitted for the study's 25 MiB; each call more or fewer moves it by NCCL's own
  ring latency (base + steps * hop; nccl_call_*, NCCL 2.5.6's ring/Simple over the network). It
  never drops below the calls' own latency.
- A hook adds a cast: 16 B of HBM traffic per gradient element (torch's _compress_hook casts,
  divides and casts back: 6 + 4 + 6 B), serial with the step. That is 0.7 ms for 138 MB at 800 GB/s.
- With overlap, comm hides behind backward except max(last bucket, comm - backward). The last
  bucket is taken full (the cap), an upper bound. Without overlap (the study's profiles, which the
  fit reproduces) all comm is exposed.
- GRADIENT_AS_BUCKET_VIEW: memory only (one gradient-sized buffer per GPU). The copies it removes
  (under 1 ms a step) are not timed.
Not modelled: whether the fitted alpha (congestion, stragglers) grows with bytes. It is taken as
not, so a hook saves only the bandwidth term. Also not modelled: DDP's 1 MiB first bucket, bucket
rebuilds, NCCL's protocol/algorithm choice (ring Simple only; the network hop also on one node),
bf16 speed on V100 (no native bf16; NCCL >= 2.10 needed; taken as fp16 on the wire),
DDP.STATIC_GRAPH.

Limit: every per-step cost here grows at most linearly with the GPU count P. Doubling the nodes
therefore at most doubles the step while halving the steps, so the model cannot make 128 nodes
slower than 64. The study reports exactly that and attributes it to IB congestion from untuned NCCL
routes, without a figure that would let one size it. See tests/test_scaling_model.py for the
arithmetic.
"""
import dataclasses
import math

WIRE_BYTES = {"none": 4, "bf16": 2, "fp16": 2}  # bytes per gradient element on the wire, by DDP.COMM_HOOK
MIB_IN_MB = 1.048576                            # DDP's bucket_cap_mb is MiB; grad_mb is 10^6 bytes
CAST_TRAFFIC_PER_GRAD_BYTE = 4.0                # 16 B of HBM traffic per 4-byte gradient element (above)
VIEW_COPY_TRAFFIC_PER_GRAD_BYTE = 4.0           # grad -> bucket and back, read + write each: 16 B/element


@dataclasses.dataclass(frozen=True)
class DdpOptions:
    """The trainer's DDP config keys that change communication (names as in the config)."""
    bucket_cap_mb: float = 25.0             # DDP.BUCKET_CAP_MB, MiB of fp32 gradient per bucket
    comm_hook: str = "none"                 # DDP.COMM_HOOK: none | bf16 | fp16
    gradient_as_bucket_view: bool = False   # DDP.GRADIENT_AS_BUCKET_VIEW

    @classmethod
    def from_config(cls, block):
        """From a `DDP:` mapping with the config's key names (validated by the CLI's loader)."""
        return cls(float(block["BUCKET_CAP_MB"]), str(block["COMM_HOOK"]),
                   bool(block["GRADIENT_AS_BUCKET_VIEW"]))

    def label(self):
        grads = "fp32" if self.comm_hook == "none" else f"{self.comm_hook} hook"
        return f"{grads}, {self.bucket_cap_mb:g} MiB" + (", view" if self.gradient_as_bucket_view else "")


def study_ddp(p):
    return DdpOptions.from_config(p["DDP"])


def wire_mb(grad_mb, comm_hook):
    """MB one step's allreduces carry: the fp32 gradient, halved by a bf16/fp16 hook."""
    return grad_mb * WIRE_BYTES[comm_hook] / 4


def bucket_calls(grad_mb, bucket_cap_mb):
    """Allreduce calls a step: one per bucket of fp32 gradient (a hook compresses after bucketing)."""
    return max(1, math.ceil(grad_mb / (bucket_cap_mb * MIB_IN_MB)))


def ring_steps(gpus, nodes, hierarchical=False):
    if hierarchical and nodes > 1:
        return 2 * (nodes - 1) + 2 * (gpus // nodes - 1) * 0.05
    return 2 * (gpus - 1)


def bandwidth_s(gpus, nodes, wire, intra_bw_gbs, inter_bw_gbs):
    if gpus <= 1:
        return 0.0
    bw = intra_bw_gbs if nodes == 1 else inter_bw_gbs
    return 2 * (gpus - 1) / gpus * wire / 1000.0 / bw


def call_latency_s(steps, call_base_s, call_hop_s):
    """NCCL's own ring allreduce latency for one call (tuning.cc: base + nsteps * hop)."""
    return call_base_s + steps * call_hop_s


def latency_s(steps, calls, study_calls, alpha_hop_s, per_call_s):
    """Fitted latency for the study's bucket count, moved by NCCL's per-call latency for each
    call more or fewer; never below the calls' own latency."""
    if steps <= 0:
        return 0.0
    return max(steps * alpha_hop_s + (calls - study_calls) * per_call_s, calls * per_call_s)


def allreduce_s(gpus, nodes, grad_mb, intra_bw_gbs, inter_bw_gbs, alpha_hop_s, hierarchical=False):
    """One step's allreduce at the study's bucket count: bandwidth + fitted latency."""
    if gpus <= 1:
        return 0.0
    return (bandwidth_s(gpus, nodes, grad_mb, intra_bw_gbs, inter_bw_gbs)
            + ring_steps(gpus, nodes, hierarchical) * alpha_hop_s)


def comm_parts(p, nodes, ddp=None, overlap=False, hierarchical=False, alpha_scale=1.0):
    """Bytes on the wire, calls, total / exposed allreduce time and cast time of one step."""
    ddp = ddp or study_ddp(p)
    gpus = nodes * p["gpus_per_node"]
    wire = wire_mb(p["grad_mb"], ddp.comm_hook)
    calls = bucket_calls(p["grad_mb"], ddp.bucket_cap_mb)
    steps = ring_steps(gpus, nodes, hierarchical) if gpus > 1 else 0
    per_call = call_latency_s(steps, p["nccl_call_base_s"], p["nccl_call_hop_s"])
    bandwidth = bandwidth_s(gpus, nodes, wire, p["intra_bw_gbs"], p["inter_bw_gbs"])
    latency = latency_s(steps, calls, bucket_calls(p["grad_mb"], study_ddp(p).bucket_cap_mb),
                        p["alpha_hop_s"] * alpha_scale, per_call)
    comm = bandwidth + latency
    exposed = comm
    if overlap and steps:
        share = min(1.0, ddp.bucket_cap_mb * MIB_IN_MB / p["grad_mb"])  # last bucket, taken full
        last = bandwidth * share + per_call + (latency - calls * per_call) * share
        exposed = min(comm, max(last, comm - p["backward_fraction"] * p["compute_s"]))
    cast = hook_cast_s(p) if ddp.comm_hook != "none" and gpus > 1 else 0.0
    return {"wire_mb": wire, "calls": calls, "comm_s": comm, "exposed_s": exposed, "cast_s": cast,
            "grad_memory_saved_mb": p["grad_mb"] if ddp.gradient_as_bucket_view else 0.0}


def step_s(p, nodes, workers, ddp=None, overlap=False, hierarchical=False, alpha_scale=1.0):
    parts = comm_parts(p, nodes, ddp, overlap, hierarchical, alpha_scale)
    loader = p["loader_step_s"][workers]
    return max(loader, p["compute_s"] + parts["cast_s"] + parts["exposed_s"]), parts


def run_row(p, nodes, persistent=True, t1=None, **kw):
    workers = p["workers_persistent"] if persistent else p["workers_baseline"]
    if nodes == 1 and persistent:
        workers = p["workers_baseline"]  # the study's 1-node run used 8 workers
    st, parts = step_s(p, nodes, workers, **kw)
    iters = math.ceil(p["labels"] / (p["batch_per_gpu"] * p["gpus_per_node"] * nodes)) * p["epochs"]
    stall = p["persistent_stall_s"] if persistent else p["epoch_stall_s"][workers]
    run = iters * st + p["epochs"] * stall
    busy = p["compute_s"] + parts["cast_s"]
    comm, exposed = parts["comm_s"], parts["exposed_s"]
    return {"nodes": nodes, "gpus": nodes * p["gpus_per_node"], "step_s": round(st, 4),
            "run_time_s": round(run, 1), "compute_share": round(busy / (busy + comm), 4),
            "comm_share": round(comm / (busy + comm), 4), "comm_s": round(comm, 4),
            "exposed_s": round(exposed, 4), "exposed_share": round(exposed / (busy + exposed), 4),
            "cast_s": round(parts["cast_s"], 5), "wire_mb": round(parts["wire_mb"], 2),
            "calls": parts["calls"], "grad_memory_saved_mb": parts["grad_memory_saved_mb"],
            "speedup": round(t1 / run, 2) if t1 else 1.0}


def baseline_1node(p):
    return run_row(p, 1, persistent=False)["run_time_s"]


def table(p, persistent=True, ddp=None):
    t1 = baseline_1node(p)
    return [run_row(p, n, persistent, t1, ddp=ddp) for n in p["nodes"]]


SCENARIOS = {"study": {}, "overlap": {"overlap": True}, "fp16": {"ddp": {"comm_hook": "fp16"}},
             "hierarchical": {"hierarchical": True}, "fixed_routes": {"alpha_scale": 0.25},
             "all": {"overlap": True, "ddp": {"comm_hook": "fp16"}, "hierarchical": True,
                     "alpha_scale": 0.25}}


def predictions(p):
    t1 = baseline_1node(p)
    out = {}
    for name, kw in SCENARIOS.items():
        kw = dict(kw, ddp=dataclasses.replace(study_ddp(p), **kw.get("ddp", {})))
        out[name] = [run_row(p, g // p["gpus_per_node"], True, t1, **kw)
                     for g in (16, 32, 64, 128, 256, 512)]
    return out


def option_sets(p, given=None):
    """The study's DDP setting, bf16 and fp16 hooks, 50 and 100 MiB buckets, and `given` if new."""
    study = study_ddp(p)
    sets = [study, dataclasses.replace(study, comm_hook="bf16"),
            dataclasses.replace(study, comm_hook="fp16"),
            dataclasses.replace(study, bucket_cap_mb=50.0),
            dataclasses.replace(study, bucket_cap_mb=100.0)]
    if given is not None and given not in sets:
        sets.append(given)
    return sets


def ddp_options_table(p, sets, nodes=(32, 64, 128), overlap=False):
    """{option-set label: [run_row at each node count]}, persistent loader."""
    t1 = baseline_1node(p)
    return {ddp.label(): [run_row(p, n, True, t1, ddp=ddp, overlap=overlap) for n in nodes]
            for ddp in sets}


def hook_cast_s(p):
    """A bf16/fp16 hook's casts a step: HBM traffic at hbm_bw_gbs."""
    return CAST_TRAFFIC_PER_GRAD_BYTE * p["grad_mb"] / 1000.0 / p["hbm_bw_gbs"]


def view_copy_bound_s(p):
    """Upper bound on the time GRADIENT_AS_BUCKET_VIEW saves a step (not added to the model)."""
    return VIEW_COPY_TRAFFIC_PER_GRAD_BYTE * p["grad_mb"] / 1000.0 / p["hbm_bw_gbs"]
