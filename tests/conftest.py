"""Fixtures shared by the trainer tests: one tiny synthetic AVA tree per test session."""
import pytest

from slowfast_dist.data.synthetic import make_synthetic


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """4 videos x 4 s at 64x48: 3 train videos, 1 val video, a few seconds to make."""
    root = tmp_path_factory.mktemp("syn")
    make_synthetic(str(root), videos=4, seconds=4, seed=1, width=64, height=48)
    return root
