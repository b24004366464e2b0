"""`inception-deploy package ARTIFACT... --triton`: a Triton model repository (stage: package).

A thin layer over `inception_deploy.serving.package_triton`: one model per call (an ONNX
graph, or plans for different GPUs) written into the repository folder with its
config.pbtxt, labels and manifest, and with --with-preprocessing an ensemble that takes
encoded images. Bad input is one line and exit 2, and leaves the repository as it was.
"""

from __future__ import annotations

import click

from .options import quiet_option, recipe_option


@click.command("package")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--triton", "triton", is_flag=True, help="Write a Triton Inference Server model repository (the format).")
@click.option("--output-dir", "-o", default="model_repository", show_default=True, type=click.Path(file_okay=False),
              help="the model repository folder (other models in it are left alone)")
@click.option("--name", default=None, help="model name [default: recipe, precision, '-plan' for plans: "
                                           "googlenet-digits-int8-plan]")
@click.option("--version", "model_version", type=int, default=1, show_default=True, help="model version folder")
@click.option("--instances", type=int, default=1, show_default=True, help="model instances per GPU (or on the CPU)")
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="instance kind; plans run on GPUs only")
@click.option("--max-batch", type=int, default=None,
              help="max_batch_size [default: the plan's profile max, or the recipe's engine.batch.max]; "
                   "at most the plan's profile max")
@click.option("--dynamic-batching/--no-dynamic-batching", default=None,
              help="Triton's dynamic batcher, preferred sizes at the profile's opt and max [default: on when the "
                   "artifact batches]")
@click.option("--max-queue-delay-us", type=int, default=100, show_default=True,
              help="how long the dynamic batcher waits to fill a batch")
@click.option("--execution-provider", type=click.Choice(["tensorrt", "cuda", "cpu"]), default=None,
              help="ONNX Runtime's provider for an .onnx graph [default: tensorrt on gpu, cpu on cpu]")
@click.option("--triton-backend", type=click.Choice(["auto", "onnxruntime", "python"]), default="auto",
              show_default=True, help="for an .onnx graph: Triton's onnxruntime backend, or ONNX Runtime inside its "
                                      "Python backend (servers without the onnxruntime backend)")
@click.option("--with-preprocessing", is_flag=True,
              help="also write a Python-backend model applying the recipe's preprocessing to encoded images, and "
                   "an ensemble (image bytes -> preprocessing -> network)")
@recipe_option
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False),
              help="write what was packaged (models, files, configs) as JSON")
@quiet_option
def command(artifacts, triton, output_dir, name, model_version, instances, kind, max_batch, dynamic_batching,
            max_queue_delay_us, execution_provider, triton_backend, with_preprocessing, recipe, json_path, quiet):
    """Package ARTIFACT (an .onnx graph, or .plan files for different GPUs) as one served model."""
    from ..errors import UserError
    from ..fileio import write_json_atomic

    if not triton:
        raise UserError("choose the serving format: --triton (a Triton Inference Server model repository)")
    from ..serving import package_triton

    result = package_triton(list(artifacts), output_dir, name=name, instances=instances, max_batch=max_batch,
                            dynamic_batching=dynamic_batching, kind=kind, execution_provider=execution_provider,
                            triton_backend=triton_backend, with_preprocessing=with_preprocessing, recipe=recipe,
                            version=model_version, max_queue_delay_us=max_queue_delay_us)
    for line in result.lines():
        if not quiet or not line.startswith("PASSED"):
            click.echo(line)
    if json_path:
        write_json_atomic(json_path, result.to_dict())
    if not quiet:
        click.echo(f"wrote {output_dir}: {', '.join(m.name for m in result.models)}")
