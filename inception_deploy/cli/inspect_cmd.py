"""`inception-deploy inspect MODEL`: I/O, op counts, parameters and MACs per Inception block, INT8 layers
(stage: inspection). Named inspect_cmd so the module does not shadow the standard library's inspect."""

from __future__ import annotations

import click

from .options import common_options, console, echo, examples, write_json


@click.command("inspect", epilog=examples(
    "inception-deploy inspect out/googlenet.onnx",
    "inception-deploy inspect out/googlenet.int8.onnx --layers --json inspect.json"))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input-shape", default=None, metavar="N,C,H,W", show_default="batch 1, the graph's size",
              help="fix the input shape")
@click.option("--layers", "show_layers", is_flag=True, help="also list every compute layer")
@click.option("--manifest", "show_manifest", is_flag=True,
              help="print the artifact's manifest (recipe, preprocessing, every stage that made it) as JSON and stop; "
                   "works for .onnx graphs and TensorRT plans")
@common_options
def command(model, input_shape, show_layers, show_manifest, json_path, quiet, verbose):
    """Describe an ONNX graph: inputs/outputs, ops, params and multiply-adds per block, INT8 layers.
    With --manifest, print the manifest of a graph or a plan instead."""
    if show_manifest:
        _print_manifest(model)
        return
    from rich.table import Table

    from ..errors import UserError
    from ..inspect import inspect_model

    shape = None
    if input_shape is not None:
        try:
            shape = [int(x) for x in input_shape.split(",")]
        except ValueError:
            raise UserError(f"--input-shape '{input_shape}': give comma-separated integers, e.g. 1,3,224,224") from None
    info = inspect_model(model, shape)
    out = console(width=120)
    io = Table(title=f"{info.path} ({info.precision}, {info.nodes} nodes)")
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, items in (("input", info.inputs), ("output", info.outputs)):
        for item in items:
            io.add_row(kind, item["name"], item["dtype"], str(item["shape"]))
    out.print(io)
    out.print("ops: " + ", ".join(f"{op} {n}" for op, n in info.op_counts.items()))
    out.print(_manifest_line(info.manifest), highlight=False)
    paper = {row["block"]: row for row in info.paper_comparison() or []}
    blocks = Table(title=f"cost at input {info.input_shape}: {info.params / 1e6:.3f} M params, {info.macs / 1e9:.3f} G multiply-adds")
    for col in ("block", "layers", "params", "MACs (M)", *(("paper (M)", "vs paper", "with 5x5 branch3") if paper else ())):
        blocks.add_column(col, justify="right" if col != "block" else "left")
    for block in info.blocks:
        row = [block.name, str(block.layers), f"{block.params:,}", f"{block.macs / 1e6:.1f}"]
        if paper:
            p = paper.get(block.name)
            row += ([str(p["paper_M"]), f"{p['torchvision_vs_paper_pct']:+.1f}%",
                     f"{p['paper_layout_M']:.1f} ({p['paper_layout_vs_paper_pct']:+.1f}%)"] if p else ["", "", ""])
        blocks.add_row(*row)
    out.print(blocks)
    if paper:
        out.print("torchvision's GoogLeNet uses a 3x3 conv in the paper's 5x5 branch (branch3.1); "
                      "'with 5x5 branch3' recounts that conv as 5x5 (x25/9).")
    if info.precision == "int8" or info.int8_layers:
        int8 = info.int8_layers
        others = [layer for layer in info.layers if layer.precision != "INT8"]
        out.print(f"INT8 layers: {len(int8)} of {len(info.layers)} compute layers")
        for layer in others:
            out.print(f"  not INT8 ({layer.precision}): {layer.module} ({layer.name})")
    if show_layers:
        table = Table(title="compute layers")
        for col in ("module", "op", "block", "precision", "params", "MACs (M)"):
            table.add_column(col)
        for layer in info.layers:
            table.add_row(layer.module, layer.op_type, layer.block, layer.precision, f"{layer.params:,}", f"{layer.macs / 1e6:.2f}")
        out.print(table)
    write_json(json_path, info.to_dict())


def _manifest_line(manifest) -> str:
    if not manifest:
        return "manifest: none (a graph made elsewhere)"
    stages = " -> ".join(entry.get("stage", "?") for entry in manifest.get("history", []))
    return (f"manifest: recipe {manifest.get('recipe')}, made by {stages} (inception-deploy "
            f"{manifest.get('toolkit_version')}); `inspect --manifest` prints all of it")


def _print_manifest(model) -> None:
    import json
    from pathlib import Path

    from ..errors import UserError
    from ..manifest import read_manifest

    if not Path(model).is_file():
        raise UserError(f"model not found: {model}")
    manifest = read_manifest(model)
    if manifest is None:
        raise UserError(f"{model}: carries no inception-deploy manifest (made elsewhere)")
    echo(json.dumps(manifest, indent=2, sort_keys=True))
