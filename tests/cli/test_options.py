"""Options every command shares, and the help text every option must have."""
import argparse

import pytest

from conftest import run_cli
from features import __version__
from features.cli import build_parser, main
from features.cli.parser import _cores


def _commands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_and_argument_has_help():
    parser = build_parser()
    lacking = [f"features {a.dest}" for a in parser._actions
               if not a.help or a.help == argparse.SUPPRESS]
    for name, sub in _commands(parser).items():
        for a in sub._actions:
            if not a.help or a.help == argparse.SUPPRESS:
                lacking.append(f"features {name} {'/'.join(a.option_strings) or a.dest}")
    assert not lacking, f"options without a help text: {', '.join(lacking)}"


def test_every_command_takes_quiet():
    parser = build_parser()
    for name, sub in _commands(parser).items():
        flags = {s for a in sub._actions for s in a.option_strings}
        assert {"-q", "--quiet"} <= flags, name


@pytest.mark.parametrize("argv", [["codebook", "S", "-q"], ["index", "S", "-q"],
                                  ["search", "S", "q.jpg", "-q"], ["serve", "S", "-q"],
                                  ["info", "S", "--quiet"], ["verify", "S", "-q"]])
def test_quiet_is_accepted(argv):
    assert build_parser().parse_args(argv).quiet is True


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"features {__version__}"


@pytest.mark.parametrize("command", [["run", "src", "-o", "o"], ["extract", "src", "-o", "o"],
                                     ["encode", "src", "-o", "o"], ["index", "S"],
                                     ["aggregate", "S", "--method", "spm"], ["demo"]])
def test_jobs_counts_cores_as_joblib_does(command):
    cores = _cores()
    parse = build_parser().parse_args
    assert parse(command + ["--jobs", "3"]).jobs == 3
    assert parse(command + ["--jobs", "-1"]).jobs == cores
    if cores > 1:
        assert parse(command + ["--jobs", "-2"]).jobs == cores - 1
    assert parse(command + ["--jobs", str(-cores)]).jobs == 1


@pytest.mark.parametrize("value", ["0", "-999", "two"])
def test_bad_jobs_is_one_line(value, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["run", "src", "-o", "o", "--jobs", value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("features: error: argument --jobs:")
    assert value in err[0]


def test_version_through_the_real_command(cli_env):
    proc = run_cli("--version", env=cli_env, check=True)
    assert proc.stdout.strip() == f"features {__version__}"


@pytest.mark.parametrize("module", ["features", "features.cli"])
def test_the_command_runs_as_a_module(cli_env, module):
    """``python -m features`` and ``python -m features.cli`` are the command too, errors and
    exit status included."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                          text=True, env=cli_env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"features {__version__}"
    proc = subprocess.run([sys.executable, "-m", module, "info", "/nonexistent/store"],
                          capture_output=True, text=True, env=cli_env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "features: error: /nonexistent/store is not a features store (no store.h5 in it)"]


def test_search_shortlist_default_is_the_searchers():
    from features.search.rerank import SHORTLIST
    assert build_parser().parse_args(["search", "STORE", "QUERY"]).shortlist == SHORTLIST
