"""The data a run trains on, chosen and assembled: the recipe's dataset (or image files) checked against the
network, split into training, validation and test sets, and sent one of two ways to the device, chosen per run
and printed: in memory (netspec.train.memory), for a dataset that sits in memory as one uint8 tensor, or streamed
through a DataLoader (netspec.train.streamed, netspec.train.files), for image files and for recipes asking for
per-image transforms that only torchvision's transforms v2 have. torchvision is imported only for the second.
"""

from __future__ import annotations

from netspec.ir import Graph
from netspec.semantics.recipe import Recipe
from netspec.train import datasets
from netspec.train.distributed import Context
from netspec.train.errors import TrainError
from netspec.train.memory import in_memory
from netspec.train.splits import DataOptions, TrainingData, validation_indices

FILE_DATA = ("imagefolder", "csv")


def needs_streaming(recipe: Recipe) -> str | None:
    """The recipe's setting that only the streamed path's per-image transforms carry out, if any."""
    if recipe.auto_augment != "none":
        return f"auto_augment = {recipe.auto_augment!r}"
    if recipe.random_erase:
        return "random_erase"
    if recipe.train_crop != "auto":
        return f"train_crop = {recipe.train_crop!r}"
    if recipe.train_crop_size is not None:
        return "train_crop_size"
    return None


def choose_mode(recipe: Recipe, requested: str) -> str:
    wanted = needs_streaming(recipe)
    if requested == "memory" and wanted:
        raise TrainError(f"{wanted} transforms each image as torchvision's transforms v2 do, which the in-memory "
                         "path does not; leave out --data-mode memory")
    if requested != "auto":
        return requested
    if recipe.data in FILE_DATA:
        return "stream"
    return "stream" if wanted else "memory"


def prepare(graph: Graph, recipe: Recipe, data_dir: str | None, download: bool, ctx: Context,
            options: DataOptions) -> TrainingData:
    """The run's data, checked against the network, split, and ready to be batched on `ctx.device`."""
    mode = choose_mode(recipe, options.mode)
    if len(graph.node(graph.output).shape) == 3:  # a class score per pixel: image and mask pairs
        from netspec.train import segmentation

        return segmentation.from_files(graph, recipe, data_dir, ctx, options, mode)
    if recipe.data in FILE_DATA:
        from netspec.train import files  # decodes with torchvision: imported only for image files

        return files.from_files(graph, recipe, data_dir, ctx, options, mode)
    dataset = datasets.load(recipe.data, data_dir, graph.input_shape, graph.node(graph.output).shape[0], download)
    return _from_tensors(graph, recipe, dataset, ctx, options, mode)


def _from_tensors(graph: Graph, recipe: Recipe, dataset: datasets.Dataset, ctx: Context, options: DataOptions,
                  mode: str) -> TrainingData:
    train, val, validation_from = validation_indices(recipe, len(dataset.train_x))
    limit = options.limit_eval
    test_x, test_y = dataset.test_x[:limit], dataset.test_y[:limit]
    val = val[:limit]
    if mode == "memory":
        data = in_memory(graph, recipe, dataset, (dataset.train_x[train], dataset.train_y[train]),
                         (dataset.train_x[val], dataset.train_y[val]), (test_x, test_y), ctx, validation_from,
                         options.statistics)
        data.class_names = datasets.class_names(dataset.name, dataset.classes)
        return data
    from netspec.train import streamed  # torchvision's transforms: imported only when streaming

    return streamed.from_tensors(graph, recipe, dataset, train, val, (test_x, test_y), ctx, options, mode,
                                 validation_from)
