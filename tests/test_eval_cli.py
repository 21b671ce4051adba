"""`slowfast-dist ava-eval`: JSON output, exit status 2 on bad input, no torch import."""

import json
import subprocess
import sys

LM = 'item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n}\n'


def _files(tmp_path, det="v,0902,0,0,0.5,0.5,1,0.9\n"):
    (tmp_path / "gt.csv").write_text("v,902,0,0,0.5,0.5,1,0\n")
    (tmp_path / "det.csv").write_text(det)
    (tmp_path / "l.pbtxt").write_text(LM)
    return [str(tmp_path / "gt.csv"), str(tmp_path / "det.csv"), "--label-map", str(tmp_path / "l.pbtxt")]


def test_json_output_and_no_torch(tmp_path):
    code = ("import sys; from slowfast_dist.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, "ava-eval", *_files(tmp_path), "--json"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"mAP": 1.0, "per_class": {"a": 1.0, "b": None}}


def test_bad_row_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "slowfast_dist.cli", "ava-eval",
                        *_files(tmp_path, det="v,09x2,0,0,0.5,0.5,1,0.9\n")], capture_output=True, text=True)
    assert p.returncode == 2
    assert "det.csv:1:" in p.stderr and "Traceback" not in p.stderr


def test_file_that_is_not_utf8_exit_2_naming_the_line(tmp_path):
    args = _files(tmp_path)
    (tmp_path / "det.csv").write_bytes(b"v,0902,0,0,0.5,0.5,1,0.9\nv,0903,0,0,0.5,0.5,1,0.9\xe9\n")
    p = subprocess.run([sys.executable, "-m", "slowfast_dist.cli", "ava-eval", *args],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "det.csv:2: not UTF-8 text" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_a_huge_field_is_one_line_naming_file_line_in_bounded_memory(tmp_path):
    """A 64 MB line (a broken export, a binary file): `file:line`, exit 2, and the peak memory
    stays near twice the file (it was over 6x, with a csv traceback)."""
    files = _files(tmp_path)
    huge = "v,0903," + "x" * (64 << 20) + ",0,0.5,0.5,1,0.9\n"
    (tmp_path / "det.csv").write_text("v,0902,0,0,0.5,0.5,1,0.9\n" + huge)
    # VmHWM: this process's peak (ru_maxrss would include the forking pytest's)
    code = ("import re, sys; from slowfast_dist.cli import main; rc = main(sys.argv[1:]); "
            "print(int(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1]) "
            "// 1024); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, "ava-eval", *files], capture_output=True,
                       text=True)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().endswith("det.csv:2: line longer than 65536 characters (not a box "
                                     "CSV row)") and p.stderr.count("\n") == 1, p.stderr
    assert int(p.stdout) < 64 * 3 + 80, f"peak {p.stdout} MB for a 64 MB line"


def test_a_broken_quote_is_one_line_naming_file_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "slowfast_dist.cli", "ava-eval",
                        *_files(tmp_path, det='v,0902,0,0,0.5,0.5,1,0.9\nv,0902,"0,0,0.5\n')],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "det.csv:" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_ground_truth_with_nothing_to_score_is_exit_2(tmp_path):
    for gt in ("", "v,902,0,0,0.5,0.5,7,0\n"):  # empty; only ids outside the label map
        files = _files(tmp_path)
        (tmp_path / "gt.csv").write_text(gt)
        p = subprocess.run([sys.executable, "-m", "slowfast_dist.cli", "ava-eval", *files],
                           capture_output=True, text=True)
        assert p.returncode == 2 and "no ground-truth box of a class in" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
