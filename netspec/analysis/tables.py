"""A Summary shown to people: the table `netspec check` prints, the HTML table a notebook shows, and the one-line
plain-text form. Text only; nothing here prints or imports a display library."""

from __future__ import annotations

from html import escape

from netspec.analysis.summary import Summary, summarize
from netspec.ground.errors import render_all
from netspec.ir import Graph
from netspec.language.evaluate import show


def human(n: float, unit: str = "") -> str:
    """12_345_678 -> '12.346 M': the magnitude a reader takes in at a glance."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {suffix}{unit}"
    return f"{n:g} {unit}".rstrip()


def table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    """Plain columns under a header, ruled above and below; the columns in `right` right-aligned."""
    # Plain columns: rich's Table took 0.2 s for ResNet-152's 508 rows and 3 s for 7,000 (docs/benchmarks.md).
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, rows), rule])


def title(summary: Summary) -> str:
    args = ", ".join(f"{k}={show(v)}" for k, v in summary.arguments.items())
    return f"{summary.network}({args})"


def _params_cell(row) -> str:
    params = f"{row.params:,}" if row.params else "-"
    if row.params and row.trainable != row.params:
        params += " (frozen)" if row.trainable == 0 else f" ({row.params - row.trainable:,} frozen)"
    return params


def summary_table(summary: Summary) -> str:
    """What `netspec check` prints: the title, a row per layer (or scope), then the totals."""
    rows = [["  " * row.depth + row.name, row.op, "[" + ", ".join(map(str, row.shape)) + "]", _params_cell(row),
             f"{row.macs:,}" if row.macs else "-"] for row in summary.rows]
    t = summary.totals
    lines = [f"{title(summary)}  {summary.file}\n",
             table(["layer", "op", "output shape", "params", "MACs"], rows, right={3, 4}),
             f"Params:      {t.params:,} (trainable {t.trainable:,}, non-trainable {t.non_trainable:,})",
             f"Buffers:     {t.buffers:,} (saved state such as batch-norm statistics; not parameters)",
             f"MACs:        {t.macs:,} ({human(t.macs)}) multiply-accumulates per sample",
             f"FLOPs:       {t.flops:,} ({human(t.flops)}) = 2 x MACs",
             f"Activations: {t.activation_bytes:,} bytes ({human(t.activation_bytes, 'B')}) "
             "float32 outputs of every layer, batch 1"]
    if len(summary.outputs) > 1:
        main, parts = summary.outputs[0], []
        if summary.aux_outputs:
            parts.append(f"the auxiliary {', '.join(summary.aux_outputs)} (while training)")
        reconstructions = summary.outputs[1 + len(summary.aux_outputs):]
        if reconstructions:
            parts.append(f"the reconstruction {', '.join(reconstructions)} of the input")
        labels = "; forward(x, labels=None) takes the class labels while training" if summary.takes_labels else ""
        lines.append(f"Outputs:     {main}, then {' and '.join(parts)}{labels}")
    return "\n".join(lines)


# Selectors specific enough to win over JupyterLab's own table style, which right-aligns every cell.
STYLE = """<style>
div.netspec table.rows { border-collapse: collapse; font-size: 0.9em; margin: 0; }
div.netspec table.rows th, div.netspec table.rows td { padding: 1px 10px; text-align: left; font-family: monospace; }
div.netspec table.rows td.n, div.netspec table.rows th.n { text-align: right; }
div.netspec table.rows tfoot tr:first-child td { border-top: 1px solid #999; }
div.netspec pre.errors { color: #9b1c1c; background: #fdf2f2; padding: 8px; font-family: monospace; }
</style>"""


def summary_html(summary: Summary) -> str:
    """The table `netspec check` prints, as HTML: one row per layer (or scope), then the totals."""
    rows = []
    for row in summary.rows:
        indent = "&nbsp;&nbsp;" * row.depth
        rows.append(f"<tr><td>{indent}{escape(row.name)}</td><td>{escape(row.op)}</td>"
                    f"<td>[{', '.join(map(str, row.shape))}]</td><td class='n'>{_params_cell(row)}</td>"
                    f"<td class='n'>{f'{row.macs:,}' if row.macs else '-'}</td></tr>")
    t = summary.totals
    totals = [("Params", f"{t.params:,} (trainable {t.trainable:,}, non-trainable {t.non_trainable:,})"),
              ("Buffers", f"{t.buffers:,}"),
              ("MACs", f"{t.macs:,} ({human(t.macs)}) per sample"),
              ("FLOPs", f"{t.flops:,} ({human(t.flops)})"),
              ("Activations", f"{t.activation_bytes:,} bytes ({human(t.activation_bytes, 'B')}), float32, batch 1")]
    if len(summary.outputs) > 1:
        totals.append(("Outputs", ", ".join(summary.outputs)))
    foot = "".join(f"<tr><td>{name}</td><td colspan='4'>{escape(value)}</td></tr>" for name, value in totals)
    return (f"{STYLE}<div class='netspec'><p><b>{escape(title(summary))}</b> &nbsp;<code>{escape(summary.file)}</code>"
            "</p><table class='rows'><thead><tr><th>layer</th><th>op</th><th>output shape</th><th class='n'>params</th>"
            f"<th class='n'>MACs</th></tr></thead><tbody>{''.join(rows)}</tbody><tfoot>{foot}</tfoot></table></div>")


def summary_line(summary: Summary) -> str:
    """One line for a notebook's plain-text view (the HTML table is the rich one)."""
    t = summary.totals
    return (f"{title(summary)}: {len(summary.rows)} rows, {t.params:,} params, {t.macs:,} MACs, "
            f"output {t.output_shape}")


def warnings_html(graph: Graph) -> str:
    """A checked graph's warnings above its table, as `netspec check` prints them (without the source line)."""
    if not graph.warnings:
        return ""
    return f"<pre class='netspec-warnings'>{escape(render_all(graph.warnings))}</pre>"


def show_tables(ipython) -> None:
    """Have an IPython shell show graphs and summaries as their tables (HTML) and as one line (plain text): the
    IR and the summary know nothing of display; the layers above register it (`import netspec`, `%load_ext`)."""
    html, plain = (ipython.display_formatter.formatters[kind] for kind in ("text/html", "text/plain"))
    html.for_type(Graph, lambda graph: warnings_html(graph) + summary_html(summarize(graph)))
    html.for_type(Summary, summary_html)
    plain.for_type(Graph, lambda graph, printer, cycle: printer.text(summary_line(summarize(graph))))
    plain.for_type(Summary, lambda summary, printer, cycle: printer.text(summary_line(summary)))
