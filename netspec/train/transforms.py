"""The training and evaluation transforms, after torchvision's references/classification/presets.py
(ClassificationPresetTrain/Eval): the per-image torchvision transforms v2 of the streamed path, the batched random
crop of the in-memory path, and the crop-padding rule both paths share, so that an image is augmented alike
whichever path carries it. torchvision is imported only when a per-image transform is built: the in-memory path
never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from netspec.ir import Graph
from netspec.semantics.recipe import Recipe

if TYPE_CHECKING:
    from torchvision.transforms import v2

# torchvision's reference recipes normalise with ImageNet's statistics; a grey image takes their mean.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# torchvision's reference recipes evaluate a 224 crop of images resized to 256.
RESIZE_PER_CROP = 256 / 224


def crop_padding(width: int) -> int:
    """How far augment="crop" shifts an image of this width (before the recipe's `pad`): 4 pixels from 32 up
    (CIFAR's recipe), 2 below (MNIST's 28: LeNet-5 learns worse with 4)."""
    return 4 if width >= 32 else 2


def random_crops(x: torch.Tensor, padding: int, generator: torch.Generator | None = None,
                 fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Each image of the batch padded by `padding` with `fill` (a [1, C, 1, 1] tensor or a number) and cropped
    back to its size at its own random offset: torchvision's RandomCrop(size, padding), batched on the device."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # [n, h]
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # [n, w]
    padded = (F.pad(x - fill, (padding,) * 4) + fill).permute(0, 2, 3, 1)  # [n, H, W, c]
    picked = padded[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)


def eval_resize(recipe: Recipe, crop: tuple[int, int]) -> int:
    """The size the shorter image side is resized to before a centre crop of `crop`: val_resize_size, else the
    reference recipes' ratio (256 for 224, 201 for 176), taken of the crop's longer side so that the resized
    image covers the crop."""
    return recipe.val_resize_size or round(max(crop) * RESIZE_PER_CROP)


def interpolation(recipe: Recipe) -> v2.InterpolationMode:
    from torchvision.transforms import v2

    return v2.InterpolationMode(recipe.interpolation)  # "bilinear", "bicubic" or "nearest"


def random_crop_steps(recipe: Recipe, size: tuple[int, int], width: int) -> list:
    """For "crop" in augment: a random crop of each `size` image padded as the in-memory path pads an image
    `width` wide before the recipe's `pad` (crop_padding)."""
    from torchvision.transforms import v2

    return [v2.RandomCrop(size, padding=crop_padding(width))] if "crop" in recipe.augment else []


def to_input_steps(recipe: Recipe, mean: Sequence[float], std: Sequence[float]) -> list:
    """uint8 pixels to floats in [0, 1], normalised by `mean` and `std` when the recipe normalises."""
    from torchvision.transforms import v2

    steps = [v2.ToDtype(torch.float32, scale=True)]
    if recipe.normalize:
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return steps


def train_transform(recipe: Recipe, size: tuple[int, int], same_size: bool, mean: Sequence[float],
                    std: Sequence[float]) -> v2.Compose:
    """uint8 [C, h, w] -> float [C, *size] for training. `size` is the network's input [H, W]; `same_size`: the
    images already are that size less the recipe's padding (MNIST, CIFAR-10), so train_crop="auto" keeps them
    whole. `mean` and `std` are per channel, of pixels in [0, 1]."""
    from torchvision.transforms import v2

    resampling = interpolation(recipe)
    crop = (recipe.train_crop_size,) * 2 if recipe.train_crop_size else tuple(size)
    if recipe.train_crop == "random_resized" or (recipe.train_crop == "auto" and not same_size):
        # RandomResizedCrop crops each image at random already: "crop" in augment adds nothing to it.
        steps = [v2.RandomResizedCrop(crop, interpolation=resampling, antialias=True)]
    elif recipe.train_crop == "center":
        steps = [v2.Resize(eval_resize(recipe, crop), interpolation=resampling, antialias=True),
                 v2.CenterCrop(crop)] + random_crop_steps(recipe, crop, crop[-1])
    else:  # images of the network's size once padded
        steps = ([v2.Pad(recipe.pad)] if recipe.pad else []) + random_crop_steps(recipe, tuple(size),
                                                                                 size[-1] - 2 * recipe.pad)
    if "flip" in recipe.augment:
        steps.append(v2.RandomHorizontalFlip(0.5))
    policy = recipe.auto_augment
    if policy == "ta_wide":
        steps.append(v2.TrivialAugmentWide(interpolation=resampling))
    elif policy == "ra":
        steps.append(v2.RandAugment(magnitude=recipe.ra_magnitude, interpolation=resampling))
    elif policy == "augmix":
        steps.append(v2.AugMix(interpolation=resampling))
    elif policy != "none":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy(policy), interpolation=resampling))
    steps += to_input_steps(recipe, mean, std)
    if recipe.random_erase > 0:
        steps.append(v2.RandomErasing(p=recipe.random_erase))
    return v2.Compose(steps)


def eval_transform(recipe: Recipe, size: tuple[int, int], same_size: bool, mean: Sequence[float],
                   std: Sequence[float]) -> v2.Compose:
    """uint8 [C, h, w] -> float [C, *size] for evaluation: the recipe's padding when the images are the network's
    size already, else resize (eval_resize) and centre crop."""
    from torchvision.transforms import v2

    if same_size:
        steps = [v2.Pad(recipe.pad)] if recipe.pad else []
    else:
        steps = [v2.Resize(eval_resize(recipe, size), interpolation=interpolation(recipe), antialias=True),
                 v2.CenterCrop(tuple(size))]
    return v2.Compose(steps + to_input_steps(recipe, mean, std))


def fits_once_padded(graph: Graph, recipe: Recipe, height: int, width: int) -> bool:
    """Whether images of this size are the network's input size once the recipe pads them."""
    return (height + 2 * recipe.pad, width + 2 * recipe.pad) == tuple(graph.input_shape[1:])


def network_transform(graph: Graph, recipe: Recipe, same_size: bool, mean, std, training: bool) -> v2.Compose:
    """The training or evaluation transform to the network's input size."""
    size = tuple(graph.input_shape[1:])
    make = train_transform if training else eval_transform
    return make(recipe, size, same_size, mean, std)
