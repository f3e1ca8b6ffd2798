"""`netspec predict`: saved weights applied to image files, each preprocessed exactly as the run that trained
them evaluated (netspec.train.preprocessing, from the checkpoint's config): the top-k classes by name with their
probabilities, or, for a segmentation network, a mask PNG per image.

Weights without a run's record (a plain state_dict) are preprocessed by the spec's recipe, normalised with
ImageNet's statistics (what torchvision's weights expect), and their classes are numbered; a line says so.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from netspec.backends.torch import WeightsError, load_weights, to_module
from netspec.ground.errors import ToolError
from netspec.ground.files import write_atomic
from netspec.ir import Graph
from netspec.semantics.recipe import Recipe
from netspec.train import images
from netspec.train.distributed import pick_device
from netspec.train.errors import TrainError
from netspec.train.loop import forward, logits_of
from netspec.train.preprocessing import ImageTransform
from netspec.train.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_resize

OUTPUT_FORMATS = (".csv", ".json")


class PredictError(ToolError):
    """An argument of `netspec predict` that cannot be used (a path that does not exist, an output it cannot
    tell the format of): exit 2."""

    exit_code = 2


@dataclass
class Prediction:
    path: str
    top: list[dict] = field(default_factory=list)  # classification: {"class", "index", "probability"}, best first
    mask: str | None = None  # segmentation: the mask PNG written
    pixels: dict[str, float] = field(default_factory=dict)  # segmentation: each class's share of the pixels


@dataclass
class Predictions:
    network: str
    weights: str
    task: str
    classes: list[str]
    predictions: list[Prediction]
    skipped: list[tuple[str, str]]  # (path, reason) of the images that could not be read
    notes: list[str]

    def as_json(self) -> str:
        items = []
        for p in self.predictions:
            item = {"path": p.path}
            if self.task == "segmentation":
                item |= {"mask": p.mask, "pixels": p.pixels}
            else:
                item["top"] = p.top
            items.append(item)
        return json.dumps({"network": self.network, "weights": self.weights, "task": self.task,
                           "predictions": items, "skipped": [{"path": p, "reason": r} for p, r in self.skipped]},
                          indent=2) + "\n"

    def as_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if self.task == "segmentation":
            writer.writerow(["path", "mask"] + [f"pixels_{name}" for name in self.classes])
            for p in self.predictions:
                writer.writerow([p.path, p.mask] + [f"{p.pixels.get(name, 0.0):.6f}" for name in self.classes])
            return buffer.getvalue()
        k = max((len(p.top) for p in self.predictions), default=0)
        writer.writerow(["path"] + [column for rank in range(1, k + 1)
                                    for column in (f"class_{rank}", f"probability_{rank}")])
        for p in self.predictions:
            writer.writerow([p.path] + [value for t in p.top for value in (t["class"], f"{t['probability']:.6f}")])
        return buffer.getvalue()


def image_paths(inputs: list[str]) -> list[Path]:
    """The images named: files as given, folders walked for image files (sorted, as an image folder is)."""
    found: list[Path] = []
    for entry in inputs:
        path = Path(entry).expanduser()
        if path.is_dir():
            files = images.image_files(path)
            if not files:
                raise PredictError(f"{path} holds no images (files ending {' '.join(images.IMAGE_SUFFIXES)})")
            found += files
        elif path.exists():
            found.append(path)
        else:
            raise PredictError(f"{path} does not exist; give image files or folders of images")
    return found


def run_recipe(config: dict | None, graph: Graph, recipe: Recipe) -> Recipe:
    """The recipe the run recorded (its evaluation is what predict repeats), else the one given."""
    if config and isinstance(config.get("recipe"), dict):
        try:
            return Recipe.model_validate(config["recipe"])
        except ValueError:
            pass
    return recipe


def fallback_record(graph: Graph, recipe: Recipe) -> dict:
    """Preprocessing for weights that carry no record: resized and cropped unless of the input size, ImageNet's
    statistics (a grey network: their mean), as torchvision's published weights expect."""
    channels, height, width = graph.input_shape
    mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD)) if channels == 3 else \
        ([sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3])
    return {"channels": channels, "color": "grey" if channels == 1 else "RGB", "layout": "NCHW",
            "input_size": [height, width], "resize": None, "pad": recipe.pad, "interpolation": recipe.interpolation,
            "scale": "1/255", "normalize": recipe.normalize, "mean": mean if recipe.normalize else None,
            "std": std if recipe.normalize else None, "permute_pixels": recipe.permute_pixels}


def task_of(graph: Graph) -> str:
    """classification for an output [classes], segmentation for [classes, H, W]."""
    return "segmentation" if len(graph.node(graph.output).shape) == 3 else "classification"


def predict(graph: Graph, weights: str, config: dict | None, recipe: Recipe, inputs: list[str], top_k: int = 5,
            device: str = "auto", batch_size: int = 32, masks: str | None = None) -> Predictions:
    """Predictions for the images in `inputs` (files or folders). `config` is the checkpoint's run config (None
    for a plain state_dict). Segmentation writes each mask into the folder `masks`."""
    if len(graph.input_shape) != 3 or graph.input_shape[0] not in (1, 3):
        raise TrainError(f"{graph.name} takes input {list(graph.input_shape)}; predict reads images as [1, H, W] "
                         "or [3, H, W]")
    paths = image_paths(inputs)
    notes = []
    recipe = run_recipe(config, graph, recipe)
    record = (config or {}).get("preprocessing")
    if not isinstance(record, dict):
        record = fallback_record(graph, recipe)
        notes.append(f"{weights} records no preprocessing (not a netspec run's checkpoint): images are resized to "
                     f"{eval_resize(recipe, tuple(graph.input_shape[1:]))} and centre-cropped unless of the input "
                     "size" + (", normalised with ImageNet's statistics" if recipe.normalize else ""))
    task = task_of(graph)
    classes = list((config or {}).get("classes") or [])
    outputs = graph.node(graph.output).shape[0]
    if len(classes) != outputs:
        classes = [str(i) for i in range(outputs)]
    transform = ImageTransform(record, recipe)
    model = to_module(graph)
    try:
        load_weights(model, weights)
    except WeightsError as err:
        raise TrainError(str(err)) from None
    where = pick_device(device)
    model = model.to(where).eval()
    resized_note = False
    results, skipped = [], []
    written: set[Path] = set()  # the mask files of this call
    batch: list[tuple[Path, torch.Tensor]] = []

    def flush():
        if batch:
            x = torch.stack([t for _, t in batch]).to(where)
            with torch.no_grad():
                scores, _ = forward(model, x)
                logits = logits_of(graph, scores).float()
            for (path, _), row in zip(batch, logits.cpu()):
                results.append(describe(path, row, task, classes, recipe, top_k, masks, written))
            batch.clear()

    for path in paths:
        try:
            image = images.decode(path, record["channels"])
        except Exception as err:  # every decoder failure is an unreadable image, named and left out
            skipped.append((str(path), images.failure_reason(err)))
            continue
        if record["resize"] is None and transform.resizes(image) and not resized_note:
            resized_note = True
            notes.append(f"{path} is {image.shape[-1]}x{image.shape[-2]}, not the {transform.fits[1]}x"
                         f"{transform.fits[0]} of the run's images: images of another size are resized (shorter "
                         f"side {transform.resize}) and centre-cropped")
        batch.append((path, transform(image)))
        if len(batch) == batch_size:
            flush()
    flush()
    return Predictions(graph.name, str(weights), task, classes, results, skipped, notes)


def describe(path: Path, logits: torch.Tensor, task: str, classes: list[str], recipe: Recipe, top_k: int,
             masks: str | None, written: set[Path]) -> Prediction:
    """One image's prediction from its logits ([classes] or [classes, h, w])."""
    if task == "segmentation":
        from netspec.train.segmentation import write_mask

        labels = logits.argmax(0)
        counts = torch.bincount(labels.flatten(), minlength=len(classes)).double() / labels.numel()
        mask = write_mask(labels, Path(masks or "masks"), path, written)
        return Prediction(str(path), mask=str(mask), pixels={name: float(share) for name, share in
                                                                 zip(classes, counts) if share > 0})
    # the margin loss trains capsule lengths, which are reported as they are; logits become probabilities
    scores = logits if recipe.loss == "margin" else torch.softmax(logits, 0)
    values, indices = scores.topk(min(top_k, len(classes)))
    return Prediction(str(path), top=[{"class": classes[i], "index": int(i), "probability": float(v)}
                                      for v, i in zip(values.tolist(), indices.tolist())])


def write_predictions(predictions: Predictions, output: str | Path) -> None:
    """CSV or JSON by the output's suffix, written whole or not at all."""
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise PredictError(f"cannot tell the format of {output}; name it .csv or .json")
    text = predictions.as_json() if suffix == ".json" else predictions.as_csv()
    try:
        write_atomic(output, text)
    except OSError as err:
        raise PredictError(f"cannot write {output}: {err.strerror or err}") from None


def line(prediction: Prediction, task: str) -> str:
    """What `netspec predict` prints for one image."""
    if task == "segmentation":
        shares = ", ".join(f"{name} {share:.1%}" for name, share in
                           sorted(prediction.pixels.items(), key=lambda item: -item[1]))
        return f"{prediction.path}: {prediction.mask} ({shares})"
    return f"{prediction.path}: " + ", ".join(f"{t['class']} {t['probability']:.2%}" for t in prediction.top)
