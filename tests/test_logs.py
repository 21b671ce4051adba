"""logs.py: time and rank on every line, rank 0 at INFO and the others at WARNING, messages every
rank would say alike said once, rank 0's lines in OUTPUT_DIR/train.log."""
import re

from slowfast_dist import logs

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def _say(rank, tmp_path, capsys, monkeypatch, all_ranks=None):
    if all_ranks is not None:
        monkeypatch.setenv("SLOWFAST_DIST_LOG_ALL_RANKS", all_ranks)
    log = logs.setup(rank, tmp_path / f"out{rank}")
    log.info("epoch 1/2: loss 0.5")
    log.warning("a frame does not decode")
    log.warning("no frame list; using the videos", extra=logs.EVERY_RANK)
    logs.LineStream(log).write("epoch 1 [##..] 1/2  loss 0.5\n\n")
    for h in log.handlers:
        h.flush()
    return capsys.readouterr().err.splitlines()


def test_rank_0_says_everything_with_time_and_rank(tmp_path, capsys, monkeypatch):
    lines = _say(0, tmp_path, capsys, monkeypatch)
    assert len(lines) == 4
    assert all(re.match(STAMP + r" \[rank 0\] ", ln) for ln in lines), lines
    assert lines[0].endswith("] epoch 1/2: loss 0.5")
    assert lines[1].endswith("] warning: a frame does not decode")
    assert lines[3].endswith("] epoch 1 [##..] 1/2  loss 0.5")
    saved = (tmp_path / "out0" / "train.log").read_text().splitlines()
    assert saved == lines  # the file holds what the console showed


def test_other_ranks_say_only_their_own_warnings(tmp_path, capsys, monkeypatch):
    lines = _say(1, tmp_path, capsys, monkeypatch)
    assert len(lines) == 1 and re.match(STAMP + r" \[rank 1\] warning: a frame", lines[0])
    assert not (tmp_path / "out1").exists()  # rank 0 alone writes the file
    lines = _say(1, tmp_path, capsys, monkeypatch, all_ranks="1")
    assert len(lines) == 3 and "[rank 1] epoch 1/2" in lines[0]  # asked for: INFO too


def test_setting_up_again_replaces_the_handlers(tmp_path, capsys, monkeypatch):
    _say(0, tmp_path, capsys, monkeypatch)
    lines = _say(0, tmp_path, capsys, monkeypatch)
    assert len(lines) == 4  # not 8: one console handler
    assert len(logs.get().handlers) == 2  # the console and the file


def test_durations_read_as_a_person_writes_them():
    assert [logs.format_duration(x) for x in (4.4, 65, 3 * 3600 + 7 * 60 + 5)] == [
        "4s", "1m05s", "3h07m"]
    assert logs.format_duration(float("inf")) == "?"  # no rate yet: no ETA
