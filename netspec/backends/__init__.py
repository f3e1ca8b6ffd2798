"""Backends turn an analysed graph into something else: diagrams (graph), and later PyTorch and ONNX."""
