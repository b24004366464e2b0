"""benchmark: latency percentiles and throughput per batch, JSON output, bad input (no timing assertions)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from inception_deploy.benchmark import benchmark
from inception_deploy.cli import main


def test_benchmark_digits_on_ort_cpu(digits_onnx, tmp_path):
    result = benchmark(digits_onnx, "ort-cpu", batches=(1, 2), warmup=1, min_iterations=3, min_seconds=0)
    assert [r.batch for r in result.rows] == [1, 2] and result.input_shape == ["N", 3, 64, 64]
    for row in result.rows:
        assert row.iterations >= 3 and 0 < row.p50_ms <= row.p90_ms <= row.p99_ms
        assert row.throughput == row.batch / (row.p50_ms / 1e3)
    out = tmp_path / "bench.json"
    cli = CliRunner().invoke(main, ["benchmark", str(digits_onnx), "--batch", "1", "--warmup", "1",
                                    "--min-iterations", "2", "--min-seconds", "0", "--json", str(out)])
    assert cli.exit_code == 0, cli.output
    assert "p99 ms" in cli.output
    data = json.loads(out.read_text())
    assert data["backend"] == "ort-cpu" and data["rows"][0]["batch"] == 1 and "onnx" in data["libraries"]


def test_benchmark_bad_input(digits_onnx, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["benchmark", str(digits_onnx), "--batch", "1,x"])
    assert result.exit_code == 2 and result.output.strip() == "error: --batch '1,x': give comma-separated integers, e.g. 1,8,32"
    result = runner.invoke(main, ["benchmark", str(digits_onnx), "--backend", "tensorrt"])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: --backend tensorrt runs TensorRT plans and {digits_onnx} is an ONNX "
                                     f"graph; build one with `inception-deploy build-engine {digits_onnx}`, or use "
                                     "--backend ort-tensorrt")
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"x")
    for backend in (["--backend", "tensorrt"], []):  # auto (the default) picks TensorRT for a .plan
        result = runner.invoke(main, ["benchmark", str(plan), *backend])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1  # MissingDependency or a bad plan
        assert "ort-cpu" not in result.output
    result = runner.invoke(main, ["benchmark", str(plan), "--backend", "ort-cpu"])
    assert (result.exit_code, result.output.strip()) == (2, f"error: {plan} is a TensorRT plan and --backend ort-cpu "
                                                            "runs ONNX graphs; use --backend auto (or tensorrt / "
                                                            "tensorrt-rtx)")
