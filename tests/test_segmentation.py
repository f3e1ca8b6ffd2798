"""Segmentation (issue 26): a network whose output is [classes, H, W] trains on image and mask pairs, reports
mean IoU and pixel accuracy, predicts mask PNGs, and is drawn by `netspec plot`.

The U-Net is specs/unet.net itself with `width=4`, a sixteenth of the paper's (4 to 64 channels, 121,730
parameters with 2 classes; its valid convolutions take 204 x 204 images to 20 x 20 maps of the centre), trained on generated shapes
(background and shape, each shape's outline ignored). Figures (CPU, one thread, seed 0): 6 epochs on 48 images
(43 trained on, 5 held out; Adam, lr 0.01, no schedule), test mean IoU 92.5 %, pixel accuracy 97.9 % on 16 test
images."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import netspec  # noqa: E402
from conftest import ROOT  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.ground.errors import ToolError  # noqa: E402
from netspec.semantics.recipe import Recipe  # noqa: E402
from netspec.train import DataOptions, RunOptions, run  # noqa: E402
from shapes import segmentation_pairs, write_segmentation_folder  # noqa: E402

SIZE = 204  # 16 x 5 + 124: U-Net's smallest size with a 20 x 20 output


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


UNET = ROOT / "specs" / "unet.net"


def centred_pairs(count, seed):
    """Shapes (class 1) on a background (class 0) in the middle 60 x 60 of 204 x 204 images, the region the
    U-Net's 20 x 20 output sees the centre of; each shape's outline ignored (255), as Pascal VOC marks borders."""
    pictures, masks = segmentation_pairs(count, seed, 60, radius=(6, 16))
    rng = np.random.default_rng(seed + 100)
    images = torch.from_numpy(rng.integers(0, 90, (count, 3, SIZE, SIZE)).astype(np.uint8))
    labels = torch.zeros(count, SIZE, SIZE, dtype=torch.int64)
    start = (SIZE - 60) // 2
    images[:, :, start:start + 60, start:start + 60] = pictures
    shape = (masks > 0).long()
    inside = torch.nn.functional.max_pool2d(-shape[:, None].float(), 3, 1, 1)[:, 0] == 0  # eroded by a pixel
    shape[(shape == 1) & ~inside] = 255
    labels[:, start:start + 60, start:start + 60] = shape
    return images, labels


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("segmentation")
    write_segmentation_folder(root / "data", {"train": centred_pairs(48, 1), "test": centred_pairs(16, 2)},
                              ["background", "shape"])
    return root


def test_unet_segments_generated_shapes_end_to_end(shapes, capsys):
    spec = UNET
    graph = netspec.load(spec, size=SIZE, channels=3, classes=2, width=4)
    assert graph.node(graph.output).shape == (2, 20, 20)
    messages = []
    run(graph, Recipe(data="imagefolder", epochs=6, batch_size=8, lr=0.01, schedule="none"),
                 shapes / "run", str(shapes / "data"), "cpu", progress=False, log=messages.append,
                 options=RunOptions(data=DataOptions(workers=0)))
    lines = [json.loads(line) for line in (shapes / "run" / "metrics.jsonl").read_text().splitlines()]
    test = lines[-1]
    with capsys.disabled():  # the figures, with pytest -s
        print(f"\nU-Net at width 4, 6 epochs: test mIoU {test['test_miou']:.2%}, pixel accuracy "
              f"{test['test_accuracy']:.2%}")
    assert test["test_miou"] >= 0.8 and test["test_accuracy"] >= 0.9  # measured: 92.5 % and 97.9 %
    assert all({"val_miou", "val_accuracy", "train_accuracy"} <= set(m) for m in lines[:-1])
    best = max(lines[:-1], key=lambda m: m["val_miou"])  # best.pt is chosen by the validation mIoU
    assert test["epoch"] == best["epoch"]
    assert messages[0].startswith("UNet: 121,730 parameters | cpu, batch 8 | data streamed: 43 train, 5 validation")
    assert any(m.startswith("test: mIoU ") and ", pixel accuracy " in m for m in messages)
    config = json.loads((shapes / "run" / "config.json").read_text())
    assert (config["task"], config["classes"]) == ("segmentation", ["background", "shape"])
    # eval: mIoU, and per class pixel accuracy and IoU
    assert main(["eval", str(spec), "--weights", str(shapes / "run" / "best.pt"), "--data-dir",
                 str(shapes / "data"), "--device", "cpu", "--workers", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"UNet on data test set (16 images): mIoU {test['test_miou']:.2%}, pixel accuracy "
                      f"{test['test_accuracy']:.2%}, loss {test['test_loss']:.4f}")
    assert out[1].split() == ["class", "pixel", "accuracy", "IoU", "pixels"]
    # predict: a mask PNG per image, the network's output size, mostly the true mask's centre
    from PIL import Image

    masks = shapes / "masks"
    assert main(["predict", str(spec), "--weights", str(shapes / "run" / "best.pt"),
                 str(shapes / "data" / "test" / "images"), "--masks", str(masks), "-o",
                 str(shapes / "masks.csv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 16 and printed[0].startswith(f"{shapes / 'data' / 'test' / 'images' / '0.png'}: "
                                                        f"{masks / '0.png'} (")
    agree = []
    for i in range(16):
        predicted = np.asarray(Image.open(masks / f"{i}.png"))
        truth = np.asarray(Image.open(shapes / "data" / "test" / "masks" / f"{i}.png"))[92:112, 92:112]
        assert predicted.shape == (20, 20) and Image.open(masks / f"{i}.png").mode == "P"
        agree.append(((predicted == truth)[truth != 255].sum(), (truth != 255).sum()))
    assert sum(a for a, _ in agree) / sum(n for _, n in agree) >= 0.9  # as the pixel accuracy
    header = (shapes / "masks.csv").read_text().splitlines()[0]
    assert header == "path,mask,pixels_background,pixels_shape"
    # plot: the validation mIoU drawn with the accuracy
    assert main(["plot", str(shapes / "run"), "-o", str(shapes / "curves.svg")]) == 0
    svg = (shapes / "curves.svg").read_text()
    assert "curve-0-val_miou" in svg and "validation mIoU" in svg and "test mIoU" in svg


def test_specs_unet_is_taken_as_a_segmentation_network(shapes):
    """specs/unet.net as it is (31 M parameters) gets through every check to its first step: a segmentation task,
    three input channels, masks centre-cropped to its output (not "outputs [2, 4, 4] but ... has 2 classes")."""

    class Stop(Exception):
        pass

    class StopAtFirstEpoch:
        per_step = False

        def epoch_started(self, epoch, steps):
            raise Stop

        def step(self, *args):
            pass

        def epoch_ended(self):
            pass

        def close(self):
            pass

    messages = []
    graph = netspec.load(ROOT / "specs" / "unet.net", size=188, channels=3)
    with pytest.raises(Stop):
        run(graph, Recipe(data="imagefolder", epochs=1, batch_size=2), shapes / "full", str(shapes / "data"), "cpu",
            progress=StopAtFirstEpoch(), log=messages.append, options=RunOptions(data=DataOptions(workers=0)))
    assert messages[0].startswith("UNet: 31,031,810 parameters | cpu, batch 2 | data streamed: 43 train")
    config = json.loads((shapes / "full" / "config.json").read_text())
    assert config["task"] == "segmentation" and config["preprocessing"]["resize"] == 215  # 204-pixel images


def test_segmentation_refuses_what_it_cannot_do(shapes, tmp_path):
    graph = netspec.load(UNET, size=SIZE, channels=3, classes=3, width=4)

    def attempt(data_dir=str(shapes / "data"), **settings):
        with pytest.raises(ToolError) as refused:  # TrainError, or DataError for the files
            run(graph, Recipe(**{"data": "imagefolder", "epochs": 1, **settings}), tmp_path / "run", data_dir, "cpu",
                progress=False, log=lambda m: None, options=RunOptions(data=DataOptions(workers=0)))
        return str(refused.value)

    assert attempt() == (f"UNet outputs 3 class scores per pixel but {shapes / 'data' / 'classes.txt'} names 2 "
                         "classes; give the network 2 outputs (e.g. --set classes=2)")
    assert attempt(data="mnist").startswith("UNet outputs [3, 20, 20], a class score per pixel: it segments, and "
                                            "trains on image and mask pairs (--data imagefolder")
    assert attempt(mixup_alpha=0.2) == "mixup_alpha is for classification; UNet segments (its output is [3, 20, 20], " \
                                       "a class score per pixel)"
    (tmp_path / "bad" / "train" / "images").mkdir(parents=True)
    (tmp_path / "bad" / "train" / "masks").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "bad" / "train" / "images" / "a.png")
    assert attempt(str(tmp_path / "bad")).startswith(f"{tmp_path / 'bad' / 'train' / 'images' / 'a.png'} has no mask")
    assert not (tmp_path / "run").exists()


def test_a_mask_with_a_value_that_is_no_class_is_skipped_and_named(tmp_path):
    from netspec.train.segmentation import read_mask
    from PIL import Image

    Image.fromarray(np.array([[0, 1], [7, 255]], dtype=np.uint8), mode="L").save(tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"mask value 7 is not a class \(0 to 2\) nor 255 \(ignored\)"):
        read_mask(tmp_path / "m.png", 3, (2, 2))
    assert read_mask(tmp_path / "m.png", 8, (2, 2)).tolist() == [[0, 1], [7, 255]]
    with pytest.raises(ValueError, match="the mask is 2x2 but its image 3x2"):
        read_mask(tmp_path / "m.png", 8, (3, 2))
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="a mask is one channel of class indices"):
        read_mask(tmp_path / "rgb.png", 8, (2, 2))


def test_only_a_masks_255_is_ignored():
    import math

    from netspec.train.loop import criterion

    # a classifier's class 255 (of 300) is a class like any other
    assert float(criterion(Recipe(), torch.zeros(1, 300), torch.tensor([255]))) == pytest.approx(math.log(300))
    # a mask's 255 counts for nothing: the loss is the other pixel's alone
    logits = torch.tensor([[[[2.0, -5.0]], [[0.0, 5.0]]]])  # [1 image, 2 classes, 1 x 2 pixels]
    expected = float(torch.nn.functional.cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0])))
    assert float(criterion(Recipe(), logits, torch.tensor([[[0, 255]]]))) == pytest.approx(expected)


def test_segmentation_pairs_from_csv(tmp_path):
    from PIL import Image

    from netspec.train.datasets import DataError
    from netspec.train.segmentation import scan_csv

    (tmp_path / "img").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (4, 4)).save(tmp_path / "img" / f"{name}.png")
        Image.new("L", (4, 4)).save(tmp_path / "img" / f"{name}_mask.png")
    (tmp_path / "train.csv").write_text("image,mask\nimg/a.png,img/a_mask.png\nimg/b.png,img/b_mask.png\n")
    (tmp_path / "classes.txt").write_text("background\nshape\n")
    pairs = scan_csv(tmp_path)
    assert pairs.classes == ["background", "shape"]
    assert pairs.splits["train"] == [(tmp_path / "img" / "a.png", tmp_path / "img" / "a_mask.png"),
                                     (tmp_path / "img" / "b.png", tmp_path / "img" / "b_mask.png")]
    (tmp_path / "test.csv").write_text("img/a.png,img/missing.png\n")
    with pytest.raises(DataError, match=r"test.csv:1: img/missing.png points at nothing"):
        scan_csv(tmp_path)
