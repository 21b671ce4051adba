"""nccl-report: parsing of old (Ring) and new (Channel) NCCL INFO formats and route flags.

tests/data/nccl/issue*.log are real log lines quoted in NVIDIA/nccl GitHub issues (the first line of
each names the issue); new_2node.log and old_1node.log are synthesised (marked so) and kept for what
the real excerpts lack: a send/receive NIC mismatch, a NET hop inside one host, a version line.
"""
import json
import subprocess
import sys
from pathlib import Path

from slowfast_dist.profiling.nccl_report import format_text, report

DATA = Path(__file__).parent / "data" / "nccl"


def test_new_format_two_nodes_and_asymmetric_nic():
    rep = report([str(DATA / "new_2node.log")])
    assert rep["nccl_version"] == "2.18.1+cuda12.1"
    assert rep["nranks"] == 4 and rep["nodes"] == 2
    ch = rep["channels"][0]
    assert ch["ring"] == [0, 1, 2, 3]
    hops = {(h["from"], h["to"]): h for h in ch["hops"]}
    assert hops[(0, 1)]["transport"] == "P2P/CUMEM" and not hops[(0, 1)]["inter_node"]
    assert hops[(1, 2)]["transport"] == "NET/IB" and hops[(1, 2)]["inter_node"]
    # send over NIC 0, receive over NIC 1 -> asymmetric flag
    assert any("1->2" in f and "asymmetric" in f for f in rep["flags"])


def test_old_format_flags_net_inside_host_and_reverse_asymmetry():
    rep = report([str(DATA / "old_1node.log")])
    assert rep["nccl_version"] == "2.5.6+cuda10.0" and rep["nodes"] == 1
    assert rep["channels"][0]["ring"] == [0, 1, 2, 3]
    assert any("2->3" in f and "inside host" in f for f in rep["flags"])
    assert any("channel 1" in f and "asymmetric" in f for f in rep["flags"])


def test_cli_json_merges_logs_without_torch():
    code = ("import sys, runpy; sys.argv=['slowfast-dist','nccl-report','--json'] + sys.argv[1:];"
            "from slowfast_dist.profiling import nccl_report_cli as c; import argparse;"
            "p=argparse.ArgumentParser(); c.add_arguments(p); rc=c.run(p.parse_args(sys.argv[2:]));"
            "assert 'torch' not in sys.modules; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(DATA / "new_2node.log"), str(DATA / "old_1node.log")],
                         capture_output=True, text=True, check=True).stdout
    rep = json.loads(out)
    assert set(rep) >= {"nccl_version", "nranks", "nodes", "channels", "flags"}
    assert rep["channels"][0]["hops"]




def _hops(ch):
    return {(h["from"], h["to"]): (h["transport"], h["nic"], h["inter_node"]) for h in ch["hops"]}


def test_real_old_format_two_hosts_over_socket():
    # NVIDIA/nccl#398: NCCL 2.4-2.7 "Ring 00 : a[d] -> b[d] via P2P/IPC" and "Ring 00 : 7 -> 8 [send] via NET/Socket/0"
    rep = report([str(DATA / "issue398_old_2node_socket.log")])
    assert rep["nranks"] == 16 and not rep["nranks_exact"]  # no "comm" line: highest rank seen + 1
    assert rep["nodes"] is None and rep["nodes_at_least"] == 2
    assert "ranks >= 16  nodes >= 2" in format_text(rep)
    assert rep["hosts"]["7"] == "ip-172-31-0-112" and rep["hosts"]["15"] == "ip-172-31-13-129"
    chans = {c["id"]: c for c in rep["channels"]}
    assert set(chans) == {0, 1}
    h0 = _hops(chans[0])
    assert h0[(7, 8)] == ("NET/Socket", "0", True) and h0[(15, 0)] == ("NET/Socket", "0", True)
    assert h0[(13, 15)] == ("P2P/IPC", None, False)
    assert sum(t[2] for t in h0.values()) == 2  # only the two socket hops leave a host
    # the excerpt lacks a few hops: the longest chain is reported, not a made-up ring
    assert chans[0]["ring"] == [9, 11, 10, 14, 12, 13, 15, 0]
    assert rep["flags"] == []


def test_real_nccl_2_5_tree_links_printed_as_ring_lines():
    # NVIDIA/nccl#302 (NCCL 2.5.6, the study's version): rank 155 prints three "Ring 00" successors;
    # the Trees line (down->me->up|up->me->down) says 153 and 154 are its tree parent and child
    rep = report([str(DATA / "issue302_nccl256_ib_rank155.log")])
    ch0 = {c["id"]: c for c in rep["channels"]}[0]
    assert ch0["tree"]["155"] == {"up": 153, "down": [154]}
    assert list(_hops(ch0)) == [(155, 157)] and ch0["ring"] == [155, 157]
    assert {(h["from"], h["to"]) for h in ch0["tree_hops"]} == {(155, 153), (155, 154)}
    tree3 = {c["id"]: c for c in rep["channels"]}[3]["tree"]["155"]
    assert tree3 == {"up": 154, "down": [153, 146, 162]}
    assert rep["hosts"]["155"] == "crow-ib-new-nccl-256-info-19"  # "[155] host:pid:tid [3]" tag
    assert not any("successors" in f for f in rep["flags"])


def test_real_old_format_without_host_and_hex_bus_ids():
    # NVIDIA/nccl#385: "[4] NCCL INFO Ring 00 : 12[41000] -> 11[2d000] via P2P/IPC", no host, no Trees line
    rep = report([str(DATA / "issue385_old_no_host.log")])
    h0 = _hops(rep["channels"][0])
    assert h0[(1, 8)] == ("NET/IB", "1", True) and h0[(9, 0)] == ("NET/IB", "1", True)
    assert h0[(12, 11)] == ("P2P/IPC", None, False) and len(h0) == 11
    assert rep["nodes"] is None and rep["nodes_at_least"] == 2 and rep["hosts"] == {}
    assert any("rank 12 has 2 successors [11, 13]" in f for f in rep["flags"])


def test_real_new_format_tagged_socket_ring_then_tree_phase():
    # NVIDIA/nccl#1232: "[1] node2:22555:22555 [0] NCCL INFO ..."; hops a rank prints after its own
    # "Connected all rings" are tree links, the ones before are ring links
    rep = report([str(DATA / "issue1232_socket_tagged.log")])
    assert rep["hosts"] == {"0": "node0", "1": "node2", "2": "node0"}
    assert rep["nodes"] is None and rep["nodes_at_least"] == 2  # rank 3 prints no hop: its host is unknown
    for ch in rep["channels"]:
        assert _hops(ch) == {(2, 1): ("NET/Socket", "0", True)}
        tree = {(h["from"], h["to"]): (h["transport"], h["inter_node"]) for h in ch["tree_hops"]}
        assert tree == {(0, 1): ("NET/Socket", True), (1, 0): ("NET/Socket", True), (2, 0): ("SHM", False)}
    assert [c["id"] for c in rep["channels"]] == [0, 1]


def test_real_new_format_rings_trees_and_nnodes():
    # NVIDIA/nccl#1412: "comm ... rank 6 nRanks 16 nNodes 2", "Channel 00/08 :    0   5   4 ...", Trees
    rep = report([str(DATA / "issue1412_excerpt.log")])
    assert rep["nranks"] == 16 and rep["nranks_exact"] and rep["nodes"] == 2
    chans = {c["id"]: c for c in rep["channels"]}
    assert chans[0]["ring"] == [0, 5, 4, 7, 6, 3, 2, 1, 8, 13, 12, 15, 14, 11, 10, 9]
    assert chans[3]["ring"][:3] == [0, 5, 12] and len(chans[3]["ring"]) == 16
    assert chans[1]["tree"]["1"] == {"up": 0, "down": []} and chans[0]["tree"]["1"] == {"up": 0, "down": [2]}
    assert sorted(chans) == list(range(8))  # Trees name channels 0-7
    assert _hops(chans[3]) == {(5, 12): ("NET/IB", "3", True), (13, 4): ("NET/IB", "3", True)}
    assert _hops(chans[0]) == {(5, 4): ("P2P/direct", None, False), (7, 6): ("P2P/direct", None, False)}


def test_real_version_line_without_info_prefix():
    # NVIDIA/nccl#300: NCCL 2.5 prints "[1,0]<stdout>:NCCL version 2.5.6+cuda10.2" with no "NCCL INFO"
    rep = report([str(DATA / "issue300_version_openmpi_tag.log")])
    assert rep["nccl_version"] == "2.5.6+cuda10.2" and rep["channels"] == []


def test_real_prev_next_ring_lines_and_tree_lines():
    # NVIDIA/nccl#1189: "Ring 06 : 2 -> 0 -> 1" (prev -> me -> next), "Tree 1 : 1 -> 3 -> 2/-1/-1"
    rep = report([str(DATA / "issue1189_prev_next_trees.log")])
    assert rep["nranks"] == 4 and rep["nodes"] == 2 and rep["hosts"]["3"] == "H20-GPU-06"
    chans = {c["id"]: c for c in rep["channels"]}
    assert chans[6]["ring"] == [2, 0, 1, 3] and chans[7]["ring"] == [3, 1, 0, 2]
    assert chans[1]["tree"]["1"] == {"up": -1, "down": [0, 3]}  # root of channel 1's tree
    assert chans[1]["tree"]["3"] == {"up": 1, "down": [2]}
    assert chans[5]["tree"]["3"] == {"up": -1, "down": [2, 1]}
