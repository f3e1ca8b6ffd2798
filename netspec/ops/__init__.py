"""Every layer type netspec knows, keyed by the name a spec calls it by."""

# Each module registers its ops when imported.
from netspec.ops import (activation, arith, capsule, channels, conv, dense, ensemble, io, merge, norm,  # noqa: F401
                         partitions, pool, resample, shape, tokens, windows)  # noqa: F401
from netspec.ops.base import OPS, Op, OpArgs, Shape

__all__ = ["OPS", "Op", "OpArgs", "Shape"]
