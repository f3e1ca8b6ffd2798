"""Every layer type netspec knows, keyed by the name a spec calls it by."""

# Each module registers its ops when imported.
from netspec.ops import (activation, capsule, conv, dense, ensemble, io, merge, norm, pool, resample,  # noqa: F401
                         shape)  # noqa: F401
from netspec.ops.base import OPS, Op, OpArgs, Shape

__all__ = ["OPS", "Op", "OpArgs", "Shape"]
