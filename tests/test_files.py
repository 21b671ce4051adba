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


def test_an_unreadable_input_is_not_called_a_write(capfd, tmp_path):
    """launch.guarded does not know whether an OSError came from a read or a write: outside
    OUTPUT_DIR a permission error names the file without "cannot write"; inside it, or a full
    disk anywhere, says "cannot write"."""
    cfg = load_config("configs/demo.yaml", ["OUTPUT_DIR", str(tmp_path / "run")])
    for path, err_no, said in (
            ("/data/ava/frame_lists/train.csv", errno.EACCES,
             "/data/ava/frame_lists/train.csv: Permission denied"),
            (str(tmp_path / "run" / "log.txt"), errno.EACCES,
             f"{tmp_path / 'run' / 'log.txt'}: cannot write: Permission denied"),
            ("/scratch/cache.bin", errno.ENOSPC,
             "/scratch/cache.bin: cannot write: No space left on device")):
        def run(cfg, info):
            raise OSError(err_no, os.strerror(err_no), path)

        assert launch.guarded(run, cfg) == 2
        assert capfd.readouterr().err == f"slowfast-dist: error: {said}\n"


def test_paths_that_cross_a_file_are_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match=r"afile/run/summary.json: cannot write: Not a directory "
                                        r"\(a file where a folder is needed, on the way"):
        atomic_write(tmp_path / "afile" / "run" / "summary.json", lambda f: f.write(b"{}"))
    import subprocess
    import sys

    for out, why in ((tmp_path / "afile", "a file where a folder is needed"),
                     (tmp_path / "afile" / "run", "on the way to this path")):
        done = subprocess.run([sys.executable, "-m", "slowfast_dist.cli", "train", "--cfg",
                               "configs/demo.yaml", "OUTPUT_DIR", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"{out}: cannot write" in done.stderr and why in done.stderr


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB file system of its own (root only): a disk that really fills up."""
    import shutil
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to make a small file system")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_checkpoint_that_fills_the_disk_is_one_line_and_keeps_the_last(small_tmpfs):
    small = torch.nn.Linear(3, 2)
    kept = ckpt.save_checkpoint(ckpt.checkpoint_path(small_tmpfs, 0), model=small,
                                optimizer=torch.optim.SGD(small.parameters(), lr=0.1), epoch=0,
                                cfg_dump="")
    big = torch.nn.Linear(1024, 1024)  # 4 MiB of weights on a 2 MiB disk: torch's zip writer
    # fails with a RuntimeError, not an OSError
    target = ckpt.checkpoint_path(small_tmpfs, 1)
    with pytest.raises(UserError, match=rf"^{target}: cannot write: No space left on device$"):
        ckpt.save_checkpoint(target, model=big, optimizer=torch.optim.SGD(big.parameters(), lr=0.1),
                             epoch=1, cfg_dump="")
    assert sorted(os.listdir(kept.parent)) == [kept.name]
    assert ckpt.read_checkpoint(kept)["epoch"] == 0


def test_a_torch_write_that_stops_short_with_room_left_is_one_line(tmp_path):
    # a quota or a full storage target: the disk shows free space, torch a short write
    def short(f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1997568 "
                           "vs 1997456")

    target = tmp_path / "checkpoint_epoch_00001.pyth"
    with pytest.raises(UserError, match=rf"^{target}: cannot write \(a full disk or quota\? "
                                        r"torch: \[enforce fail"):
        atomic_write(target, short)
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError, match="another failure"):  # others are not hidden
        atomic_write(target, lambda f: (_ for _ in ()).throw(RuntimeError("another failure")))
