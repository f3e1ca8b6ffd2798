"""Generated images of shapes for the training tests: ten kinds of shape, drawn by Pillow at a random place, size
and colour on a noisy background, as classification data (tests/test_finetune.py) or with their masks as
segmentation data (tests/test_segmentation.py). The same seed gives the same images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross", "plus", "ring", "hbar", "vbar", "diamond", "frame")


def draw(canvas: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, r: int, fill) -> None:
    box = [cx - r, cy - r, cx + r, cy + r]
    w = max(1, r // 3)
    if shape == "circle":
        canvas.ellipse(box, fill=fill)
    elif shape == "square":
        canvas.rectangle(box, fill=fill)
    elif shape == "triangle":
        canvas.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "cross":
        canvas.line([cx - r, cy - r, cx + r, cy + r], fill=fill, width=w)
        canvas.line([cx - r, cy + r, cx + r, cy - r], fill=fill, width=w)
    elif shape == "plus":
        canvas.line([cx - r, cy, cx + r, cy], fill=fill, width=w)
        canvas.line([cx, cy - r, cx, cy + r], fill=fill, width=w)
    elif shape == "ring":
        canvas.ellipse(box, outline=fill, width=w)
    elif shape == "hbar":
        canvas.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
    elif shape == "vbar":
        canvas.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif shape == "diamond":
        canvas.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:  # frame
        canvas.rectangle(box, outline=fill, width=w)


def noisy(image: Image.Image, rng: np.random.Generator) -> np.ndarray:
    pixels = np.asarray(image).astype(np.int16) + rng.integers(-20, 21, (image.height, image.width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def shapes_dataset(count: int, seed: int, size: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 images [N, 3, size, size], the shape of each (0-9), whether it is large (0 or 1)): one shape an
    image."""
    rng = np.random.default_rng(seed)
    images, shapes, large = [], [], []
    for _ in range(count):
        kind, big = int(rng.integers(10)), int(rng.integers(2))
        r = int(rng.integers(7, 10)) if big else int(rng.integers(4, 6))
        cx, cy = (int(rng.integers(r + 1, size - r - 1)) for _ in range(2))
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 90, 3)))
        draw(ImageDraw.Draw(image), SHAPES[kind], cx, cy, r, tuple(int(v) for v in rng.integers(120, 256, 3)))
        images.append(noisy(image, rng))
        shapes.append(kind)
        large.append(big)
    return (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(shapes),
            torch.tensor(large))


def write_image_folder(root: Path, splits: dict) -> Path:
    """root/<split>/<shape name>/<i>.png for each split's (images, shapes, ...)."""
    for split, (images, shapes, *_) in splits.items():
        for i, (image, kind) in enumerate(zip(images, shapes.tolist())):
            folder = root / split / SHAPES[kind]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return root


def segmentation_pairs(count: int, seed: int, size: int, shapes: tuple[str, ...] = ("circle", "square"),
                       radius: tuple[int, int] = (8, 20)) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images [N, 3, size, size], int64 masks [N, size, size]): two to four shapes an image, each of a
    random kind among `shapes` and colour; the mask holds 0 for the background and 1 + the kind's index for
    its pixels (a later shape over an earlier one)."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(count):
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 90, 3)))
        mask = Image.new("L", (size, size), 0)
        for _ in range(int(rng.integers(2, 5))):
            kind = int(rng.integers(len(shapes)))
            r = int(rng.integers(*radius))
            cx, cy = (int(rng.integers(r, size - r)) for _ in range(2))
            colour = tuple(int(v) for v in rng.integers(120, 256, 3))
            draw(ImageDraw.Draw(image), shapes[kind], cx, cy, r, colour)
            draw(ImageDraw.Draw(mask), shapes[kind], cx, cy, r, kind + 1)
        images.append(noisy(image, rng))
        masks.append(np.asarray(mask))
    return (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(np.stack(masks).astype(np.int64)))


def write_segmentation_folder(root: Path, splits: dict, classes: list[str] | None = None) -> Path:
    """root/<split>/images/<i>.png and root/<split>/masks/<i>.png (grey class indices) for each split's (images,
    masks); root/classes.txt when `classes` are given."""
    for split, (pictures, masks) in splits.items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i, (picture, mask) in enumerate(zip(pictures, masks)):
            Image.fromarray(picture.permute(1, 2, 0).numpy()).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask.to(torch.uint8).numpy(), mode="L").save(root / split / "masks" / f"{i}.png")
    if classes:
        (root / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    return root
