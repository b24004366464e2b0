"""Hostile and broken input, one case per family (issue 14), from files the tests make here.

For each: exit code 2 (1 for a failed check), exactly one line on stderr naming the file and
the fix, no traceback, nothing left in the output folder, and for the dangerous ones a
marker file that code from the input would create, and a user file it would overwrite,
both checked. tests/test_bad_inputs.py holds the everyday bad inputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zipfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from inception_deploy.cli import main

REFUSED_FIX = ("nothing was run. Save a state_dict (torch.save(model.state_dict(), ...)), or pass --trust-checkpoint "
               "if you trust where it came from")


# --------------------------------------------------------------------------- helpers
def invoke(*args) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, exit_code: int = 2) -> str:
    """The single stderr line of a refused command, without its 'error: ' prefix."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # nothing escaped as a traceback
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0][len("error: "):]


def assert_empty(folder: Path) -> None:
    assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())


class RunsCode:
    """Unpickling this runs `touch marker`: the payload of a malicious archive member."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1))


class OverwritesAFile(torch.nn.Module):
    """A TorchScript forward that maps a user's file and overwrites its first bytes."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        mapped = torch.from_file(self.path, True, 4, dtype=torch.uint8).fill_(65)
        return x.mean((2, 3)) * self.scale + mapped.float().sum() * 0


class RunsOnLoad(torch.nn.Module):
    """A TorchScript module whose __setstate__ (run by torch.jit.load) overwrites a user's file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x.mean((2, 3)) * self.scale

    @torch.jit.export
    def __getstate__(self):
        return (self.scale, self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]):
        mapped = torch.from_file(state[1], True, 4, dtype=torch.uint8).fill_(66)
        self.scale = state[0] + mapped.float().sum() * 0
        self.path = state[1]
        self.training = state[2]


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory) -> Path:
    program = torch.export.export(TinyNet().eval(), (torch.zeros(2, 3, 16, 16),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    path = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    torch.export.save(program, str(path))
    return path


def rewrite_archive(source: Path, target: Path, edit) -> Path:
    """Copy a zip archive with `edit(members, root)` applied to its {name: bytes}."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    edit(members, next(iter(members)).split("/")[0] + "/")
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def victim(tmp_path) -> Path:
    """A user's file that code from a checkpoint would overwrite."""
    path = tmp_path / "precious.txt"
    path.write_bytes(b"user data, keep me\n")
    return path


def export_refused(weights: Path, out: Path) -> str:
    return one_line_error(invoke("export", "-q", "--recipe", "googlenet-digits", "--weights", weights, "-o", out))


# --------------------------------------------------------------------------- 1. .pt2 that would unpickle or eval
def _pickled_weight(marker):
    def edit(members, root):
        config_name = root + "data/weights/model_weights_config.json"
        config = json.loads(members[config_name])
        config["config"]["conv.weight"]["use_pickle"] = True
        members[config_name] = json.dumps(config).encode()
        members[root + "data/weights/weight_0"] = pickle_bytes(RunsCode(marker))
    return edit, "'conv.weight' in data/weights/model_weights_config.json is stored as a pickle (use_pickle), " \
                 "which torch loads with weights_only=False"


def _pickled_sample_inputs(marker):
    def edit(members, root):
        members[root + "data/sample_inputs/model.pt"] = pickle_bytes(RunsCode(marker))
    return edit, "data/sample_inputs/model.pt needs arbitrary unpickling (it calls posix.system)"


def _sympy_eval(marker):
    def edit(members, root):
        text = members[root + "models/model.json"].decode()
        members[root + "models/model.json"] = text.replace(
            "Symbol('s77', positive=True, integer=True)", f"__import__('os').system('touch {marker}')").encode()
    return edit, "models/model.json holds a symbolic shape \"__import__('os').system('touch "


def _guard_code(marker):
    def edit(members, root):
        program = json.loads(members[root + "models/model.json"])
        program["guards_code"] = [f"__import__('os').system('touch {marker}') or True"]
        members[root + "models/model.json"] = json.dumps(program).encode()
    return edit, "models/model.json carries guard code (1 Python snippets torch compiles)"


def _aoti_library(marker):
    def edit(members, root):
        members[root + "data/aotinductor/model/model.so"] = b"\x7fELF not really"
    return edit, "the archive holds AOTInductor compiled code (data/aotinductor/model/model.so)"


def _impure_operator(marker):
    def edit(members, root):
        program = json.loads(members[root + "models/model.json"])
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.aten.from_file.default"
        members[root + "models/model.json"] = json.dumps(program).encode()
    return edit, "its graph calls torch.ops.aten.from_file.default, which is not on the list of pure tensor operators"


@pytest.mark.parametrize("craft", [_pickled_weight, _pickled_sample_inputs, _sympy_eval, _guard_code, _aoti_library,
                                   _impure_operator])
def test_pt2_that_would_run_code_is_refused_and_nothing_runs(craft, tiny_pt2, tmp_path, out):
    if craft not in (_aoti_library, _impure_operator):  # the payload is real: torch.export.load (and a call) runs it
        decoy = tmp_path / "decoy-ran"
        decoy_archive = rewrite_archive(tiny_pt2, tmp_path / "decoy.pt2", craft(decoy)[0])
        with contextlib.suppress(Exception), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.load(str(decoy_archive)).module()(torch.zeros(1, 3, 16, 16))
        assert decoy.exists()
    marker = tmp_path / "code-ran"
    edit, reason = craft(marker)
    hostile = rewrite_archive(tiny_pt2, tmp_path / "hostile.pt2", edit)
    message = export_refused(hostile, out)
    assert message.startswith(f"{hostile}: refused: {reason}"), message
    assert message.endswith(REFUSED_FIX)
    assert not marker.exists()
    assert_empty(out)


def test_pt2_load_problems_are_one_line_without_torch_log_tracebacks(tiny_pt2, tmp_path, out):
    """A damaged archive makes torch log a warning with a whole traceback before it fails."""
    def drop_weight(members, root):
        del members[root + "data/weights/weight_0"]

    damaged = rewrite_archive(tiny_pt2, tmp_path / "damaged.pt2", drop_weight)
    message = export_refused(damaged, out)
    assert message.startswith(f"{damaged}: torch.export program could not be loaded: ")
    assert_empty(out)


# --------------------------------------------------------------------------- 2. TorchScript programs
def test_torchscript_that_overwrites_a_file_is_refused_and_the_file_keeps_its_bytes(tmp_path, out, victim):
    decoy = tmp_path / "decoy.bin"
    decoy.write_bytes(b"0123")
    torch.jit.script(OverwritesAFile(str(decoy)))(torch.zeros(1, 3, 4, 4))
    assert decoy.read_bytes() == b"AAAA"  # the payload is real: running the graph overwrites the file
    before = victim.read_bytes()
    path = tmp_path / "overwrites.pt"
    torch.jit.script(OverwritesAFile(str(victim))).save(str(path))
    assert export_refused(path, out) == (f"{path}: refused: its graph calls aten::from_file, which is not on the list "
                                         f"of pure tensor operators; {REFUSED_FIX}")
    assert victim.read_bytes() == before
    assert_empty(out)


def test_torchscript_with_setstate_is_refused_before_loading(tmp_path, out, victim):
    decoy = tmp_path / "decoy.bin"
    decoy.write_bytes(b"0123")
    torch.jit.script(RunsOnLoad(str(decoy))).save(str(tmp_path / "decoy.pt"))
    torch.jit.load(str(tmp_path / "decoy.pt"))
    assert decoy.read_bytes() == b"BBBB"  # the payload is real: torch.jit.load alone overwrites the file
    before = victim.read_bytes()
    path = tmp_path / "onload.pt"
    torch.jit.script(RunsOnLoad(str(victim))).save(str(path))
    message = export_refused(path, out)
    assert re.fullmatch(rf"{re.escape(str(path))}: refused: its code \(onload/code/__torch__/\S+\.py\) defines "
                        rf"__setstate__, which torch.jit.load runs; {re.escape(REFUSED_FIX)}", message), message
    assert victim.read_bytes() == before
    assert_empty(out)


def test_torchscript_pickle_naming_a_foreign_global_is_refused(tmp_path, out):
    path = tmp_path / "foreign.pt"
    torch.jit.trace(TinyNet().eval(), torch.zeros(1, 3, 16, 16)).save(str(path))

    def add_global(members, root):
        members[root + "extra.pkl"] = b"\x80\x02cposix\nsystem\nq\x00."

    rewrite_archive(path, path, add_global)
    assert export_refused(path, out) == (f"{path}: refused: foreign/extra.pkl references posix.system, which is not a "
                                         f"tensor or module class; {REFUSED_FIX}")


# --------------------------------------------------------------------------- 3. YAML alias bomb
def test_yaml_alias_bomb_is_refused_before_anything_expands_it(tmp_path, out):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines + ["name: *a9"]) + "\n")
    assert bomb.stat().st_size < 1500
    message = one_line_error(invoke("export", "-q", "--recipe", bomb, "--weights", "random", "-o", out))
    assert message == (f"{bomb}: the YAML stands for more than 100,000 values once its aliases (&anchor / *alias) are "
                       "expanded; a recipe needs a few hundred: remove the nested aliases")
    assert_empty(out)


def test_error_messages_cap_the_values_they_show(tmp_path, out):
    recipe = tmp_path / "long.yaml"
    recipe.write_text("name: r\nmodel: {arch: googlenet}\npreprocessing: {size: 64, interpolation: " + "x" * 5000 + "}\n")
    message = one_line_error(invoke("export", "-q", "--recipe", recipe, "--weights", "random", "-o", out))
    assert message.startswith(f"{recipe}: key 'preprocessing.interpolation': ") and len(message) < 400
