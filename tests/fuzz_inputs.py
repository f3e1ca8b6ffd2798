"""What the fuzz tests (tests/test_fuzz.py) and the long run (bench/fuzz.py) feed netspec.

Three sources: sentences of the Lark grammar (syntactically valid, semantically random), mutations of the
specs in specs/ (tokens deleted, doubled, swapped or replaced, bytes and unicode inserted, numbers blown up,
nesting deepened, line endings changed), and random networks built from the layer library (mostly valid;
their shapes are checked against a real torch forward pass).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SEEDS = {str(p.relative_to(SPECS)): p.read_text() for p in sorted(SPECS.rglob("*.net"))}

def fixed_budget(examples: int):
    """Hypothesis settings for the fuzz-driven tests: the same inputs every run (derandomised) and no deadline,
    since a test must not depend on how busy the machine is; bench/fuzz.py measures the time bound."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# A token of the language, roughly: strings, names, numbers, multi-character operators, single characters.
TOKEN = re.compile(r'"[^"\n]*"|[A-Za-z_]\w*|\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?|->|\*\*|//|==|!=|<=|>=|\.\.\.|\S')
VOCABULARY = ["network", "block", "import", "let", "train", "input", "if", "not", "and", "or", "true", "false",
              "{", "}", "(", ")", "[", "]", ",", ":", "=", "->", "*", "**", "+", "-", "/", "//", "%", "...", "==",
              "<", "#", '"', "conv", "relu", "add", "concat", "linear", "flatten", "x", "0", "-1", "1e999",
              "99999999999999999999", "3.5", '"same"', "none", "for", "in", "output", "else", "range", "make_divisible",
              '"layer{i}"', "[1:]", "max", "\x00", "\ufeff", "\u202e", "\u200b", "é", "😀"]


def syntax_valid() -> st.SearchStrategy[str]:
    """Random sentences of grammar/netspec.lark."""
    from hypothesis.extra.lark import from_lark
    from lark import Lark

    from netspec.language.parse import GRAMMAR

    # A fresh Lark: hypothesis reads the grammar's rules, which the parser cached by netspec.language.parse lacks.
    grammar = Lark(GRAMMAR.read_text(), start="module", parser="lalr")

    def spaced(strategy):  # hypothesis joins tokens without spaces: `network` + `N` would read `networkN`
        return strategy.map(lambda text: f" {text} ")

    return from_lark(grammar, start="module", explicit={
        "WS": st.sampled_from([" ", "\n", "\t", "\r\n"]),
        "NAME": spaced(st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True),
                                 st.sampled_from(["x", "c", "conv", "relu", "add", "linear", "flatten", "B"]))),
        "INT": spaced(st.integers(0, 300).map(str)),
        "FLOAT": spaced(st.sampled_from(["0.5", "1e-3", "2.0", "1_0.0"])),
        "STRING": spaced(st.sampled_from(['"same"', '"kaiming"', '"blocks/resnet.net"', '"../x.net"', '""',
                                          '"layer{i + 1}"', '"block1-0"', '"{"', '"{}"'])),
        # A comment runs to the end of its line: without the newline it would swallow the tokens after it.
        "COMMENT": st.from_regex(r"#[^\n]{0,8}", fullmatch=True).map(lambda text: f"{text}\n"),
    })


def _tokens(text: str) -> list[re.Match]:
    return list(TOKEN.finditer(text))


def _splice(text: str, match: re.Match, replacement: str) -> str:
    return text[:match.start()] + replacement + text[match.end():]


@st.composite
def _mutate_once(draw, text: str) -> str:
    tokens = _tokens(text)
    kind = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "number", "nest", "unicode",
                                 "truncate", "crlf", "bom", "empty", "repeat"]))
    if not tokens or kind == "empty":
        return ""
    i = draw(st.integers(0, len(tokens) - 1))
    tok = tokens[i]
    if kind == "delete":
        return _splice(text, tok, "")
    if kind == "duplicate":
        return _splice(text, tok, tok.group() + " " + tok.group())
    if kind == "swap" and i + 1 < len(tokens):
        nxt = tokens[i + 1]
        return text[:tok.start()] + nxt.group() + text[tok.end():nxt.start()] + tok.group() + text[nxt.end():]
    if kind == "replace":
        return _splice(text, tok, draw(st.sampled_from(VOCABULARY)))
    if kind == "number":
        numbers = [t for t in tokens if t.group()[0].isdigit()] or [tok]
        target = draw(st.sampled_from(numbers))
        big = draw(st.sampled_from(["0", "-1", "1" + "0" * draw(st.integers(6, 400)), "2**64", "10**18 * 10",
                                    "1e308 * 10", "0.5", "-0", "(0 - 3)", "[1, 2]", "true"]))
        return _splice(text, target, big)
    if kind == "nest":
        depth = draw(st.integers(1, 400))
        opener, closer = draw(st.sampled_from([("(", ")"), ("[", "]"), ("{", "}"), ("-", ""), ("not ", "")]))
        return _splice(text, tok, opener * depth + tok.group() + closer * depth)
    if kind == "unicode":
        inserted = draw(st.text(min_size=1, max_size=8))
        return text[:tok.start()] + inserted + text[tok.start():]
    if kind == "truncate":
        return text[:tok.start()]
    if kind == "crlf":
        return text.replace("\n", draw(st.sampled_from(["\r\n", "\r", "\n\n", "\x0c\n"])))
    if kind == "bom":
        return "\ufeff" + text
    if kind == "repeat":  # a blown-up repeat count after a call
        calls = [t for t in tokens if t.group() == ")"] or [tok]
        target = draw(st.sampled_from(calls))
        count = draw(st.sampled_from(["10000", "100000", "10 ** 6", "-3", "2.5", "x"]))
        return _splice(text, target, f") * {count}")
    return text


@st.composite
def mutated_spec(draw) -> tuple[str, bytes]:
    """(the seed's path inside specs/, the mutated file's bytes)."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    text = SEEDS[name]
    for _ in range(draw(st.integers(1, 4))):
        text = draw(_mutate_once(text))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # raw bytes, often not UTF-8
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    return name, data


# Files of every kind, as a spec or as what it imports -------------------------------------------------------------

FILE_KINDS = ["regular", "fifo", "folder", "link loop", "dangling link", "link to /dev/zero", "unreadable"]


@dataclass
class HostileFile:
    """A path of some kind (FILE_KINDS) given as the spec itself, or imported by a valid spec beside it."""

    kind: str
    data: bytes  # a regular or unreadable file's bytes: never a network (they end in a stray `)`)
    imported: bool
    allow_any_import: bool  # --allow-any-import, so that a link to /dev/zero is followed and read

    def make(self, folder: Path) -> tuple[Path, Path]:
        """Create it in `folder`: (the spec to check, the path of the given kind)."""
        target = folder / "target.net"
        if self.kind in ("regular", "unreadable"):
            target.write_bytes(self.data)
            if self.kind == "unreadable":
                target.chmod(0)  # unreadable unless root, who reads it as a regular file
        elif self.kind == "fifo":
            os.mkfifo(target)
        elif self.kind == "folder":
            target.mkdir()
        elif self.kind == "link loop":
            target.symlink_to("other.net")
            (folder / "other.net").symlink_to("target.net")
        elif self.kind == "dangling link":
            target.symlink_to("nowhere.net")
        else:
            target.symlink_to("/dev/zero")
        if not self.imported:
            return target, target
        spec = folder / "spec.net"
        spec.write_text('import "target.net"\nnetwork N {\n  input x: [1, 8, 8]\n  relu()\n}\n')
        return spec, target

    def arguments(self, spec: Path) -> list[str]:
        return ["check", str(spec)] + (["--allow-any-import"] if self.allow_any_import else [])


@st.composite
def hostile_file(draw, kinds: list[str] = FILE_KINDS, imported: bool | None = None) -> HostileFile:
    """A spec or an import (or, given `imported`, that one) that is one of `kinds`: a FIFO, a folder, a loop of
    links, a dangling link, a link to /dev/zero, an unreadable file or a file of random bytes."""
    data = draw(st.binary(max_size=64)) + b"\n)"
    imported = draw(st.booleans()) if imported is None else imported
    return HostileFile(draw(st.sampled_from(kinds)), data, imported, draw(st.booleans()))


# Random networks from the layer library -------------------------------------------------------------------------

@dataclass
class _Net:
    channels: int
    size: int
    lines: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    names: int = 0
    growth: int = 0  # upsampling steps so far: capped, so the maps stay small enough to run


    def fresh(self) -> str:
        self.names += 1
        return f"v{self.names}"


def _conv(draw, net: _Net) -> str:
    out = draw(st.sampled_from([1, 2, 4, 6, 8, 16]))
    kernel = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 3))
    padding = draw(st.one_of(st.integers(0, 2), st.just('"same"'))) if stride == 1 else draw(st.integers(0, 2))
    extra = ""
    groups = draw(st.sampled_from([1, 1, 1, 2]))
    if groups > 1 and net.channels is not None and net.channels % groups == 0 and out % groups == 0:
        extra += f", groups={groups}"
    if draw(st.booleans()) and padding != '"same"':
        extra += f", dilation={draw(st.integers(1, 2))}"
    if draw(st.integers(0, 4)) == 0:
        extra += ", bias=false"
    net.channels = out
    return f"conv({out}, kernel={kernel}, stride={stride}, padding={padding}{extra})"


def _pool(draw, net: _Net) -> str:
    kind = draw(st.sampled_from(["maxpool", "avgpool", "subsample"]))
    kernel = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, kernel // 2))
    ceil = draw(st.booleans())
    return f"{kind}({kernel}, stride={stride}, padding={padding}, ceil_mode={str(ceil).lower()})"


def _resample(draw, net: _Net) -> list[str]:
    """A resampling or shape op (netspec/ops/resample.py, shape.py), sometimes with a mistake made on purpose."""
    kinds = ["chunk", "channel_shuffle", "reduce", "reshape", "center_crop"]
    if net.growth < 2:
        kinds += ["conv_transpose", "upsample", "pixel_shuffle"]
    kind = draw(st.sampled_from(kinds))
    known = net.channels
    if kind == "conv_transpose":
        net.growth += 1
        out = draw(st.sampled_from([1, 2, 4, 8]))
        stride, dilation = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        largest = max(stride, dilation) - 1  # one more is refused: NS203
        output_padding = draw(st.sampled_from([0, 0, largest, largest + 1]))
        extra = ""
        if known is not None and known % 2 == 0 and out % 2 == 0 and draw(st.booleans()):
            extra = ", groups=2"
        net.channels = out
        return [f"conv_transpose({out}, kernel={draw(st.integers(1, 4))}, stride={stride}, "
                f"padding={draw(st.integers(0, 2))}, output_padding={output_padding}, dilation={dilation}{extra})"]
    if kind == "upsample":
        net.growth += 1
        size = draw(st.sampled_from(["2", "[1, 2]", "size=[5, 3]", "size=4"]))
        mode = draw(st.sampled_from(["", ', mode="bilinear"', ', mode="bilinear", align_corners=true']))
        return [f"upsample({size}{mode})"]
    if kind == "pixel_shuffle":
        net.growth += 1
        factor = draw(st.integers(1, 2))
        channels = draw(st.integers(1, 3)) * factor * factor + draw(st.sampled_from([0, 0, 0, 1]))  # 1: NS203
        net.channels = channels // (factor * factor)
        return [f"conv({channels}, kernel=1) -> pixel_shuffle({factor})"]
    if kind == "center_crop":  # U-Net's crop and concat; cropping the smaller map instead is NS302
        big, small = net.fresh(), net.fresh()
        pool = draw(st.sampled_from(["maxpool(2, ceil_mode=true)", "conv(2, kernel=3)", "relu()"]))
        first, second = (big, small) if draw(st.integers(0, 4)) else (small, big)
        net.channels = None
        return [f"{big} = relu()", f"{small} = {pool}", f"{first} -> center_crop({second}) -> concat({second})"]
    if kind == "reshape":  # a pooled map to a vector and back, its count sometimes off (NS301)
        prefix = ""
        if known is None:  # one channel is a count the generator knows
            prefix, known = 'reduce_max(over="channels") -> ', 1
        off = draw(st.sampled_from([0, 0, 0, 1]))
        net.channels = known
        return [f"{prefix}global_avgpool() -> reshape([{known}]) -> reshape([{known + off}, 1, 1])"]
    if kind == "reduce":
        op = draw(st.sampled_from(["reduce_mean", "reduce_max", "reduce_sum"]))
        over = draw(st.sampled_from(["channels", "positions"]))
        if over == "channels":
            net.channels = 1
        return [f'{op}(over="{over}")']
    parts = draw(st.integers(1, 3))  # chunk or channel_shuffle; channels that do not divide are NS203
    if kind == "channel_shuffle":
        return [f"channel_shuffle({parts})"]
    net.channels = known // parts if known is not None and known % parts == 0 else None
    return [f"chunk({parts}, {draw(st.integers(0, parts - 1))})"]


_POINTWISE = ["relu()", "tanh()", "sigmoid()", "lecun_tanh()", "gelu()", "leaky_relu(0.2)", "batchnorm()",
              "dropout(0.25)", "scale(0.5)", "scale(learnable=true)", "lrn(3)", "relu6()", "silu()", "hardswish()",
              "hardsigmoid()", "mish()", "elu(0.5)", "prelu()", "prelu(per_channel=true)", "layernorm()",
              "groupnorm(2)", "instancenorm(affine=true)", "stochastic_depth(0.2)", "layer_scale(0.1)",
              "sqrt()", "exp()", "log()", "pow(2)", "pow(0.5)", "softmax()"]


def _channels(draw, net: _Net) -> list[str]:
    """A channel or arithmetic op (netspec/ops/channels.py, arith.py, merge.py's sub and div, pnorm, softmax,
    std_conv), sometimes with a mistake made on purpose: slices out of range or empty, sizes that do not add up,
    groups that do not divide."""
    known = net.channels
    kind = draw(st.sampled_from(["slice", "split", "pad_channels", "arith", "pnorm", "softmax", "std_conv"]))
    if kind == "slice":
        axis = draw(st.sampled_from(["channels", "channels", "height", "width"]))
        start, stop = draw(st.integers(-5, 5)), draw(st.one_of(st.none(), st.integers(-5, 6)))
        call = f"slice({start}" + ("" if stop is None else f", {stop}") + (
            f', axis="{axis}")' if axis != "channels" else ")")
        if axis == "channels":
            net.channels = len(range(known)[start:stop]) if known is not None else None
        return [call]
    if kind == "split":
        sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
        if known is not None and draw(st.integers(0, 4)):  # mostly sizes that add up to the channels
            rest = known - sum(sizes[:-1])
            sizes = sizes[:-1] + [rest] if rest > 0 else [known]
        index = draw(st.integers(0, len(sizes)))  # one past the end: NS203
        net.channels = sizes[index] if index < len(sizes) else None
        return [f"split({sizes}, {index})"]
    if kind == "pad_channels":
        after, before = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        net.channels = known + after + before if known is not None else None
        return [f"pad_channels({after}, before={before})"]
    if kind == "arith":  # a value combined with a gate or map derived from it: broadcasts, or not on purpose
        base = net.fresh()
        op = draw(st.sampled_from(["sub", "div"]))
        other = draw(st.sampled_from(['reduce_mean()', 'pnorm(2)', 'reduce_max(over="channels")', "relu()",
                                      "maxpool(2)"]))
        return [f"{base} = relu()", f"{other} -> sigmoid() -> {op}({base}) -> {op}({base})"]
    if kind == "pnorm":
        over = draw(st.sampled_from(["channels", "positions"]))
        net.channels = 1 if over == "channels" else known
        return [f'pnorm({draw(st.sampled_from([1, 2, 3, 0.5]))}, over="{over}")']
    if kind == "softmax":
        axis = draw(st.sampled_from(["channels", "height", "width", "positions"]))
        if axis != "channels":
            return [f'softmax(axis="{axis}")']
        groups, radix = draw(st.integers(1, 4)), draw(st.sampled_from([None, None, 2, 3]))
        return [f"softmax(groups={groups}" + ("" if radix is None else f", radix={radix}") + ")"]
    out = draw(st.sampled_from([2, 4, 6, 8]))
    groups = 2 if known is not None and known % 2 == 0 and draw(st.booleans()) else 1
    kernel, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    gain = draw(st.sampled_from(["", ", gain=false", ", gamma=1.7"]))
    net.channels = out
    return [f"std_conv({out}, kernel={kernel}, stride={stride}, padding={kernel // 2}, groups={groups}{gain})"]


@st.composite
def random_network(draw) -> str:
    """A network of 1-10 steps over a small input; most are valid, some have shape errors on purpose."""
    net = _Net(channels=draw(st.integers(1, 4)), size=draw(st.integers(4, 20)))
    in_channels = net.channels
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["conv", "conv", "pool", "pointwise", "residual", "concat", "block",
                                     "group", "adaptive", "resample", "gate", "channels"]))
        if kind == "gate":  # squeeze-and-excitation or spatial attention: a broadcast product with the map
            gated = net.fresh()
            over = draw(st.sampled_from(["positions", "channels"]))
            width = net.channels if over == "positions" and net.channels is not None else 1
            net.lines += [f"{gated} = relu()",
                          f'reduce_mean(over="{over}") -> conv({width}, kernel=1) -> hardsigmoid() -> mul({gated})']
        elif kind == "conv":
            net.lines.append(_conv(draw, net))
        elif kind == "resample":
            net.lines += _resample(draw, net)
        elif kind == "channels":
            net.lines += _channels(draw, net)
        elif kind == "pool":
            net.lines.append(_pool(draw, net))
        elif kind == "pointwise":
            net.lines.append(draw(st.sampled_from(_POINTWISE)))
        elif kind == "residual":
            skip, channels = net.fresh(), net.channels
            net.lines.append(f"{skip} = relu()")
            inner = _conv(draw, net)
            project = "true" if draw(st.booleans()) or net.channels != channels else "false"
            net.lines.append(f"{inner} -> add({skip}, project={project})")
        elif kind == "concat":
            skip, channels = net.fresh(), net.channels
            net.lines.append(f"{skip} = batchnorm()")
            net.lines.append(f"conv({draw(st.integers(1, 8))}, kernel=3, padding=1) -> concat({skip})")
            net.channels = None  # unknown to the generator; later convs still work
        elif kind == "block":
            name = f"B{len(net.blocks)}"
            out = draw(st.integers(1, 8))
            net.blocks.append(f"block {name}(c, k=3, bn=true) {{\n  conv(c, kernel=k, padding=k // 2)\n"
                              f"  batchnorm() if bn\n  relu()\n}}")
            net.lines.append(f"{name}({out}, bn={str(draw(st.booleans())).lower()}) * {draw(st.integers(0, 3))}")
            net.channels = out
        elif kind == "group":
            net.lines.append(f"g{len(net.lines)}: {{ {draw(st.sampled_from(_POINTWISE))} -> "
                             f"{draw(st.sampled_from(_POINTWISE))} }} * {draw(st.integers(1, 3))}")
        elif kind == "adaptive":
            size = draw(st.integers(1, 4))
            net.lines.append(draw(st.sampled_from([f"adaptive_avgpool({size})", f"adaptive_maxpool([{size}, 1])",
                                                   "global_avgpool()", "global_maxpool()"])))
    decoder_off_by = None
    if draw(st.integers(0, 4)) == 0:  # a capsule head; grouping fails on purpose when channels do not divide
        dim = draw(st.sampled_from([1, 2, 4]))
        units, size, iterations = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
        capsule = f"capsules({dim}) -> squash() -> capsule({units}, {size}, iterations={iterations})"
        if draw(st.booleans()):  # and a reconstruction decoder, its size sometimes wrong on purpose
            decoder_off_by = draw(st.sampled_from([0, 0, 0, 1]))
            net.lines += [f"digits = {capsule}", "digits -> capsule_mask() -> flatten() -> linear(DECODED) -> "
                          "sigmoid() -> reconstruction()", "digits -> capsule_length()"]
        else:
            net.lines.append(f"{capsule} -> capsule_length()")
    elif draw(st.integers(0, 3)) == 0:  # a transformer head over the positions; heads that do not divide fail
        heads, out, index = draw(st.sampled_from([1, 2, 3])), draw(st.integers(1, 12)), draw(st.sampled_from([0, -1]))
        net.lines += ["t = tokens() -> class_token() -> position_embedding()",
                      f"layernorm() -> self_attention({heads}) -> add(t) -> linear({out}) -> gelu() -> token({index})"]
    elif draw(st.booleans()):
        net.lines.append(f"flatten() -> linear({draw(st.integers(1, 12))})")
        if draw(st.booleans()):
            net.lines.append(draw(st.sampled_from(["softmax()", "rbf(4)", "batchnorm()", "relu()"])))
    body = "\n  ".join(net.lines)
    width = draw(st.integers(4, 20))
    if decoder_off_by is not None:
        body = body.replace("DECODED", str(in_channels * net.size * width + decoder_off_by))
    head = f"input x: [{in_channels}, {net.size}, {width}]"
    return "\n".join(net.blocks + [f"network Fuzz {{\n  {head}\n  {body}\n}}\n"])


# The properties -----------------------------------------------------------------------------------------------

def agrees_with_torch(graph) -> None:
    """The compiled module has the checker's parameter count, and a real forward pass gives every node the
    shape the checker computed."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    from netspec.backends.torch import to_module

    module = to_module(graph, seed=0).eval()
    assert sum(p.numel() for p in module.parameters()) == sum(n.params for n in graph.nodes)
    ShapeProp(module).propagate(torch.randn(2, *graph.input_shape))
    shapes = {n.meta["netspec_name"]: tuple(n.meta["tensor_meta"].shape[1:]) for n in module.graph.nodes
              if "netspec_name" in n.meta}
    assert shapes == {n.name: n.shape for n in graph.nodes}, "checker and torch disagree"


@contextlib.contextmanager
def _debug():
    """NETSPEC_DEBUG=1: an internal error raises with its traceback instead of exiting 3."""
    before = os.environ.get("NETSPEC_DEBUG")
    os.environ["NETSPEC_DEBUG"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["NETSPEC_DEBUG"]
        else:
            os.environ["NETSPEC_DEBUG"] = before


SPAN_OPTIONAL = {"NS209", "NS210"}  # about a whole file or the command line, not a place in one


def check_front_door(path: Path, seconds: list[float] | None = None) -> str:
    """Run `netspec check` in-process, as text and as JSON; return "ok" or "error".

    Fails (AssertionError, or netspec's own exception with NETSPEC_DEBUG=1) on anything but a valid report or
    located errors: an exit status other than 0/1, a traceback, JSON that does not parse, unbounded output.
    `seconds` gets the time of each of the two checks.
    """
    import time

    from netspec.cli import main

    outcomes = []
    for fmt in ("text", "json"):
        out, err = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _debug():
            status = main(["check", str(path), "--format", fmt])
        if seconds is not None:
            seconds.append(time.perf_counter() - start)
        assert status in (0, 1), (status, err.getvalue()[-2000:])
        assert "Traceback" not in err.getvalue()
        if fmt == "json":
            report = json.loads(out.getvalue())
            assert report["ok"] is (status == 0)
            for diagnostic in report.get("errors", []):
                assert re.fullmatch(r"NS\d{3}", diagnostic["code"]) and diagnostic["message"]
                assert diagnostic["span"] is not None or diagnostic["code"] in SPAN_OPTIONAL, diagnostic
            assert len(report.get("errors", [])) <= 50
        else:
            text = err.getvalue()
            assert len(text) < 50 * 4_000, "error output is not bounded"
            if status == 1:
                assert re.search(r"\d+ errors? found$", text.strip()), text[-500:]
        outcomes.append("ok" if status == 0 else "error")
    assert outcomes[0] == outcomes[1]
    return outcomes[0]
