"""Pass `strip-aux-heads`: auxiliary-classifier outputs removed with the subgraph only they use (stage: optimize).

An output is an aux head when
  - the user names the outputs to keep (--keep-output): every other output goes;
  - or the recipe's architecture declares it (GoogLeNet: aux2, aux1; Inception v3: aux);
  - or structurally: it has the main output's classifier shape ([N, classes]) and its
    private branch leaves the trunk before the main output's final pooling (GoogLeNet's
    heads leave at inception4a / 4d, Inception v3's at Mixed_6e). An extra output that
    leaves after the pooling (a second head on the features) is not an aux head and stays.
The main output keeps its name; the runner's cleanup then removes the nodes and
initializers only the removed outputs used. Written by hand: no library (onnxslim
included, measured) removes outputs it is not told about.
"""

from __future__ import annotations

from ..errors import UserError
from .base import GraphPass, PassContext, ancestors, register

POOLS = {"GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "ReduceMean"}


@register
class StripAuxHeads(GraphPass):
    """Aux classifier outputs (declared or structural) -> removed, with their private subgraph."""

    name = "strip-aux-heads"
    idle = "no aux classifier output (the export kept none: no --keep-aux)"

    def run(self, model, ctx: PassContext) -> list[str]:
        graph = model.graph
        outputs = list(graph.outputs)
        names = [o.name for o in outputs]
        if ctx.keep_outputs:
            missing = [n for n in ctx.keep_outputs if n not in names]
            if missing:
                raise UserError(f"--keep-output: the graph has no output '{missing[0]}'; its outputs: {', '.join(names)}")
            remove = {o.name: "not in --keep-output" for o in outputs if o.name not in ctx.keep_outputs}
        else:
            if len(outputs) < 2:
                return []
            main = _main_output(outputs, ctx)
            remove = {}
            for output in outputs:
                if output is main:
                    continue
                if output.name in ctx.aux_output_names:
                    remove[output.name] = "declared aux output of the recipe's architecture"
                else:
                    where = _structural_aux(output, main)
                    if where is not None:
                        remove[output.name] = f"classifier branch leaving the trunk at '{where}', before the final pooling"
        notes = []
        for output in outputs:
            if output.name in remove:
                private = ancestors([output]) - ancestors([o for o in graph.outputs if o.name not in remove])
                graph.outputs.remove(output)
                notes.append(f"removed output '{output.name}' ({remove[output.name]}; {len(private)} nodes only it used)")
        if not ctx.keep_outputs and len(graph.outputs) > 1:
            kept = ", ".join(o.name for o in graph.outputs)
            notes.append(f"kept outputs {kept}: not aux heads (name the ones to keep with --keep-output to drop the others)")
        return notes


def _main_output(outputs, ctx: PassContext):
    by_name = {o.name: o for o in outputs}
    if ctx.main_output in by_name:
        return by_name[ctx.main_output]
    for record in reversed((ctx.manifest or {}).get("history", [])):
        declared = record.get("outputs")
        if declared and declared[0] in by_name:
            return by_name[declared[0]]
    # The main classifier sits deepest: it depends on the most nodes.
    return max(outputs, key=lambda o: len(ancestors([o])))


def _structural_aux(output, main):
    """The trunk tensor `output`'s private branch leaves from when it is an aux head, else None."""
    if output.shape is None or main.shape is None or len(output.shape) != 2 or len(main.shape) != 2:
        return None
    if output.shape[1] != main.shape[1]:
        return None
    main_cone = ancestors([main])
    graph_order = {node: i for i, node in enumerate(main.graph)} if main.graph is not None else {}
    pools = [n for n in main_cone if n.op_type in POOLS]
    if not pools:
        return None
    final_pool = max(pools, key=lambda n: graph_order.get(n, -1))
    trunk = ancestors([final_pool.inputs[0]])
    private = ancestors([output]) - main_cone
    attach = {v for n in private for v in n.inputs if v is not None and v.producer() in main_cone}
    if attach and all(v.producer() in trunk for v in attach):
        return sorted(v.name for v in attach)[0]
    return None
