import subprocess
import sys

from slowfast_dist import cli


def test_every_command_module_is_named_and_help_lists_it(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_a_one_line_error(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and err.count("\n") == 1


def test_help_does_not_import_torch():
    code = "import sys; from slowfast_dist import cli; cli.main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
