from pathlib import Path

import pytest

from slowfast_dist import cli
from slowfast_dist.config import get_cfg, load_config, pyslowfast_keys

ROOT = Path(__file__).resolve().parents[1]
SHORT = str(ROOT / "configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml")


def test_prints_the_resolved_config_that_loads_back_equal(tmp_path, capsys):
    opts = ["SOLVER.BASE_LR", "0.05", "DATA_LOADER.NUM_WORKERS", "3"]
    assert cli.main(["config", "--cfg", SHORT, *opts]) == 0
    out = tmp_path / "resolved.yaml"
    out.write_text(capsys.readouterr().out)
    back = load_config(str(out), [])
    assert back == load_config(SHORT, opts)
    assert back.SOLVER.BASE_LR == 0.05 and back.DATA_LOADER.NUM_WORKERS == 3
    assert back.DETECTION.ENABLE is True  # from the file
    # no --cfg: the defaults, overrides applied
    assert cli.main(["config", "MODEL.NUM_CLASSES", "80"]) == 0
    out.write_text(capsys.readouterr().out)
    assert load_config(str(out), []) == load_config(None, ["MODEL.NUM_CLASSES", "80"])


def test_keys_lists_every_key_with_its_default_and_whose_it_is(capsys):
    assert cli.main(["config", "--keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "SOLVER.BASE_LR 0.1  # PySlowFast" in lines
    assert "DATA_LOADER.PERSISTENT_WORKERS True  # slowfast-dist" in lines
    assert "TENSORBOARD.LOG_DIR ''  # PySlowFast" in lines  # an empty string is visible
    assert "AVA.TEST_FORCE_FLIP False  # PySlowFast, only this value" in lines
    assert "MIXUP.ENABLE  # PySlowFast, ignored" in lines
    keys = [line.split()[0] for line in lines if not line.startswith("#")]
    defaults = []

    def walk(node, prefix=""):
        for k, v in node.items():
            walk(v, prefix + k + ".") if isinstance(v, dict) else defaults.append(prefix + k)

    walk(get_cfg())
    assert sorted(keys) == sorted(set(defaults) | pyslowfast_keys())  # each once
    ours = {line.split()[0] for line in lines if line.endswith("# slowfast-dist")}
    assert ours == set(defaults) - pyslowfast_keys()


@pytest.mark.parametrize("text,argv,message", [
    ("SOLVER:\n  BASE_LR: 0.1\n  WARMUP_EPOCH: 2\n", [],
     "{cfg}:3: unknown config key SOLVER.WARMUP_EPOCH; did you mean SOLVER.WARMUP_EPOCHS?"),
    ("TRAIN:\n  BATCH_SIZE: 8\nTEST:\n  BATCH_SIZE: eight\n", [],
     "{cfg}:4: TEST.BATCH_SIZE must be int (default 8), got 'eight'"),
    ("DATA: [1, 2\n", [], "{cfg}:2: malformed YAML"),
    ("TRAIN:\n  BATCH_SIZE: 8\n", ["TRAIN.BATCH_SIZ", "4"],
     "command line: unknown config key TRAIN.BATCH_SIZ; did you mean TRAIN.BATCH_SIZE?"),
    ("TRAIN:\n  BATCH_SIZE: 8\n", ["--keys"], "--keys lists the defaults"),
])
def test_errors_are_one_line_exit_2(tmp_path, capsys, text, argv, message):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    assert cli.main(["config", "--cfg", str(cfg), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("slowfast-dist config: error: " + message.format(cfg=cfg))
    assert captured.err.count("\n") == 1


def test_a_missing_file_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["config", "--cfg", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == (f"slowfast-dist config: error: {tmp_path / 'nope.yaml'}: "
                                       "config file not found\n")
