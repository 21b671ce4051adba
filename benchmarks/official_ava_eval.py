"""PySlowFast's AVA evaluator, the official ActivityNet code it vendors, imported from a checkout.

Used by `ava_eval_speed.py` and `ava_eval_agreement.py`. Two layouts exist: older checkouts have
`slowfast/utils/ava_evaluation/`; newer ones keep `ava_evaluation/` at the top and import it as
`vision.fair.slowfast.ava_evaluation` (Meta's internal path), which is aliased here. Its
`ava_eval_helper` also imports `slowfast.utils.distributed` (torch, pytorchvideo) for one call,
`is_master_proc()`, and `slowfast.utils.env` (iopath) for `pathmgr.open`: both stand in here
where they do not import, as a plain `open` and "not the master" (which only skips a pprint).
"""
from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import types

PER_CLASS = "PascalBoxes_PerformanceByCategory/AP@0.5IOU/"
MAP = "PascalBoxes_Precision/mAP@0.5IOU"


def load(reference_dir: str):
    """The checkout's `slowfast.utils.ava_eval_helper` module."""
    reference_dir = os.path.abspath(reference_dir)
    if not os.path.isfile(os.path.join(reference_dir, "slowfast", "utils", "ava_eval_helper.py")):
        raise SystemExit(f"{reference_dir}: no slowfast/utils/ava_eval_helper.py (a PySlowFast "
                         "checkout is needed)")
    sys.path.insert(0, reference_dir)
    top = os.path.join(reference_dir, "ava_evaluation")
    if os.path.isdir(top):
        for name in ("vision", "vision.fair", "vision.fair.slowfast"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["vision.fair.slowfast.ava_evaluation"] = importlib.import_module("ava_evaluation")
    for name, stub in (("slowfast.utils.distributed", {"is_master_proc": lambda *a, **k: False}),
                       ("slowfast.utils.env", {"pathmgr": types.SimpleNamespace(open=open)})):
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__dict__.update(stub)
            sys.modules[name] = module
    logging.getLogger().setLevel(logging.WARNING)  # its run_evaluation logs every excluded frame
    return importlib.import_module("slowfast.utils.ava_eval_helper")


def revision(reference_dir: str) -> str | None:
    """The commit a checkout says it is (its REVISION file), for the results' JSON."""
    path = os.path.join(reference_dir, "REVISION")
    return open(path).read().strip() if os.path.exists(path) else None


def evaluate(helper, label_map: str, gt: str, detections: str, exclusions: str | None = None):
    """(mAP, {class name: AP or None}) as `evaluate_ava_from_files` computes them (that function
    returns nothing, so its body is replayed: the same calls in the same order)."""
    categories, whitelist = helper.read_labelmap(label_map)
    metrics = helper.run_evaluation(categories, helper.read_csv(gt, whitelist),
                                    helper.read_csv(detections, whitelist, load_score=True),
                                    helper.read_exclusions(exclusions), verbose=False)
    per_class = {k[len(PER_CLASS):]: (None if math.isnan(v) else float(v))
                 for k, v in metrics.items() if k.startswith(PER_CLASS)}
    return float(metrics[MAP]), per_class
