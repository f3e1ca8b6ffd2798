"""What an import gives: the spec text, its network's name and what verifying it found; and what it starts from,
one model traced (a Source)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from netspec.importer.structure import Traced
from netspec.importer.verify import Verification


@dataclass
class Imported:
    """An imported spec: its text, the network's name and what verifying it found."""

    text: str
    name: str
    verification: Verification
    blocks: int
    weights: dict | None = None  # the original's state_dict where no module holds it (ONNX)

    def report(self) -> list[str]:
        lines = len(self.text.splitlines())
        blocks = f"{self.blocks} block" + ("" if self.blocks == 1 else "s")
        return [f"imported {self.name}: {lines} lines, {blocks}", *self.verification.lines()]


@dataclass
class Source:
    """One model ready to be written: its network's name, its scope tree, and how a spec text is checked against
    it (`verify(text, network)`); `origin` is what a failure names (the network, or the .onnx file)."""

    name: str
    traced: Traced
    verify: Callable[[str, str], Verification]
    origin: str
    failure_hint: str  # what a message about an inexact spec ends with
    weights: dict | None = None


@dataclass
class Family:
    """Several models imported into one file: its text, each network's import (its verification) and the number
    of blocks the file defines, each written once whichever networks call it."""

    text: str
    networks: list[Imported]
    blocks: int

    def report(self) -> list[str]:
        lines = len(self.text.splitlines())
        blocks = f"{self.blocks} block" + ("" if self.blocks == 1 else "s")
        report = [f"imported {len(self.networks)} networks into one file: {lines} lines, {blocks}"]
        for network in self.networks:
            report.append(f"{network.name}:")
            report.extend(f"  {line}" for line in network.verification.lines())
        return report


def network_name(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"net_{cleaned}"
