"""One CLI: every command's (and subcommand's) --help is walked and held to the rules of
cli/options.py: one meaning per option, --json/-q/-v everywhere, one backend vocabulary,
defaults shown by click, help on every option, examples at the end."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.cli.options import BACKEND_CHOICES


def _commands():
    ctx = click.Context(main)
    found = [("", main)]
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        found.append((name, command))
        for sub_name, sub in sorted(getattr(command, "commands", {}).items()):
            found.append((f"{name} {sub_name}", sub))
    return found


COMMANDS = _commands()
SUBCOMMANDS = [(name, command) for name, command in COMMANDS if name]


def test_every_stage_is_walked():
    names = {name for name, _ in SUBCOMMANDS}
    assert {"run", "export", "optimize", "quantize", "build-engine", "lint", "validate", "validate merge",
            "benchmark", "inspect", "train-digits", "package"} <= names


@pytest.mark.parametrize("name,command", COMMANDS, ids=[n or "main" for n, _ in COMMANDS])
def test_help_ends_with_examples(name, command):
    result = CliRunner().invoke(main, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.rstrip().splitlines()]
    tail = lines[lines.index("  Examples:") + 1:]
    assert 1 <= len(tail) <= 2, tail
    assert all(re.match(r"^    (\w+=\S+ )?inception-deploy ", line) for line in tail), tail


def _options(command):
    return [p for p in command.params if isinstance(p, click.Option)]


@pytest.mark.parametrize("name,command", SUBCOMMANDS, ids=[n for n, _ in SUBCOMMANDS])
def test_options_follow_the_rules(name, command):
    options = {p.name: p for p in _options(command)}
    visible = [p for p in options.values() if not p.hidden]
    ctx = click.Context(command)
    # --json FILE, -q/--quiet and -v/--verbose on every command
    assert options["json_path"].opts == ["--json"] and not options["json_path"].is_flag
    assert set(options["quiet"].opts) == {"-q", "--quiet"} and set(options["verbose"].opts) == {"-v", "--verbose"}
    for option in visible:
        assert option.help, f"{name} {option.opts}: no help"
        # defaults are shown by click, never written into the help text by hand
        assert not re.search(r"[\[(]default", option.help), f"{name} {option.opts}: default in help text"
        default = option.get_default(ctx, call=False)
        unset = type(default).__name__ == "Sentinel"  # click 8.3+: no default given
        meaningful_default = not unset and default not in (None, False, ()) and not option.is_flag
        assert not meaningful_default or option.show_default, f"{name} {option.opts}: default {option.default} not shown"
    # -o/--output is the one artifact; several files go to --output-dir (where -o is only a hidden alias)
    for option in visible:
        if "-o" in option.opts:
            assert option.name == "output" and "--output" in option.opts, f"{name}: -o is {option.opts}"
        if "--output-dir" in option.opts:
            assert "-o" not in option.opts
    assert not ("output" in options and "output_dir" in options and not options["output_dir"].hidden), name
    if "backend" in options:
        backend = options["backend"]
        assert backend.default == "auto"
        assert set(BACKEND_CHOICES) <= set(backend.type.choices), backend.type.choices
        assert set(backend.type.choices) - set(BACKEND_CHOICES) <= {"torch", "triton"}


def test_one_artifact_and_multi_artifact_commands():
    options = {name: {p.name: p for p in _options(command)} for name, command in SUBCOMMANDS}
    for name in ("export", "optimize", "quantize", "build-engine"):
        assert "-o" in options[name]["output"].opts, name
    for name in ("run", "validate", "validate merge", "package"):
        assert "--output-dir" in options[name]["output_dir"].opts and options[name]["output_dir_alias"].hidden, name


def test_old_spellings_still_work(tmp_path):
    """-o DIR on run/validate (now --output-dir) and export -o DIR/ keep working."""
    from inception_deploy.cli.options import artifact_path

    assert artifact_path(str(tmp_path) + "/", "g.onnx") == tmp_path / "g.onnx"
    assert artifact_path(str(tmp_path), "g.onnx") == tmp_path / "g.onnx"  # an existing folder
    assert artifact_path(str(tmp_path / "x.onnx"), "g.onnx") == tmp_path / "x.onnx"
    result = CliRunner().invoke(main, ["validate", "merge", str(tmp_path / "none.json"), "-o", str(tmp_path / "m")])
    assert "no such option" not in result.output.lower()
    result = CliRunner().invoke(main, ["validate", "merge", str(tmp_path / "none.json"), "-o", str(tmp_path / "a"),
                                       "--output-dir", str(tmp_path / "b")])
    assert result.exit_code == 2 and "give --output-dir once" in result.output
