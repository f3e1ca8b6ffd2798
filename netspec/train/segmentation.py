"""Segmentation: a network whose output is a class score per pixel ([classes, H, W]) trains on image and mask
pairs, with a per-pixel cross-entropy (mask value 255 ignored) and mean IoU and pixel accuracy per epoch.

    --data imagefolder   DIR/train/images/NAME.* with DIR/train/masks/NAME.png (the same name), and likewise val/
                         and test/; class names, one a line, in DIR/classes.txt (else numbered)
    --data csv           train.csv (val.csv, test.csv) of image,mask rows, paths relative to the CSV

A mask is a one-channel PNG (grey or palette) of class indices, the image's size; 255 marks pixels that count for
nothing (a border, an unlabelled region). Images and masks are transformed together by torchvision's transforms v2
(the mask a `tv_tensors.Mask`, resized with nearest-neighbour): training random-resized-crops images of other sizes
than the network's input (and flips with augment = "flip"), evaluation resizes and centre-crops them. A network of
valid convolutions predicts the centre of its input (U-Net): its masks are centre-cropped to its output.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from netspec.ground.files import open_regular, write_atomic
from netspec.ir import Graph
from netspec.semantics.recipe import Recipe
from netspec.train import images
from netspec.train.datasets import DataError
from netspec.train.distributed import Context
from netspec.train.errors import TrainError
from netspec.train.files import all_of_size
from netspec.train.loop import IGNORE_INDEX
from netspec.train.splits import DataOptions, TrainingData, train_val_test
from netspec.train.streamed import StreamedSplit, loader_workers, make_pixels
from netspec.train.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_resize, interpolation

MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass
class Pairs:
    """A segmentation collection: class names (or None), and (image, mask) paths for each split it has."""

    name: str
    classes: list[str] | None
    splits: dict[str, list[tuple[Path, Path]]]


def segmentation_task(graph: Graph) -> bool:
    """Whether the network predicts a class per pixel: its output is [classes, H, W]."""
    return len(graph.node(graph.output).shape) == 3


def _class_names(root: Path) -> list[str] | None:
    names = root / "classes.txt"
    if not names.is_file():
        return None
    try:
        lines = [line.strip() for line in names.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{names} cannot be read: {err}") from None
    return [line for line in lines if line]


def scan_folders(root: Path) -> Pairs:
    """root/<split>/images/* paired by name with root/<split>/masks/*, for train (required), val and test."""
    if not (root / "train" / "images").is_dir():
        what = "does not exist" if not root.exists() else "has no train/images/ folder"
        raise DataError(f"{root} {what}; a segmentation folder holds train/images/ and train/masks/ (a mask of "
                        "the same name for each image), and optionally val/ and test/ alike")
    splits = {}
    for split in images.SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        pictures, masks = folder / "images", folder / "masks"
        if not pictures.is_dir() or not masks.is_dir():
            raise DataError(f"{folder} needs images/ and masks/ folders")
        by_name = {}
        for mask in images.image_files(masks):
            by_name.setdefault(mask.relative_to(masks).with_suffix(""), mask)
        pairs = []
        for picture in images.image_files(pictures):
            mask = by_name.get(picture.relative_to(pictures).with_suffix(""))
            if mask is None:
                raise DataError(f"{picture} has no mask: {masks / picture.relative_to(pictures).with_suffix('.png')} "
                                "is missing")
            pairs.append((picture, mask))
        if not pairs:
            raise DataError(f"{pictures} holds no images")
        splits[split] = pairs
    return Pairs(root.name, _class_names(root), splits)


def scan_csv(root: Path) -> Pairs:
    """train.csv (and val.csv, test.csv) of `image,mask` rows, or one .csv file as the training set."""
    if root.is_file():
        files, name, base = {"train": root}, root.stem, root.parent
    elif (root / "train.csv").is_file():
        files = {split: root / f"{split}.csv" for split in images.SPLITS if (root / f"{split}.csv").is_file()}
        name, base = root.name, root
    else:
        raise DataError(f"{root} has no train.csv; a segmentation CSV collection is train.csv (and optionally "
                        "val.csv and test.csv) of image,mask rows")
    splits = {}
    for split, file in files.items():
        pairs = []
        for line, fields in images.csv_rows(file):
            if not pairs and [f.lower() for f in fields] == ["image", "mask"]:
                continue
            where = f"{file}:{line}"
            if len(fields) != 2 or not all(fields):
                raise DataError(f"{where}: expected two fields, image,mask; found {','.join(fields)}")
            paths = [file.parent / field for field in fields]
            for field, path in zip(fields, paths):
                if not path.exists() or path.is_dir():
                    raise DataError(f"{where}: {field} points at nothing ({path} is not a file); paths are relative "
                                    "to the CSV's folder")
            pairs.append((paths[0], paths[1]))
        if not pairs:
            raise DataError(f"{file} has no rows; each line is image,mask")
        splits[split] = pairs
    return Pairs(name, _class_names(base), splits)


def read_mask(path: Path, classes: int, size: tuple[int, int]) -> torch.Tensor:
    """A mask file's class indices, int64 [H, W], read by Pillow: one channel (grey or palette indices), the image's
    (width, height), every value a class or IGNORE_INDEX. Raises ValueError saying what is wrong."""
    import numpy
    from PIL import Image

    with open_regular(path) as handle, Image.open(handle) as mask:
        images.check_pixels(mask.size)
        if mask.mode not in MASK_MODES:
            raise ValueError(f"a mask is one channel of class indices (a grey or palette PNG), not {mask.mode}")
        if mask.size != size:
            raise ValueError(f"the mask is {mask.size[0]}x{mask.size[1]} but its image {size[0]}x{size[1]}")
        values = torch.from_numpy(numpy.asarray(mask).astype(numpy.int64))
    wrong = (values >= classes) & (values != IGNORE_INDEX)
    if wrong.any():
        raise ValueError(f"mask value {int(values[wrong][0])} is not a class (0 to {classes - 1}) nor "
                         f"{IGNORE_INDEX} (ignored)")
    return values


class SegmentationFiles(Dataset):
    """(image, mask) file pairs decoded on demand and transformed together; a pair that cannot be read gives
    `images.Skipped("<path>: <reason>")`."""

    def __init__(self, pairs: list[tuple[Path, Path]], channels: int, classes: int, transform=None):
        self.pairs, self.channels, self.classes, self.transform = list(pairs), channels, classes, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key):
        from torchvision import tv_tensors

        index, seed = images.split_key(key)
        picture, mask_path = self.pairs[index]
        try:
            image = images.decode(picture, self.channels)
        except Exception as err:  # every decoder failure is bad data
            return images.Skipped(f"{picture}: {images.failure_reason(err)}")
        try:
            mask = read_mask(mask_path, self.classes, (image.shape[-1], image.shape[-2]))
        except Exception as err:
            return images.Skipped(f"{mask_path}: {images.failure_reason(err)}")
        pair = (tv_tensors.Image(image), tv_tensors.Mask(mask))
        image, mask = images.transformed(self.transform, pair, seed) if self.transform is not None else pair
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


def joint_transform(recipe: Recipe, size: tuple[int, int], same_size: bool, mean, std, training: bool):
    """Image and mask together, to the network's input size (torchvision's transforms v2 on tv_tensors): padding
    fills images with black and masks with IGNORE_INDEX; masks are resized nearest-neighbour."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
    resampling = interpolation(recipe)
    if same_size:
        steps = [v2.Pad(recipe.pad, fill=fill)] if recipe.pad else []
        if training and "crop" in recipe.augment:
            steps.append(v2.RandomCrop(size, padding=4 if size[-1] >= 32 else 2, fill=fill))
    elif training and recipe.train_crop != "center":
        steps = [v2.RandomResizedCrop(size, interpolation=resampling, antialias=True)]
    else:
        steps = [v2.Resize(eval_resize(recipe, size), interpolation=resampling, antialias=True), v2.CenterCrop(size)]
    if training and "flip" in recipe.augment:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    if recipe.normalize:
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)


def check_recipe(graph: Graph, recipe: Recipe) -> None:
    """Refuse what segmentation cannot do, in one line each."""
    refused = {"loss = \"margin\"": recipe.loss == "margin", "mixup_alpha": bool(recipe.mixup_alpha),
               "cutmix_alpha": bool(recipe.cutmix_alpha), f"auto_augment = {recipe.auto_augment!r}":
               recipe.auto_augment != "none", "random_erase": bool(recipe.random_erase),
               "train_crop_size": recipe.train_crop_size is not None, "permute_pixels":
               recipe.permute_pixels is not None}
    for setting, present in refused.items():
        if present:
            raise TrainError(f"{setting} is for classification; {graph.name} segments (its output is "
                             f"{list(graph.node(graph.output).shape)}, a class score per pixel)")


def from_files(graph: Graph, recipe: Recipe, data_dir: str | None, ctx: Context, options: DataOptions,
               mode: str) -> TrainingData:
    """Image and mask pairs streamed through a DataLoader, for a network that outputs [classes, H, W]."""
    classes, out_h, out_w = graph.node(graph.output).shape
    if recipe.data not in ("imagefolder", "csv"):
        raise TrainError(f"{graph.name} outputs {[classes, out_h, out_w]}, a class score per pixel: it segments, and "
                         "trains on image and mask pairs (--data imagefolder: train/images/ and train/masks/, or "
                         "--data csv: rows image,mask); see docs/training.md")
    if not data_dir:
        raise DataError(f"--data {recipe.data} needs --data-dir: for segmentation " + (
            "a folder with train/images/ and train/masks/" if recipe.data == "imagefolder" else
            "a folder with train.csv of image,mask rows, or one .csv file"))
    if mode == "memory":
        raise TrainError("segmentation streams its images and masks; leave out --data-mode memory")
    if len(graph.input_shape) != 3 or graph.input_shape[0] not in (1, 3):
        raise TrainError(f"{graph.name} takes input {list(graph.input_shape)}; image files are read as [1, H, W] "
                         "or [3, H, W]")
    check_recipe(graph, recipe)
    _, in_h, in_w = graph.input_shape
    if out_h > in_h or out_w > in_w:
        raise TrainError(f"{graph.name} outputs {[classes, out_h, out_w]} from input {list(graph.input_shape)}; a "
                         "segmentation network predicts its input's pixels (or, with valid convolutions, the centre "
                         "of them), not more")
    root = Path(data_dir).expanduser()
    pairs = (scan_folders if recipe.data == "imagefolder" else scan_csv)(root)
    names = pairs.classes
    if names is not None and len(names) != classes:
        raise TrainError(f"{graph.name} outputs {classes} class scores per pixel but {root / 'classes.txt'} names "
                         f"{len(names)} classes; give the network {len(names)} outputs"
                         + (f" (e.g. --set classes={len(names)})" if "classes" in graph.arguments else ""))
    train, val, test, validation_from = train_val_test(pairs.splits, recipe, options.limit_eval)
    channels = graph.input_shape[0]
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((sum(IMAGENET_MEAN) / 3,),
                                                                   (sum(IMAGENET_STD) / 3,))
    same_size = all_of_size(train, graph, recipe)
    size = (in_h, in_w)

    def split(items, training):
        if not items:
            return None
        transform = joint_transform(recipe, size, same_size, mean, std, training)
        return StreamedSplit(SegmentationFiles(items, channels, classes, transform), ctx, recipe.seed,
                             loader_workers(options))

    return TrainingData(pairs.name, "stream", classes, split(train, True), split(val, False), split(test, False),
                        make_pixels(recipe, list(mean), list(std), ctx), validation_from,
                        {"mean": list(mean), "std": list(std)}, names or [str(i) for i in range(classes)],
                        None if same_size else eval_resize(recipe, size), "segmentation")


# A colour for each class index of a mask PNG (Pascal VOC's palette), so that a mask is seen as well as read.
def palette() -> list[int]:
    colours = []
    for index in range(256):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours += [r, g, b]
    return colours


def write_mask(labels: torch.Tensor, folder: Path, image: Path, written: set[Path]) -> Path:
    """A predicted mask (class indices [h, w]) as a palette PNG named after its image in `folder` (NAME.png;
    NAME_1.png, ... when another image of the same call, `written`, took that name), written atomically."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{image.stem}.png"
    number = 0
    while target in written:
        number += 1
        target = folder / f"{image.stem}_{number}.png"
    picture = Image.fromarray(labels.to(torch.uint8).numpy(), mode="P")
    picture.putpalette(palette())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    write_atomic(target, buffer.getvalue())
    written.add(target)
    return target
