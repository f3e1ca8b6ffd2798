"""The op registry: every entry is complete, and shape rules follow PyTorch's formulas."""

import math

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

import netspec
from netspec.ops import OPS, Op, OpArgs


def test_every_op_defines_every_hook():
    assert len(OPS) >= 25
    for name, op in OPS.items():
        assert op.name == name
        assert op.summary, name
        assert issubclass(op.Args, OpArgs), name
        for field in op.positional:
            assert field in op.Args.model_fields, (name, field)
        for hook in ("shape", "params", "buffers", "macs"):
            assert callable(getattr(op, hook)), (name, hook)


def test_required_layers_exist():
    required = {"conv", "linear", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "global_avgpool",
                "subsample", "batchnorm", "lrn", "dropout", "flatten", "relu", "sigmoid", "tanh", "lecun_tanh",
                "leaky_relu", "gelu", "softmax", "rbf", "add", "concat", "scale"}
    assert required <= set(OPS)


def test_ops_with_parameters_override_the_count():
    with_params = {name for name, op in OPS.items() if type(op).params is not Op.params}
    assert with_params == {"conv", "linear", "subsample", "batchnorm", "rbf", "add", "scale", "capsule",
                           "layernorm", "groupnorm", "instancenorm", "layer_scale", "prelu", "conv_transpose",
                           "std_conv", "class_token", "position_embedding", "self_attention",
                           "partition_attention", "window_attention", "patch_merging"}


def conv_reference(n, k, s, p, d):
    return math.floor((n + 2 * p - d * (k - 1) - 1) / s + 1)


def pool_reference(n, k, s, p, ceil):
    # PyTorch's pooling_output_shape, including the rule that the last window starts inside the input.
    rounded = (n + 2 * p - (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (rounded - 1) * s >= n + p:
        rounded -= 1
    return rounded


def check_one(tmp_path, body, shape):
    path = tmp_path / "p.net"
    path.write_text(f"network P {{ input x: [2, {shape}, {shape}]  {body} }}")
    return netspec.load(path).nodes[-1].shape


def assert_shape_or_too_large(tmp, body, size, expected, too_large):
    """The layer's shape is `expected`, or, when its window exceeds the input, the error is NS302."""
    if not too_large:
        assert check_one(tmp, body, size) == expected
        return
    with pytest.raises(netspec.NetspecError) as err:
        check_one(tmp, body, size)
    assert [e.code for e in err.value.diagnostics] == ["NS302"]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 64), k=st.integers(1, 9), s=st.integers(1, 4), p=st.integers(0, 4), d=st.integers(1, 3))
def test_conv_shape_follows_the_formula(tmp_path_factory, n, k, s, p, d):
    expected = conv_reference(n, k, s, p, d)
    body = f"conv(3, kernel={k}, stride={s}, padding={p}, dilation={d})"
    assert_shape_or_too_large(tmp_path_factory.mktemp("conv"), body, n, (3, expected, expected), expected < 1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 64), k=st.integers(1, 6), s=st.integers(1, 4), data=st.data(), ceil=st.booleans())
def test_pool_shape_follows_pytorch(tmp_path_factory, n, k, s, data, ceil):
    p = data.draw(st.integers(0, k // 2))
    expected = pool_reference(n, k, s, p, ceil)
    body = f"maxpool({k}, stride={s}, padding={p}, ceil_mode={'true' if ceil else 'false'})"
    assert_shape_or_too_large(tmp_path_factory.mktemp("pool"), body, n, (2, expected, expected), k > n + 2 * p)
