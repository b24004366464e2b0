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
import shutil
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
    return edit, "models/model.json carries guard code (Python source that torch compiles and runs)"


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
    assert export_refused(damaged, out) == (f"{damaged}: the archive lacks data/weights/weight_0, which holds "
                                            "'conv.weight'; the file is truncated or damaged: save the program again "
                                            "with torch.export.save")
    assert_empty(out)


def test_torch_logs_nothing_while_a_pt2_fails_to_load(tiny_pt2, tmp_path, out):
    """torch.export.load logs a warning with a whole traceback when deserializing fails."""
    def break_json(members, root):
        program = json.loads(members[root + "models/model.json"])
        program["graph_module"]["graph"]["nodes"][0]["inputs"] = "not a list"
        members[root + "models/model.json"] = json.dumps(program).encode()

    broken = rewrite_archive(tiny_pt2, tmp_path / "broken.pt2", break_json)
    message = export_refused(broken, out)
    assert message.startswith(f"{broken}: torch.export program could not be loaded: ") and "warnings above" not in message
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


# --------------------------------------------------------------------------- 4. non-finite numbers
def test_nan_weights_are_refused_naming_the_first(tmp_path, out, digits_weights):
    state = torch.load(digits_weights, weights_only=True)
    state["inception4a.branch1.conv.weight"][0, 3, 0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    assert export_refused(path, out) == (
        f"{path}: weight 'inception4a.branch1.conv.weight' holds NaN at [0, 3, 0, 0] (the first non-finite weight); "
        "a model with NaN/Inf weights computes nothing: retrain or fix the checkpoint")
    assert_empty(out)


def test_int32_safetensors_weights_are_refused_not_cast(tmp_path, out, digits_weights):
    from safetensors.torch import save_file

    state = torch.load(digits_weights, weights_only=True)
    path = tmp_path / "int.safetensors"
    save_file({k: (v.to(torch.int32) if v.is_floating_point() else v) for k, v in state.items()}, str(path))
    assert export_refused(path, out) == (f"{path}: weight 'conv1.conv.weight' is int32, not floating point "
                                         "(305 such weights); save the float weights of the trained model")


def test_overflowing_model_fails_export_parity(tmp_path, out, digits_weights):
    """Finite weights whose logits overflow to Inf: the parity check fails (exit 1), never 'error 0'."""
    state = torch.load(digits_weights, weights_only=True)
    state["fc.weight"] = state["fc.weight"] * 3e38
    path = tmp_path / "overflow.pth"
    torch.save(state, path)
    message = one_line_error(invoke("export", "-q", "--weights", path, "-o", out), exit_code=1)
    assert message.startswith(f"{path}: export parity (PyTorch vs ONNX Runtime): output 'logits' of the reference "
                              "holds ") and message.endswith(": a NaN/Inf output never passes"), message
    assert_empty(out)


def test_nan_std_in_a_recipe_is_refused(tmp_path, out):
    recipe = tmp_path / "nan.yaml"
    recipe.write_text("name: r\nmodel: {arch: googlenet}\npreprocessing: {size: 64, std: [0.5, .nan, 0.5]}\n")
    assert one_line_error(invoke("export", "-q", "--recipe", recipe, "--weights", "random", "-o", out)) == (
        f"{recipe}: key 'preprocessing.std.1': Input should be a finite number (got nan)")


def test_output_comparison_never_calls_nan_close():
    from inception_deploy.compare import OutputComparison
    from inception_deploy.errors import NonFiniteOutput

    reference = np.arange(20, dtype=np.float32).reshape(2, 10)
    candidate = reference.copy()
    candidate[1, 4] = np.nan
    with pytest.raises(NonFiniteOutput, match=r"output 'logits' of the target holds NaN at \[1, 4\] at sample 1 "):
        OutputComparison("logits").update(reference, candidate)
    with pytest.raises(NonFiniteOutput, match="of the reference holds -Inf"):
        OutputComparison("logits").update(np.full((1, 10), -np.inf, np.float32), reference[:1])
    zero = OutputComparison("logits")
    zero.update(reference[:1] + 1, np.zeros((1, 10), np.float32))  # a dead model is not "cosine 1"
    assert zero.cosine_min == 0.0


def _graph_with_tail(source: Path, target: Path, tail: str) -> Path:
    """The digits graph with its logits sent through `tail`: 'nan' (sqrt(-|x|-1), finite weights, NaN outputs)
    or 'five' (the first five classes only)."""
    model = onnx.load(str(source))
    output = model.graph.output[0]
    raw = output.name + "_raw"
    for node in model.graph.node:
        node.output[:] = [raw if name == output.name else name for name in node.output]
    if tail == "nan":
        model.graph.initializer.append(numpy_helper.from_array(np.ones(1, np.float32), "one"))
        model.graph.node.extend([helper.make_node("Abs", [raw], ["t_abs"]), helper.make_node("Neg", ["t_abs"], ["t_neg"]),
                                 helper.make_node("Sub", ["t_neg", "one"], ["t_sub"]),
                                 helper.make_node("Sqrt", ["t_sub"], [output.name])])
    else:
        for name, value in (("starts", [0]), ("ends", [5]), ("axes", [1])):
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.int64), name))
        model.graph.node.append(helper.make_node("Slice", [raw, "starts", "ends", "axes"], [output.name]))
        output.type.tensor_type.shape.dim[1].dim_value = 5
    onnx.save(model, str(target))
    return target


def test_validate_fails_a_model_that_answers_nan(digits_onnx, tmp_path):
    target = _graph_with_tail(digits_onnx, tmp_path / "nan-out.onnx", "nan")
    message = one_line_error(invoke("validate", "-q", "--reference", digits_onnx, "--target", target, "-n", "8",
                                    "-o", tmp_path / "report"), exit_code=1)
    assert message == (f"{target}: output 'logits' of the target holds NaN at [0, 0] at sample 0 of the comparison: "
                       "a NaN/Inf output never passes")


def test_validate_refuses_a_graph_with_nan_weights(digits_onnx, tmp_path):
    model = onnx.load(str(digits_onnx))
    weight = model.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(weight), np.nan), weight.name))
    target = tmp_path / "all-nan.onnx"
    onnx.save(model, str(target))
    message = one_line_error(invoke("validate", "-q", "--target", target, "-n", "8", "-o", tmp_path / "report"))
    assert message == (f"{target}: initializer '{weight.name}' holds NaN at [{', '.join(['0'] * len(weight.dims))}] "
                       "(the first non-finite weight); a graph with NaN/Inf weights answers NaN: export it again "
                       "from finite weights")
    assert_empty(tmp_path / "report")


# --------------------------------------------------------------------------- 6. bad data
def test_uint8_rows_are_not_taken_as_images(tmp_path, digits_onnx):
    data = tmp_path / "rows.npy"
    np.save(data, np.zeros((16, 8), np.uint8))
    assert one_line_error(invoke("validate", "-q", "--reference", digits_onnx, "--target", digits_onnx, "--data", data)) == (
        f"{data}: uint8 arrays are taken as images [N, H, W] or [N, H, W, C] with C 1, 3 or 4, got [16, 8]; "
        "reshape them (e.g. digits: images.reshape(-1, 8, 8))")


def test_nan_data_is_refused_naming_the_sample(tmp_path, digits_onnx):
    data = tmp_path / "inputs.npy"
    inputs = np.zeros((4, 3, 64, 64), np.float32)
    inputs[2, 1, 5, 6] = np.inf
    np.save(data, inputs)
    assert one_line_error(invoke("validate", "-q", "--reference", digits_onnx, "--target", digits_onnx, "--data", data)) == (
        f"{data}[2]: the input holds +Inf at [1, 5, 6] (the first non-finite value of the data); NaN/Inf inputs give "
        "NaN outputs and scales: fix or drop that sample")


def test_object_arrays_are_refused_without_unpickling(tmp_path, digits_onnx):
    data = tmp_path / "objects.npz"
    np.savez(data, images=np.array([RunsCode(tmp_path / "code-ran"), 1], dtype=object))
    assert one_line_error(invoke("validate", "-q", "--reference", digits_onnx, "--target", digits_onnx, "--data", data)) == (
        f"{data}: array 'images' holds Python objects (dtype object), which are never unpickled; save numeric arrays "
        "(np.savez(path, images=uint8_images, labels=int_labels))")
    assert not (tmp_path / "code-ran").exists()


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from inception_deploy.data import to_rgb

    ramp = np.linspace(0, 65535, 64 * 256).reshape(64, 256).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    with Image.open(tmp_path / "ramp16.png") as image:
        assert image.mode == "I;16"
        rgb = np.asarray(to_rgb(image))
    assert rgb.shape == (64, 256, 3) and rgb.min() == 0 and rgb.max() == 255
    assert abs(rgb.mean() - 127.5) < 1.0  # clipping made this 254.5 (99.6% white)
    assert np.array_equal(np.asarray(to_rgb(ramp)), rgb)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height pixels in a few bytes: PIL's decompression-bomb check trips on open."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_skipped_and_counted(tmp_path, digits_onnx):
    from PIL import Image

    from inception_deploy.data import digits_split

    folder = tmp_path / "images"
    folder.mkdir()
    (images, _), _ = digits_split()
    for i in range(6):
        Image.fromarray(images[i]).save(folder / f"digit{i}.png")
    _png_header_only(folder / "bomb.png", 20000, 20000)
    result = invoke("validate", "-q", "--reference", digits_onnx, "--target", digits_onnx, "--data", folder,
                    "-o", tmp_path / "report")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "report" / "report.json").read_text())["data"]
    assert data["images"] == 6 and len(data["skipped"]) == 1
    assert data["skipped"][0].startswith(f"{folder / 'bomb.png'}: Image size (400000000 pixels) exceeds limit")


# --------------------------------------------------------------------------- 6/7. graphs: inspect, benchmark, ORT
def _tiny_graph(path: Path, nodes, inputs=None, initializers=(), input_shape=(1, 3, 8, 8)) -> Path:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])
    model = helper.make_model(helper.make_graph(nodes, "g", [x] if inputs is None else inputs, [y], list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _mlp(path: Path, input_shape=(1, 3, 8, 8)) -> Path:
    weight = numpy_helper.from_array(np.full((192, 10), 0.01, np.float32), "W")
    return _tiny_graph(path, [helper.make_node("Flatten", ["input"], ["flat"], axis=1, name="flat"),
                              helper.make_node("MatMul", ["flat", "W"], ["logits"], name="fc")],
                       initializers=[weight], input_shape=input_shape)


FIX_GRAPH = "export it again (inception-deploy export) or give the .onnx it was made from"


def test_inspect_refuses_a_graph_whose_initializers_hold_no_data(tmp_path):
    hollow = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1_000_000, 3_300_000])
    path = _tiny_graph(tmp_path / "hollow.onnx", [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
                                                  helper.make_node("MatMul", ["flat", "W"], ["logits"], name="fc")],
                       initializers=[hollow])
    assert path.stat().st_size < 200
    assert one_line_error(invoke("inspect", path)) == (
        f"{path}: initializer 'W' declares shape [1000000, 3300000] (3,300,000,000,000 values) but holds 0 values of "
        f"data, not 3,300,000,000,000; the file is damaged or was written by a broken tool; {FIX_GRAPH}")


def test_cyclic_and_zero_sized_graphs_are_refused(tmp_path):
    cycle = _tiny_graph(tmp_path / "cycle.onnx", [helper.make_node("Add", ["input", "b"], ["a"], name="n1"),
                                                  helper.make_node("Relu", ["a"], ["b"], name="n2"),
                                                  helper.make_node("Flatten", ["b"], ["logits"], name="n3")])
    assert one_line_error(invoke("inspect", cycle)) == (
        f"{cycle}: the graph has a cycle (node 'n1' depends on its own output); {FIX_GRAPH}")
    zero = _tiny_graph(tmp_path / "zero.onnx", [helper.make_node("Flatten", ["input"], ["logits"])], input_shape=(1, 3, 0, 8))
    assert one_line_error(invoke("inspect", zero)) == (
        f"{zero}: input 'input' has a dimension of 0 (axis 2); an image input needs sizes of at least 1; {FIX_GRAPH}")
    undefined = _tiny_graph(tmp_path / "undefined.onnx", [helper.make_node("Add", ["input", "ghost"], ["logits"], name="add")])
    assert one_line_error(invoke("benchmark", undefined)) == (
        f"{undefined}: node 'add' reads 'ghost', which no input, initializer or node provides; {FIX_GRAPH}")


def test_benchmark_on_truncated_random_and_inputless_graphs(tmp_path):
    good = _mlp(tmp_path / "good.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(np.random.default_rng(0).bytes(300))
    for path in (truncated, noise):
        assert one_line_error(invoke("benchmark", path)) == (
            f"{path}: not a readable ONNX model (DecodeError: truncated, or another format); {FIX_GRAPH}")
    constant = numpy_helper.from_array(np.zeros((1, 10), np.float32))
    inputless = _tiny_graph(tmp_path / "inputless.onnx", [helper.make_node("Constant", [], ["logits"], value=constant)],
                            inputs=[])
    assert one_line_error(invoke("benchmark", inputless)) == (
        f"{inputless}: the graph has no inputs (nothing to feed an image to); {FIX_GRAPH}")


def test_onnx_runtime_refusing_the_input_size_is_one_line(tmp_path, digits_onnx):
    small = _mlp(tmp_path / "mlp8.onnx")
    assert one_line_error(invoke("validate", "-q", "--reference", digits_onnx, "--target", small, "-n", "4")) == (
        f"{small}: input 'input' has shape [4, 3, 64, 64], the graph takes 'input': float32 [1, 3, 8, 8]; use a recipe "
        "(--recipe) whose preprocessing size and layout match it")


def test_output_shapes_that_differ_are_one_line(tmp_path, digits_onnx):
    five = _graph_with_tail(digits_onnx, tmp_path / "five.onnx", "five")
    assert one_line_error(invoke("validate", "-q", "--reference", digits_onnx, "--target", five, "-n", "4")) == (
        f"{five}: output 'logits': the target gives shape [4, 5], the reference [4, 10]; compare models with the "
        "same classes and output layout")


def test_zero_classes_are_one_line():
    from inception_deploy.compare import OutputComparison
    from inception_deploy.errors import UserError

    with pytest.raises(UserError, match=r"output 'logits' has shape \[3, 0\]: no values per sample to compare"):
        OutputComparison("logits").update(np.zeros((3, 0), np.float32), np.zeros((3, 0), np.float32))


# --------------------------------------------------------------------------- 7. options and files
@pytest.mark.parametrize("opset", ["99", "7"])
def test_opset_outside_the_supported_range(opset, out):
    message = one_line_error(invoke("export", "-q", "--opset", opset, "-o", out))
    bound = "less than or equal to 21" if opset == "99" else "greater than or equal to 13"
    assert message == f"--opset {opset}: input should be {bound} (ONNX opsets 13-21 are supported; 17 is the default)"
    assert_empty(out)


def test_non_utf8_recipe(tmp_path, out):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("name: r\ndescription: caf\xe9\n".encode("latin-1"))
    assert one_line_error(invoke("export", "-q", "--recipe", recipe, "-o", out)) == (
        f"{recipe}: not UTF-8 text (byte 0xe9 at offset 24); save the recipe as UTF-8")


def test_output_under_a_file_is_refused_before_the_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    started = time.perf_counter()
    assert one_line_error(invoke("export", "-q", "-o", blocker / "out")) == (
        f"{blocker / 'out'}: cannot be written: {blocker} is a file, not a folder; choose another output path")
    assert time.perf_counter() - started < 5  # refused before loading or exporting anything
    assert blocker.read_text() == "x"


@contextlib.contextmanager
def read_only_folder(folder: Path):
    """`folder` unwritable for this process while the block runs: mode 555 for a user; for root,
    who writes through modes, the immutable attribute (chattr +i), which the kernel refuses
    even root's writes under. Skips where neither can be set."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root, and this file system takes no immutable attribute (chattr +i): "
                    "no folder is read-only for root here")
    try:
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_read_only_output_folder_is_refused_before_the_work(tmp_path):
    with read_only_folder(tmp_path / "read-only") as folder:
        with pytest.raises(PermissionError):  # the folder is really unwritable, whoever runs the test
            (folder / "probe").write_text("x")
        assert one_line_error(invoke("export", "-q", "-o", folder / "out")) == (
            f"{folder / 'out'}: cannot be written: {folder} is read-only for this user; choose another output path")
        assert list(folder.iterdir()) == []


def test_merge_of_a_report_without_its_keys(tmp_path):
    from inception_deploy.validate.report import REPORT_FORMAT

    report = tmp_path / "report.json"
    report.write_text(json.dumps({"format": REPORT_FORMAT, "recipe": "googlenet-digits"}))
    assert one_line_error(invoke("validate", "merge", report, report)) == (
        f"{report}: the report has no 'reference'; merge report.json files written by "
        "`inception-deploy validate --shard I/N`, unedited")


# --------------------------------------------------------------------------- 8. leftovers after a kill
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    from inception_deploy.fileio import atomic_path, scratch_dir

    folder = tmp_path / "out"
    folder.mkdir()
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = folder / f".m.onnx.idtmp-{dead}-abc123.onnx"
        kept = folder / f".m.onnx.idtmp-{live.pid}-def456.onnx"
        user = folder / ".m.onnx.backup"  # not our naming: never touched
        for path in (stale, kept, user):
            path.write_text("partial")
        with atomic_path(folder / "other.json") as tmp:
            tmp.write_text("{}")
        assert not stale.exists() and kept.exists() and user.exists()
        scratch_base = Path(os.environ.get("TMPDIR", "/tmp"))
        stale_scratch = scratch_base / f"inception-deploy-export-{dead}-zz9"
        stale_scratch.mkdir(exist_ok=True)
        (stale_scratch / "traced.onnx").write_text("partial")
        with scratch_dir("export") as scratch:
            assert scratch.name.startswith(f"inception-deploy-export-{os.getpid()}-")
        assert not stale_scratch.exists() and not scratch.exists()
    finally:
        live.kill()
        live.wait()


def test_kill_9_during_export_leaves_nothing_after_the_next_run(tmp_path):
    """A real export killed with SIGKILL while its temporary graph exists; the next run cleans up."""
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    command = [sys.executable, "-c", "from inception_deploy.cli import main; main()", "export", "-q", "-o", str(out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_dir() and any(p.name.startswith(".googlenet-digits.onnx.idtmp-") for p in out.iterdir()):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "export ended before its temporary graph was seen"
    ours = lambda: [p.name for p in scratch.iterdir() if p.name.startswith("inception-deploy-")]  # noqa: E731
    assert any(p.name.startswith(".") for p in out.iterdir()) and ours()  # what a kill leaves behind
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert sorted(p.name for p in out.iterdir()) == ["googlenet-digits.onnx"]
    assert ours() == []  # (ONNX Runtime keeps its own .ses file there)


# --------------------------------------------------------------------------- 4/8. calibration: NaN data, failures leave nothing
@pytest.fixture
def graph_copy(digits_opt_onnx, tmp_path) -> Path:
    folder = tmp_path / "quantize"
    folder.mkdir()
    target = folder / digits_opt_onnx.name
    target.write_bytes(digits_opt_onnx.read_bytes())
    return target


def _quantize(graph: Path, *args):
    return invoke("quantize", "-q", graph, "--int8", "--calib-count", "16", "--no-bias-correction", "--no-equalize", *args)


def test_nan_calibration_data_is_refused_before_any_graph_is_written(graph_copy, tmp_path):
    data = tmp_path / "calib.npy"
    inputs = np.zeros((16, 3, 64, 64), np.float32)
    inputs[0, 0, 0, 0] = np.nan
    np.save(data, inputs)
    result = invoke("quantize", "-q", graph_copy, "--int8", "--calib-data", data, "--calib-count", "16")
    assert one_line_error(result) == (f"{data}[0]: the input holds NaN at [0, 0, 0] (the first non-finite value of the "
                                      "data); NaN/Inf inputs give NaN outputs and scales: fix or drop that sample")
    assert sorted(p.name for p in graph_copy.parent.iterdir()) == [graph_copy.name]


def test_nan_calibration_cache_is_refused(graph_copy, tmp_path):
    cache = tmp_path / "nan.calib.json"
    made = _quantize(graph_copy, "--calib-data", "digits-train", "--calib-cache", cache)
    assert made.exit_code == 0, made.output
    stored = json.loads(cache.read_text())
    first = sorted(stored["tensors"])[0]
    stored["tensors"][first]["amax"] = float("nan")
    cache.write_text(json.dumps(stored))
    (graph_copy.parent / "m.int8.onnx").unlink(missing_ok=True)
    result = _quantize(graph_copy, "--calib-cache", cache, "-o", graph_copy.parent / "again.int8.onnx")
    assert one_line_error(result) == (f"{cache}: tensor '{first}' has calibration amax nan (absmax "
                                      f"{stored['tensors'][first]['absmax']}); statistics must be finite: recalibrate "
                                      "with --calib-data on finite images")
    assert not (graph_copy.parent / "again.int8.onnx").exists()


def test_failed_quantize_leaves_no_calibration_caches(graph_copy, tmp_path):
    """The comparison after calibration fails (its validation data holds Inf): no graph, no caches."""
    data = tmp_path / "validation.npy"
    inputs = np.zeros((4, 3, 64, 64), np.float32)
    inputs[1] = np.inf
    np.save(data, inputs)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: googlenet-digits\nmodel: {arch: googlenet}\n"
                      "preprocessing: {size: 64, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}\n"
                      f"data: {{validation: {data}}}\n")
    result = _quantize(graph_copy, "--recipe", recipe, "--calib-data", "digits-train")
    assert one_line_error(result).startswith(f"{data}[1]: the input holds +Inf")
    assert sorted(p.name for p in graph_copy.parent.iterdir()) == [graph_copy.name]


# --------------------------------------------------------------------------- 5. merge: shards of one run only
def test_merge_refuses_shards_of_different_runs(digits_onnx, tmp_path):
    def shard(target, count, which, folder):
        result = invoke("validate", "-q", "--reference", digits_onnx, "--target", target, "-n", count,
                        "--shard", which, "-o", tmp_path / folder)
        assert result.exit_code == 0, result.output
        return tmp_path / folder / "report.json"

    first = shard(digits_onnx, 8, "1/2", "a")
    other_run = shard(digits_onnx, 16, "2/2", "b")
    message = one_line_error(invoke("validate", "merge", first, other_run))
    assert message.startswith(f"{other_run}: data list (images chosen before sharding) differs from {first} (")
    assert message.endswith("); merge shards of one run only")
    changed = tmp_path / "changed" / digits_onnx.name  # same name, other bytes
    changed.parent.mkdir()
    model = onnx.load(str(digits_onnx))
    model.doc_string = "edited"
    onnx.save(model, str(changed))
    other_target = shard(changed, 8, "2/2", "c")
    message = one_line_error(invoke("validate", "merge", first, other_target))
    assert message.startswith(f"{other_target}: sha256 of target {digits_onnx.name} differs from {first} (")
    good = shard(digits_onnx, 8, "2/2", "d")
    assert invoke("validate", "merge", first, good).exit_code == 0
