"""`inception-deploy validate` and `validate merge`: the CI gate (stage: validate)."""

from __future__ import annotations

import click

from .options import quiet_option, recipe_option, setup_logging, trust_option, weights_option


# For GPU CI, which must not go green on a runner where a check could not run.
strict_option = click.option("--strict", is_flag=True,
                             help="a SKIPPED check fails (exit 1) instead of being counted as skipped")


def _finish(ctx, report, output_dir) -> None:
    for line in report.lines():
        click.echo(line)
    click.echo(report.summary())
    if output_dir is not None:
        click.echo(f"wrote {', '.join(str(p) for p in report.files.values())}")
    ctx.exit(report.exit_code)


@click.group("validate", invoke_without_command=True)
@recipe_option
@weights_option
@trust_option
@click.option("--reference", default=None, type=click.Path(dir_okay=False),
              help="an FP32 .onnx to compare with (default: the PyTorch model from --recipe and --weights)")
@click.option("--target", "-t", "targets", multiple=True, metavar="MODEL",
              help="an .onnx graph, a TensorRT .plan or a served model (triton://HOST:PORT/MODEL[/VERSION], "
                   "triton+grpc://...) to validate; repeatable")
@click.option("--data", "-d", default=None, metavar="DIR|FILE|digits-holdout|synthetic[:N]",
              help="validation images (default: the recipe's data.validation)")
@click.option("--labels", default=None, type=click.Path(dir_okay=False), help="one integer label per line (or .npy), in dataset order")
@click.option("--max-images", "-n", type=click.IntRange(min=1), default=None, help="validate on a class-balanced subset")
@click.option("--output-dir", "-o", default=None, type=click.Path(file_okay=False), help="write report.json, junit.xml, report.html here")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--layerwise", is_flag=True, help="compare intermediate tensors; name the first layer that diverges")
@click.option("--crops", type=click.Choice(["1", "10", "144"]), default="1", show_default=True,
              help="evaluation protocol: centre crop, 10-crop, GoogLeNet's 144-crop (softmax averaged)")
@click.option("--shard", default=None, metavar="I/N", help="validate only shard I of N (merge with `validate merge`)")
@click.option("--backend", type=click.Choice(["ort-cpu", "ort-cuda", "ort-tensorrt"]), default="ort-cpu", show_default=True,
              help="runtime for .onnx targets (.plan targets always run on TensorRT)")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None,
              help="triton:// targets: seconds to wait for the server per call [30]")
@strict_option
@quiet_option
@click.pass_context
def command(ctx, recipe, weights, trust_checkpoint, reference, targets, data, labels, max_images, output_dir,
            batch_size, layerwise, crops, shard, backend, timeout, strict, quiet):
    """Compare targets with the reference; exit 0 when all pass, 1 on a parity failure, 2 on bad input."""
    if ctx.invoked_subcommand is not None:
        return
    from ..validate import validate

    setup_logging(quiet)
    report = validate(recipe or "googlenet-digits", weights=weights, reference=reference, targets=list(targets),
                      data=data, labels=labels, max_images=max_images, output_dir=output_dir, batch_size=batch_size,
                      layerwise=layerwise, crops=int(crops), shard=shard, progress=not quiet, backend=backend,
                      trust_checkpoint=trust_checkpoint, timeout=timeout, strict=strict)
    _finish(ctx, report, output_dir)


@command.command("merge")
@click.argument("reports", nargs=-1, required=True, type=click.Path())
@click.option("--output-dir", "-o", default=None, type=click.Path(file_okay=False), help="write the merged reports here")
@strict_option
@click.pass_context
def merge(ctx, reports, output_dir, strict):
    """Merge shard reports (report.json files or their folders) into one verdict."""
    from ..validate import merge_reports

    _finish(ctx, merge_reports(list(reports), output_dir, strict=strict), output_dir)
