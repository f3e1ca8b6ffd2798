"""What an import gives: the spec text, its network's name and what verifying it found."""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def network_name(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"net_{cleaned}"
