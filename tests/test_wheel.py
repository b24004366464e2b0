"""Packaging: a built wheel, installed in a fresh venv, works from any folder.

The wheel is built from a copy of the sources (so the checkout gets no build/ or egg-info),
without network or build isolation, and installed with --no-deps into a venv that sees
the system's site-packages, so torch and the rest are not installed again. The commands
then run from a temporary folder with no PYTHONPATH: the bundled recipes and the committed
calibration cache must come from inside the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "inception_deploy", "recipes", "calibration")


def test_pyproject_lists_every_package_folder():
    """pyproject lists its packages by hand (two are mapped data folders): none may be missing."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "inception_deploy").rglob("__init__.py")}
    mapped = set(config["package-dir"])
    assert set(config["packages"]) == folders | mapped
    assert {config["package-dir"][name] for name in mapped} == {"recipes", "calibration"}


def _run(args, cwd, env, timeout=300):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_exports_and_quantizes_from_another_folder(tmp_path, digits_opt_onnx):
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp_path / "dist"), str(source)], tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("inception_deploy-*.whl")

    venv = tmp_path / "venv"
    # No pip of its own (ensurepip takes seconds): the system's pip, seen through the system
    # site-packages, installs into the venv it runs from.
    _run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], tmp_path, env)
    python, cli = venv / "bin" / "python", venv / "bin" / "inception-deploy"
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--disable-pip-version-check", wheel],
         tmp_path, env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([python, "-c", "import inception_deploy.recipes as r; print(r.BUNDLED_DIR)"], work, env).strip()
    assert Path(where).is_relative_to(venv), f"recipes read from {where}, not the installed wheel"

    out = _run([cli, "export", "--recipe", "googlenet", "--weights", "random", "-o", "out", "-q"], work, env)
    assert "wrote out/googlenet.onnx" in out and (work / "out" / "googlenet.onnx").is_file()

    graph = work / "digits.opt.onnx"
    shutil.copy(digits_opt_onnx, graph)
    out = _run([python, "-m", "inception_deploy", "quantize", graph.name, "--int8", "--recipe", "googlenet-digits",
                "-q"], work, env)
    assert "calibration: committed cache" in out
    committed = out.split("calibration: committed cache", 1)[1].split()[0]
    assert Path(committed).is_relative_to(venv) and "inception_deploy/calibration" in committed
    assert (work / "digits.int8.onnx").is_file()
