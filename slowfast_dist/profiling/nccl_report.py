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
- `Channel cc/NN :    0   1 ...` (ring order): NN is the channel count. `Channel cc/i : a -> b` (a
  connection, printed since about NCCL 2.12): i is the connection index, 0 for ring and tree
  connections, 1 for the send/recv (p2p) connections NCCL opens on demand (torch send/recv,
  gather_object, all_to_all). Those are reported apart ("p2p") and never used for rings or trees.
- `via NET/<plugin>/<nic>[(<proxy>)]/...`: the plugin name may hold spaces ("AWS Libfabric", "NCCL
  RDMA Plugin v6"); `0(8)` (PXN) means NIC 0 driven by rank 8's proxy, and the receiver then prints
  plain `0`, so send and receive are compared on transport and NIC only.

Several communicators in one log (ncclCommSplit, new_group, PyTorch's 2-rank p2p comms) reuse rank
numbers. Only the largest one (the world) is reported: its `comm 0x.. rank r nranks n` lines give
the rank -> host map, and ring/tree/connection lines are attributed to a communicator by the thread
that printed its init line (see _read_events). Limits: lines printed by other threads, or after a
communicator's `Init COMPLETE` (NCCL >= 2.22 may connect rings lazily at the first collective), or
without a host:pid:tid tag cannot be attributed and are kept; communicators as large as the world
are merged with it. Older logs print no connection index: send/recv connections there
look like ring or tree links.
"""
import re

from slowfast_dist.errors import UserError

_HOSTTAG = re.compile(r"(?P<host>[\w.\-]+):(?P<pid>\d+):(?P<tid>\d+)\s+\[(?P<dev>\d+)\]\s*$")
_VERSION = re.compile(r"NCCL version (\S+)")
_COMM = re.compile(r"\bcomm (0x[0-9a-fA-F]+) rank (\d+) nranks (\d+)(?: nNodes (\d+))?", re.I)
_NRANKS = re.compile(r"\bnRanks (\d+)")
_RANKID = r"(\d+)(?:\[[0-9a-fA-F]+\])?"
# the whole rest of the line after "via": NET plugin names may hold spaces ("NET/AWS Libfabric/0")
_HOP = re.compile(r"(?:Ring|Channel) (\d+)(?:/(\d+))? : " + _RANKID + " -> " + _RANKID +
                  r"(?: \[(send|receive)\])? via (.+?)\s*$")
# RCCL appends the communicator to connection lines: "via P2P/IPC comm 0x9bbf3b0 nRanks 4096"
_HOP_COMM = re.compile(r"\s+comm 0x[0-9a-fA-F]+(?: nRanks (\d+))?.*$")
_ORDER = re.compile(r"(?:Ring|Channel) (\d+)(?:/\d+)? :((?: +\d+)+)\s*$")
_PREVNEXT = re.compile(r"Ring (\d+) : (-?\d+) -> (\d+) -> (-?\d+)(?:\s|$)")
_TREES = re.compile(r"\[(\d+)\] (-?\d+(?:/-?\d+)*->-?\d+->-?\d+(?:/-?\d+)*)")
_TREE1 = re.compile(r"Tree (\d+) : (-?\d+) -> (\d+) -> (-?\d+(?:/-?\d+)*)")
_NIC = re.compile(r"(\d+)(?:\((\d+)\))?")  # "0" or, with PXN, "0(8)": NIC 0 used through rank 8's proxy


def _transport(via):
    """'NET/IB/0/GDRDMA' -> ('NET/IB', '0', None); 'NET/IB/0(8)/GDRDMA' (PXN: rank 8's proxy drives
    NIC 0) -> ('NET/IB', '0', 8); 'NET/AWS Libfabric/0' -> ('NET/AWS Libfabric', '0', None);
    'P2P/CUMEM/read' -> ('P2P/CUMEM', None, None); 'P2P/direct pointer/read' -> ('P2P/direct', None, None);
    'SHM/direct/direct' -> ('SHM', None, None)."""
    parts = [x.strip() for x in via.strip().split("/")]
    if parts[0] == "NET":
        # NET/<plugin name>/<nic>[(<proxy rank>)]/...: the NIC is the first all-digit part, so a
        # plugin name with spaces or slashes ("NCCL RDMA Plugin v6") stays whole
        for i in range(2, len(parts)):
            if (m := _NIC.fullmatch(parts[i])):
                return "/".join(parts[:i]), m.group(1), (int(m.group(2)) if m.group(2) else None)
        return "/".join(parts[:2]), None, None
    if parts[0] == "P2P" and len(parts) > 1 and parts[1]:
        return "P2P/" + parts[1].split()[0], None, None
    return (parts[0].split() or ["?"])[0], None, None  # "?" only for a line cut short


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
    """-> (process key or None, thread key or None, host or None, message after the last 'NCCL INFO')."""
    head, msg = line.rsplit("NCCL INFO", 1)
    m = _HOSTTAG.search(head)
    if not m:
        return None, None, None, msg.strip()
    proc = (m.group("host"), m.group("pid"), m.group("dev"))
    return proc, proc + (m.group("tid"),), m.group("host"), msg.strip()


def _read_events(paths):
    """One pass over the logs -> (version, comm records, events); UserError when no log has an
    NCCL INFO line.

    Every ring/tree/connection line becomes an event tagged with the communicator it belongs to,
    when that can be told: sub-communicators (ncclCommSplit, new_group, PyTorch's 2-rank p2p
    comms) print their own ring and connection lines with rank numbers of their own. NCCL does
    not name the communicator on those lines, but the thread that initialises a communicator
    prints its `comm 0x.. rank r nranks n` line and its ring, tree and connection lines: after an
    `Init START` / `nRanks .. nNodes` line (NCCL >= 2.12), or before the `Init COMPLETE` line (older
    NCCL prints no start line). Lines that cannot be attributed (no host:pid:tid tag, printed by
    another thread or after `Init COMPLETE`) get None and are kept.
    """
    version, comms, events, empty = None, [], [], []
    cur, pending = {}, {}  # per thread: communicator being initialised; events not yet attributed
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise UserError(f"{path}: cannot read: {e.strerror}") from None
        n_info = 0
        for line in lines:
            if (v := _VERSION.search(line)):
                version = v.group(1)
            if "NCCL INFO" not in line:
                continue
            n_info += 1
            proc, thread, host, msg = _split(line)
            if (c := _COMM.search(msg)):
                rec = {"ptr": c.group(1), "rank": int(c.group(2)), "nranks": int(c.group(3)),
                       "nnodes": int(c.group(4)) if c.group(4) else None, "host": host}
                comms.append(rec)
                if thread is None or "Destroy" in msg or "Abort" in msg:
                    continue
                if "COMPLETE" in msg:
                    started = cur.get(thread)
                    if not (started and started["ptr"] == rec["ptr"]):
                        # old NCCL prints only "Init COMPLETE", after the comm's own lines
                        for ev in pending.get(thread, []):
                            ev["comm"] = rec
                    pending[thread], cur[thread] = [], None
                else:  # "Init START", "nRanks .. nNodes": the comm's lines follow on this thread
                    cur[thread], pending[thread] = rec, []
                    events.append({"kind": "start", "proc": proc, "comm": rec})
                continue
            ev = _event(msg)
            if ev is None:
                if "Connected all rings" in msg and proc:
                    events.append({"kind": "rings_done", "proc": proc, "comm": cur.get(thread)})
                elif (n := _NRANKS.search(msg)):
                    comms.append(_sized_comm(int(n.group(1))))
                continue
            if ev.get("comm"):
                comms.append(ev["comm"])  # RCCL names the communicator on the line itself
            ev.update(proc=proc, host=host, comm=ev.get("comm") or (cur.get(thread) if thread else None))
            if thread and ev["comm"] is None:
                pending.setdefault(thread, []).append(ev)
            events.append(ev)
        if n_info == 0:
            empty.append(path)
    if empty and len(empty) == len(paths):
        raise UserError(f"no NCCL INFO lines in {', '.join(map(str, empty))} (run with NCCL_DEBUG=INFO)")
    return version, comms, events


def _sized_comm(nranks):
    """A communicator known only by its size (an `nRanks N` line, RCCL's per-line tag)."""
    return {"ptr": None, "rank": None, "nranks": nranks, "nnodes": None, "host": None}


def _event(msg):
    """One ring/tree/connection line -> event dict, or None for any other line."""
    if msg.startswith("Trees"):
        return {"kind": "trees", "trees": [(int(ch),) + _tree_spec(spec) for ch, spec in _TREES.findall(msg)]}
    if (t := _TREE1.search(msg)):
        return {"kind": "trees", "trees": [(int(t.group(1)),) +
                                           _tree_spec(f"{t.group(2)}->{t.group(3)}->{t.group(4)}")]}
    if (h := _HOP.search(msg)):
        via, comm = h.group(6), None
        if (rc := _HOP_COMM.search(via)):
            via = via[:rc.start()]
            if rc.group(1):
                comm = _sized_comm(int(rc.group(1)))
        # "Channel cc/i": i is the connection index; 0 = ring and tree connections, 1 = the
        # send/recv (p2p) connections NCCL makes on demand (ncclTransportP2pSetup(comm, NULL, 1)).
        # Older logs ("Ring 00 :", "Channel 00 :") print no index: everything counts as 0.
        return {"kind": "hop", "ch": int(h.group(1)), "conn": int(h.group(2) or 0), "a": int(h.group(3)),
                "b": int(h.group(4)), "side": h.group(5) or "plain", "tr": _transport(via), "comm": comm}
    if (o := _ORDER.search(msg)):
        return {"kind": "order", "ch": int(o.group(1)), "order": [int(x) for x in o.group(2).split()]}
    if (p := _PREVNEXT.search(msg)):
        return {"kind": "prevnext", "ch": int(p.group(1)), "prev": int(p.group(2)), "me": int(p.group(3)),
                "next": int(p.group(4))}
    return None


def parse_logs(paths):
    """Return {"version", "nranks", "nnodes", "hosts": {rank: host}, "orders": {ch: [ranks]},
    "next": {ch: {rank: next}}, "trees": {ch: {rank: {"up", "down"}}},
    "hops": {(ch, a, b): {"send"|"receive"|"plain": (transport, nic, proxy)}}, "tree_phase": {(ch, a, b)},
    "p2p": {(ch, a, b): {side: (transport, nic, proxy)}}, "dropped": number of sub-communicator lines}.

    Only the largest communicator (the world) is reported: events of smaller communicators are
    dropped. Communicators of the world's size cannot be told apart and are merged."""
    version, comms, events = _read_events(paths)
    world = max((c["nranks"] for c in comms), default=None)
    st = {"version": version, "nranks": world, "nnodes": None, "hosts": {}, "orders": {}, "next": {},
          "trees": {}, "hops": {}, "tree_phase": set(), "p2p": {}, "dropped": 0}
    for c in comms:
        if c["nranks"] == world:
            if c["nnodes"]:
                st["nnodes"] = max(st["nnodes"] or 0, c["nnodes"])
            if c["host"] is not None and c["rank"] is not None:
                st["hosts"][c["rank"]] = c["host"]
    after_rings = set()  # processes that printed "Connected all rings": later hops are tree links
    for ev in events:
        if ev["comm"] is not None and world is not None and ev["comm"]["nranks"] < world:
            st["dropped"] += ev["kind"] not in ("start", "rings_done")
            continue
        kind = ev["kind"]
        if kind == "start":
            after_rings.discard(ev["proc"])  # a new (world-sized) communicator's rings follow
        elif kind == "rings_done":
            after_rings.add(ev["proc"])
        elif kind == "trees":
            for ch, me, up, down in ev["trees"]:
                st["trees"].setdefault(ch, {})[me] = {"up": up, "down": down}
        elif kind == "order":
            if len(ev["order"]) > len(st["orders"].get(ev["ch"], [])):  # the largest communicator's
                st["orders"][ev["ch"]] = ev["order"]
        elif kind == "prevnext":
            nxt = st["next"].setdefault(ev["ch"], {})
            if ev["next"] >= 0:
                nxt[ev["me"]] = ev["next"]
            if ev["prev"] >= 0:
                nxt.setdefault(ev["prev"], ev["me"])
        elif kind == "hop":
            key = (ev["ch"], ev["a"], ev["b"])
            if ev["conn"] != 0:
                # send/recv connections: not part of any ring or tree, and often made by PyTorch's
                # 2-rank p2p communicators that we cannot tell from the world: no host inference
                st["p2p"].setdefault(key, {})[ev["side"]] = ev["tr"]
                continue
            st["hops"].setdefault(key, {})[ev["side"]] = ev["tr"]
            if ev["proc"] in after_rings:
                st["tree_phase"].add(key)
            if ev["host"]:
                # [send]: the sender is local; [receive]: the receiver; no tag (P2P/SHM): both
                if ev["side"] != "receive":
                    st["hosts"].setdefault(ev["a"], ev["host"])
                if ev["side"] != "send":
                    st["hosts"].setdefault(ev["b"], ev["host"])
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


def _hop(sides, ch, a, b, hosts):
    tr, nic, proxy = sides.get("send") or sides.get("plain") or sides.get("receive")
    inter = tr.startswith("NET") or (a in hosts and b in hosts and hosts[a] != hosts[b])
    # proxy: the rank whose proxy drives the NIC (PXN, NCCL >= 2.12), None when the sender's own
    return {"from": a, "to": b, "transport": tr, "nic": nic, "proxy": proxy, "inter_node": bool(inter)}


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
        hops = [_hop(st["hops"][k], *k, hosts) for k in ring_keys]
        by_pair = {(h["from"], h["to"]): h for h in hops}
        for k, h in zip(ring_keys, hops):
            a, b, sides = k[1], k[2], st["hops"][k]
            # compare transport and NIC only: with PXN the sender prints "NET/IB/0(8)" (NIC 0 through
            # rank 8's proxy) and the receiver "NET/IB/0" for the same NIC
            if "send" in sides and "receive" in sides and sides["send"][:2] != sides["receive"][:2]:
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
                         "tree": tree, "tree_hops": [_hop(st["hops"][k], *k, hosts) for k in other_keys]})
    seen = {r for k in st["hops"] for r in k[1:]} | {r for o in st["orders"].values() for r in o}
    seen |= set(hosts) | {r for t in st["trees"].values() for r in t}
    # without a "comm ... nranks" line the highest rank seen gives a lower bound
    nranks = st["nranks"] or (max(seen) + 1 if seen else None)
    distinct = len(set(hosts.values()))
    # a NET connection of any kind, send/recv ones too, proves a second node
    any_net = any(t[0].startswith("NET") for d in (st["hops"], st["p2p"]) for v in d.values() for t in v.values())
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
            "hosts": {str(r): h for r, h in sorted(hosts.items())}, "channels": channels,
            "p2p": [dict(_hop(st["p2p"][k], *k, hosts), channel=k[0]) for k in sorted(st["p2p"])],
            "subcomm_lines_dropped": st["dropped"], "flags": flags}


def format_text(rep):
    nodes = rep["nodes"] if rep["nodes"] is not None else (
        f">= {rep['nodes_at_least']}" if rep.get("nodes_at_least") else "?")
    ranks = rep["nranks"] if rep.get("nranks_exact") or rep["nranks"] is None else f">= {rep['nranks']}"
    out = [f"NCCL {rep['nccl_version']}  ranks {ranks}  nodes {nodes}"]
    for c in rep["channels"]:
        out.append(f"channel {c['id']:02d}: ring {' '.join(map(str, c['ring'])) or '?'}")
        for h in c["hops"]:
            if h["inter_node"]:
                nic = f" NIC {h['nic']}" if h["nic"] is not None else ""
                pxn = f" (PXN: rank {h['proxy']}'s proxy)" if h.get("proxy") is not None else ""
                out.append(f"  {h['from']} -> {h['to']}  inter-node via {h['transport']}{nic}{pxn}")
        for h in c["tree_hops"]:
            out.append(f"  tree link {h['from']} -> {h['to']} via {h['transport']}"
                       + ("  (inter-node)" if h["inter_node"] else ""))
    if rep.get("p2p"):
        inter = sum(h["inter_node"] for h in rep["p2p"])
        out.append(f"send/recv (p2p) connections: {len(rep['p2p'])}, {inter} inter-node "
                   "(not part of rings or trees)")
    out += [f"FLAG {f}" for f in rep["flags"]] or ["no route problems found"]
    return "\n".join(out)
