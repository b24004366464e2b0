"""Graph passes (stage: optimize): aux heads, BN, Dropout, Identity gone; outputs unchanged.

The graphs under test are exported here the way other tools leave them: BatchNormalization
kept as nodes (PRESERVE training mode, no constant folding), the aux heads as extra
outputs, one Identity per repeated initializer, and real Dropout nodes. torch does not
export an eval-mode nn.Dropout at all, so each nn.Dropout is swapped for a module whose
ONNX symbolic emits Dropout(x, ratio, training_mode=False): the inference form that
exporters with `training_mode` as an input write (opset >= 12).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.errors import ParityFailure
from inception_deploy.manifest import read_onnx_manifest as read_manifest
from inception_deploy.passes import GraphPass, optimize_onnx, register, run_passes, unregister, PassContext
from inception_deploy.recipes import load_recipe


def _export_preserve(module, size: int, path: Path, output_names: list[str]) -> Path:
    import torch

    class _EvalDropout(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, p):
            return x.clone()

        @staticmethod
        def symbolic(g, x, p):
            ratio = g.op("Constant", value_t=torch.tensor(p, dtype=torch.float32))
            training = g.op("Constant", value_t=torch.tensor(False))
            return g.op("Dropout", x, ratio, training, outputs=1)

    class OnnxDropout(torch.nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            return _EvalDropout.apply(x, self.p)

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Dropout):
                setattr(parent, name, OnnxDropout(child.p))
    module.eval()
    dynamic = {n: {0: "batch"} for n in ["input", *output_names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=output_names, dynamic_axes=dynamic,
                          do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    _add_identities(path)
    return path


def _add_identities(path: Path) -> None:
    """Identity chains as other exporters leave them: on the main output and on a weight."""
    model = onnx.load(str(path))
    graph = model.graph
    main = graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{main}_pre" if o == main else o for o in node.output]
    conv = next(n for n in graph.node if n.op_type == "Conv")
    weight = conv.input[1]
    conv.input[1] = f"{weight}_id"
    graph.node.extend([
        onnx.helper.make_node("Identity", [f"{main}_pre"], [f"{main}_mid"], name="/out/Identity_0"),
        onnx.helper.make_node("Identity", [f"{main}_mid"], [main], name="/out/Identity_1"),
        onnx.helper.make_node("Identity", [weight], [f"{weight}_id"], name="/weight/Identity"),
    ])
    onnx.save(model, str(path))


def _counts(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _ort(path, x) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))


def _inputs(recipe, count: int) -> np.ndarray:
    from inception_deploy.export import parity_inputs

    return parity_inputs(recipe, count)


@pytest.fixture(scope="module")
def googlenet_raw(digits_recipe, digits_weights, tmp_path_factory) -> Path:
    """The trained digits GoogLeNet: 3 outputs (logits, aux2, aux1), BN/Dropout/Identity nodes."""
    from inception_deploy.reference import load_reference

    reference = load_reference(digits_recipe, None, progress=False)
    path = tmp_path_factory.mktemp("googlenet-raw") / "googlenet.onnx"
    return _export_preserve(reference.with_aux(), 64, path, ["logits", "aux2", "aux1"])


@pytest.fixture(scope="module")
def inception_v3_raw(tmp_path_factory) -> Path:
    """Inception v3 at 299, random weights with BN statistics re-estimated on 8 images, aux head as output."""
    import torch

    from inception_deploy.models import build_model
    from inception_deploy.models.common import WithAuxOutputs
    from inception_deploy.reference import reestimate_batchnorm

    recipe = load_recipe("inception_v3")
    torch.manual_seed(0)
    model = build_model("inception_v3", num_classes=1000, aux_logits=True, transform_input=True)
    reestimate_batchnorm(model, recipe, images=8, batch_size=8)


    path = tmp_path_factory.mktemp("inception-v3-raw") / "inception_v3.onnx"
    return _export_preserve(WithAuxOutputs(model), 299, path, ["logits", "aux"])


def test_googlenet_aux_bn_dropout_removed_outputs_unchanged(googlenet_raw, digits_recipe, tmp_path):
    before = _counts(googlenet_raw)
    assert before["BatchNormalization"] == 59 and before["Dropout"] == 3 and before["Identity"] >= 3
    assert [o.name for o in onnx.load(str(googlenet_raw)).graph.output] == ["logits", "aux2", "aux1"]

    result = optimize_onnx(googlenet_raw, tmp_path / "googlenet.opt.onnx", recipe=digits_recipe)

    after = _counts(result.path)
    assert {"BatchNormalization", "Dropout", "Identity"}.isdisjoint(after)
    assert after["Conv"] == 57 and after["Gemm"] == 1  # the two aux heads' 1 Conv + 2 Gemm each are gone
    assert [o.name for o in onnx.load(str(result.path)).graph.output] == ["logits"]
    x = _inputs(digits_recipe, 16)  # real held-out digits
    ref, opt = _ort(googlenet_raw, x)["logits"], _ort(result.path, x)["logits"]
    assert np.abs(ref - opt).max() <= 1e-5 * np.abs(ref).max()
    assert (ref.argmax(1) == opt.argmax(1)).all()
    # node names keep the PyTorch module path (layer-wise validation maps them back)
    assert "/inception4a/branch2/branch2.1/conv/Conv" in {n.name for n in onnx.load(str(result.path)).graph.node}
    manifest = read_manifest(onnx.load(str(result.path)))
    assert manifest["stage"] == "optimize"
    assert [p["pass"] for p in manifest["history"][-1]["passes"]] == result.passes
    assert result.check_inputs.startswith("digits-holdout")


def test_inception_v3_aux_bn_dropout_removed_outputs_unchanged(inception_v3_raw, tmp_path):
    recipe = load_recipe("inception_v3")
    before = _counts(inception_v3_raw)
    assert before["BatchNormalization"] == 96 and before["Dropout"] == 1 and before["Identity"] >= 3

    result = optimize_onnx(inception_v3_raw, tmp_path / "v3.opt.onnx", recipe=recipe, check_images=2)

    after = _counts(result.path)
    assert {"BatchNormalization", "Dropout", "Identity"}.isdisjoint(after)
    assert [o.name for o in onnx.load(str(result.path)).graph.output] == ["logits"]
    x = _inputs(recipe, 2)
    ref, opt = _ort(inception_v3_raw, x)["logits"], _ort(result.path, x)["logits"]
    # BN-re-estimated random weights are conditioned (reference.reestimate_batchnorm), so
    # the strict 1e-5 of max |logit| holds (measured 2.9e-6).
    assert np.abs(ref - opt).max() <= 1e-5 * np.abs(ref).max()
    assert (ref.argmax(1) == opt.argmax(1)).all()
    assert result.comparisons["logits"].max_abs_error <= result.allowed["logits"]


def test_structural_aux_detection_without_recipe(googlenet_raw):
    """No recipe, no manifest: the aux heads are found by where they leave the trunk."""
    import onnx_ir as ir

    model = ir.load(str(googlenet_raw))
    records = run_passes(model, ["strip-aux-heads"], PassContext())
    assert [o.name for o in model.graph.outputs] == ["logits"]
    notes = " ".join(records[0].notes)
    assert "'/inception4a/Concat_output_0', before the final pooling" in notes
    assert "'/inception4d/Concat_output_0', before the final pooling" in notes


def test_check_each_records_every_pass(googlenet_raw, digits_recipe, tmp_path):
    result = optimize_onnx(googlenet_raw, tmp_path / "g.opt.onnx", recipe=digits_recipe, check="each",
                           passes="eliminate-dropout-identity,fold-batchnorm", check_images=4)
    assert [r.name for r in result.records] == ["eliminate-dropout-identity", "fold-batchnorm"]
    assert all(set(r.check) == {"logits", "aux2", "aux1"} for r in result.records)
    # the Dropouts' ratio / training_mode Constant nodes go with them
    assert result.records[0].removed == {"Constant": 6, "Dropout": 3, "Identity": _counts(googlenet_raw)["Identity"]}
    assert result.records[1].removed == {"BatchNormalization": 59}


@pytest.fixture
def broken_pass():
    """A deliberately wrong rewrite: scales one Conv's weights by 1.01."""

    @register
    class ScaleOneConv(GraphPass):
        """Conv(x, W) -> Conv(x, 1.01 W): wrong on purpose."""

        name = "broken-scale-conv"

        def run(self, model, ctx):
            import onnx_ir as ir

            conv = next(n for n in model.graph if n.op_type == "Conv" and n.inputs[1].const_value is not None)
            w = conv.inputs[1]
            w.const_value = ir.tensor(w.const_value.numpy() * np.float32(1.01), name=w.name)
            return []

    yield ScaleOneConv.name
    unregister(ScaleOneConv.name)


@pytest.mark.parametrize("check", ["end", "each"])
def test_wrong_rewrite_is_caught_and_nothing_written(googlenet_raw, digits_recipe, tmp_path, broken_pass, check):
    target = tmp_path / "out" / "g.opt.onnx"
    with pytest.raises(ParityFailure) as info:
        optimize_onnx(googlenet_raw, target, recipe=digits_recipe, check=check, check_images=4,
                      passes=["eliminate-dropout-identity", broken_pass, "fold-batchnorm"])
    message = str(info.value)
    assert message.startswith(f"pass '{broken_pass}' changed output '")
    assert message.endswith("; nothing written")
    assert not target.exists() and not target.parent.exists()


def test_cli_optimize_prints_table_and_writes(googlenet_raw, tmp_path):
    target = tmp_path / "g.opt.onnx"
    result = CliRunner().invoke(main, ["optimize", str(googlenet_raw), "-o", str(target), "--recipe", "googlenet-digits",
                                       "--keep-output", "logits", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "BatchNormalization" in result.output and "│     59 │     0 │    -59 │" in result.output
    assert "PASSED | safety check | logits |" in result.output
    assert f"wrote {target}" in result.output
    assert [o.name for o in onnx.load(str(target)).graph.output] == ["logits"]


def test_cli_wrong_rewrite_exits_1(googlenet_raw, tmp_path, broken_pass):
    target = tmp_path / "g.opt.onnx"
    result = CliRunner().invoke(main, ["optimize", str(googlenet_raw), "-o", str(target), "--recipe", "googlenet-digits",
                                       "--passes", f"fold-batchnorm,{broken_pass}", "-q"])
    assert result.exit_code == 1
    assert f"error: pass '{broken_pass}' changed output 'logits'" in result.output
    assert not target.exists()


@pytest.mark.parametrize("args, message", [
    (["--passes", "fold-bn"], "error: --passes: unknown pass 'fold-bn' (did you mean 'fold-batchnorm'?); known: "),
    (["--keep-output", "aux3"], "error: --keep-output: {graph} has no output 'aux3'; its outputs: logits, aux2, aux1\n"),
    (["--recipe", "inception_v3"], "error: {graph} takes 64x64 inputs but the recipe preprocesses to 299x299; "
                                   "give the recipe the graph was exported with (--recipe)\n"),
])
def test_cli_bad_input_exits_2_without_artifact(googlenet_raw, tmp_path, args, message):
    target = tmp_path / "g.opt.onnx"
    result = CliRunner().invoke(main, ["optimize", str(googlenet_raw), "-o", str(target), "-q", *args])
    assert result.exit_code == 2
    assert message.format(graph=googlenet_raw) in result.output
    assert not target.exists()


def test_cli_missing_and_unreadable_input(tmp_path):
    result = CliRunner().invoke(main, ["optimize", str(tmp_path / "nope.onnx")])
    assert result.exit_code == 2 and result.output == f"error: input graph not found: {tmp_path / 'nope.onnx'}\n"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    result = CliRunner().invoke(main, ["optimize", str(bad)])
    assert result.exit_code == 2 and "bad.onnx: not a readable ONNX model" in result.output
    assert not (tmp_path / "bad.opt.onnx").exists()


def test_default_output_name_and_manifest_recipe(digits_onnx_aux, copy_artifact):
    """Our own export: the recipe comes from the manifest; MODEL.onnx -> MODEL.opt.onnx."""
    source = copy_artifact(digits_onnx_aux)
    result = optimize_onnx(source, check_images=4)
    assert result.path == source.with_name(source.name[:-5] + ".opt.onnx") and result.path.is_file()
    assert result.outputs_before == ["logits", "aux2", "aux1"] and result.outputs_after == ["logits"]
    assert any("declared aux output" in note for r in result.records for note in r.notes)
    history = read_manifest(onnx.load(str(result.path)))["history"]
    assert [h["stage"] for h in history] == ["export", "optimize"]


def test_export_already_clean_is_said_and_written_as_it_was(digits_onnx, tmp_path):
    """torch.onnx's eval-mode export has no BatchNorm, Dropout or Identity left: every pass says
    why it had nothing to do, and the graph is written as it was (no file growth but the manifest)."""
    target = tmp_path / "digits.opt.onnx"
    result = CliRunner().invoke(main, ["optimize", str(digits_onnx), "-o", str(target), "--quiet"])
    assert result.exit_code == 0, result.output
    assert ("fold-batchnorm: nothing to do: no BatchNormalization node (torch.onnx folds BatchNorm into the Conv "
            "weights when it exports in eval mode)") in result.output
    assert "eliminate-dropout-identity: nothing to do: no Dropout or Identity node" in result.output
    assert "graph unchanged: no pass found anything to do in" in result.output
    before, after = onnx.load(str(digits_onnx)), onnx.load(str(target))
    assert list(after.graph.node) == list(before.graph.node) and list(after.graph.initializer) == list(before.graph.initializer)
    assert not after.graph.value_info  # onnx-ir's inferred shapes are not added to an unchanged graph
    manifest_growth = len(after.metadata_props[0].value) - len(before.metadata_props[0].value)
    growth = target.stat().st_size - digits_onnx.stat().st_size
    assert 0 < growth <= manifest_growth + 8, (growth, manifest_growth)  # the manifest's new entry, nothing else
    assert f"{growth:+,} of manifest" in result.output
    history = read_manifest(after)["history"][-1]
    assert history["stage"] == "optimize" and all("nothing_to_do" in p for p in history["passes"])
