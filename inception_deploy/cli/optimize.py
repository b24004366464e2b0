"""`inception-deploy optimize`: graph passes with a numerical safety check (stage: optimize)."""

from __future__ import annotations

import click

from .options import quiet_option, recipe_option, setup_logging


@click.command("optimize")
@click.argument("graph", type=click.Path(dir_okay=False))
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False), help="default: GRAPH with .opt.onnx")
@recipe_option
@click.option("--passes", default=None, metavar="a,b,c", help="passes in order (default: the recipe's passes:)")
@click.option("--keep-output", "keep_outputs", multiple=True, metavar="NAME", help="keep only this output (repeatable)")
@click.option("--check", type=click.Choice(["end", "each", "off"]), default="end", show_default=True,
              help="compare with the original on ONNX Runtime after the last pass, after each pass, or not at all")
@click.option("--data", default=None, metavar="PATH", help="images for the check (default: the recipe's validation data)")
@quiet_option
def command(graph, output, recipe, passes, keep_outputs, check, data, quiet):
    """Clean an ONNX graph for inference (aux heads, BatchNorm, Dropout, constants) and prove it still answers the same."""
    from rich.console import Console
    from rich.table import Table

    from ..passes import optimize_onnx

    setup_logging(quiet)
    import logging

    for name in ("onnxscript", "onnx_ir"):  # their INFO lines are about internals, not the user's graph
        logging.getLogger(name).setLevel(logging.WARNING)
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
    console = Console()
    console.print(table)
    for record in result.records:
        removed = ", ".join(f"-{n} {op}" for op, n in record.removed.items())
        added = ", ".join(f"+{n} {op}" for op, n in record.added.items())
        click.echo(f"{record.name}: {', '.join(p for p in (removed, added) if p) or 'nothing to do: ' + record.idle}")
        for note in record.notes:
            click.echo(f"  {note}")
    for name, c in result.comparisons.items():
        click.echo(f"PASSED | safety check | {name} | max abs error {c.max_abs_error:.3g} "
                   f"({c.relative_error:.2g} of max |output| {c.max_abs_reference:.3g}) | {result.check_inputs}")
    if check == "off":
        click.echo("safety check skipped (--check off)")
    if result.unchanged:
        click.echo(f"graph unchanged: no pass found anything to do in {result.input_path.name}; wrote its graph as it "
                   f"was ({result.bytes_before:,} -> {result.bytes_after:,} bytes: "
                   f"{result.bytes_after - result.bytes_before:+,} of manifest, the optimize stage's entry)")
    click.echo(f"wrote {result.path}")
