"""`inception-deploy validate` and `validate merge`: the CI gate (stage: validate)."""

from __future__ import annotations

import click

from .options import (BACKEND_CHOICES, BACKEND_HELP, ONNX_BACKENDS, FROM_RECIPE, common_options, echo, examples,
                      output_dir_option, preprocessing_options, recipe_option, resolve_backend, trust_option,
                      weights_option, write_json)


# For GPU CI, which must not go green on a runner where a check could not run.
strict_option = click.option("--strict", is_flag=True,
                             help="a SKIPPED check fails (exit 1) instead of being counted as skipped")


def _finish(ctx, report, output_dir, json_path=None) -> None:
    for line in report.lines():
        echo(line)
    echo(report.summary())
    if output_dir is not None:
        echo(f"wrote {', '.join(str(p) for p in report.files.values())}")
    write_json(json_path, report.to_dict())
    ctx.exit(report.exit_code)


@click.group("validate", invoke_without_command=True, epilog=examples(
    "inception-deploy validate --recipe googlenet --weights ckpt.pth --target out/googlenet.int8.onnx --data val/",
    "inception-deploy validate --target out/googlenet-digits.int8.onnx --data digits-holdout --output-dir report/"))
@recipe_option
@weights_option
@trust_option
@click.option("--reference", default=None, type=click.Path(dir_okay=False),
              show_default="the PyTorch model from --recipe and --weights", help="an FP32 .onnx to compare with")
@click.option("--target", "-t", "targets", multiple=True, metavar="MODEL",
              help="an .onnx graph, a TensorRT .plan or a served model (triton://HOST:PORT/MODEL[/VERSION], "
                   "triton+grpc://...) to validate; repeatable")
@click.option("--data", "-d", default=None, metavar="DIR|FILE|digits-holdout|synthetic[:N]",
              show_default=f"{FROM_RECIPE} data.validation", help="validation images")
@click.option("--labels", default=None, type=click.Path(dir_okay=False), show_default="the data's own (sub-folders, .npz)",
              help="one integer label per line (or .npy), in dataset order")
@click.option("--max-images", "-n", type=click.IntRange(min=1), default=None, show_default="all",
              help="validate on a class-balanced subset of this many images")
@output_dir_option("write report.json, junit.xml, report.html here")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=32, show_default=True, help="images per batch")
@click.option("--layerwise", is_flag=True, help="compare intermediate tensors; name the first layer that diverges")
@click.option("--crops", type=click.Choice(["1", "10", "144"]), default="1", show_default=True,
              help="evaluation protocol: centre crop, 10-crop, GoogLeNet's 144-crop (softmax averaged)")
@click.option("--shard", default=None, metavar="I/N", help="validate only shard I of N (merge with `validate merge`)")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True, help=BACKEND_HELP)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None, show_default="30",
              help="triton:// targets: seconds to wait for the server per call")
@preprocessing_options
@strict_option
@common_options
@click.pass_context
def command(ctx, recipe, weights, trust_checkpoint, reference, targets, data, labels, max_images, output_dir,
            batch_size, layerwise, crops, shard, backend, timeout, strict, preprocessing, json_path, quiet, verbose):
    """Compare targets with the reference; exit 0 when all pass, 1 on a parity failure, 2 on bad input."""
    if ctx.invoked_subcommand is not None:
        return
    from ..validate import validate

    for target in targets:  # checked before anything runs: a plan's builder, an .onnx on a plan backend
        resolve_backend(target, backend)
    backend = backend if backend in ONNX_BACKENDS else "ort-cpu"  # the runtime of .onnx targets
    resolved = _recipe(recipe, reference, data, preprocessing)
    report = validate(resolved, weights=weights, reference=reference, targets=list(targets),
                      data=data, labels=labels, max_images=max_images, output_dir=output_dir, batch_size=batch_size,
                      layerwise=layerwise, crops=int(crops), shard=shard, progress=not quiet, backend=backend,
                      trust_checkpoint=trust_checkpoint, timeout=timeout, strict=strict)
    _finish(ctx, report, output_dir, json_path)


def _recipe(recipe, reference, data, preprocessing):
    """With an .onnx --reference made elsewhere the recipe can come from that graph (its
    manifest's, or its I/O and size plus the preprocessing flags); else the named one, by
    default the bundled digits recipe, with the preprocessing flags applied."""
    from ..recipes import resolve_recipe

    if reference is not None and str(reference).endswith(".onnx"):
        from pathlib import Path

        from ..artifact import load_onnx
        from ..graph_recipe import recipe_for_graph

        artifact = load_onnx(reference, missing="reference not found: {path}", load_external_data=False)
        return recipe_for_graph(recipe, artifact.model, artifact.manifest, Path(reference), [data], preprocessing)
    from ..graph_recipe import PREPROCESSING_FLAG_NAMES

    return resolve_recipe(recipe or "googlenet-digits").with_overrides(preprocessing, PREPROCESSING_FLAG_NAMES)


@command.command("merge", epilog=examples(
    "inception-deploy validate merge shard-0/ shard-1/ --output-dir report/"))
@click.argument("reports", nargs=-1, required=True, type=click.Path())
@output_dir_option("write the merged reports here")
@strict_option
@common_options
@click.pass_context
def merge(ctx, reports, output_dir, strict, json_path, quiet, verbose):
    """Merge shard reports (report.json files or their folders) into one verdict."""
    from ..validate import merge_reports

    _finish(ctx, merge_reports(list(reports), output_dir, strict=strict), output_dir, json_path)
