"""Signature help: the op or block being called, its arguments with their defaults, the one being typed.

Read from the text as it is now (netspec.lsp.completion finds the call), so it works while the text does not
parse; an op's arguments and documentation come from the registry, a block's from its definition in the
document's last check that parsed.
"""

from __future__ import annotations

import re

from lsprotocol import types as lsp

from netspec.lsp.checking import DocumentAnalysis
from netspec.lsp.completion import open_call, top_level_parts
from netspec.lsp.hovers import block_signature, summary_line
from netspec.lsp.positions import short_location
from netspec.ops import OPS
from netspec.ops.base import signature

_KEYWORD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)")


def signature_help(analysis: DocumentAnalysis | None, text: str, offset: int) -> lsp.SignatureHelp | None:
    found = open_call(text, offset)
    if not isinstance(found, tuple):
        return None
    callee, start = found
    block = analysis.names.blocks.get(callee) if analysis is not None else None
    if block is not None:
        label = block_signature(analysis, block.node).split(" ", 1)[1]
        summary = summary_line(analysis, block.node, block.file)
        documentation = (summary + "\n\n" if summary else "") + \
            f"Defined at {short_location(block.node.span, analysis.path)}."
        order = [p.name for p in block.node.params]
        docs: dict[str, str] = {}
        merge = False
    elif callee in OPS and OPS[callee].inputs != 0:
        op = OPS[callee]
        label, documentation = signature(op), op.summary
        order = list(op.positional)
        merge = op.inputs is None  # its positional arguments are the values it joins: `values...`
        docs = {name: info.description for name, info in op.Args.model_fields.items() if info.description}
    else:
        return None
    head = label.index("(") + 1
    parameters, names, at = [], [], head
    for part in top_level_parts(label[head:-1]):
        begin = at + len(part) - len(part.lstrip())
        name = part.strip().split("=", 1)[0].removesuffix("...")
        names.append(name)
        parameters.append(lsp.ParameterInformation([begin, at + len(part.rstrip())], docs.get(name)))
        at += len(part) + 1
    typed = top_level_parts(text[start + 1:min(offset, len(text))])
    keyword = _KEYWORD.match(typed[-1])
    if keyword is not None:
        active = names.index(keyword.group(1)) if keyword.group(1) in names else None
    else:
        positional = sum(1 for a in typed[:-1] if not _KEYWORD.match(a))
        name = "values" if merge else order[positional] if positional < len(order) else None
        active = names.index(name) if name in names else None
    information = lsp.SignatureInformation(label, lsp.MarkupContent(lsp.MarkupKind.Markdown, documentation),
                                           parameters, active_parameter=active)
    return lsp.SignatureHelp([information], active_signature=0, active_parameter=active)
