"""`inception-deploy optimize`: graph passes with a numerical safety check (stage: optimize)."""

from __future__ import annotations

import click

from .options import (FROM_RECIPE, artifact_path, common_options, console, echo, examples, output_option,
                      recipe_option, write_json)


@click.command("optimize", epilog=examples(
    "inception-deploy optimize out/googlenet.onnx -o out/googlenet.opt.onnx",
    "inception-deploy optimize out/googlenet.onnx --passes fold-batchnorm,strip-aux-heads --check each"))
@click.argument("graph", type=click.Path(dir_okay=False))
@output_option("GRAPH with .opt.onnx")
@recipe_option
@click.option("--passes", default=None, metavar="a,b,c", show_default=f"{FROM_RECIPE} passes:", help="passes in order")
@click.option("--keep-output", "keep_outputs", multiple=True, metavar="NAME", help="keep only this output (repeatable)")
@click.option("--check", type=click.Choice(["end", "each", "off"]), default="end", show_default=True,
              help="compare with the original on ONNX Runtime after the last pass, after each pass, or not at all")
@click.option("--data", default=None, metavar="PATH", show_default=f"{FROM_RECIPE} validation data",
              help="images for the check")
@common_options
def command(graph, output, recipe, passes, keep_outputs, check, data, json_path, quiet, verbose):
    """Clean an ONNX graph for inference (aux heads, BatchNorm, Dropout, constants) and prove it still answers the same."""
    import logging
    from pathlib import Path

    from rich.table import Table

    from ..passes import optimize_onnx

    for name in ("onnxscript", "onnx_ir"):  # their INFO lines are about internals, not the user's graph
        logging.getLogger(name).setLevel(logging.WARNING)
    output = artifact_path(output, Path(graph).name.removesuffix(".onnx") + ".opt.onnx")
    result = optimize_onnx(graph, output, recipe=recipe, passes=passes, check=check,
                           keep_outputs=list(keep_outputs) or None, data=data)
    table = Table(title=f"{result.input_path.name} -> {result.path.name}: nodes by op type")
    for column in ("op type", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "op type" else "right")
    for op in sorted(set(result.counts_before) | set(result.counts_after)):
        before, after = result.counts_before.get(op, 0), result.counts_after.get(op, 0)
        table.add_row(op, str(before), str(after), f"{after - before:+d}" if after != before else "")
    table.add_row("total", str(result.nodes_before), str(result.nodes_after),
                  f"{result.nodes_after - result.nodes_before:+d}", style="bold")
    console().print(table)
    for record in result.records:
        removed = ", ".join(f"-{n} {op}" for op, n in record.removed.items())
        added = ", ".join(f"+{n} {op}" for op, n in record.added.items())
        echo(f"{record.name}: {', '.join(p for p in (removed, added) if p) or 'nothing to do: ' + record.idle}")
        for note in record.notes:
            echo(f"  {note}")
    for name, c in result.comparisons.items():
        echo(f"PASSED | safety check | {name} | max abs error {c.max_abs_error:.3g} "
                   f"({c.relative_error:.2g} of max |output| {c.max_abs_reference:.3g}) | {result.check_inputs}")
    if check == "off":
        echo("safety check skipped (--check off)")
    if result.unchanged:
        echo(f"graph unchanged: no pass found anything to do in {result.input_path.name}; wrote its graph as it "
             f"was ({result.bytes_before:,} -> {result.bytes_after:,} bytes: "
             f"{result.bytes_after - result.bytes_before:+,} of manifest, the optimize stage's entry)")
    echo(f"wrote {result.path}")
    write_json(json_path, {
        "input": str(result.input_path), "path": str(result.path), "passes": result.passes,
        "nodes_before": result.nodes_before, "nodes_after": result.nodes_after,
        "counts_before": result.counts_before, "counts_after": result.counts_after, "check": result.check,
        "comparisons": {name: {"max_abs_error": c.max_abs_error, "relative_error": c.relative_error}
                        for name, c in result.comparisons.items()},
    })
