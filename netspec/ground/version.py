"""netspec's version, which checkpoints, ONNX metadata and the language server record."""

__version__ = "0.1.0"
