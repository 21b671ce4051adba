import argparse
import json

import torch

from slowfast_dist.models import info_cli

TINY = ["RESNET.DEPTH", "18", "RESNET.TRANS_FUNC", "basic_transform",
        "RESNET.WIDTH_PER_GROUP", "8", "DATA.TEST_CROP_SIZE", "64", "DATA.NUM_FRAMES", "4"]


def test_json_lists_params_flops_and_state_dict(capsys):
    # PySlowFast's own SLOW_8x8_R50.yaml loads unchanged, shrunk by KEY VALUE overrides.
    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    info_cli.add_arguments(p)
    args = p.parse_args(["--cfg", "configs/Kinetics/SLOW_8x8_R50.yaml", "--json"] + TINY)
    assert info_cli.run(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["state_dict"][0] == ["s1.pathway0_stem.conv.weight", [8, 3, 1, 7, 7]]
    assert out["state_dict"][-1] == ["head.projection.bias", [400]]
    n = sum(int(torch.tensor(s).prod()) for k, s in out["state_dict"]
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert out["params"] == n
    assert out["gflops"] > 0
