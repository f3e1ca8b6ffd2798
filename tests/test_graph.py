"""Diagrams, checked by their structure: boxes, clusters, edges and labels (never pixels)."""

import re
import shutil
import subprocess
import sys

import pytest

import netspec
from netspec.backends.graph import ALL, layout, to_dot, to_mermaid
from netspec.cli import main


def diagram(spec, expand=frozenset()):
    return layout(netspec.load(spec), expand)


def dot_nodes(text):
    return re.findall(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)"', text, re.M)


def dot_edges(text):
    return re.findall(r"^\s*(n\d+) -> (n\d+) \[label=\"([^\"]*)\"([^\]]*)\]", text, re.M)


def test_lenet5_boxes_fold_activations_and_label_shapes(in_repo):
    text = to_dot(diagram("specs/lenet5.net"))
    labels = [label for _, label in dot_nodes(text)]
    assert labels == [
        "x: input",
        "C1\\nconv(6, 5) -> lecun_tanh()\\n156 params",
        "S2\\nsubsample() -> lecun_tanh()\\n12 params",
        "C3\\nconv(16, 5, table=60/96) -> lecun_tanh()\\n1,516 params",
        "S4\\nsubsample() -> lecun_tanh()\\n32 params",
        "C5\\nconv(120, 5) -> lecun_tanh()\\n48,120 params",
        "10\\nflatten()",
        "F6\\nlinear(84) -> lecun_tanh()\\n10,164 params",
        "output\\nrbf(10)\\n840 params (frozen)",
    ]
    edges = dot_edges(text)
    assert [shape for _, _, shape, _ in edges] == ["[1, 32, 32]", "[6, 28, 28]", "[6, 14, 14]", "[16, 10, 10]",
                                                  "[16, 5, 5]", "[120, 1, 1]", "[120]", "[84]"]
    assert not any("dashed" in style for *_, style in edges)


def test_resnet18_collapses_stages_by_default(in_repo):
    d = diagram("specs/resnet18.net")
    assert [b.name for b in d.boxes()] == ["x", "conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4",
                                           "avgpool", "9", "fc"]
    assert [b.kind for b in d.boxes()][4:8] == ["block"] * 4
    assert sum(b.params for b in d.boxes()) == 11_689_512
    assert len(d.edges) == 10 and not any(e.skip for e in d.edges)


def test_expanding_a_residual_block_shows_its_shortcut(in_repo):
    text = to_dot(diagram("specs/resnet18.net", {"layer2", "layer2.0"}))
    assert text.count("subgraph cluster_") == 2
    assert 'label="layer2 (Stage)"' in text and 'label="layer2.0 (BasicBlock)"' in text
    skips = [e for e in dot_edges(text) if "dashed" in e[3]]
    assert len(skips) == 1
    source, target, shape, _ = skips[0]
    names = dict(dot_nodes(text))
    assert names[source].startswith("layer1\\n") and shape == "[64, 56, 56]"
    assert names[target] == 'downsample\\nadd(project=\\"auto\\") -> relu()\\n8,448 params'


def test_capsnet_decoder_branches_off_the_digit_capsules(in_repo):
    d = diagram("specs/capsnet.net", {"decoder"})
    names = {b.id: b.name for b in d.boxes()}
    edges = [(names[e.source], names[e.target]) for e in d.edges]
    # the reconstruction's second input (the network's input, its target shape) is not drawn as data flow
    assert edges == [("x", "conv1"), ("conv1", "primary"), ("primary", "3"), ("3", "digits"),
                     ("digits", "decoder.0"), ("decoder.0", "decoder.1"), ("decoder.1", "decoder.2"),
                     ("decoder.2", "decoder.4"), ("decoder.4", "decoder.6"), ("decoder.6", "decoder.8"),
                     ("digits", "7")]


def test_googlenet_inception_expands_into_branches(in_repo):
    d = diagram("specs/googlenet.net", {"inception3a"})
    cluster = next(item for item in d.items if not hasattr(item, "title"))
    assert cluster.path == "inception3a" and cluster.kind == "Inception"
    assert [b.name for b in cluster.items] == ["inception3a.branch1", "inception3a.branch2", "inception3a.branch3",
                                               "inception3a.branch4", "inception3a.4"]
    concat = cluster.items[-1].id
    into_concat = [e for e in d.edges if e.target == concat]
    assert [(e.shape, e.skip) for e in into_concat] == [((64, 28, 28), False), ((128, 28, 28), True),
                                                        ((32, 28, 28), True), ((32, 28, 28), True)]


def test_mermaid_has_subgraphs_and_dotted_skips(in_repo):
    text = to_mermaid(diagram("specs/resnet18.net", {"layer1", "layer1.0"}))
    assert text.startswith("flowchart TB\n")
    assert text.count("subgraph ") == text.count("\n    end") + text.count("\n  end") == 2
    assert len(re.findall(r" -\.->\|", text)) == 1
    assert len(re.findall(r" -->\|", text)) == len(diagram("specs/resnet18.net", {"layer1", "layer1.0"}).edges) - 1
    assert 'n4[["0<br/>BasicBlock' not in text and '["conv1<br/>conv(64, 3, padding=1, bias=false)' in text


def test_expand_all_draws_every_layer_but_folded_activations(in_repo):
    graph = netspec.load("specs/resnet18.net")
    d = layout(graph, ALL)
    activations = sum(1 for n in graph.nodes if n.op == "relu")
    assert len(d.boxes()) == len(graph.nodes) - activations
    assert sum(1 for e in d.edges if e.skip) == 8  # one shortcut per BasicBlock


def test_cli_writes_text_and_refuses_unknown_scopes(in_repo, tmp_path, capsys):
    out = tmp_path / "lenet5.mmd"
    assert main(["graph", "specs/lenet5.net", "-o", str(out)]) == 0
    assert out.read_text().startswith("flowchart TB\n")
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, not left behind
    assert main(["graph", "specs/googlenet.net", "--expand", "inceptoin3a"]) == 2
    assert "did you mean 'inception3a'?" in capsys.readouterr().err
    assert main(["graph", "specs/lenet5.net", "-o", str(tmp_path / "x.jpeg")]) == 2
    assert main(["graph", "specs/lenet5.net", "--format", "svg"]) == 2


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_and_png_render_through_graphviz(in_repo, tmp_path):
    svg, png = tmp_path / "r.svg", tmp_path / "r.png"
    assert main(["graph", "specs/resnet18.net", "-o", str(svg)]) == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and text.count('class="node"') == 11
    assert main(["graph", "specs/lenet5.net", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_dot_is_explained(in_repo, tmp_path):
    env = {"PATH": str(tmp_path)}  # no dot on this PATH
    result = subprocess.run([sys.executable, "-m", "netspec.cli", "graph", "specs/lenet5.net", "-o",
                             str(tmp_path / "x.svg")], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "Graphviz's `dot` program, which is not installed" in result.stderr and "apt-get install graphviz" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.svg").exists()
