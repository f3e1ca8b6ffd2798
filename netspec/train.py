"""`netspec train` and `netspec eval`: a spec, a dataset held in (GPU) memory, and a run folder.

The run folder holds `config.json` (everything resolved), `metrics.jsonl` (one line per epoch),
`last.pt` (weights, optimiser, schedule, RNG and metrics: enough to resume exactly) and `best.pt`
(the weights with the best test accuracy). Every file is written atomically.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import netspec
from netspec import data as datasets
from netspec.backends.torch import to_module
from netspec.evaluate import show
from netspec.errors import first_line
from netspec.files import write_atomic
from netspec.ir import Graph
from netspec.recipe import Recipe


PREPARED_BYTES = 4 * 2**30


class TrainError(Exception):
    """A run that cannot start or go on; the message says why and what to do."""


@dataclass
class Preprocess:
    """uint8 images -> the network's input: scale, permute pixels, pad, normalise, augment. Runs on the device."""

    mean: torch.Tensor  # [1, C, 1, 1], after scaling to [0, 1]
    std: torch.Tensor
    pad: int
    normalize: bool
    permutation: torch.Tensor | None
    augment: str

    def __call__(self, images: torch.Tensor, training: bool, generator: torch.Generator | None = None):
        return self.augmented(self.fixed(images), training, generator)

    def fixed(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic part: scale, permute, pad, normalise."""
        x = images.float().div_(255)
        if self.permutation is not None:
            n, c, h, w = x.shape
            x = x.reshape(n, c, h * w)[:, :, self.permutation].reshape(n, c, h, w)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        if self.normalize:
            x = (x - self.mean) / self.std
        return x

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """A prepared batch with the normalisation undone, pixels in [0, 1]: what a reconstruction reproduces."""
        return x * self.std + self.mean if self.normalize else x

    def augmented(self, x: torch.Tensor, training: bool, generator: torch.Generator | None = None):
        if training and "crop" in self.augment:
            x = _random_shift(x, 4 if x.shape[-1] >= 32 else 2, generator)
        if training and "flip" in self.augment:
            flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x


def _random_shift(x: torch.Tensor, limit: int, generator) -> torch.Tensor:
    """Random translation by up to `limit` pixels (pad-and-crop), one offset per batch to stay cheap."""
    dy, dx = (int(v) for v in torch.randint(-limit, limit + 1, (2,), generator=generator))
    padded = F.pad(x, (limit,) * 4)
    h, w = x.shape[-2:]
    return padded[..., limit + dy:limit + dy + h, limit + dx:limit + dx + w]


def fit_input(graph: Graph, dataset: datasets.Dataset, recipe: Recipe) -> None:
    """Refuse a dataset whose images or classes do not fit the network, saying which and how to fix it."""
    c, h, w = dataset.shape
    want = graph.input_shape
    got = (c, h + 2 * recipe.pad, w + 2 * recipe.pad)
    where = f"{graph.name} takes input {list(want)} but {dataset.name} images are {[c, h, w]}"
    if len(want) != 3:
        raise TrainError(f"{where}; the network must take images [C, H, W]")
    if want[0] != c:
        raise TrainError(f"{where}: {want[0]} channels against {c}; change the spec's input to "
                         f"[{c}, {want[1]}, {want[2]}]")
    if got != want:
        gap_h, gap_w = want[1] - h, want[2] - w
        if recipe.pad:
            where += f" ({list(got)} with pad={recipe.pad})"
        if gap_h == gap_w and gap_h > 0 and gap_h % 2 == 0:
            raise TrainError(f"{where}; pad them with --pad {gap_h // 2} (or `pad = {gap_h // 2}` in the spec's "
                             f"train section)")
        raise TrainError(f"{where}; change the spec's input to {[c, h, w]}")
    output = graph.node(graph.output).shape
    if output != (dataset.classes,):
        hint = (" (e.g. --set classes=%d)" % dataset.classes) if "classes" in graph.arguments else ""
        raise TrainError(f"{graph.name} outputs {list(output)} but {dataset.name} has {dataset.classes} classes; "
                         f"give the network {dataset.classes} outputs{hint}")


def make_preprocess(dataset: datasets.Dataset, recipe: Recipe, device) -> Preprocess:
    x = dataset.train_x.float().div_(255)
    mean = x.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1)
    permutation = None
    if recipe.permute_pixels is not None:
        h, w = dataset.shape[1:]
        permutation = torch.randperm(h * w, generator=torch.Generator().manual_seed(recipe.permute_pixels))
        permutation = permutation.to(device)
    return Preprocess(mean.to(device), std.to(device), recipe.pad, recipe.normalize, permutation, recipe.augment)


def logits_of(graph: Graph, output: torch.Tensor) -> torch.Tensor:
    # LeNet-5's RBF units output distances (small = likely); their negatives serve as logits for
    # cross-entropy, our documented substitute for the paper's MAP criterion. An ensemble's mean of
    # probabilities gives its logits as their logarithm.
    last = graph.node(graph.output)
    if last.op == "rbf":
        return -output
    if last.op == "ensemble" and last.args.merge == "softmax_mean":
        return output.clamp_min(1e-12).log()
    return output


def forward(model, x: torch.Tensor, labels: torch.Tensor | None = None):
    """(class scores, reconstructions) of a batch; `labels`, for a graph that takes_labels(), reach the layers
    that read them while training."""
    output = model(x) if labels is None else model(x, labels)
    if isinstance(output, tuple):
        return output[0], output[1:]
    return output, ()


def reconstruction_loss(recipe: Recipe, reconstructions, x: torch.Tensor, reduction: str = "mean"):
    """weight x the per-sample sum of squared errors of each reconstruction against `x`: the input the network
    was given, without its normalisation (Preprocess.pixels)."""
    if not reconstructions:
        return 0.0
    target = x.float().flatten(1)
    per_sample = sum(((r.float().flatten(1) - target) ** 2).sum(dim=1) for r in reconstructions)
    return recipe.reconstruction_weight * (per_sample.sum() if reduction == "sum" else per_sample.mean())


def criterion(recipe: Recipe, scores: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The recipe's loss: cross-entropy on logits, or the capsule margin loss on lengths in [0, 1]."""
    if recipe.loss == "margin":
        present = F.one_hot(labels, scores.shape[1]).to(scores.dtype)
        per_class = (present * F.relu(0.9 - scores) ** 2
                     + 0.5 * (1 - present) * F.relu(scores - 0.1) ** 2)
        per_sample = per_class.sum(dim=1)
        return per_sample.sum() if reduction == "sum" else per_sample.mean()
    return F.cross_entropy(scores, labels, reduction=reduction,
                           label_smoothing=recipe.label_smoothing if reduction == "mean" else 0.0)


def _optimiser(recipe: Recipe, model: torch.nn.Module, steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                              weight_decay=recipe.weight_decay)
    elif recipe.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    elif recipe.schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    elif recipe.schedule == "step":
        per_epoch = max(1, steps // recipe.epochs)
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=recipe.step_size * per_epoch, gamma=recipe.gamma)
    else:
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return opt, schedule


def evaluate(model, graph: Graph, preprocess, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             device, recipe: Recipe, pixels) -> tuple[float, float]:
    """Mean loss (the recipe's, without label smoothing) and accuracy over (x, y);
    `preprocess(batch, training=False)` readies a batch, `pixels` undoes its normalisation."""
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad(), _autocast(device):
        for start in range(0, len(x), batch_size):
            xb = preprocess(x[start:start + batch_size], training=False)
            yb = y[start:start + batch_size]
            xb = _layout(xb, device)
            scores, reconstructions = forward(model, xb)
            logits = logits_of(graph, scores).float()
            total_loss += float(criterion(recipe, logits, yb, reduction="sum")
                                + reconstruction_loss(recipe, reconstructions, pixels(xb), reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    return total_loss / len(x), correct / len(x)


def _autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)


def _layout(x: torch.Tensor, device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and x.dim() == 4 else x


def _save(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def _read_checkpoint(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"nothing to resume: {path} does not exist") from None
    except Exception as err:
        raise TrainError(f"{path} is damaged or not a checkpoint ({type(err).__name__}: {first_line(err)}); "
                         "nothing was changed") from None
    needed = {"model", "optimizer", "scheduler", "epoch", "generator", "torch_rng", "metrics", "config"}
    if not isinstance(checkpoint, dict) or not needed <= set(checkpoint):
        raise TrainError(f"{path} is not a netspec training checkpoint; nothing was changed")
    return checkpoint


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.2%}  {task.fields[speed]:,.0f} img/s"),
                    TimeRemainingColumn(), transient=True)


def _diverged(bar, loss, epoch: int, step: int, last: Path, recipe: Recipe):
    if bar:
        bar.stop()
    kept = f"{last} (after epoch {epoch - 1}) is kept" if epoch > 1 and last.exists() else \
        "no checkpoint had been written yet"
    raise TrainError(f"the loss became {float(loss.detach())} at epoch {epoch}, step {step + 1}; stopping. {kept}. "
                     f"Lower the learning rate (now {recipe.lr:g}), or look for a layer that overflows")


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda, but no CUDA device is available")
    return torch.device(device)


def run(graph: Graph, recipe: Recipe, out: Path, data_dir: str | None = None, device: str = "auto",
        resume: bool = False, download: bool = False, progress: bool = True, log=print) -> dict:
    """Train an analysed spec; returns the last epoch's metrics. Raises TrainError or data.DataError."""
    dev = pick_device(device)
    out = Path(out)
    last, best, metrics_path = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    checkpoint = _read_checkpoint(last) if resume else None
    if checkpoint is None and (last.exists() or metrics_path.exists()):
        raise TrainError(f"{out} already holds a run; pass --resume to continue it, or --out another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / ".write-test", b"")
        (out / ".write-test").unlink()
    except OSError as err:
        raise TrainError(f"cannot write the run folder {out}: {err.strerror}") from None

    dataset = datasets.load(recipe.data, data_dir, graph.input_shape, graph.node(graph.output).shape[0], download)
    fit_input(graph, dataset, recipe)
    model = to_module(graph, seed=recipe.seed).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    train_x, train_y = dataset.train_x.to(dev), dataset.train_y.to(dev)
    test_x, test_y = dataset.test_x.to(dev), dataset.test_y.to(dev)
    preprocess = make_preprocess(dataset, recipe, dev)
    # Scale, pad and normalise the whole set once when it fits (MNIST: 190 MB as float), so that a step does
    # only its own work, as a hand-written loop over a prepared tensor would; else per batch.
    c, h, w = dataset.shape
    prepared_bytes = (len(train_x) + len(test_x)) * c * (h + 2 * recipe.pad) * (w + 2 * recipe.pad) * 4
    batches = preprocess
    if prepared_bytes <= PREPARED_BYTES:
        train_x, test_x = preprocess.fixed(train_x), preprocess.fixed(test_x)
        batches = preprocess.augmented
    steps_per_epoch = math.ceil(len(train_x) / recipe.batch_size)
    optimiser, schedule = _optimiser(recipe, model, recipe.epochs * steps_per_epoch)
    generator = torch.Generator(device=dev).manual_seed(recipe.seed)
    config = {"spec": graph.file, "network": graph.name, "arguments": graph.arguments, "recipe": recipe.model_dump(),
              "device": str(dev), "dataset": dataset.name, "train_images": len(train_x), "test_images": len(test_x),
              "netspec": netspec.__version__, "torch": str(torch.__version__)}
    # Plain JSON types only, so checkpoints load with torch.load(weights_only=True); a block is saved by name.
    config = json.loads(json.dumps(config, default=show))
    history: list[dict] = []
    start_epoch, best_accuracy = 1, -1.0
    if checkpoint is not None:
        if checkpoint["config"].get("network") != graph.name:
            raise TrainError(f"{last} was saved from network {checkpoint['config'].get('network')}, not {graph.name}")
        saved = checkpoint["config"].get("recipe", {})
        changed = [f"{key} {saved.get(key)!r} in {last.name}, {value!r} now" for key, value in config["recipe"].items()
                   if saved.get(key) != value]
        if changed:
            raise TrainError("--resume continues a run as it was set up, but " + "; ".join(changed) +
                             ". Use the same settings, or start a new run with another --out")
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["scheduler"])
        generator.set_state(checkpoint["generator"])
        torch.set_rng_state(checkpoint["torch_rng"])
        if dev.type == "cuda" and "cuda_rng" in checkpoint:
            torch.cuda.set_rng_state(checkpoint["cuda_rng"])
        history = list(checkpoint["metrics"])
        start_epoch = checkpoint["epoch"] + 1
        best_accuracy = max((m["test_accuracy"] for m in history), default=-1.0)
        log(f"resuming {graph.name} from {last} after epoch {checkpoint['epoch']}")
    write_atomic(out / "config.json", json.dumps(config, indent=2) + "\n")
    write_atomic(metrics_path, "".join(json.dumps(m) + "\n" for m in history))

    step_model = model
    if recipe.compile:
        try:
            step_model = torch.compile(model)
        except Exception as err:
            log(f"torch.compile failed ({type(err).__name__}: {err}); training eager")
    trained_seconds = history[-1]["train_seconds"] if history else 0.0
    takes_labels = graph.takes_labels()

    def labels(yb):
        return yb if takes_labels else None

    bar = _progress(progress and sys.stderr.isatty())
    aux_outputs = len(graph.aux_outputs)
    for epoch in range(start_epoch, recipe.epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), device=dev, generator=generator)
        seen = 0
        loss_sum = torch.zeros((), device=dev)  # accumulated on the device: no host sync per step
        correct = torch.zeros((), device=dev, dtype=torch.long)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        task = bar.add_task("", total=steps_per_epoch, epoch=epoch, loss=0.0, acc=0.0, speed=0.0) if bar else None
        if bar and epoch == start_epoch:
            bar.start()
        for step in range(steps_per_epoch):
            index = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            xb = _layout(batches(train_x[index], training=True, generator=generator), dev)
            yb = train_y[index]
            with _autocast(dev):
                try:
                    scores, reconstructions = forward(step_model, xb, labels(yb))
                except Exception as err:
                    if step_model is model:
                        raise
                    log(f"torch.compile failed at the first step ({type(err).__name__}); training eager")
                    step_model = model
                    scores, reconstructions = forward(model, xb, labels(yb))
                # While training, auxiliary classifiers' scores come right after the main ones.
                aux_scores, reconstructions = reconstructions[:aux_outputs], reconstructions[aux_outputs:]
                logits = logits_of(graph, scores)
                loss = criterion(recipe, logits.float(), yb) + reconstruction_loss(
                    recipe, reconstructions, preprocess.pixels(xb) if reconstructions else xb)
                for aux in aux_scores:
                    loss = loss + recipe.aux_weight * criterion(recipe, aux.float(), yb)
            # On the CPU a check costs nothing; on a GPU it would stall every step, so it waits for the epoch end.
            if dev.type == "cpu" and not torch.isfinite(loss):
                _diverged(bar, loss, epoch, step, last, recipe)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            seen += len(yb)
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
            if bar:
                bar.update(task, advance=1, loss=float(loss_sum) / seen, acc=int(correct) / seen,
                           speed=seen / (time.perf_counter() - began))
        if not torch.isfinite(loss_sum):
            _diverged(bar, loss_sum, epoch, steps_per_epoch - 1, last, recipe)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        trained_seconds += seconds
        if bar:
            bar.remove_task(task)
        test_loss, test_accuracy = evaluate(model, graph, batches, test_x, test_y, max(recipe.batch_size, 256), dev,
                                            recipe, preprocess.pixels)
        metrics = {"epoch": epoch, "train_loss": float(loss_sum) / seen, "train_accuracy": int(correct) / seen,
                   "test_loss": test_loss, "test_accuracy": test_accuracy, "lr": optimiser.param_groups[0]["lr"],
                   "images_per_second": seen / seconds, "epoch_seconds": seconds, "train_seconds": trained_seconds}
        history.append(metrics)
        if test_accuracy > best_accuracy:
            best_accuracy = test_accuracy
            _save(best, {"model": model.state_dict(), "epoch": epoch, "test_accuracy": test_accuracy,
                         "config": config})
        _save(last, {"model": model.state_dict(), "optimizer": optimiser.state_dict(),
                     "scheduler": schedule.state_dict(), "epoch": epoch, "generator": generator.get_state(),
                     "torch_rng": torch.get_rng_state(), "metrics": history, "config": config,
                     **({"cuda_rng": torch.cuda.get_rng_state()} if dev.type == "cuda" else {})})
        write_atomic(metrics_path, "".join(json.dumps(m) + "\n" for m in history))
        log(f"epoch {epoch}/{recipe.epochs}: train loss {metrics['train_loss']:.4f} acc {metrics['train_accuracy']:.2%}"
            f" | test loss {test_loss:.4f} acc {test_accuracy:.2%} | {metrics['images_per_second']:,.0f} img/s")
    if bar:
        bar.stop()
    return {**history[-1], "best_test_accuracy": best_accuracy, "run": str(out)}


def evaluate_weights(graph: Graph, weights: Path | list[str], recipe: Recipe, data_dir: str | None,
                     device: str = "auto",
                     download: bool = False) -> dict:
    """Test loss and accuracy of saved weights (a best.pt/last.pt, or a plain state_dict)."""
    from netspec.backends.torch import WeightsError, load_weights

    dev = pick_device(device)
    dataset = datasets.load(recipe.data, data_dir, graph.input_shape, graph.node(graph.output).shape[0], download)
    fit_input(graph, dataset, recipe)
    model = to_module(graph)
    try:
        load_weights(model, weights)
    except WeightsError as err:
        raise TrainError(str(err)) from None
    model = model.to(dev)
    preprocess = make_preprocess(dataset, recipe, dev)
    loss, accuracy = evaluate(model, graph, preprocess, dataset.test_x.to(dev), dataset.test_y.to(dev), 512, dev,
                              recipe, preprocess.pixels)
    return {"network": graph.name, "dataset": dataset.name, "test_images": len(dataset.test_x), "test_loss": loss,
            "test_accuracy": accuracy}
