"""Every layer type netspec knows, keyed by the name a spec calls it by."""

from netspec.ops import activation, capsule, conv, dense, ensemble, io, merge, norm, pool  # noqa: F401  (each registers its ops)
from netspec.ops.base import OPS, Op, OpArgs, Shape

__all__ = ["OPS", "Op", "OpArgs", "Shape"]
