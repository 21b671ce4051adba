import os
import re
import warnings
from pathlib import Path

import pytest

from slowfast_dist.config import cfg_ignored_keys, dump_config, get_cfg, load_config, pyslowfast_keys
from slowfast_dist.errors import UserError

# Keys of PySlowFast's configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml (plus BENCHMARK/MULTIGRID, ignored).
AVA_YAML = """\
TRAIN:
  ENABLE: True
  DATASET: ava
  BATCH_SIZE: 64
  EVAL_PERIOD: 5
  CHECKPOINT_PERIOD: 1
  AUTO_RESUME: True
  CHECKPOINT_FILE_PATH: path_to_your_pretrain_model
  CHECKPOINT_TYPE: pytorch
DATA:
  NUM_FRAMES: 32
  SAMPLING_RATE: 2
  TRAIN_JITTER_SCALES: [256, 320]
  TRAIN_CROP_SIZE: 224
  TEST_CROP_SIZE: 224
  INPUT_CHANNEL_NUM: [3, 3]
DETECTION:
  ENABLE: True
  ALIGNED: True
AVA:
  DETECTION_SCORE_THRESH: 0.8
  TRAIN_PREDICT_BOX_LISTS: [
    "ava_train_v2.2.csv",
    "person_box_67091280_iou90/ava_detection_train_boxes_and_labels_include_negative_v2.2.csv",
  ]
  TEST_PREDICT_BOX_LISTS: ["person_box_67091280_iou90/ava_detection_val_boxes_and_labels.csv"]
SLOWFAST:
  ALPHA: 4
  BETA_INV: 8
  FUSION_CONV_CHANNEL_RATIO: 2
  FUSION_KERNEL_SZ: 7
RESNET:
  ZERO_INIT_FINAL_BN: True
  WIDTH_PER_GROUP: 64
  NUM_GROUPS: 1
  DEPTH: 50
  TRANS_FUNC: bottleneck_transform
  STRIDE_1X1: False
  NUM_BLOCK_TEMP_KERNEL: [[3, 3], [4, 4], [6, 6], [3, 3]]
  SPATIAL_DILATIONS: [[1, 1], [1, 1], [1, 1], [2, 2]]
  SPATIAL_STRIDES: [[1, 1], [2, 2], [2, 2], [1, 1]]
NONLOCAL:
  LOCATION: [[[], []], [[], []], [[], []], [[], []]]
  GROUP: [[1, 1], [1, 1], [1, 1], [1, 1]]
  INSTANTIATION: dot_product
  POOL: [[[1, 2, 2], [1, 2, 2]], [[1, 2, 2], [1, 2, 2]], [[1, 2, 2], [1, 2, 2]], [[1, 2, 2], [1, 2, 2]]]
BN:
  USE_PRECISE_STATS: False
  NUM_BATCHES_PRECISE: 200
SOLVER:
  BASE_LR: 0.1
  LR_POLICY: steps_with_relative_lrs
  STEPS: [0, 10, 15, 20]
  LRS: [1, 0.1, 0.01, 0.001]
  MAX_EPOCH: 20
  MOMENTUM: 0.9
  WEIGHT_DECAY: 1e-7
  WARMUP_EPOCHS: 5.0
  WARMUP_START_LR: 0.000125
  OPTIMIZING_METHOD: sgd
MODEL:
  NUM_CLASSES: 80
  ARCH: slowfast
  MODEL_NAME: SlowFast
  LOSS_FUNC: bce
  DROPOUT_RATE: 0.5
  HEAD_ACT: sigmoid
TEST:
  ENABLE: True
  DATASET: ava
  BATCH_SIZE: 8
DATA_LOADER:
  NUM_WORKERS: 2
  PIN_MEMORY: True
BENCHMARK:
  NUM_EPOCHS: 2
MULTIGRID:
  SHORT_CYCLE: False
NUM_GPUS: 8
NUM_SHARDS: 1
RNG_SEED: 0
OUTPUT_DIR: .
"""


def _write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_pyslowfast_ava_yaml_loads_and_ignored_keys_listed(tmp_path):
    cfg = load_config(_write(tmp_path, AVA_YAML), [])  # the trainer logs them, once
    assert cfg.is_frozen()
    assert cfg.SLOWFAST.ALPHA == 4 and cfg.DATA.NUM_FRAMES == 32
    assert cfg.SOLVER.STEPS == [0, 10, 15, 20] and cfg.SOLVER.WEIGHT_DECAY == 1e-7
    assert cfg.RESNET.SPATIAL_STRIDES[3] == [1, 1]
    assert cfg.MODEL.LOSS_FUNC == "bce"
    assert cfg_ignored_keys(cfg) == ("BENCHMARK.NUM_EPOCHS",)  # MULTIGRID.* are read
    # Defaults keep PySlowFast's values for keys the YAML does not set.
    assert cfg.SOLVER.NESTEROV is True and cfg.DATA.MEAN == [0.45, 0.45, 0.45]


def test_base_inheritance_and_opts_override(tmp_path):
    _write(tmp_path, AVA_YAML, "base.yaml")
    child = _write(tmp_path, "_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.05\n", "child.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(child, ["SOLVER.MAX_EPOCH", "30", "DDP.BUCKET_CAP_MB", "50",
                                  "AVA.PIXEL_SOURCE", "video", "SOLVER.LRS", "[1, 0.5, 0.2, 0.1]"])
    assert cfg.SOLVER.BASE_LR == 0.05 and cfg.SLOWFAST.ALPHA == 4
    assert cfg.SOLVER.MAX_EPOCH == 30 and cfg.DDP.BUCKET_CAP_MB == 50
    assert cfg.AVA.PIXEL_SOURCE == "video" and cfg.SOLVER.LRS == [1, 0.5, 0.2, 0.1]


def test_typo_names_key_line_and_suggestion(tmp_path):
    p = _write(tmp_path, "SOLVER:\n  BASE_LR: 0.1\n  WARMUP_EPOCH: 5.0\n")
    with pytest.raises(UserError, match=r"cfg.yaml:3: unknown config key SOLVER.WARMUP_EPOCH; did you mean SOLVER.WARMUP_EPOCHS"):
        load_config(p, [])
    with pytest.raises(UserError, match="command line.*DATA.NUM_FRAME;.*DATA.NUM_FRAMES"):
        load_config(None, ["DATA.NUM_FRAME", "8"])


def test_type_errors_and_bad_files(tmp_path):
    with pytest.raises(UserError, match="DATA.NUM_FRAMES must be int"):
        load_config(_write(tmp_path, "DATA:\n  NUM_FRAMES: eight\n"), [])
    with pytest.raises(UserError, match="TRAIN.ENABLE must be bool"):
        load_config(None, ["TRAIN.ENABLE", "3"])
    with pytest.raises(UserError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"), [])
    with pytest.raises(UserError, match="malformed YAML"):
        load_config(_write(tmp_path, "DATA: [1, 2\n", "bad.yaml"), [])
    # int given where float expected is accepted (yacs rule).
    assert load_config(None, ["SOLVER.BASE_LR", "1"]).SOLVER.BASE_LR == 1.0


def test_files_fvcore_cannot_read_are_one_line_errors(tmp_path):
    for text, name in (("", "empty.yaml"), ("# only a comment\n", "comment.yaml"), ("3\n", "scalar.yaml")):
        with pytest.raises(UserError, match=rf"{name}: empty, or not a mapping"):
            load_config(_write(tmp_path, text, name), [])
    with pytest.raises(UserError, match=r"intkey.yaml:2: config key TRAIN.1 is not a name"):
        load_config(_write(tmp_path, "TRAIN:\n  1: 2\n", "intkey.yaml"), [])
    with pytest.raises(UserError, match="include each other in a loop"):
        load_config(_write(tmp_path, "_BASE_: loop.yaml\n", "loop.yaml"), [])


def test_an_error_is_at_the_line_of_its_key_not_of_the_same_name_elsewhere(tmp_path):
    p = _write(tmp_path, "TRAIN:\n  BATCH_SIZE: 8\nTEST:\n  BATCH_SIZE: eight\n")
    with pytest.raises(UserError, match=rf"^{re.escape(p)}:4: TEST.BATCH_SIZE must be int"):
        load_config(p, [])


def test_an_error_in_a_base_file_is_at_that_file_and_line(tmp_path):
    base = _write(tmp_path, "SOLVER:\n  BASE_LR: 0.1\n  WARMUP_EPOCH: 2\n", "base.yaml")
    child = _write(tmp_path, "_BASE_: base.yaml\nSOLVER:\n  MAX_EPOCH: 30\n", "child.yaml")
    with pytest.raises(UserError, match=rf"^{re.escape(base)}:3: unknown config key "
                                        r"SOLVER.WARMUP_EPOCH; did you mean"):
        load_config(child, [])
    # a bad value from the base, and one the child writes over a base's key: each at its file
    _write(tmp_path, "TRAIN:\n  BATCH_SIZE: 8\nTEST:\n  BATCH_SIZE: 8\n", "base.yaml")
    child = _write(tmp_path, "# a comment\n_BASE_: base.yaml\nTEST:\n  BATCH_SIZE: x\n",
                   "child.yaml")
    with pytest.raises(UserError, match=rf"^{re.escape(child)}:4: TEST.BATCH_SIZE must be int"):
        load_config(child, [])
    _write(tmp_path, "TRAIN:\n  BATCH_SIZE: 8\nTEST:\n  BATCH_SIZE: y\n", "base.yaml")
    child = _write(tmp_path, "_BASE_: base.yaml\nTRAIN:\n  BATCH_SIZE: 4\n", "child.yaml")
    with pytest.raises(UserError, match=rf"^{re.escape(base)}:4: TEST.BATCH_SIZE must be int"):
        load_config(child, [])
    # a schedule check on a value from the base, too
    _write(tmp_path, "SOLVER:\n  MAX_EPOCH: 10\n  BASE_LR: 0.0\n", "base.yaml")
    with pytest.raises(UserError, match=rf"^{re.escape(base)}:3: SOLVER.BASE_LR 0.0 must be > 0"):
        load_config(child, [])


def test_a_yaml_syntax_error_names_the_file_that_has_it(tmp_path):
    base = _write(tmp_path, "TRAIN:\n  BATCH_SIZE: 8\nDATA:\n  MEAN: [0.4, 0.4\n  STD: 1\n",
                  "base.yaml")
    child = _write(tmp_path, "_BASE_: base.yaml\nTRAIN:\n  BATCH_SIZE: 4\n", "child.yaml")
    with pytest.raises(UserError, match=rf"^{re.escape(base)}:5: malformed YAML"):
        load_config(child, [])
    child = _write(tmp_path, "_BASE_: base.yaml\nTRAIN:\n  BATCH_SIZE: [4\n", "child.yaml")
    with pytest.raises(UserError, match=rf"^{re.escape(child)}:4: malformed YAML"):
        load_config(child, [])


@pytest.mark.parametrize("key,value", [("RESNET.STRIDE_1X1", "True"),
                                       ("AVA.TEST_FORCE_FLIP", "True"), ("DATA.TARGET_FPS", "25")])
def test_pyslowfast_values_we_do_not_implement_are_refused_not_ignored(key, value):
    with pytest.raises(UserError, match=rf"{key} .*: not supported by slowfast-dist"):
        load_config(None, [key, value])


def test_dump_roundtrip_and_key_list(tmp_path):
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.4"])
    out = tmp_path / "run" / "config.yaml"
    dump_config(cfg, str(out))
    assert load_config(str(out), []).SOLVER.BASE_LR == 0.4
    keys = pyslowfast_keys()
    assert "MODEL.ARCH" in keys and "AVA.IMG_PROC_BACKEND" in keys and "DDP.BUCKET_CAP_MB" not in keys
    # Every default outside our extension blocks is a PySlowFast key.
    ext = ("DDP.", "PROFILE.", "DIST.")
    flat = []
    def walk(n, p=""):
        for k, v in n.items():
            walk(v, p + k + ".") if isinstance(v, dict) else flat.append(p + k)
    walk(get_cfg())
    extra = {k for k in flat if k not in keys and not k.startswith(ext)}
    assert extra == {"INIT_METHOD", "DATA_LOADER.PERSISTENT_WORKERS", "DATA_LOADER.TIMEOUT_S",
                     "AVA.PIXEL_SOURCE", "AVA.VIDEO_DIR",
                     "TRAIN.AMP_DTYPE", "TRAIN.GRAD_ACCUM_STEPS", "SOLVER.REFERENCE_GLOBAL_BATCH",
                     "MODEL.CHANNELS_LAST", "MODEL.COMPILE", "BN.FREEZE",
                     "DATA.DECODER", "TRAIN.CHECKPOINT_FULL_UNPICKLE", "SOLVER.LARS_TRUST_COEFFICIENT",
                     "SOLVER.WARMUP_SCALES_WITH_BATCH", "TRAIN.CHECKPOINT_KEEP",
                     "TEST.CHECKPOINT_FULL_UNPICKLE", "MULTIGRID.LR_SCALING"}


# ---- SOLVER schedule checked at load (PySlowFast's get_step_index semantics) ---------------

ROOT = Path(__file__).resolve().parents[1]
SHORT_SOLVER = AVA_YAML[AVA_YAML.index("SOLVER:"):AVA_YAML.index("MODEL:")]


def _solver_yaml(tmp_path, **changes):
    """PySlowFast's SHORT SOLVER block with some lines replaced: (file, line of each key)."""
    lines = SHORT_SOLVER.splitlines()
    for key, value in changes.items():
        at = [i for i, l in enumerate(lines) if l.strip().startswith(key + ":")]
        if at:
            lines[at[0]] = f"  {key}: {value}"
        else:
            lines.append(f"  {key}: {value}")
    path = _write(tmp_path, "\n".join(lines) + "\n")
    return path, {k: i + 1 for i, l in enumerate(lines) for k in [l.strip().split(":")[0]]}


@pytest.mark.parametrize("changes,key,rule", [
    ({"STEPS": "[0, 10, 5, 5]"}, "SOLVER.STEPS", r"\[0, 10, 5, 5\] must be strictly increasing"),
    ({"STEPS": "[1, 10, 15, 20]"}, "SOLVER.STEPS", r"\[1, 10, 15, 20\] must start at 0"),
    ({"STEPS": "[0, 10, 15, 25]"}, "SOLVER.STEPS",
     r"\[0, 10, 15, 25\] must lie within SOLVER.MAX_EPOCH 20 \(25 would never apply\)"),
    ({"LRS": "[1, 0.1, 0.01]"}, "SOLVER.LRS",
     r"\[1, 0.1, 0.01\] must have one LR per SOLVER.STEPS"),
    ({"WARMUP_EPOCHS": "25.0"}, "SOLVER.WARMUP_EPOCHS", r"25.0 must be within SOLVER.MAX_EPOCH 20"),
    ({"BASE_LR": "0.0"}, "SOLVER.BASE_LR", r"0.0 must be > 0"),
    ({"LR_POLICY": "cosine", "COSINE_END_LR": "0.5"}, "SOLVER.COSINE_END_LR",
     r"0.5 must be below SOLVER.BASE_LR 0.1"),
])
def test_bad_solver_schedule_is_a_one_line_error_at_its_file_and_line(tmp_path, changes, key,
                                                                      rule):
    path, line = _solver_yaml(tmp_path, **changes)
    with pytest.raises(UserError) as err:
        load_config(path, [])
    msg = str(err.value)
    assert "\n" not in msg
    assert re.match(rf"{re.escape(path)}:{line[key.split('.')[1]]}: {key} {rule}", msg), msg


def test_schedule_errors_from_the_command_line_name_it(tmp_path):
    with pytest.raises(UserError, match=r"^command line: SOLVER.STEPS \[0, 3\] must lie within "
                                        r"SOLVER.MAX_EPOCH 2 \(3 would never apply\)$"):
        load_config(None, ["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS",
                           "[0, 3]", "SOLVER.LRS", "[1, 0.1]", "SOLVER.MAX_EPOCH", "2"])
    # the policy chosen there needs STEPS that the defaults do not have
    with pytest.raises(UserError, match=r"^command line: SOLVER.STEPS \[\] must start at 0"):
        load_config(None, ["SOLVER.LR_POLICY", "steps_with_relative_lrs"])
    with pytest.raises(UserError, match=r"^command line: SOLVER.LR_POLICY 'step' must be one of"):
        load_config(None, ["SOLVER.LR_POLICY", "step"])


def test_command_line_max_epoch_may_cut_the_file_schedule_short(tmp_path):
    path, _ = _solver_yaml(tmp_path)
    cfg = load_config(path, ["SOLVER.MAX_EPOCH", "1"])  # a smoke run: warm-up and steps cut
    assert cfg.SOLVER.MAX_EPOCH == 1 and cfg.SOLVER.STEPS == [0, 10, 15, 20]
    # written in a file, the same values are refused, with the way to cut a run short
    cut, _ = _solver_yaml(tmp_path, MAX_EPOCH=1)
    with pytest.raises(UserError, match=r"SOLVER.WARMUP_EPOCHS 5.0 must be within .*give "
                                        r"SOLVER.MAX_EPOCH on the command line$"):
        load_config(cut, [])


SHIPPED = sorted(p for p in (ROOT / "configs").glob("**/*.yaml") if "scaling" not in p.parts)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_shipped_configs_load_and_pass_the_checks(path):
    # configs/scaling/ holds scaling-model inputs, not training configs (test_scaling_model.py)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key is ours or used: none silently ignored
        cfg = load_config(str(path), [])
    assert cfg_ignored_keys(cfg) == ()
    s = cfg.SOLVER
    if s.LR_POLICY.startswith("steps"):
        assert s.STEPS[0] == 0 and len(s.LRS) == len(s.STEPS) and s.STEPS[-1] <= s.MAX_EPOCH


def test_short_config_has_pyslowfasts_current_steps():
    cfg = load_config(str(ROOT / "configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml"), [])
    assert cfg.SOLVER.STEPS == [0, 10, 15, 20] and cfg.SOLVER.LRS == [1, 0.1, 0.01, 0.001]


@pytest.mark.parametrize("key,value,want", [
    ("DATA.NUM_FRAMES", "6", "a multiple of SLOWFAST.ALPHA 4"),
    ("DATA.NUM_FRAMES", "0", "at least 1"),
    ("DATA.SAMPLING_RATE", "0", "at least 1"),
    ("DATA.TRAIN_CROP_SIZE", "0", "at least 1"),
    ("MODEL.NUM_CLASSES", "0", "at least 1"),
    ("DATA.TRAIN_JITTER_SCALES", "['a', 'b']", r"two numbers \[min, max\]"),
    ("DATA.MEAN", "[0.45, 0.45]", "three numbers"),
    ("DATA.INPUT_CHANNEL_NUM", "[3]", "a channel count for each pathway"),
    ("DATA_LOADER.NUM_WORKERS", "-1", "0 or more"),
    ("DATA_LOADER.TIMEOUT_S", "-5.0", "0 .wait for ever. or more"),
    ("SOLVER.MOMENTUM", "1.5", r"in \[0, 1\)"),
    ("TRAIN.GRAD_ACCUM_STEPS", "0", "at least 1"),
    ("TRAIN.CHECKPOINT_KEEP", "-1", "0 .keep all. or more"),
    ("TEST.CHECKPOINT_TYPE", "caff2", "pytorch or caffe2"),
    ("DIST.TIMEOUT_S", "0", "positive"),
    ("PROFILE.ACTIVE", "0", "at least 1"),
])
def test_values_the_run_cannot_use_are_one_line_errors_where_they_were_set(tmp_path, key, value,
                                                                          want):
    with pytest.raises(UserError, match=rf"^command line: {re.escape(key)} .*: must be {want}"):
        load_config("configs/demo.yaml", [key, value])
    section, name = key.split(".")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"_BASE_: {os.path.abspath('configs/demo.yaml')}\n{section}:\n  {name}: {value}\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(cfg))}:3: {re.escape(key)} "):
        load_config(str(cfg))


def test_shipped_and_pyslowfast_style_values_pass_the_value_rules():
    # a single-pathway model may keep the default [3, 3] channels (PySlowFast reads the first)
    load_config("configs/demo.yaml", ["MODEL.ARCH", "slow", "DATA.NUM_FRAMES", "6"])
    load_config("configs/demo.yaml", ["DATA_LOADER.TIMEOUT_S", "0", "TRAIN.CHECKPOINT_KEEP", "0"])


def test_a_config_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes("SOLVER:\n  # café\n  BASE_LR: 0.1\n".encode("latin-1"))
    with pytest.raises(UserError, match=rf"^{re.escape(str(cfg))}: not UTF-8 text \(byte 0xe9"):
        load_config(str(cfg))


def test_an_option_after_the_overrides_says_where_options_go():
    with pytest.raises(UserError, match=r"^command line: unknown config key --num_shards; options "
                                        r"go before the KEY VALUE overrides"):
        load_config("configs/demo.yaml", ["SOLVER.BASE_LR", "0.1", "--num_shards", "2"])


def test_a_key_written_twice_is_named_at_its_second_line(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("SOLVER:\n  BASE_LR: 0.1\n  MAX_EPOCH: 5\n  BASE_LR: 0.2\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(cfg))}:4: config key SOLVER.BASE_LR "
                                        r"given twice in one mapping \(first at line 2"):
        load_config(str(cfg))
    # the same leaf name in two sections is two keys, not one written twice
    both = tmp_path / "both.yaml"
    both.write_text("TRAIN:\n  BATCH_SIZE: 8\nTEST:\n  BATCH_SIZE: 4\n")
    assert load_config(str(both)).TEST.BATCH_SIZE == 4


def test_a_value_given_to_a_section_says_it_is_a_section(tmp_path):
    with pytest.raises(UserError, match=r"^command line: unknown config key SOLVER; SOLVER is a "
                                        r"section: give its keys \(SOLVER.NAME\), not a value$"):
        load_config("configs/demo.yaml", ["SOLVER", "0.1"])
