"""`inception-deploy export`: PyTorch checkpoint -> FP32 ONNX with a parity check (stage: export)."""

from __future__ import annotations

import click

from .options import (FROM_RECIPE, artifact_path, common_options, echo, examples, recipe_option, trust_option,
                      weights_option, write_json)


@click.command("export", epilog=examples(
    "inception-deploy export --recipe googlenet --weights ckpt.pth -o out/",
    "inception-deploy export --recipe googlenet --weights ckpt.pth --no-transform-input -o out/googlenet.onnx"))
@recipe_option
@weights_option
@trust_option
@click.option("--output", "-o", default=None, type=click.Path(), show_default="out/RECIPE.onnx",
              help="the .onnx file to write, or a folder for RECIPE.onnx (any path not ending in .onnx)")
@click.option("--output-dir", "output_dir", default=None, hidden=True, type=click.Path(file_okay=False),
              help="old spelling: the folder for RECIPE.onnx (use -o DIR/)")
@click.option("--keep-aux", is_flag=True, help="export the aux classifiers as extra outputs")
@click.option("--opset", type=int, default=None, show_default=f"{FROM_RECIPE}, 17", help="ONNX opset")
@click.option("--transform-input/--no-transform-input", "transform_input", default=None, show_default=FROM_RECIPE,
              help="the model normalizes its input itself, as torchvision's pretrained GoogLeNet/Inception v3 do "
                   "(torchvision's default constructor does not); a state dict cannot say which")
@common_options
def command(recipe, weights, trust_checkpoint, output, output_dir, keep_aux, opset, transform_input, json_path,
            quiet, verbose):
    """Export a trained Inception model to ONNX and check it against PyTorch."""
    from ..export import export_onnx, parity_lines
    from ..recipes import resolve_recipe

    resolved = resolve_recipe(recipe or "googlenet-digits").with_overrides(
        {"model.transform_input": transform_input}, {"model.transform_input": "--transform-input"})
    target = artifact_path(output, f"{resolved.name}.onnx", file_suffixes=(".onnx",))
    result = export_onnx(resolved, weights, output_dir or "out", output=target, trust_checkpoint=trust_checkpoint,
                         keep_aux=keep_aux or None, opset=opset, progress=not quiet)
    used = resolved.model.transform_input
    source = "--transform-input" if transform_input is not None else f"recipe {resolved.name}"
    echo(f"transform_input: {str(used).lower()} (from {source}); "
         + ("the model renormalizes its input as torchvision's pretrained weights expect; "
            "pass --no-transform-input for a model built with torchvision's default constructor" if used else
            "the input is used as preprocessed; pass --transform-input for torchvision's pretrained weights"))
    for line in parity_lines(result):
        echo(line)
    echo(f"wrote {result.path}")
    write_json(json_path, {
        "path": str(result.path), "recipe": resolved.name, "weights": str(result.reference.weights),
        "transform_input": used, "outputs": result.output_names,
        "parity": {str(batch): {name: {"max_abs_error": c.max_abs_error, "top1_agreement": c.top1_agreement}
                                for name, c in comps.items()} for batch, comps in result.parity.items()},
    })


command.output_suffixes = (".onnx",)  # preflight: -o without .onnx names the folder (the old `-o DIR`)
