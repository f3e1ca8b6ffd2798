"""Analysis passes, run in order over the graph; each reads what the ones before it set."""

from netspec.analysis.passes.macs import count_macs
from netspec.analysis.passes.params import count_params
from netspec.analysis.passes.paths import check_module_paths
from netspec.analysis.passes.shapes import infer_shapes
from netspec.analysis.passes.usage import warn_unused

PASSES = (infer_shapes, count_params, count_macs, check_module_paths, warn_unused)

__all__ = ["PASSES", "check_module_paths", "count_macs", "count_params", "infer_shapes", "warn_unused"]
