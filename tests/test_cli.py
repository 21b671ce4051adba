import subprocess
import sys

from slowfast_dist import cli


def test_every_command_module_is_named_and_help_lists_it(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_a_one_line_error_with_the_closest_command(capsys):
    assert cli.main(["trian"]) == 2
    commands = ", ".join(cli.COMMANDS)
    assert capsys.readouterr().err == (f"slowfast-dist: error: unknown command 'trian'; did you "
                                       f"mean 'train'? (commands: {commands})\n")
    assert cli.main(["xyzzy"]) == 2  # nothing close: no guess
    assert capsys.readouterr().err == ("slowfast-dist: error: unknown command 'xyzzy' "
                                       f"(commands: {commands})\n")


def _help(name):
    return " ".join(cli.command_parser(name)[1].format_help().split())  # unwrapped


def test_every_command_help_shows_its_defaults_and_no_empty_ones():
    for name in cli.COMMANDS:
        text = _help(name)
        assert "(default: None)" not in text and "(default: [])" not in text, name
        assert "(default: False)" not in text, name  # on/off flags say nothing
    assert "--videos VIDEOS videos (every 4th is val) (default: 12)" in _help("make-synthetic")
    assert "--seed SEED random seed (default: 0)" in _help("make-synthetic")
    # a help that names its default already is left as it is
    prepare = _help("prepare-ava")
    assert "--short-side N downscale to this short side, 0 keeps the source size (default 360:" \
        in prepare
    assert "(default: 360)" not in prepare and "(default: 95)" not in prepare


CONFIG_COMMANDS = ("train", "test", "model-info", "convert-checkpoint", "config")


def test_commands_that_load_a_config_take_overrides_alike():
    for name in CONFIG_COMMANDS:
        parser = cli.command_parser(name)[1]
        assert "[KEY VALUE ...]" in parser.format_usage(), name
        assert f"KEY VALUE {cli.OVERRIDES_HELP}" in _help(name), name
        pos = ["in.pkl", "out.pyth"] if name == "convert-checkpoint" else []
        # overrides before and after the options, as PySlowFast's run lines put them
        args = parser.parse_args([*pos, "A.B", "1", "--cfg", "x.yaml", "C.D", "2"])
        assert args.cfg == "x.yaml" and args.opts == ["A.B", "1", "C.D", "2"], name
    args = cli.command_parser("train")[1].parse_args(["--cfg", "x.yaml", "A.B", "1",
                                                      "--opts", "C.D", "2"])
    assert args.opts == ["A.B", "1"] and args.more_opts == ["C.D", "2"]  # PySlowFast's --opts


def test_help_does_not_import_torch():
    code = "import sys; from slowfast_dist import cli; cli.main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
