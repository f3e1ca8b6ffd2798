"""Semantics layer: loading a program (a file and its imports), binding names, lowering to the IR, the training recipe."""
