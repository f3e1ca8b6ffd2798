"""The chains of a syntax tree, walked once for the features that read its layout (inlay hints, code actions,
folding): every chain with its steps, inside blocks, groups and loops, and the bodies that fold."""

from __future__ import annotations

from collections.abc import Iterator

from netspec.language import ast


def chains(module: ast.Module) -> Iterator[ast.Chain]:
    """Every chain of `module`, outer ones before those inside their groups."""
    for item in module.items:
        if isinstance(item, ast.Block):
            yield from _body(item.body)
        elif isinstance(item, ast.NetworkAlias):
            chain = ast.Chain([item.step], item.step.span)
            yield chain
            yield from _inside(item.step)


def _body(statements: list) -> Iterator[ast.Chain]:
    for stmt in statements:
        chain = stmt.chain if isinstance(stmt, ast.Assign) else stmt if isinstance(stmt, ast.Chain) else None
        if chain is not None:
            yield chain
            for step in chain.steps:
                yield from _inside(step)
        elif isinstance(stmt, ast.For):
            yield from _body(stmt.body)


def _inside(step: ast.Step) -> Iterator[ast.Chain]:
    if isinstance(step.core, ast.Group):
        yield from _body(step.core.body)


def bodies(module: ast.Module) -> Iterator[ast.Block | ast.Group | ast.For | ast.Train]:
    """What folds: blocks, networks, groups, loops and train recipes."""
    def inner(statements: list) -> Iterator:
        for stmt in statements:
            if isinstance(stmt, ast.For):
                yield stmt
                yield from inner(stmt.body)
            chain = stmt.chain if isinstance(stmt, ast.Assign) else stmt if isinstance(stmt, ast.Chain) else None
            for step in chain.steps if chain is not None else []:
                if isinstance(step.core, ast.Group):
                    yield step.core
                    yield from inner(step.core.body)

    for item in module.items:
        if isinstance(item, (ast.Block, ast.Train)):
            yield item
        if isinstance(item, ast.Block):
            yield from inner(item.body)


def core_call(step: ast.Step) -> ast.Call | None:
    """The call a step makes (through a spread), or None for a group or a reference."""
    core = step.core.call if isinstance(step.core, ast.Spread) else step.core
    return core if isinstance(core, ast.Call) else None
