"""Parse NCCL INFO lines of per-rank logs: rings, trees, hops, transports, route problems.

Tolerant: unknown lines are ignored; a log may hold several ranks; several logs merge. Lines may
carry a launcher tag before the host (`[3] host:pid:tid [dev] NCCL INFO`, `[1,0]<stdout>:host:...`)
or no host at all (`[4] NCCL INFO ...`). Bus ids in `rank[busid]` may be hex (`12[41000]`).

Formats (all quoted in NVIDIA/nccl issues, see tests/data/nccl/):
- NCCL 2.4-2.7: ring order `Ring 00 :    0   1   2   3`, connections `Ring 00 : 0[0] -> 1[1] via P2P/IPC`
  and `Ring 00 : 7 -> 8 [send] via NET/Socket/0`; trees `Trees [0] 26->25->-1/-1/-1` (2.4: up->me->down)
  or `Trees [0] 154/-1/-1->155->153|153->155->154/-1/-1` (2.5-2.6: down->me->up | up->me->down).
  In these versions tree connections are printed as `Ring` lines too (NVIDIA/nccl#385), so a rank
  can show several successors in one "ring"; hops that are tree links are told apart with the
  Trees line.
- NCCL >= 2.8: ring order `Channel 00/08 :    0   5   4 ...`, connections `Channel 00/0 : 3[3] -> 4[0]
  [send] via NET/IB/0/GDRDMA`, trees `Trees [0] 2/-1/-1->1->0` (down->me->up), `Ring 00 : 7 -> 0 -> 1`
  (prev->me->next), `Tree 0 : -1 -> 0 -> 1/-1/-1` (up->me->down), `comm 0x.. rank 3 nRanks 8 nNodes 2`.
  A rank prints its ring connections, then `Connected all rings`, then its tree connections.
"""
import re

from slowfast_dist.errors import UserError

_HOSTTAG = re.compile(r"(?P<host>[\w.\-]+):(?P<pid>\d+):(?P<tid>\d+)\s+\[(?P<dev>\d+)\]\s*$")
_VERSION = re.compile(r"NCCL version (\S+)")
_COMM = re.compile(r"\bcomm 0x[0-9a-fA-F]+ rank (\d+) nranks (\d+)(?: nNodes (\d+))?", re.I)
_NRANKS = re.compile(r"\bnRanks (\d+)")
_RANKID = r"(\d+)(?:\[[0-9a-fA-F]+\])?"
_HOP = re.compile(r"(?:Ring|Channel) (\d+)(?:/\d+)? : " + _RANKID + " -> " + _RANKID +
                  r"(?: \[(send|receive)\])? via (\S+)")
_ORDER = re.compile(r"(?:Ring|Channel) (\d+)(?:/\d+)? :((?: +\d+)+)\s*$")
_PREVNEXT = re.compile(r"Ring (\d+) : (-?\d+) -> (\d+) -> (-?\d+)(?:\s|$)")
_TREES = re.compile(r"\[(\d+)\] (-?\d+(?:/-?\d+)*->-?\d+->-?\d+(?:/-?\d+)*)")
_TREE1 = re.compile(r"Tree (\d+) : (-?\d+) -> (\d+) -> (-?\d+(?:/-?\d+)*)")


def _transport(via):
    """'NET/IB/0/GDRDMA' -> ('NET/IB', '0'); 'P2P/CUMEM/read' -> ('P2P/CUMEM', None);
    'P2P/direct pointer/read' -> ('P2P/direct', None); 'SHM/direct/direct' -> ('SHM', None)."""
    parts = via.split("/")
    if parts[0] == "NET":
        return "/".join(parts[:2]), (parts[2] if len(parts) > 2 else None)
    if parts[0] == "P2P" and len(parts) > 1:
        return "P2P/" + parts[1].split()[0], None
    return parts[0], None


def _tree_spec(spec):
    """'2/-1/-1->1->0' (down->me->up) or '26->25->-1/-1/-1' (2.4: up->me->down) ->
    (me, up, [down])."""
    left, me, right = spec.split("->")
    if "/" in left or "/" not in right:
        down, up = left, right
    else:
        up, down = left, right
    return int(me), int(up), [int(d) for d in down.split("/") if int(d) >= 0]


def _split(line):
    """-> (process key or None, host or None, message after the last 'NCCL INFO')."""
    head, msg = line.rsplit("NCCL INFO", 1)
    m = _HOSTTAG.search(head)
    if not m:
        return None, None, msg.strip()
    return (m.group("host"), m.group("pid"), m.group("dev")), m.group("host"), msg.strip()


def parse_logs(paths):
    """Return {"version", "nranks", "nnodes", "hosts": {rank: host}, "orders": {ch: [ranks]},
    "next": {ch: {rank: next}}, "trees": {ch: {rank: {"up", "down"}}},
    "hops": {(ch, a, b): {"send"|"receive"|"plain": (transport, nic)}}, "tree_phase": {(ch, a, b)}}."""
    st = {"version": None, "nranks": None, "nnodes": None, "hosts": {}, "orders": {}, "next": {},
          "trees": {}, "hops": {}, "tree_phase": set()}
    after_rings = set()  # processes that printed "Connected all rings": later hops are tree links
    for path in paths:
        try:
            lines = open(path, errors="replace").read().splitlines()
        except OSError as e:
            raise UserError(f"{path}: cannot read: {e.strerror}")
        for line in lines:
            if (v := _VERSION.search(line)):
                st["version"] = v.group(1)
            if "NCCL INFO" not in line:
                continue
            proc, host, msg = _split(line)
            if (c := _COMM.search(msg)):
                # several communicators (process groups) may share a log: keep the largest (world)
                st["nranks"] = max(st["nranks"] or 0, int(c.group(2)))
                if c.group(3):
                    st["nnodes"] = max(st["nnodes"] or 0, int(c.group(3)))
                if host:
                    st["hosts"][int(c.group(1))] = host
            elif (n := _NRANKS.search(msg)) and st["nranks"] is None:
                st["nranks"] = int(n.group(1))
            if "Connected all rings" in msg and proc:
                after_rings.add(proc)
            if msg.startswith("Trees"):
                for ch, spec in _TREES.findall(msg):
                    me, up, down = _tree_spec(spec)
                    st["trees"].setdefault(int(ch), {})[me] = {"up": up, "down": down}
            elif (t := _TREE1.search(msg)):
                me, up, down = _tree_spec(f"{t.group(2)}->{t.group(3)}->{t.group(4)}")
                st["trees"].setdefault(int(t.group(1)), {})[me] = {"up": up, "down": down}
            elif (h := _HOP.search(msg)):
                ch, a, b, side, via = int(h.group(1)), int(h.group(2)), int(h.group(3)), h.group(4), h.group(5)
                key = (ch, a, b)
                st["hops"].setdefault(key, {})[side or "plain"] = _transport(via)
                if proc in after_rings:
                    st["tree_phase"].add(key)
                if host:
                    # [send]: the sender is local; [receive]: the receiver; no tag (P2P/SHM): both
                    if side != "receive":
                        st["hosts"].setdefault(a, host)
                    if side != "send":
                        st["hosts"].setdefault(b, host)
            elif (o := _ORDER.search(msg)):
                order = [int(x) for x in o.group(2).split()]
                if len(order) > len(st["orders"].get(int(o.group(1)), [])):  # the largest communicator's
                    st["orders"][int(o.group(1))] = order
            elif (p := _PREVNEXT.search(msg)):
                nxt = st["next"].setdefault(int(p.group(1)), {})
                prev, me, after = int(p.group(2)), int(p.group(3)), int(p.group(4))
                if after >= 0:
                    nxt[me] = after
                if prev >= 0:
                    nxt.setdefault(prev, me)
    return st


def _ring_from_next(nxt):
    """Longest chain through {rank: next}; the whole ring when the log holds every hop."""
    if not nxt:
        return []
    preds = set(nxt.values())
    starts = [r for r in sorted(nxt) if r not in preds] or [min(nxt)]
    best = []
    for start in starts:
        ring, cur = [start], nxt.get(start)
        while cur is not None and cur != start and cur not in ring:
            ring.append(cur)
            cur = nxt.get(cur)
        best = ring if len(ring) > len(best) else best
    return best


def _is_tree_link(trees, a, b):
    ta, tb = trees.get(a), trees.get(b)
    return bool((ta and (ta["up"] == b or b in ta["down"])) or (tb and (tb["up"] == a or a in tb["down"])))


def _classify(st, ch, keys):
    """Split one channel's hops into ring hops and tree (or other non-ring) hops."""
    order, trees = st["orders"].get(ch), st["trees"].get(ch, {})
    known_next = dict(st["next"].get(ch, {}))  # "Ring c : prev -> me -> next" lines
    if order and len(order) > 1:
        known_next.update({order[i]: order[(i + 1) % len(order)] for i in range(len(order))})
    succ = {}
    for k in keys:
        if k not in st["tree_phase"]:
            succ.setdefault(k[1], []).append(k[2])
    ring, other = [], []
    for k in keys:
        a, b = k[1], k[2]
        if a in known_next:
            is_ring = known_next[a] == b
        else:
            # printed after "Connected all rings", or (NCCL 2.4-2.7, tree links printed as "Ring"
            # lines) one of several successors of a rank that the Trees line names as a tree link
            is_ring = not (k in st["tree_phase"] or (len(succ.get(a, [])) > 1 and _is_tree_link(trees, a, b)
                                                     and any(not _is_tree_link(trees, a, x) for x in succ[a])))
        (ring if is_ring else other).append(k)
    return ring, other


def _hop(st, key):
    sides = st["hops"][key]
    tr, nic = sides.get("send") or sides.get("plain") or sides.get("receive")
    a, b, hosts = key[1], key[2], st["hosts"]
    inter = tr.startswith("NET") or (a in hosts and b in hosts and hosts[a] != hosts[b])
    return {"from": a, "to": b, "transport": tr, "nic": nic, "inter_node": bool(inter)}


def report(paths):
    st = parse_logs(paths)
    hosts = st["hosts"]
    flags, channels = [], []
    chans = sorted({k[0] for k in st["hops"]} | set(st["orders"]) | set(st["next"]) | set(st["trees"]))
    for ch in chans:
        keys = sorted((k for k in st["hops"] if k[0] == ch), key=lambda k: (k[1], k[2]))
        ring_keys, other_keys = _classify(st, ch, keys)
        ring = (st["orders"].get(ch) or _ring_from_next(st["next"].get(ch, {}))
                or _ring_from_next({a: b for _, a, b in ring_keys}))
        hops = [_hop(st, k) for k in ring_keys]
        by_pair = {(h["from"], h["to"]): h for h in hops}
        for k, h in zip(ring_keys, hops):
            a, b, sides = k[1], k[2], st["hops"][k]
            if "send" in sides and "receive" in sides and sides["send"] != sides["receive"]:
                flags.append(f"channel {ch}: hop {a}->{b} asymmetric: send via {sides['send'][0]}"
                             f"/{sides['send'][1]}, receive via {sides['receive'][0]}/{sides['receive'][1]}")
            back = by_pair.get((b, a))
            if back and a < b and back["transport"] != h["transport"]:
                flags.append(f"channel {ch}: {a}->{b} via {h['transport']} but {b}->{a} via "
                             f"{back['transport']} (asymmetric)")
            if h["transport"].startswith("NET") and a in hosts and b in hosts and hosts[a] == hosts[b]:
                flags.append(f"channel {ch}: hop {a}->{b} goes over {h['transport']} inside host {hosts[a]}")
        if len(ring) > 1 and hosts and all(r in hosts for r in ring):
            # a well-formed ring leaves each host once per channel
            leaves = {}
            for i, r in enumerate(ring):
                nxt = ring[(i + 1) % len(ring)]
                if hosts[r] != hosts[nxt]:
                    leaves[hosts[r]] = leaves.get(hosts[r], 0) + 1
            for host, n in sorted(leaves.items()):
                if n > 1:
                    flags.append(f"channel {ch}: ring leaves host {host} {n} times (1 needed)")
        else:
            per_host = {}
            for h in hops:
                if h["transport"].startswith("NET") and h["from"] in hosts:
                    per_host[hosts[h["from"]]] = per_host.get(hosts[h["from"]], 0) + 1
            for host, n in sorted(per_host.items()):
                if n > 1:
                    flags.append(f"channel {ch}: ring leaves host {host} {n} times (1 needed)")
        tree = {str(r): t for r, t in sorted(st["trees"].get(ch, {}).items())}
        channels.append({"id": ch, "ring": ring, "hops": hops,
                         "tree": tree, "tree_hops": [_hop(st, k) for k in other_keys]})
    seen = {r for k in st["hops"] for r in k[1:]} | {r for o in st["orders"].values() for r in o}
    seen |= set(hosts) | {r for t in st["trees"].values() for r in t}
    # without a "comm ... nranks" line the highest rank seen gives a lower bound
    nranks = st["nranks"] or (max(seen) + 1 if seen else None)
    distinct = len(set(hosts.values()))
    any_net = any(k for k, v in st["hops"].items() for t, _ in v.values() if t.startswith("NET"))
    if st["nnodes"]:
        nodes = st["nnodes"]
    elif hosts and st["nranks"] and all(r in hosts for r in range(nranks)):
        nodes = distinct
    else:
        nodes = None  # the logs do not place every rank on a host
    nodes_at_least = max(nodes or 0, distinct, 2 if any_net else (1 if seen else 0)) or None
    for c in channels:
        succ = {}
        for h in c["hops"]:
            succ.setdefault(h["from"], []).append(h["to"])
        for r, nx in sorted(succ.items()):
            if len(nx) > 1:
                flags.append(f"channel {c['id']}: rank {r} has {len(nx)} successors {nx} in the connection "
                             "lines (ring and tree links mixed; the log has no ring order to tell them apart)")
    return {"nccl_version": st["version"], "nranks": nranks, "nranks_exact": st["nranks"] is not None,
            "nodes": nodes, "nodes_at_least": nodes_at_least,
            "hosts": {str(r): h for r, h in sorted(hosts.items())}, "channels": channels, "flags": flags}


def format_text(rep):
    nodes = rep["nodes"] if rep["nodes"] is not None else (
        f">= {rep['nodes_at_least']}" if rep.get("nodes_at_least") else "?")
    ranks = rep["nranks"] if rep.get("nranks_exact") or rep["nranks"] is None else f">= {rep['nranks']}"
    out = [f"NCCL {rep['nccl_version']}  ranks {ranks}  nodes {nodes}"]
    for c in rep["channels"]:
        out.append(f"channel {c['id']:02d}: ring {' '.join(map(str, c['ring'])) or '?'}")
        for h in c["hops"]:
            if h["inter_node"]:
                out.append(f"  {h['from']} -> {h['to']}  inter-node via {h['transport']}")
        for h in c["tree_hops"]:
            out.append(f"  tree link {h['from']} -> {h['to']} via {h['transport']}"
                       + ("  (inter-node)" if h["inter_node"] else ""))
    out += [f"FLAG {f}" for f in rep["flags"]] or ["no route problems found"]
    return "\n".join(out)
