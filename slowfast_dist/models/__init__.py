"""SlowFast / Slow 3D ResNets with PySlowFast-compatible state dicts."""
from .build import build_model  # noqa: F401
from .checkpoint_compat import load_pyslowfast_checkpoint  # noqa: F401
from .resnet3d import VideoResNet  # noqa: F401
