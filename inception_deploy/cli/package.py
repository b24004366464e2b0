"""`inception-deploy package ARTIFACT... --triton`: a Triton model repository (stage: package).

A thin layer over `inception_deploy.serving.package_triton`: one model per call (an ONNX
graph, or plans for different GPUs) written into the repository folder with its
config.pbtxt, labels and manifest, and with --with-preprocessing an ensemble that takes
encoded images. Bad input is one line and exit 2, and leaves the repository as it was.
"""

from __future__ import annotations

import click

from .options import common_options, echo, examples, output_dir_option, recipe_option, write_json


@click.command("package", epilog=examples(
    "inception-deploy package out/googlenet-digits.opt.onnx --triton --with-preprocessing --output-dir out/model_repository",
    "inception-deploy package out/googlenet-digits.int8.plan --triton --output-dir out/model_repository"))
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--triton", "triton", is_flag=True, help="Write a Triton Inference Server model repository (the format).")
@output_dir_option("the model repository folder (other models in it are left alone)", default="model_repository")
@click.option("--name", default=None, show_default="recipe, precision, '-plan' for plans: googlenet-digits-int8-plan",
              help="model name")
@click.option("--version", "model_version", type=int, default=1, show_default=True, help="model version folder")
@click.option("--instances", type=int, default=1, show_default=True, help="model instances per GPU (or on the CPU)")
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="instance kind; plans run on GPUs only")
@click.option("--max-batch", type=int, default=None,
              show_default="the plan's profile max, or the recipe's engine.batch.max",
              help="max_batch_size; at most the plan's profile max")
@click.option("--dynamic-batching/--no-dynamic-batching", default=None, show_default="on when the artifact batches",
              help="Triton's dynamic batcher, preferred sizes at the profile's opt and max")
@click.option("--max-queue-delay-us", type=int, default=100, show_default=True,
              help="how long the dynamic batcher waits to fill a batch")
@click.option("--execution-provider", type=click.Choice(["tensorrt", "cuda", "cpu"]), default=None,
              show_default="tensorrt on gpu, cpu on cpu", help="ONNX Runtime's provider for an .onnx graph")
@click.option("--triton-backend", type=click.Choice(["auto", "onnxruntime", "python"]), default="auto",
              show_default=True, help="for an .onnx graph: Triton's onnxruntime backend, or ONNX Runtime inside its "
                                      "Python backend (servers without the onnxruntime backend)")
@click.option("--with-preprocessing", is_flag=True,
              help="also write a Python-backend model applying the recipe's preprocessing to encoded images, and "
                   "an ensemble (image bytes -> preprocessing -> network)")
@recipe_option
@common_options
def command(artifacts, triton, output_dir, name, model_version, instances, kind, max_batch, dynamic_batching,
            max_queue_delay_us, execution_provider, triton_backend, with_preprocessing, recipe, json_path, quiet,
            verbose):
    """Package ARTIFACT (an .onnx graph, or .plan files for different GPUs) as one served model."""
    from ..errors import UserError

    if not triton:
        raise UserError("choose the serving format: --triton (a Triton Inference Server model repository)")
    from ..serving import package_triton

    result = package_triton(list(artifacts), output_dir, name=name, instances=instances, max_batch=max_batch,
                            dynamic_batching=dynamic_batching, kind=kind, execution_provider=execution_provider,
                            triton_backend=triton_backend, with_preprocessing=with_preprocessing, recipe=recipe,
                            version=model_version, max_queue_delay_us=max_queue_delay_us)
    for line in result.lines():
        if not quiet or not line.startswith("PASSED"):
            echo(line)
    write_json(json_path, result.to_dict())
    if not quiet:
        echo(f"wrote {output_dir}: {', '.join(m.name for m in result.models)}")
