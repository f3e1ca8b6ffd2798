"""The streamed image path (netspec/train/images.py): scanning collections, decoding, skipping bad files,
transforms, and the loader's determinism. torchvision (ImageFolder, transforms v2 functionals) is the oracle."""

import os
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torchvision.datasets import ImageFolder  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.io import encode_jpeg  # noqa: E402
from torchvision.transforms import v2  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

from netspec.train.datasets import DataError  # noqa: E402
from netspec.semantics.recipe import Recipe  # noqa: E402
from netspec.train import images  # noqa: E402
from netspec.train.images import (ImageFiles, Skipped, TensorImages, collate, decode, make_loader,  # noqa: E402
                                  scan_csv, scan_image_folder)
from netspec.train.transforms import eval_resize, eval_transform, train_transform  # noqa: E402

# torchvision 0.29 deprecates its image decoders in favour of TorchCodec; the warning is not what is tested here.

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
SMALL = (32, 32)


def smooth(channels, height, width, seed):
    """A smooth random uint8 image (upsampled noise), so JPEG sizes and decoding are like a photo's."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, channels, max(2, height // 8), max(2, width // 8), generator=generator)
    return torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear")[0].mul(255).byte()


def write(path, image, kind):
    """PNGs by Pillow (torchvision's encoder takes no alpha channel), JPEGs by torchvision."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png":
        pixels = image.permute(1, 2, 0).numpy()
        Image.fromarray(pixels[..., 0] if image.shape[0] == 1 else pixels).save(path, "PNG")
    else:
        path.write_bytes(encode_jpeg(image, quality=90).numpy().tobytes())
    return image


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A mixed-size ImageFolder tree: grey, RGB and RGBA PNGs, RGB JPEGs, one file of random bytes and one
    truncated JPEG in train/, a text file and a hidden file that are not images, val/ and test/ splits."""
    root = tmp_path_factory.mktemp("photos")
    train = root / "train"
    originals = {}
    for name, (c, h, w), kind in [("a_rgb.png", (3, 40, 30), "png"), ("b_grey.png", (1, 50, 64), "png"),
                                  ("c_rgb.png", (3, 33, 33), "png"), ("e_rgb.png", (3, 64, 48), "png"),
                                  ("f_rgb.jpg", (3, 45, 70), "jpg")]:
        originals[name] = write(train / "cat" / name, smooth(c, h, w, len(originals)), kind)
    (train / "cat" / "d_corrupt.png").write_bytes(os.urandom(700))
    for name, (c, h, w), kind in [("a_rgb.jpg", (3, 36, 52), "jpg"), ("b_rgba.png", (4, 48, 40), "png"),
                                  ("c_rgb.jpg", (3, 60, 60), "jpg"), ("e_rgb.jpg", (3, 31, 77), "jpg")]:
        originals[name] = write(train / "dog" / name, smooth(c, h, w, len(originals)), kind)
    whole = encode_jpeg(smooth(3, 64, 64, 99), quality=90).numpy().tobytes()
    (train / "dog" / "d_truncated.jpg").write_bytes(whole[:len(whole) // 2])
    (train / "dog" / "notes.txt").write_text("not an image")
    (train / "dog" / ".hidden.jpg").write_bytes(whole)
    for split, cls, count in [("val", "cat", 2), ("val", "dog", 1), ("test", "dog", 2)]:
        for i in range(count):
            write(root / split / cls / f"{i}.png", smooth(3, 40 + i, 36, 50 + i), "png")
    return root, originals


def test_image_folder_scan(tree):
    root, _ = tree
    collection = scan_image_folder(root)
    assert collection.name == root.name
    assert collection.classes == ["cat", "dog"]
    assert {split: len(items) for split, items in collection.splits.items()} == {"train": 11, "val": 3, "test": 2}
    assert [label for _, label in collection.splits["val"]] == [0, 0, 1]
    assert [label for _, label in collection.splits["test"]] == [1, 1]
    # Same files, order and labels as torchvision's ImageFolder (which also ignores notes.txt).
    oracle = ImageFolder(str(root / "train"), is_valid_file=lambda p: not Path(p).name.startswith(".")
                         and Path(p).suffix in (".png", ".jpg"))
    assert collection.splits["train"] == [(Path(path), label) for path, label in oracle.samples]


def test_corrupt_and_truncated_files_are_reported_and_skipped(tree):
    root, _ = tree
    train = scan_image_folder(root).splits["train"]
    names = [path.name for path, _ in train]
    assert names.index("d_corrupt.png") == 3 and names.index("d_truncated.jpg") == 9
    dataset = ImageFiles(train, 3, eval_transform(Recipe(), SMALL, False, MEAN, STD))
    loader = make_loader(dataset, 4, list(range(len(train))), workers=0, pin_memory=False, generator=None)
    batches = list(loader)
    # Batches of 4, 4, 3 items; the corrupt file was in the first, the truncated one in the third.
    assert [len(y) for _, y, _ in batches] == [3, 4, 2]
    assert [x.shape for x, _, _ in batches] == [(3, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)]
    assert [skipped for _, _, skipped in batches] == [
        [f"{root / 'train' / 'cat' / 'd_corrupt.png'}: not an image in a format torchvision.io or Pillow reads"],
        [], [f"{root / 'train' / 'dog' / 'd_truncated.jpg'}: Image is incomplete or truncated"]]
    assert torch.cat([y for _, y, _ in batches]).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_skipped_files_come_through_worker_processes_in_the_same_batches(tree):
    """The one test with workers: two worker processes give the batches the main process gives, augmented
    identically (each image's randomness is seeded from the generator, not from its worker)."""
    root, _ = tree
    train = scan_image_folder(root).splits["train"]
    dataset = ImageFiles(train, 3, train_transform(Recipe(augment="flip"), SMALL, False, MEAN, STD))

    def batches(workers):
        loader = make_loader(dataset, 4, list(range(len(train))), workers=workers, pin_memory=False,
                             generator=torch.Generator().manual_seed(5))
        return list(loader)

    alone, with_workers = batches(0), batches(2)
    assert [s for _, _, s in alone] == [s for _, _, s in with_workers] and len(alone[0][2]) == 1
    for (x0, y0, _), (x2, y2, _) in zip(alone, with_workers, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_channels_follow_the_network(tree):
    root, originals = tree
    cat, dog = root / "train" / "cat", root / "train" / "dog"
    grey_as_rgb = decode(cat / "b_grey.png", 3)
    assert grey_as_rgb.shape == (3, 50, 64)
    assert torch.equal(grey_as_rgb, originals["b_grey.png"].expand(3, -1, -1))
    rgba_as_rgb = decode(dog / "b_rgba.png", 3)
    assert torch.equal(rgba_as_rgb, originals["b_rgba.png"][:3])  # PNG is lossless: alpha dropped, colour kept
    assert decode(cat / "a_rgb.png", 1).shape == (1, 40, 30)
    assert decode(dog / "a_rgb.jpg", 1).shape == (1, 36, 52)
    grey = ImageFiles([(cat / "a_rgb.png", 0), (dog / "b_rgba.png", 1)], 1,
                      train_transform(Recipe(), SMALL, False, [0.5], [0.25]))
    assert [tuple(grey[i][0].shape) for i in range(2)] == [(1, 32, 32), (1, 32, 32)]


def test_formats_torchvision_and_pillow_read(tmp_path):
    """WebP and GIF by torchvision.io, BMP and TIFF by Pillow: lossless, so the pixels come back exactly."""
    rgb = smooth(3, 20, 24, 7)
    pixels = Image.fromarray(rgb.permute(1, 2, 0).numpy())
    pixels.save(tmp_path / "a.webp", "WEBP", lossless=True)
    pixels.save(tmp_path / "a.bmp")
    pixels.save(tmp_path / "a.tiff")
    grey = Image.fromarray(rgb[0].numpy())
    grey.save(tmp_path / "a.gif", save_all=True, append_images=[Image.fromarray(255 - rgb[0].numpy())])
    for name in ("a.webp", "a.bmp", "a.tiff"):
        assert torch.equal(decode(tmp_path / name, 3), rgb), name
        assert torch.equal(decode(tmp_path / name, 1), TF.rgb_to_grayscale(rgb)), name
    assert torch.equal(decode(tmp_path / "a.gif", 1), rgb[:1])  # an animation's first frame
    assert torch.equal(decode(tmp_path / "a.gif", 3), rgb[:1].expand(3, -1, -1))


def test_mixed_sizes_become_the_network_input(tree):
    root, _ = tree
    files = [item for item in scan_image_folder(root).splits["train"] if "corrupt" not in item[0].name
             and "truncated" not in item[0].name]
    assert len({tuple(decode(path, 3).shape) for path, _ in files}) == 9  # nine sizes
    for transform in (train_transform(Recipe(augment="flip", auto_augment="ta_wide", random_erase=0.5), SMALL,
                                      False, MEAN, STD),
                      eval_transform(Recipe(), SMALL, False, MEAN, STD)):
        dataset = ImageFiles(files, 3, transform)
        assert {(tuple(dataset[i][0].shape), dataset[i][0].dtype) for i in range(len(files))} == {
            ((3, 32, 32), torch.float32)}


def test_evaluation_resizes_as_the_reference_recipes():
    assert eval_resize(Recipe(), (224, 224)) == 256 == round(224 * 256 / 224)
    assert eval_resize(Recipe(), (176, 176)) == 201
    assert eval_resize(Recipe(val_resize_size=232), (224, 224)) == 232
    assert eval_resize(Recipe(), (224, 112)) == 256  # the longer side, so the resized image covers the crop
    transform = eval_transform(Recipe(), (224, 224), False, MEAN, STD)
    resize, crop = transform.transforms[:2]
    assert (resize.size, resize.antialias, crop.size) == ([256], True, (224, 224))
    image = smooth(3, 300, 400, 1)
    expected = TF.normalize(TF.to_dtype(TF.center_crop(TF.resize(image, [256], antialias=True), [224, 224]),
                                        torch.float32, scale=True), MEAN, STD)
    assert torch.equal(transform(image), expected)
    bicubic = eval_transform(Recipe(interpolation="bicubic", normalize=False), (176, 176), False, MEAN, STD)
    assert [type(t) for t in bicubic.transforms] == [v2.Resize, v2.CenterCrop, v2.ToDtype]
    assert bicubic.transforms[0].interpolation == v2.InterpolationMode.BICUBIC
    assert bicubic(image).shape == (3, 176, 176)


def kinds(transform):
    return [type(t).__name__ for t in transform.transforms]


def test_training_transforms_follow_the_recipe():
    mixed = train_transform(Recipe(), (224, 224), False, MEAN, STD)
    assert kinds(mixed) == ["RandomResizedCrop", "ToDtype", "Normalize"]
    assert (mixed.transforms[0].size, mixed.transforms[0].antialias) == ((224, 224), True)
    reference = train_transform(Recipe(augment="flip", auto_augment="ta_wide", random_erase=0.1,
                                       train_crop_size=176, interpolation="bilinear"), (224, 224), False, MEAN, STD)
    assert kinds(reference) == ["RandomResizedCrop", "RandomHorizontalFlip", "TrivialAugmentWide", "ToDtype",
                                "Normalize", "RandomErasing"]
    assert reference(smooth(3, 300, 260, 2)).shape == (3, 176, 176)  # torchvision's ResNet-50 recipe trains at 176
    assert reference.transforms[-1].p == 0.1
    for policy, kind in [("ra", "RandAugment"), ("augmix", "AugMix"), ("imagenet", "AutoAugment"),
                         ("cifar10", "AutoAugment"), ("svhn", "AutoAugment")]:
        transform = train_transform(Recipe(auto_augment=policy, ra_magnitude=5), SMALL, True, MEAN, STD)
        assert kinds(transform) == [kind, "ToDtype", "Normalize"]
    assert train_transform(Recipe(auto_augment="ra", ra_magnitude=5), SMALL, True, MEAN, STD).transforms[0] \
        .magnitude == 5
    assert train_transform(Recipe(auto_augment="svhn"), SMALL, True, MEAN, STD).transforms[0].policy \
        == v2.AutoAugmentPolicy.SVHN
    # Images of the network's size (CIFAR-10): kept whole, each randomly cropped from a 4-pixel padding.
    cifar = train_transform(Recipe(augment="flip+crop"), SMALL, True, MEAN, STD)
    assert kinds(cifar) == ["RandomCrop", "RandomHorizontalFlip", "ToDtype", "Normalize"]
    assert (cifar.transforms[0].size, cifar.transforms[0].padding) == ((32, 32), [4, 4, 4, 4])
    # MNIST into LeNet-5: padded 28 -> 32, then shifted by up to 2 pixels, as a 28-pixel image is (4 from 32 up),
    # the same shift as the in-memory path's
    lenet = train_transform(Recipe(augment="crop", pad=2, normalize=False), SMALL, True, [0.1], [0.3])
    assert kinds(lenet) == ["Pad", "RandomCrop", "ToDtype"]
    assert (lenet.transforms[0].padding, lenet.transforms[1].padding) == (2, [2, 2, 2, 2])
    small = train_transform(Recipe(augment="crop"), (28, 28), True, [0.1], [0.3])
    assert small.transforms[0].padding == [2, 2, 2, 2]
    center = train_transform(Recipe(train_crop="center"), (224, 224), True, MEAN, STD)
    assert kinds(center) == ["Resize", "CenterCrop", "ToDtype", "Normalize"]
    assert (center.transforms[0].size, center.transforms[1].size) == ([256], (224, 224))
    center_crop = train_transform(Recipe(train_crop="center", augment="crop", pad=2), SMALL, False, MEAN, STD)
    assert kinds(center_crop) == ["Resize", "CenterCrop", "RandomCrop", "ToDtype", "Normalize"]  # no Pad: resized
    assert center_crop(smooth(3, 50, 70, 3)).shape == (3, 32, 32)
    forced = train_transform(Recipe(train_crop="random_resized"), SMALL, True, MEAN, STD)
    assert kinds(forced) == ["RandomResizedCrop", "ToDtype", "Normalize"]
    assert kinds(eval_transform(Recipe(pad=2), SMALL, True, [0.1], [0.3])) == ["Pad", "ToDtype", "Normalize"]


def test_in_memory_images_pad_crop_and_normalise():
    """MNIST-sized uint8 digits through TensorImages: [1, 28, 28] padded to [1, 32, 32]; evaluation is exactly
    pad, scale, normalise."""
    digits = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(6) % 3
    recipe = Recipe(pad=2, augment="crop")
    train = TensorImages(digits, labels, train_transform(recipe, SMALL, True, [0.1], [0.3]))
    x, y, skipped = next(iter(make_loader(train, 6, list(range(6)), 0, False, torch.Generator().manual_seed(1))))
    assert (x.shape, y.tolist(), skipped) == ((6, 1, 32, 32), [0, 1, 2, 0, 1, 2], [])
    test = TensorImages(digits, labels, eval_transform(recipe, SMALL, True, [0.1], [0.3]))
    expected = (torch.nn.functional.pad(digits.float() / 255, (2, 2, 2, 2)) - 0.1) / 0.3
    x, _, _ = next(iter(make_loader(test, 6, list(range(6)), 0, False, None)))
    assert torch.allclose(x, expected, atol=1e-6, rtol=0)


def epoch(seed, workers=0):
    images = torch.randint(0, 256, (10, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    recipe = Recipe(augment="flip", random_erase=0.5)
    dataset = TensorImages(images, torch.arange(10), train_transform(recipe, SMALL, False, MEAN, STD))
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    loader = make_loader(dataset, 4, order, workers, False, torch.Generator().manual_seed(seed))
    return [(x, y) for x, y, _ in loader]


def test_an_epoch_depends_on_the_generator_alone():
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    first, again, other = epoch(7), epoch(7), epoch(8)
    # Loading in this process left the global random stream where it was (the training's own draws).
    assert torch.equal(torch.rand(3), expected_next)
    assert [len(y) for _, y in first] == [4, 4, 2]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert [y.tolist() for _, y in first] == [y.tolist() for _, y in other]  # the same order, other crops:
    assert not any(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_collate_of_a_batch_with_nothing_readable():
    x, y, skipped = collate([Skipped("a.png: broken"), Skipped("b.png: broken")])
    assert (x.shape, y.shape, y.dtype, skipped) == ((0,), (0,), torch.int64, ["a.png: broken", "b.png: broken"])


def test_default_workers(monkeypatch):
    for cpus, processes, workers in [(1, 1, 0), (2, 1, 1), (16, 1, 15), (64, 1, 16), (64, 8, 7), (4, 8, 0)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)), raising=False)
        assert images.default_workers(processes) == workers


def make_tree(root, layout):
    for name, content in layout.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        elif content is None:
            write(path, smooth(3, 8, 8, 0), "png")
        else:
            path.write_text(content)
    return root


def test_image_folder_mistakes_are_named(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path} has no train/ folder")):
        scan_image_folder(tmp_path)
    make_tree(tmp_path, {"train/ant/1.png": None, "train/bee/notes.txt": "no images here"})
    with pytest.raises(DataError) as empty:
        scan_image_folder(tmp_path)
    assert str(empty.value).startswith(f"{tmp_path / 'train' / 'bee'}: class folder 'bee' holds no images (")
    make_tree(tmp_path, {"train/bee/1.jpeg": None, "val/wasp/1.png": None})
    with pytest.raises(DataError) as stranger:
        scan_image_folder(tmp_path)
    assert str(stranger.value) == f"{tmp_path / 'val' / 'wasp'}: 'wasp' is not a class of {tmp_path / 'train'} " \
                                  "(ant, bee)"
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(f"{missing} does not exist")):
        scan_image_folder(missing)


def test_csv_collection(tmp_path):
    make_tree(tmp_path, {"img/a.png": None, "img/b.png": None, "img/c.png": None, "other/d.png": None,
                         "train.csv": "path,label\nimg/a.png,10\n\nimg/b.png,9\n\"img/c.png\", 2\n",
                         "test.csv": "other/d.png,9\n"})
    collection = scan_csv(tmp_path)
    assert collection.classes == ["2", "9", "10"]  # integers sort as numbers
    assert collection.splits == {"train": [(tmp_path / "img/a.png", 2), (tmp_path / "img/b.png", 1),
                                           (tmp_path / "img/c.png", 0)],
                                 "test": [(tmp_path / "other/d.png", 1)]}
    single = scan_csv(tmp_path / "test.csv")  # one file: the train split, paths relative to its folder
    assert (single.name, single.classes, list(single.splits)) == ("test", ["9"], ["train"])
    words = make_tree(tmp_path / "words", {"x/a.png": None, "train.csv": "x/a.png,zebra\nx/a.png,ant\n"})
    assert scan_csv(words).classes == ["ant", "zebra"]


@pytest.mark.parametrize("files, message", [
    ({"train.csv": "path,label\nimg/a.png,cat\nimg/missing.png,dog\n"},
     "train.csv:3: img/missing.png points at nothing"),
    ({"train.csv": "img/a.png,cat\nimg/a.png,cat,extra\n"},
     "train.csv:2: expected two fields, path,label; found 3: img/a.png,cat,extra"),
    ({"train.csv": "img/a.png\n"}, "train.csv:1: expected two fields, path,label; found 1: img/a.png"),
    ({"train.csv": "img/a.png,cat\nimg/a.png,dog\n", "val.csv": "path,label\n\nimg/a.png,dog\nimg/a.png,cow\n"},
     "val.csv:4: label 'cow' is not among the classes of train.csv (cat, dog)"),
    ({"train.csv": "img/a.png,\n"}, "train.csv:1: the label is empty"),
    ({"train.csv": "path,label\n\n"}, "train.csv has no rows"),
    ({"val.csv": "img/a.png,cat\n"}, "has no train.csv"),
])
def test_csv_mistakes_name_the_file_and_line(tmp_path, files, message):
    make_tree(tmp_path, {"img/a.png": None, **files})
    with pytest.raises(DataError) as error:
        scan_csv(tmp_path)
    assert str(error.value).startswith(f"{tmp_path}{os.sep}{message}" if message[0] != "h"
                                       else f"{tmp_path} {message}")
