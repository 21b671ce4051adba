"""files.py: atomic writes that follow the umask and name the file when the disk says no."""
import errno
import os

import pytest
import torch

from slowfast_dist.config import dump_config, load_config
from slowfast_dist.errors import UserError
from slowfast_dist.files import atomic_write
from slowfast_dist.train import checkpoint as ckpt
from slowfast_dist.train import launch


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    yield
    os.umask(old)


def test_checkpoints_and_config_follow_the_umask(tmp_path, umask_002):
    model = torch.nn.Linear(3, 2)
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 0), model=model,
                                optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epoch=0,
                                cfg_dump="")
    dump_config(load_config("configs/demo.yaml", []), str(tmp_path / "config.yaml"))
    for p in (path, tmp_path / "config.yaml"):
        assert oct(p.stat().st_mode & 0o777) == oct(0o664), p  # group can read: not 0600


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "out" / "summary.json"
    atomic_write(target, lambda f: f.write(b"old"))

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match=rf"^{target}: cannot write: No space left on device$"):
        atomic_write(target, full)
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["summary.json"]


def test_a_read_only_output_dir_is_one_line_and_exit_2(capfd):
    def run(cfg, info):
        raise OSError(errno.EROFS, "Read-only file system", "/data/run/summary.json")

    assert launch.guarded(run, load_config("configs/demo.yaml", [])) == 2
    err = capfd.readouterr().err
    assert err == ("slowfast-dist: error: /data/run/summary.json: cannot write: Read-only file "
                   "system\n")
