"""Analysis passes, run in order over the graph; each reads what the ones before it set."""

from netspec.analysis.passes.macs import count_macs
from netspec.analysis.passes.params import count_params
from netspec.analysis.passes.shapes import infer_shapes

PASSES = (infer_shapes, count_params, count_macs)

__all__ = ["PASSES", "count_macs", "count_params", "infer_shapes"]
