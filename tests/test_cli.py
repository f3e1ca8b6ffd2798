"""The command line as users meet it: output, exit codes, JSON, and no traceback for a mistake."""

import json
import subprocess
import sys

import pytest

from netspec.cli import main


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "netspec.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_check_prints_layers_and_totals(in_repo, capsys):
    assert main(["check", "specs/lenet5.net"]) == 0
    out = capsys.readouterr().out
    assert "C3" in out and "1,516" in out and "[16, 10, 10]" in out
    assert "Params:      60,840 (trainable 60,000, non-trainable 840)" in out
    assert "MACs:        326,648" in out and "FLOPs:       653,296" in out


def test_check_names_a_second_output_and_the_labels_input(in_repo, capsys):
    assert main(["check", "specs/capsnet.net", "--collapse"]) == 0
    out = capsys.readouterr().out
    assert "Params:      8,215,568 (trainable 8,215,568, non-trainable 0)" in out
    assert "decoder  group           [1, 28, 28]    1,411,344    1,411,344" in out
    assert ("Outputs:     7, then the reconstruction decoder.8 of the input; forward(x, labels=None) takes the "
            "class labels while training") in out
    assert main(["check", "specs/capsnet.net", "--set", "decoder=false", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["totals"]["params"], report["outputs"], report["takes_labels"]) == (6_804_224, ["6"], False)
    assert main(["check", "specs/lenet5.net"]) == 0
    assert "Outputs:" not in capsys.readouterr().out


def test_json_output_matches_the_summary(in_repo, capsys):
    assert main(["check", "specs/resnet18.net", "--format", "json", "--set", "classes=10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["network"] == "ResNet18" and report["arguments"] == {"classes": 10}
    assert report["totals"]["params"] == 11_689_512 - 990 * 513
    assert report["rows"][-1] == {"name": "fc", "op": "linear", "shape": [10], "params": 5130, "trainable": 5130,
                                  "buffers": 0, "macs": 5130, "depth": 0, "location": "specs/blocks/resnet.net:49"}


def test_collapse_and_depth(in_repo, capsys):
    main(["check", "specs/resnet18.net", "--collapse", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["name"] for r in rows] == ["x", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                         "layer4", "avgpool", "9", "fc"]
    assert rows[6] == {"name": "layer2", "op": "Stage", "shape": [128, 28, 28], "params": 525_568,
                       "trainable": 525_568, "buffers": 1_285, "macs": 411_043_072, "depth": 0,
                       "location": "specs/blocks/resnet.net:44"}
    main(["check", "specs/resnet18.net", "--depth", "2", "--format", "json"])
    names = [r["name"] for r in json.loads(capsys.readouterr().out)["rows"]]
    assert "layer2.0" in names and "layer2.0.conv1" not in names


def test_spec_errors_exit_1_without_traceback(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("network Broken {\n  input x: [1, 28, 28\n  conv(6, kernel=5 ->\n}\n")
    result = run("check", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}:3:3: error[NS100]: unexpected name 'conv'; expected ',' or ']'" in result.stderr
    assert "  |   ^^^^" in result.stderr


def test_json_error_report_is_valid_json(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("network N { input x: [1, 8, 8]  cnov(3) }")
    result = run("check", str(bad), "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["errors"][0]["code"] == "NS201"
    assert report["errors"][0]["span"] == {"file": str(bad), "line": 1, "col": 33, "end_line": 1, "end_col": 37}


@pytest.mark.parametrize("args", [["check"], ["check", "specs/lenet5.net", "--depth", "0"], ["frobnicate"],
                                  ["check", "specs/lenet5.net", "--set", "classes"],
                                  ["check", "no/such/file.net"]])
def test_usage_errors_exit_2(args, in_repo):
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr


def test_unknown_network_parameter_is_a_spec_error(in_repo):
    result = run("check", "specs/lenet5.net", "--set", "clases=10")
    assert result.returncode == 1
    assert "network 'LeNet5' has no parameter 'clases'" in result.stderr and "did you mean 'classes'?" in result.stderr


def test_check_imports_no_torch_onnx_or_numpy(in_repo):
    code = ("import sys; from netspec.cli import main; rc = main(['check', 'specs/resnet152.net']); "
            "heavy = sorted(m for m in ('torch', 'onnx', 'numpy', 'onnxruntime', 'pygls', 'lsprotocol') "
            "if m in sys.modules); "
            "print('HEAVY', heavy); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0
    assert "HEAVY []" in result.stdout


def test_lsp_without_pygls_names_the_extra_to_install():
    code = ("import sys; sys.modules['pygls'] = None; from netspec.cli import main; sys.exit(main(['lsp']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == 'netspec lsp: pygls is needed; install the project\'s `lsp` extra (pip install -e ".[lsp]")\n'


def test_ops_lists_every_layer(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    assert "conv(out_channels, kernel," in out and "lecun_tanh()" in out and "rbf(units" in out


def test_unwritable_output_is_a_clear_error(in_repo, tmp_path, capsys):
    target = tmp_path / "missing-dir" / "lenet.mmd"
    assert main(["graph", "specs/lenet.net", "-o", str(target)]) == 2
    assert f"netspec graph: cannot write {target}: No such file or directory" in capsys.readouterr().err
    assert not target.parent.exists()


def test_block_arguments_are_reported_by_name(in_repo, capsys):
    assert main(["check", "specs/lenet.net", "--set", "act=sigmoid", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["arguments"] == {"classes": 10, "act": "sigmoid"}


def test_set_takes_one_expression(in_repo):
    result = run("check", "specs/lenet.net", "--set", "classes=3 network X { input x: [1] }")
    assert result.returncode == 2 and "the value must be one expression" in result.stderr
