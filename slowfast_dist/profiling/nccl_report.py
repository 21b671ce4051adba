"""Parse NCCL INFO lines of per-rank logs: rings, hops, transports, route problems.

Tolerant: unknown lines are ignored; a log may hold several ranks; several logs merge.
Covers NCCL 2.4-2.7 ("Ring 00 : 0 -> 1 [receive] via NET/IB/0", "Ring 00 : 0 1 2 3") and
current ("Channel 00/02 : 0[0] -> 1[1] [send] via P2P/CUMEM/read") formats.
"""
import re

from slowfast_dist.errors import UserError

_PREFIX = re.compile(r"^\s*(?P<host>[\w.\-]+):(?P<pid>\d+):(?P<tid>\d+)\s+\[(?P<dev>\d+)\]\s+NCCL INFO\s*(?P<msg>.*)$")
_VERSION = re.compile(r"NCCL version (\S+)")
_COMM = re.compile(r"comm 0x[0-9a-fA-F]+ rank (\d+) nranks (\d+)")
_NRANKS = re.compile(r"nRanks (\d+)")
_HOP = re.compile(r"(?:Ring|Channel) (\d+)(?:/\d+)? : (\d+)(?:\[\d+\])? -> (\d+)(?:\[\d+\])?"
                  r"(?: \[(send|receive)\])? via (\S+(?: direct pointer)?)")
_ORDER = re.compile(r"(?:Ring|Channel) (\d+)(?:/\d+)? :((?: +\d+)+)\s*$")


def _transport(via):
    """'NET/IB/0/GDRDMA' -> ('NET/IB', '0'); 'P2P/CUMEM/read' -> ('P2P/CUMEM', None)."""
    parts = via.split("/")
    if parts[0] == "NET":
        return "/".join(parts[:2]), (parts[2] if len(parts) > 2 else None)
    if parts[0] == "P2P" and len(parts) > 1:
        return "P2P/" + parts[1].split()[0] if parts[1] != "direct pointer" else "P2P/direct", None
    return parts[0], None


def parse_logs(paths):
    """Return {"version", "nranks", "hosts": {rank: host}, "orders": {ch: [ranks]},
    "hops": {(ch, a, b): {"send"|"receive"|"plain": (transport, nic)}}}."""
    st = {"version": None, "nranks": None, "hosts": {}, "orders": {}, "hops": {}}
    for path in paths:
        try:
            lines = open(path, errors="replace").read().splitlines()
        except OSError as e:
            raise UserError(f"{path}: cannot read: {e.strerror}")
        for line in lines:
            if "NCCL INFO" not in line:
                continue
            m = _PREFIX.match(line)
            host = m.group("host") if m else None
            msg = m.group("msg") if m else line.split("NCCL INFO", 1)[1].strip()
            if (v := _VERSION.search(msg)):
                st["version"] = v.group(1)
            if (c := _COMM.search(msg)):
                st["nranks"] = int(c.group(2))
                if host:
                    st["hosts"][int(c.group(1))] = host
            elif (n := _NRANKS.search(msg)) and st["nranks"] is None:
                st["nranks"] = int(n.group(1))
            if (h := _HOP.search(msg)):
                ch, a, b, side, via = int(h.group(1)), int(h.group(2)), int(h.group(3)), h.group(4), h.group(5)
                st["hops"].setdefault((ch, a, b), {})[side or "plain"] = _transport(via)
                if host and side != "receive":
                    st["hosts"].setdefault(a, host)
                if host and side == "receive":
                    st["hosts"].setdefault(b, host)
            elif (o := _ORDER.search(msg)):
                st["orders"].setdefault(int(o.group(1)), [int(x) for x in o.group(2).split()])
    return st


def _ring_from_hops(edges):
    nxt = dict(edges)
    if not nxt:
        return []
    start = min(nxt)
    ring, cur = [start], nxt.get(start)
    while cur is not None and cur != start and cur not in ring:
        ring.append(cur)
        cur = nxt.get(cur)
    return ring


def report(paths):
    st = parse_logs(paths)
    hosts = st["hosts"]
    flags, channels = [], []
    chans = sorted({k[0] for k in st["hops"]} | set(st["orders"]))
    for ch in chans:
        hop_keys = [k for k in st["hops"] if k[0] == ch]
        ring = st["orders"].get(ch) or _ring_from_hops([(a, b) for _, a, b in hop_keys])
        hops = []
        for _, a, b in sorted(hop_keys, key=lambda k: (k[1], k[2])):
            sides = st["hops"][(ch, a, b)]
            tr, nic = sides.get("send") or sides.get("plain") or sides.get("receive")
            inter = tr.startswith("NET") or (a in hosts and b in hosts and hosts[a] != hosts[b])
            hops.append({"from": a, "to": b, "transport": tr, "nic": nic, "inter_node": bool(inter)})
            if "send" in sides and "receive" in sides and sides["send"] != sides["receive"]:
                flags.append(f"channel {ch}: hop {a}->{b} asymmetric: send via {sides['send'][0]}"
                             f"/{sides['send'][1]}, receive via {sides['receive'][0]}/{sides['receive'][1]}")
            back = st["hops"].get((ch, b, a))
            if back and a < b:
                btr = (back.get("send") or back.get("plain") or back.get("receive"))[0]
                if btr != tr:
                    flags.append(f"channel {ch}: {a}->{b} via {tr} but {b}->{a} via {btr} (asymmetric)")
            if tr.startswith("NET") and a in hosts and b in hosts and hosts[a] == hosts[b]:
                flags.append(f"channel {ch}: hop {a}->{b} goes over {tr} inside host {hosts[a]}")
        if hosts:
            per_host = {}
            for h in hops:
                if h["transport"].startswith("NET") and h["from"] in hosts:
                    per_host[hosts[h["from"]]] = per_host.get(hosts[h["from"]], 0) + 1
            for host, n in sorted(per_host.items()):
                if n > 1:
                    flags.append(f"channel {ch}: ring leaves host {host} {n} times (1 needed)")
        channels.append({"id": ch, "ring": ring, "hops": hops})
    nodes = len(set(hosts.values())) if hosts else None
    if nodes is None and channels and channels[0]["hops"]:
        net = sum(h["transport"].startswith("NET") for h in channels[0]["hops"])
        nodes = net if net >= 2 else (1 if net == 0 and st["nranks"] and len(channels[0]["hops"]) >= st["nranks"] else None)
    nranks = st["nranks"] or (len({r for c in channels for r in c["ring"]}) or None)
    return {"nccl_version": st["version"], "nranks": nranks, "nodes": nodes,
            "channels": channels, "flags": flags}


def format_text(rep):
    out = [f"NCCL {rep['nccl_version']}  ranks {rep['nranks']}  nodes {rep['nodes']}"]
    for c in rep["channels"]:
        out.append(f"channel {c['id']:02d}: ring {' '.join(map(str, c['ring']))}")
        for h in c["hops"]:
            if h["inter_node"]:
                out.append(f"  {h['from']} -> {h['to']}  inter-node via {h['transport']}")
    out += [f"FLAG {f}" for f in rep["flags"]] or ["no route problems found"]
    return "\n".join(out)
