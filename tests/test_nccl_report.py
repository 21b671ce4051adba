"""nccl-report: parsing of old (Ring) and new (Channel) NCCL INFO formats and route flags.

The excerpts under tests/data/nccl/ follow the line formats of NCCL's INFO output (version,
comm ... rank R nranks N, Ring/Channel hop and order lines); they are constructed for the test.
"""
import json
import subprocess
import sys
from pathlib import Path

from slowfast_dist.profiling.nccl_report import report

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


def test_real_issue_excerpt_direct_pointer_and_net():
    # lines from NVIDIA/nccl#1412 (see the data file's header)
    rep = report([str(DATA / "issue1412_excerpt.log")])
    chans = {c["id"]: c for c in rep["channels"]}
    h0 = {(h["from"], h["to"]): h for h in chans[0]["hops"]}
    assert h0[(7, 6)]["transport"] == "P2P/direct" and not h0[(7, 6)]["inter_node"]
    h3 = {(h["from"], h["to"]): h for h in chans[3]["hops"]}
    assert h3[(5, 12)]["transport"] == "NET/IB" and h3[(5, 12)]["nic"] == "3" and h3[(5, 12)]["inter_node"]
