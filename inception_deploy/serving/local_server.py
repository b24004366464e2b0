"""A local Triton server on the CPU (stage: package checks, tests, benchmarks).

The `nvidia-pytriton` wheel carries a real `tritonserver` binary (Triton 2.51) with the Python
backend only; it starts without a GPU. This module installs it where the cache lives and runs
it on 127.0.0.1 on free ports, so a generated model repository can be loaded by Triton itself
and `validate --target triton://` can be checked against a live endpoint:

    python -m inception_deploy.serving.local_server install      # once (make test does it)
    with LocalTritonServer("model_repository", load=["googlenet-digits"]) as server:
        server.endpoint("googlenet-digits")                      # triton://127.0.0.1:PORT/googlenet-digits

Installed without touching the caller's Python: the wheel's files go to a folder (pip
--target --no-deps: the server needs none of pytriton's Python packages), and the Python
backend gets its own virtual environment, because its stub is built against NumPy 1.x
(with NumPy 2 every output tensor it returns has a wrong byte size) while this project runs
NumPy 2. That environment has ONNX Runtime at this project's version, so an ONNX graph served
by the Python backend computes what ONNX Runtime computes here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import MissingDependency, UserError

PYTRITON = "nvidia-pytriton==0.7.0"
BACKEND_REQUIREMENTS = ("numpy==1.26.4", "onnxruntime==1.31.1", "pillow>=10")
HOST = "127.0.0.1"


def triton_home() -> Path:
    from ..training import cache_dir

    return Path(os.environ.get("INCEPTION_DEPLOY_TRITON_HOME") or cache_dir() / "triton")


@dataclass
class Distribution:
    root: Path  # pip --target folder of the wheel
    python_env: Path  # the Python backend's virtual environment

    @property
    def server(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def libraries(self) -> Path:
        return self.root / "nvidia_pytriton.libs"

    @property
    def python(self) -> Path:
        return self.python_env / "bin" / "python"

    def missing(self) -> list[str]:
        return [str(p) for p in (self.server, self.python) if not p.exists()]


def distribution(home: Optional[Path] = None) -> Distribution:
    home = Path(home) if home else triton_home()
    return Distribution(home / PYTRITON.replace("==", "-"), home / "python-backend-env")


def install(home: Optional[Path] = None, quiet: bool = True) -> Distribution:
    """Install the server and the Python backend's environment (idempotent: kept when complete)."""
    dist = distribution(home)
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + (["--quiet"] if quiet else [])
    if not dist.server.exists():
        subprocess.run(pip + ["--no-deps", "--target", str(dist.root), PYTRITON], check=True)
    stamp = dist.python_env / "inception-deploy-requirements.txt"
    wanted = "\n".join(BACKEND_REQUIREMENTS) + "\n"
    if not dist.python.exists() or not stamp.is_file() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(dist.python_env)], check=True)
        subprocess.run([str(dist.python), "-m", "pip", "install", "--disable-pip-version-check"]
                       + (["--quiet"] if quiet else []) + list(BACKEND_REQUIREMENTS), check=True)
        stamp.write_text(wanted)
    return dist


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the process that started it dies, so a
    test run killed outright (kill -9) leaves no server behind; its own session lets stop() end the
    Python-backend stubs with it."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not glibc Linux: stop() still ends it
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class LocalTritonServer:
    """tritonserver on 127.0.0.1, free ports, explicit model control; stopped on exit.

    load: models to load at start (None: all in the repository). python_path: folders the Python
    backend's models import from (default: the folder holding this inception_deploy package, for
    the preprocessing model). Startup waits at most `startup_timeout` seconds for readiness.
    """

    def __init__(self, repository, load: Optional[Sequence[str]] = None, dist: Optional[Distribution] = None,
                 startup_timeout: float = 90.0, python_path: Optional[Sequence[str]] = None,
                 log_path: Optional[Path] = None) -> None:
        self.repository = Path(repository).resolve()
        self.load = list(load) if load is not None else None
        self.dist = dist or distribution()
        self.startup_timeout = startup_timeout
        self.python_path = list(python_path) if python_path is not None else [str(Path(__file__).resolve().parents[2])]
        self.log_path = log_path
        self.http_port = self.grpc_port = 0
        self.process: Optional[subprocess.Popen] = None
        self._scratch: Optional[tempfile.TemporaryDirectory] = None

    # -- addresses
    @property
    def http_address(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def endpoint(self, model: str, protocol: str = "http") -> str:
        scheme, port = ("triton", self.http_port) if protocol == "http" else ("triton+grpc", self.grpc_port)
        return f"{scheme}://{HOST}:{port}/{model}"

    def log(self) -> str:
        return Path(self._log_file).read_text(errors="replace") if self._scratch else ""

    # -- life cycle
    def __enter__(self) -> "LocalTritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        missing = self.dist.missing()
        if missing:
            raise MissingDependency(f"the local Triton server is not installed ({', '.join(missing)} missing); "
                                    "run `python -m inception_deploy.serving.local_server install` (make test does)")
        from ..fileio import remove_stale_temporaries

        remove_stale_temporaries(tempfile.gettempdir(), scratch=True)  # those of runs killed outright
        self._scratch = tempfile.TemporaryDirectory(prefix=f"inception-deploy-triton-{os.getpid()}-")
        scratch = Path(self._scratch.name)
        backends = self._backend_folder(scratch)
        self._log_file = str(self.log_path or scratch / "tritonserver.log")
        environment = self._environment(scratch)
        for attempt in range(3):  # a free port can be taken between the probe and the bind
            self.http_port, self.grpc_port = _free_port(), _free_port()
            args = [str(self.dist.server), f"--model-repository={self.repository}", f"--backend-directory={backends}",
                    f"--http-address={HOST}", f"--http-port={self.http_port}", f"--grpc-address={HOST}",
                    f"--grpc-port={self.grpc_port}", "--allow-metrics=false", "--allow-gpu-metrics=false",
                    "--exit-timeout-secs=5", "--model-control-mode=explicit", "--strict-readiness=true",
                    f"--cache-directory={scratch}"]
            args += [f"--load-model={name}" for name in (self.load if self.load is not None else ["*"])]
            with open(self._log_file, "ab") as log:
                self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                                cwd=scratch, start_new_session=True, preexec_fn=_die_with_parent)
            if self._wait_ready():
                return
            text = self.log()
            self._terminate()
            if "address already in use" not in text.lower() or attempt == 2:
                tail = "\n".join(text.splitlines()[-15:])
                self.stop()
                raise UserError(f"the local Triton server did not become ready within {self.startup_timeout:.0f} s; "
                                f"its log ends:\n{tail}")

    def _backend_folder(self, scratch: Path) -> Path:
        """backends/python with the library, its utils and the stub for the backend env's Python."""
        version = subprocess.run([str(self.dist.python), "-c", "import sys; print(f'{sys.version_info[0]}."
                                  "{sys.version_info[1]}')"], capture_output=True, text=True, check=True).stdout.strip()
        shipped = self.dist.root / "pytriton" / "tritonserver"
        stub = shipped / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise MissingDependency(f"the Triton Python backend has no stub for Python {version} ({stub} missing)")
        python = scratch / "backends" / "python"
        python.mkdir(parents=True)
        for source in (shipped / "backends" / "python" / "libtriton_python.so",
                       shipped / "backends" / "python" / "triton_python_backend_utils.py", stub):
            (python / source.name).symlink_to(source)
        return scratch / "backends"

    def _environment(self, scratch: Path) -> dict:
        """The stub embeds the backend env's Python: its libpython first on the library path, and a
        python first on PATH, from which the embedded interpreter finds its environment. The stub
        ignores PYTHONPATH (an isolated interpreter), so the folders the models import from reach
        it as a .pth file in a throwaway environment layered on the backend's."""
        ask = [str(self.dist.python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR')); "
               "print(sysconfig.get_paths()['purelib'])"]
        libdir, site_packages = subprocess.run(ask, capture_output=True, text=True, check=True).stdout.split()
        layer = scratch / "python-env"
        subprocess.run([str(self.dist.python), "-m", "venv", "--without-pip", str(layer)], check=True)
        layer_site = subprocess.run([str(layer / "bin" / "python"), "-c", "import sysconfig; "
                                     "print(sysconfig.get_paths()['purelib'])"],
                                    capture_output=True, text=True, check=True).stdout.strip()
        Path(layer_site, "inception_deploy_server.pth").write_text("\n".join([site_packages, *self.python_path]) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, str(self.dist.libraries),
                                                             os.environ.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join([str(layer / "bin"), os.environ.get("PATH", "")])
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "")
        return env

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://{self.http_address}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.25)
        return False

    def stop(self) -> None:
        self._terminate()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Triton's graceful stop (unloads models, ends stubs)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the stubs go with it
                self.process.wait(timeout=10)
        self.process = None


def main(argv: Sequence[str]) -> int:
    if list(argv[:1]) != ["install"]:
        print("usage: python -m inception_deploy.serving.local_server install", file=sys.stderr)
        return 2
    dist = install(quiet=True)
    print(f"tritonserver: {dist.server}\nPython backend environment: {dist.python_env}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
