"""AVA data pipeline: file readers, transforms, dataset, loader."""
from slowfast_dist.data.dataset import (AvaDataset, ClipShape, ClipSpec, build_ava_dataset,
                                        multigrid_shape)
from slowfast_dist.data.loader import build_loader, collate_detection

__all__ = ["AvaDataset", "ClipShape", "ClipSpec", "build_ava_dataset", "build_loader",
           "collate_detection", "multigrid_shape"]
