"""What a run does to an image before its network sees it, recorded in config.json and in every checkpoint
(`preprocessing`), so that whoever uses the weights does exactly the same: `netspec eval`, `netspec predict`, and
an ONNX export, which writes it into the file's metadata or embeds it in the graph (netspec.backends.onnx).

The record is plain JSON:

    channels, color         1 ("grey") or 3 ("RGB"): images are decoded to this many channels
    input_size              [H, W], the network's input
    resize                  null: the run's images were the input size less `pad`, taken as they are and padded;
                            else the shorter side is resized to this (interpolation, antialiased) and the centre
                            input_size cropped, as torchvision's reference evaluation does
    pad                     zero pixels added on every side (only when `resize` is null)
    interpolation           bilinear, bicubic or nearest
    scale                   pixels (uint8) divided by 255
    normalize, mean, std    then (pixel - mean) / std per channel, when normalize is true
    permute_pixels          a seed: the one fixed shuffle of pixel positions the run trained with, or null
"""

from __future__ import annotations

import torch

from netspec.ir import Graph
from netspec.semantics.recipe import Recipe
from netspec.train.splits import TrainingData
from netspec.train.transforms import eval_resize, interpolation, to_input_steps


def record(graph: Graph, recipe: Recipe, data: TrainingData) -> dict:
    """The preprocessing of the run's evaluation, as config.json records it."""
    channels, height, width = graph.input_shape
    resize = data.eval_resize
    statistics = data.statistics or {}
    return {"channels": channels, "color": "grey" if channels == 1 else "RGB", "layout": "NCHW",
            "input_size": [height, width], "resize": resize, "pad": 0 if resize else recipe.pad,
            "interpolation": recipe.interpolation, "scale": "1/255", "normalize": recipe.normalize,
            "mean": list(statistics.get("mean", [])) if recipe.normalize else None,
            "std": list(statistics.get("std", [])) if recipe.normalize else None,
            "permute_pixels": recipe.permute_pixels}


def permutation(record: dict) -> torch.Tensor | None:
    """The pixel shuffle of a run with permute_pixels (of the images before padding), as memory.py draws it."""
    if record.get("permute_pixels") is None:
        return None
    height, width = (size - 2 * record["pad"] for size in record["input_size"])
    return torch.randperm(height * width, generator=torch.Generator().manual_seed(record["permute_pixels"]))


class ImageTransform:
    """uint8 [C, h, w] -> the network's float input [C, H, W], as the run evaluated: images of the run's size are
    padded, others resized and centre-cropped (the run's own `resize`, else the reference ratio of the input
    size), then scaled and normalised."""

    def __init__(self, record: dict, recipe: Recipe):
        from torchvision.transforms import v2

        self.record = record
        size = tuple(record["input_size"])
        self.fits = tuple(s - 2 * record["pad"] for s in size)  # the image size taken as it is
        self.resize = record["resize"] or eval_resize(recipe, size)
        mean, std = record["mean"] or [], record["std"] or []
        finish = to_input_steps(recipe, mean, std)
        self.padded = v2.Compose(([v2.Pad(record["pad"])] if record["pad"] else []) + finish)
        self.resized = v2.Compose([v2.Resize(self.resize, interpolation=interpolation(recipe), antialias=True),
                                   v2.CenterCrop(size)] + finish)
        self.permutation = permutation(record)

    def resizes(self, image: torch.Tensor) -> bool:
        """Whether this image is resized and cropped (the run's images were, or it is not their size)."""
        return self.record["resize"] is not None or tuple(image.shape[-2:]) != self.fits

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.resizes(image):
            return self.resized(image)
        if self.permutation is not None:
            c, h, w = image.shape
            image = image.reshape(c, h * w)[:, self.permutation].reshape(c, h, w)
        return self.padded(image)
