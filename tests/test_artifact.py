"""The artifact layer (stage: all): one loader with the checks every stage needs, one atomic saver."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inception_deploy.artifact import load_onnx, save_onnx
from inception_deploy.errors import UserError
from inception_deploy.manifest import new_manifest, read_onnx_manifest


def _tiny(weight=None):
    weight = np.arange(4, dtype=np.float32).reshape(2, 2) if weight is None else weight
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_save_then_load_carries_the_manifest(tmp_path):
    manifest = new_manifest("export", inputs={"weights": "w.pth"})
    path = save_onnx(_tiny(), tmp_path / "sub" / "tiny.onnx", manifest)
    artifact = load_onnx(path)
    assert artifact.manifest == read_onnx_manifest(onnx.load(str(path))) and artifact.manifest["stage"] == "export"
    assert artifact.opset == 17 and artifact.precision == "fp32"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["tiny.onnx"]  # no temp file left


def test_a_graph_that_fails_the_checker_leaves_nothing(tmp_path):
    broken = _tiny()
    broken.graph.node[0].input[1] = "nowhere"
    with pytest.raises(UserError, match="the quantized graph fails onnx.checker"):
        save_onnx(broken, tmp_path / "out" / "broken.onnx", what="the quantized graph")
    assert not (tmp_path / "out").exists()


def test_verify_failure_leaves_nothing(tmp_path):
    def refuse(written):
        assert written.is_file()
        raise UserError("parity failed")

    with pytest.raises(UserError, match="parity failed"):
        save_onnx(_tiny(), tmp_path / "t.onnx", verify=refuse)
    assert list(tmp_path.iterdir()) == []


def test_loader_refusals_name_the_file(tmp_path):
    with pytest.raises(UserError, match=r"^model not found: .*gone.onnx$"):
        load_onnx(tmp_path / "gone.onnx")
    with pytest.raises(UserError, match="target not found: "):
        load_onnx(tmp_path / "gone.onnx", missing="target not found: {path}")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    with pytest.raises(UserError, match=r"junk.onnx: not a readable ONNX model \(\w+: truncated, or another format\)"):
        load_onnx(junk)


def test_external_data_must_stay_inside_the_model_folder(tmp_path):
    model = _tiny(np.ones((64, 64), dtype=np.float32))
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(model, str(folder / "m.onnx"), save_as_external_data=True, location="m.onnx.data",
                    size_threshold=0)
    assert numpy_helper.to_array(load_onnx(folder / "m.onnx").model.graph.initializer[0]).sum() == 64 * 64
    escaped = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for entry in escaped.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../secret.data"
    (tmp_path / "secret.data").write_bytes(b"\x00" * 64 * 64 * 4)
    onnx.save_model(escaped, str(folder / "escaped.onnx"))
    with pytest.raises(UserError, match=r"escaped.onnx: initializer 'w' points at external data '../secret.data' "
                                        r"outside the model's folder"):
        load_onnx(folder / "escaped.onnx")


def test_float_only_stages_refuse_quantized_and_fp16_graphs(tmp_path):
    fp16 = _tiny()
    fp16.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((2, 2), dtype=np.float16), "w"))
    path = tmp_path / "h.onnx"
    onnx.save(fp16, str(path))
    with pytest.raises(UserError, match="already holds FP16 weights"):
        load_onnx(path, require_float=True)
    assert load_onnx(path).model.graph.initializer[0].data_type == TensorProto.FLOAT16
