"""Helpers shared by tests (imported as `support`; pytest puts tests/ on sys.path)."""
import socket

from slowfast_dist.config import load_config

# configs/demo.yaml made tiny: small crops, no workers, no TensorBoard, quiet
TINY = ["DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES",
        "[32, 40]", "DATA_LOADER.NUM_WORKERS", "0", "TENSORBOARD.ENABLE", "False",
        "LOG_PERIOD", "100"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def opts_for(data, out, *extra) -> list:
    """Overrides that point configs/demo.yaml at the synthetic tree `data` and OUTPUT_DIR `out`."""
    return ["AVA.FRAME_DIR", str(data / "frames"), "AVA.FRAME_LIST_DIR", str(data / "frame_lists"),
            "AVA.ANNOTATION_DIR", str(data / "annotations"), "OUTPUT_DIR", str(out), *TINY, *extra]


def cfg_for(data, out, *extra):
    return load_config("configs/demo.yaml", opts_for(data, out, *extra))
