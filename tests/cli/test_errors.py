"""How the command reports errors: the library's errors (features.exceptions) and the
system's as one line and exit status 2, a parameter's name as the flag that sets it, and
anything else, a bug, with its traceback."""
import pytest

from conftest import run_cli
from features import cli
from features.cli import commands
from features.exceptions import ParameterError, StoreError


def _fail_with(monkeypatch, error):
    def command(args):
        raise error
    monkeypatch.setattr(commands, "cmd_info", command)


@pytest.mark.parametrize("error, line", [
    (StoreError("/x is not a features store"), "features: error: /x is not a features store"),
    (ParameterError("k must be >= 1, got 0", "k"), "features: error: k must be >= 1, got 0"),
    (FileNotFoundError(2, "No such file or directory", "/x"),
     "features: error: [Errno 2] No such file or directory: '/x'"),
])
def test_expected_errors_are_one_line_and_exit_2(monkeypatch, capsys, error, line):
    _fail_with(monkeypatch, error)
    assert cli.main(["info", "somewhere"]) == 2
    assert capsys.readouterr().err.splitlines() == [line]


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("x"), RuntimeError("x"),
                                   AssertionError()])
def test_a_bug_keeps_its_traceback(monkeypatch, error):
    """Not caught: the interpreter prints the traceback and exits 1."""
    _fail_with(monkeypatch, error)
    with pytest.raises(type(error)):
        cli.main(["info", "somewhere"])


@pytest.mark.parametrize("argv, param, shown", [
    (["aggregate", "s", "--method", "fisher"], "pca_dims", "--pca-dims must be >= 1"),
    (["search", "s", "q"], "k", "-k must be >= 1"),
    (["run", "src", "-o", "s"], "words", "--words must be >= 1"),
    # a parameter the command has no flag for keeps its name
    (["run", "src", "-o", "s"], "frame_units", "frame_units must be >= 1"),
])
def test_parameter_names_become_flags(argv, param, shown):
    args = cli.build_parser().parse_args(argv)
    assert cli.message(ParameterError(f"{param} must be >= 1", param), args.parser) == shown


def test_library_errors_through_the_real_command(tmp_path, cli_env):
    """A bad option the library checks comes back as the flag, one line, exit 2."""
    (tmp_path / "img").mkdir()
    proc = run_cli("run", tmp_path / "img", "-o", tmp_path / "s", "--words", 1, env=cli_env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "features: error: --words must be >= 2, got 1"]
