"""nccl-report: parsing of old (Ring) and new (Channel) NCCL INFO formats and route flags.

tests/data/nccl/issue*.log are real log lines quoted in NVIDIA/nccl GitHub issues (the first line of
each names the issue); new_2node.log and old_1node.log are synthesised (marked so) and kept for what
the real excerpts lack: a send/receive NIC mismatch, a NET hop inside one host, a version line.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slowfast_dist.errors import UserError
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


def test_real_pxn_send_nic_with_proxy_rank_is_not_asymmetric():
    # real NCCL 2.27.5 log (real_nccl2275_pxn_host8.log, reviewer's nccl2275_pxn_host8.log): rank 9
    # sends "via NET/IB/0(8)/GDRDMA" (NIC 0 through rank 8's proxy), rank 0 receives "via NET/IB/0/GDRDMA"
    rep = report([str(DATA / "real_nccl2275_pxn_host8.log")])
    assert rep["nranks"] == 16 and rep["nodes"] == 2
    ch0 = {c["id"]: c for c in rep["channels"]}[0]
    hops = {(h["from"], h["to"]): h for h in ch0["hops"]}
    assert hops[(9, 0)]["transport"] == "NET/IB" and hops[(9, 0)]["nic"] == "0" and hops[(9, 0)]["proxy"] == 8
    assert hops[(1, 8)]["proxy"] is None and hops[(9, 0)]["inter_node"]
    assert not any("asymmetric" in f for f in rep["flags"])
    assert "9 -> 0  inter-node via NET/IB NIC 0 (PXN: rank 8's proxy)" in format_text(rep)


def test_pxn_still_flags_a_real_nic_mismatch(tmp_path):
    # SYNTHESISED from the real line above: the receiver names NIC 1, so the two sides differ
    log = tmp_path / "pxn_mismatch.log"
    log.write_text("tpgds-aihub0008:181412:181412 [1] NCCL INFO Channel 00/0 : 9[1] -> 0[0] [send] "
                   "via NET/IB/0(8)/GDRDMA\n"
                   "tpgds-aihub0007:177787:177787 [0] NCCL INFO Channel 00/0 : 9[1] -> 0[0] [receive] "
                   "via NET/IB/1/GDRDMA\n")
    assert any("9->0 asymmetric" in f for f in report([str(log)])["flags"])


def test_real_net_plugin_names_with_spaces():
    # aws-samples/aws-efa-eks README.md (NCCL 2.8.3 over EFA): "via NET/AWS Libfabric/3/GDRDMA"
    rep = report([str(DATA / "real_efa_awslibfabric_2node.log")])
    chans = {c["id"]: c for c in rep["channels"]}
    assert chans[0]["ring"] == [0, 7, 6, 5, 4, 3, 2, 1, 8, 15, 14, 13, 12, 11, 10, 9]
    assert _hops(chans[0])[(1, 8)] == ("NET/AWS Libfabric", "0", True)
    assert _hops(chans[3])[(7, 14)] == ("NET/AWS Libfabric", "3", True)
    assert sum(t[2] for t in _hops(chans[3]).values()) == 2 and len(_hops(chans[3])) == 16
    assert rep["hosts"]["15"] == "nccl-tests-efa-worker-1" and rep["flags"] == []
    # NVIDIA/nccl-tests#321: "via NET/NCCL RDMA Plugin v6/0(2)/GDRDMA/Shared" (plugin name with spaces + PXN)
    rep = report([str(DATA / "issue_tests321_rdma_plugin_p2p.log")])
    p2p = {(h["channel"], h["from"], h["to"]): h for h in rep["p2p"]}
    h = p2p[(1, 1, 2)]
    assert (h["transport"], h["nic"], h["proxy"]) == ("NET/NCCL RDMA Plugin v6", "0", 0)
    assert p2p[(1, 2, 1)]["nic"] == "1" and p2p[(1, 2, 1)]["proxy"] == 3 and p2p[(1, 2, 1)]["inter_node"]
    assert rep["nodes_at_least"] == 2  # send/recv NET connections prove a second node


def test_real_p2p_connections_conn_index_1_kept_out_of_rings():
    # NCCL 2.20.5 sendrecv_perf -g 2 (real_nccl2205_sendrecv_p2p_conn1.log): "Channel 02/1 : 0[0] -> 1[1]"
    # is a send/recv connection on channel 2, whose ring the trimmed excerpt does not list
    rep = report([str(DATA / "real_nccl2205_sendrecv_p2p_conn1.log")])
    assert [c["id"] for c in rep["channels"]] == [0, 1]
    assert all(c["tree_hops"] == [] and len(c["hops"]) == 2 for c in rep["channels"])
    assert sorted((h["channel"], h["from"], h["to"]) for h in rep["p2p"]) == [
        (0, 0, 1), (0, 1, 0), (1, 0, 1), (1, 1, 0), (2, 0, 1), (2, 1, 0)]
    assert rep["p2p"][0]["transport"] == "P2P/direct"
    assert "send/recv (p2p) connections: 6, 0 inter-node" in format_text(rep)


def test_p2p_connections_do_not_make_tree_links_or_extra_successors():
    # SYNTHESISED (synth_p2p_conn1_4rank.log): rank 0 opens "/1" connections to 1, 2, 3 and there is
    # no ring-order line; before the fix they showed as 3 successors of rank 0
    rep = report([str(DATA / "synth_p2p_conn1_4rank.log")])
    ch0 = rep["channels"][0]
    assert ch0["ring"] == [0, 1, 2, 3] and ch0["tree_hops"] == [] and len(ch0["hops"]) == 4
    assert rep["flags"] == [] and len(rep["p2p"]) == 3


def test_sub_communicator_does_not_overwrite_world_hosts_or_ring():
    # SYNTHESISED (synth_subcomm_split.log): a 2-rank ncclCommSplit on nodeB prints "comm .. rank 0
    # nranks 2" and its own ring on other threads; world ranks 0-1 stay on nodeA
    rep = report([str(DATA / "synth_subcomm_split.log")])
    assert rep["hosts"] == {"0": "nodeA", "1": "nodeA", "2": "nodeB", "3": "nodeB"}
    assert rep["nranks"] == 4 and rep["nodes"] == 2
    ch0 = rep["channels"][0]
    assert ch0["ring"] == [0, 1, 2, 3] and ch0["tree_hops"] == []
    assert rep["flags"] == [] and rep["subcomm_lines_dropped"] == 3


def test_old_format_sub_communicator_attributed_by_init_complete(tmp_path):
    # SYNTHESISED: NCCL < 2.12 prints only "Init COMPLETE", after the comm's own lines; the 2-rank
    # comm's "Ring 00 : 1[1] -> 0[0]" must not become a second successor of world rank 1
    log = tmp_path / "old_split.log"
    log.write_text("\n".join([
        "gpu1:10:10 [0] NCCL INFO Ring 00 :    0   1   2   3",
        "gpu1:10:10 [0] NCCL INFO Ring 00 : 0[0] -> 1[1] via P2P/IPC",
        "gpu1:11:11 [1] NCCL INFO Ring 00 : 1[1] -> 2[2] via P2P/IPC",
        "gpu1:12:12 [2] NCCL INFO Ring 00 : 2[2] -> 3[3] via P2P/IPC",
        "gpu1:13:13 [3] NCCL INFO Ring 00 : 3[3] -> 0[0] via P2P/IPC",
        "gpu1:10:10 [0] NCCL INFO comm 0x7f00 rank 0 nranks 4 cudaDev 0 nvmlDev 0 - Init COMPLETE",
        "gpu1:11:20 [1] NCCL INFO Ring 00 : 1[1] -> 0[0] via P2P/IPC",
        "gpu1:11:20 [1] NCCL INFO comm 0x7f01 rank 1 nranks 2 cudaDev 1 nvmlDev 1 - Init COMPLETE", ""]))
    rep = report([str(log)])
    assert rep["nranks"] == 4 and rep["subcomm_lines_dropped"] == 1
    assert rep["channels"][0]["tree_hops"] == [] and rep["flags"] == []


def test_log_without_nccl_lines_is_a_user_error(tmp_path):
    # the reviewer's no_nccl.log: training output without NCCL_DEBUG=INFO
    log = tmp_path / "no_nccl.log"
    log.write_text("just some training output\nepoch 1 loss 0.3\n")
    with pytest.raises(UserError, match=r"no NCCL INFO lines in .*no_nccl\.log \(run with NCCL_DEBUG=INFO\)"):
        report([str(log)])
    # one log without NCCL lines next to one with them is accepted (a launcher's own output)
    assert report([str(log), str(DATA / "new_2node.log")])["nranks"] == 4
