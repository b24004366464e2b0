"""Progress where no terminal is: a start line saying what and roughly how long, then plain
lines at least every interval (from a timer: one slow step still gets them), and `run | cat`
announcing training before the seconds-long torch import."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest

from inception_deploy import progress


@pytest.fixture
def captured(monkeypatch):
    buffer = io.StringIO()  # not a terminal
    monkeypatch.setattr(progress, "stream", buffer)
    return buffer


def test_off_a_terminal_the_bar_prints_plain_lines_even_during_one_slow_step(captured):
    with progress.ProgressBar("calibrating", 64, about="one pass over 64 images", interval=0.05) as bar:
        time.sleep(0.3)  # one step longer than several intervals: lines still come
        bar.advance(32)
        time.sleep(0.12)
        bar.advance(32)
    lines = captured.getvalue().splitlines()
    assert lines[0] == "calibrating: started (64 steps), one pass over 64 images"
    assert sum(line.startswith("calibrating: 0/64, ") for line in lines) >= 2
    assert any(line.startswith("calibrating: 32/64, ") and "left" in line for line in lines)
    assert lines[-1].startswith("calibrating: done, 64/64 in ")


def test_work_without_steps_says_it_is_still_working(captured):
    with progress.working("building the INT8 plan", about="seconds to a minute", interval=0.05):
        time.sleep(0.2)
    lines = captured.getvalue().splitlines()
    assert lines[0] == "building the INT8 plan: started, seconds to a minute"
    assert "building the INT8 plan: still working, 0 s elapsed" in lines
    assert lines[-1].startswith("building the INT8 plan: done in ")


def test_disabled_progress_prints_nothing(captured):
    with progress.ProgressBar("validate", 10, enabled=False) as bar:
        bar.advance(10)
    assert list(progress.track(range(3), "x", 3, enabled=False)) == [0, 1, 2]
    assert captured.getvalue() == ""


# Run as `inception-deploy run | cat` would be: stdout a pipe. The wrapper marks whether torch was
# already imported when the training start line was written (torch's import alone takes seconds).
WRAPPER = """
import sys
class Pipe:
    def __init__(self, out): self.out = out
    def write(self, text):
        if text.startswith("training googlenet-digits: started"):
            self.out.write("[torch imported: %s]\\n" % ("torch" in sys.modules))
        return self.out.write(text)
    def flush(self): self.out.flush()
    def isatty(self): return False
sys.stdout = Pipe(sys.stdout)
from inception_deploy.cli import main
main(["run", "--output-dir", sys.argv[1]], prog_name="inception-deploy")
"""


def test_run_piped_announces_training_first_with_a_fresh_cache(tmp_path):
    env = {**os.environ, "INCEPTION_DEPLOY_CACHE": str(tmp_path / "fresh-cache")}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", WRAPPER, str(tmp_path / "out")], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        lines = []
        while len(lines) < 4:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("training googlenet-digits: started"):
                break
        seconds = time.perf_counter() - started
    finally:
        process.kill()  # the training itself is not this test's business
        process.wait()
    assert lines[0].startswith("run googlenet-digits: export, optimize, quantize")
    assert lines[1] == "[torch imported: False]", (lines, seconds)
    assert lines[2].startswith("training googlenet-digits: started, on scikit-learn's digits, first run only "
                               f"(then cached in {tmp_path / 'fresh-cache' / 'trained'}); 12 epochs, about 2 minutes")
