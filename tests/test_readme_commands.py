"""Every `inception-deploy ...` command line of the README, run as written, in README order, in
one fresh folder (small data for the lines about a graph made elsewhere). Lines that need a GPU
(running a plan) must stop here with their one-line refusal, exit 2; with a GPU they pass."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from inception_deploy.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(text: str) -> list[str]:
    """The command lines of the README's indented code blocks (continuations joined, comments cut)."""
    commands, pending = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if pending is not None:
            pending += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                commands.append(pending)
                pending = None
            continue
        if not raw.startswith("    ") or not line.startswith("inception-deploy "):
            continue
        line = re.sub(r"\s+#.*$", "", line)
        if line.endswith("\\"):
            pending = line.rstrip("\\").strip()
        else:
            commands.append(line)
    return commands


def needs_server(argv: list[str]) -> bool:
    """A served model (triton://triton:8000/...) needs the Triton server the README starts on a GPU machine."""
    return any(a.startswith(("triton://", "triton+grpc://")) for a in argv)


def needs_gpu(argv: list[str]) -> bool:
    """Running a plan (validate or benchmark of a .plan) needs an NVIDIA GPU."""
    return argv[0] in ("validate", "benchmark") and any(a.endswith((".plan", ".engine")) for a in argv)


@pytest.fixture
def workdir(tmp_path, monkeypatch, digits_weights, digits_recipe):
    """A fresh folder holding the small data the "graph made elsewhere" lines name:
    theirs.onnx (our GoogLeNet code exported by plain torch.onnx at 32x32, input `images`, no
    manifest), calib.npy (256 preprocessed inputs) and imgs/ (256 digit PNGs)."""
    import torch
    from PIL import Image

    from inception_deploy.data import digits_split, preprocess
    from inception_deploy.models import build_model

    monkeypatch.chdir(tmp_path)
    model = build_model("googlenet", num_classes=10, aux_logits=False).eval()
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), "theirs.onnx", dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["scores"], dynamic_axes={"images": {0: "n"}})
    (train, _), _ = digits_split()
    small = digits_recipe.preprocessing.model_copy(update={"size": [32, 32]})
    np.save("calib.npy", preprocess(list(train[:256]), small))
    Path("imgs").mkdir()
    for i, image in enumerate(train[:256]):
        Image.fromarray(image).save(f"imgs/{i}.png")
    return tmp_path


def test_readme_has_the_command_lines_this_test_runs():
    commands = readme_commands(README.read_text())
    assert len(commands) >= 20
    assert "inception-deploy benchmark out/googlenet-digits.int8.plan" in commands
    assert not any(" -o " in c and c.split()[1] in ("run", "validate", "package") for c in commands)  # --output-dir
    assert any("--timing-cache out/timing.cache" in c for c in commands)  # a continued line, joined


def test_every_readme_command_line_runs_as_written(workdir):
    from inception_deploy.engine import TENSORRT, TENSORRT_RTX
    from inception_deploy.engine.environment import cuda_available

    gpu = cuda_available()
    builder = TENSORRT_RTX.installed() or (TENSORRT.installed() and gpu)
    ran = set()
    for command in readme_commands(README.read_text()):
        argv = shlex.split(command)[1:]
        if tuple(argv) in ran:  # the GPU section repeats the stages' export/optimize/quantize lines
            continue
        ran.add(tuple(argv))
        result = CliRunner().invoke(main, argv)
        output = result.output.strip()
        if needs_server(argv):  # no host "triton" here: one line, exit 2, before any data is read
            assert result.exit_code == 2 and len(output.splitlines()) == 1, (command, output)
            assert "no Triton server answers at triton:8000" in output or "tritonclient" in output, (command, output)
        elif needs_gpu(argv) and not gpu:
            assert result.exit_code == 2, (command, output)
            assert len(output.splitlines()) == 1 and output.startswith("error: running out/"), (command, output)
            assert "NVIDIA GPU" in output, (command, output)
        elif argv[0] == "build-engine" and not builder:
            assert result.exit_code == 2 and len(output.splitlines()) == 1, (command, output)
        else:
            assert result.exit_code == 0, (command, output[-3000:])
    assert Path("out/googlenet-digits.int8.onnx").is_file() and Path("report/report.html").is_file()
