"""Images per second through netspec's streamed image path against plain torchvision DataLoader loops.

    python bench/stream_speed.py --workers 2 --images 1000                 # generates a tree in a temporary folder
    python bench/stream_speed.py --root /tmp/jpegs --images 20000 --workers 8 --repeats 5   # keeps the tree

A generated ImageFolder tree of JPEGs (--classes folders, --images in all, each side 200 to 500 pixels, multi-scale
smooth noise so that file sizes are like photographs') is read once to warm the page cache, then read in full,
shuffled, by three loaders with the same workers, batch size and v2 transforms (RandomResizedCrop 224, horizontal
flip, ToDtype, Normalize: torchvision's reference training preset):

    netspec      netspec.train.images: ImageFiles (torchvision.io decoding) + make_loader, transform from the recipe
    ImageFolder  torchvision.datasets.ImageFolder with its default Pillow loader (+ v2.ToImage before the transform)
    ImageFolder + decode_image   the same with loader=torchvision.io.decode_image, so decoding is equal

A pass is timed from creating the loader's iterator (worker start-up included) to its last batch; the loaders take
turns in each repeat (each repeat starting with the next one), and the table gives medians of --repeats passes.
Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.io import ImageReadMode, decode_image, encode_jpeg
from torchvision.transforms import v2

from netspec.semantics.recipe import Recipe
from netspec.train.images import ImageFiles, make_loader, scan_image_folder
from netspec.train.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transform

CROP = (224, 224)
# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; every loader here still uses them.
warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)


def photo_like(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 [3, H, W]: colour noise at 1/64, 1/16 and 1/4 scale and grey noise at full scale, summed with falling
    weights, like a photograph's broad shapes and fine texture (JPEG keeps luminance detail and subsamples colour).
    At quality 90 this gives about 0.5 bytes a pixel, as ImageNet's photographs."""
    image = 0.2 * torch.rand(1, 1, height, width, generator=generator)
    for scale, weight in ((64, 0.5), (16, 0.25), (4, 0.15)):
        noise = torch.rand(1, 3, max(2, height // scale), max(2, width // scale), generator=generator)
        image = image + weight * F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
    return image[0].clamp_(0, 1).mul_(255).byte()


def generate(root: Path, images: int, classes: int, seed: int = 0) -> None:
    """root/train/class_k/*.jpg, written once (kept when already complete)."""
    marker = root / f".complete-{images}-{classes}"
    if marker.exists():
        return
    generator = torch.Generator().manual_seed(seed)
    torch.set_num_threads(1)  # intra-op threads only contend at these sizes (10x slower on a busy 2-core machine)
    for i in range(images):
        folder = root / "train" / f"class_{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        height, width = (int(v) for v in torch.randint(200, 501, (2,), generator=generator))
        jpeg = encode_jpeg(photo_like(height, width, generator), quality=90)
        (folder / f"{i:06d}.jpg").write_bytes(jpeg.numpy().tobytes())
    marker.touch()


def transform_steps() -> list:
    """The v2 transforms all three loaders apply: netspec's train_transform for the recipe below, which is
    torchvision's reference preset (RandomResizedCrop, flip, ToDtype, Normalize)."""
    return list(train_transform(Recipe(augment="flip"), CROP, False, IMAGENET_MEAN, IMAGENET_STD).transforms)


def netspec_loader(root: Path, batch_size: int, workers: int, seed: int):
    collection = scan_image_folder(root)
    train = collection.splits["train"]
    dataset = ImageFiles(train, 3, v2.Compose(transform_steps()))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    return make_loader(dataset, batch_size, order, workers, pin_memory=False,
                       generator=torch.Generator().manual_seed(seed))


def read_rgb(path: str) -> torch.Tensor:
    return decode_image(path, mode=ImageReadMode.RGB)


def folder_loader(root: Path, batch_size: int, workers: int, seed: int, torchvision_decoder: bool):
    if torchvision_decoder:
        dataset = ImageFolder(str(root / "train"), loader=read_rgb, transform=v2.Compose(transform_steps()))
    else:
        dataset = ImageFolder(str(root / "train"), transform=v2.Compose([v2.ToImage(), *transform_steps()]))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed),
                      prefetch_factor=2 if workers > 0 else None)


def one_pass(loader) -> tuple[float, int]:
    """Seconds for a full pass, and the images it gave."""
    start = time.perf_counter()
    count = 0
    for batch in loader:
        count += len(batch[1])
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="where the JPEG tree is generated and kept (default: a temporary "
                                                  "folder, removed afterwards)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        started = time.perf_counter()
        generate(root, args.images, args.classes)
        files = sorted((root / "train").rglob("*.jpg"))
        sizes = [f.stat().st_size for f in files]
        pixels = 0
        for f in files:  # also warms the page cache for every loader alike
            pixels += int(torch.tensor(torchvision.io.decode_jpeg(torchvision.io.read_file(str(f))).shape[1:]).prod())
        print(f"tree: {len(files)} JPEGs in {args.classes} classes, {sum(sizes) / len(files) / 1024:.1f} KiB and "
              f"{pixels / len(files) / 1e3:.0f} kpixel on average, {sum(sizes) / pixels:.2f} bytes/pixel "
              f"({time.perf_counter() - started:.1f} s to generate and read)")

        loaders = {
            "netspec (ImageFiles + make_loader)": lambda seed: netspec_loader(root, args.batch_size, args.workers,
                                                                              seed),
            "ImageFolder (Pillow) + DataLoader": lambda seed: folder_loader(root, args.batch_size, args.workers,
                                                                            seed, False),
            "ImageFolder (decode_image) + DataLoader": lambda seed: folder_loader(root, args.batch_size,
                                                                                  args.workers, seed, True),
        }
        seconds = {name: [] for name in loaders}
        names = list(loaders)
        for repeat in range(args.repeats):
            # Each repeat starts with the next loader, so that none always follows another's worker shutdown.
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                elapsed, count = one_pass(loaders[name](repeat))
                if count != len(files):
                    raise SystemExit(f"{name} gave {count} images of {len(files)}")
                seconds[name].append(elapsed)

    print(f"\ntorch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; {args.workers} workers, batch {args.batch_size}, "
          f"RandomResizedCrop {CROP[0]} + flip + ToDtype + Normalize; median of {args.repeats} passes\n")
    ours = statistics.median(seconds[names[0]])
    print("| loader | images/s | s per pass | netspec / this |")
    print("|---|---:|---:|---:|")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"| {name} | {len(files) / median:,.0f} | {median:.2f} | {median / ours:.3f} |")


if __name__ == "__main__":
    main()
