"""Hostile image files (issue 27): corrupt PNGs that crashed torchvision's decoder, a decompression bomb, a FIFO and
a symbolic-link loop in a class folder, and unreadable images in the test split. Each must be skipped, named
once and counted, in training, validation and test alike, and never crash, hang or exhaust the run."""

import contextlib
import io
import os
import random
import re
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

import netspec  # noqa: E402
from netspec.semantics.recipe import Recipe  # noqa: E402
from netspec.train import DataOptions, RunOptions, run  # noqa: E402
from netspec.train.images import (MAX_PIXELS, ImageFiles, ImageTooLarge, Skipped, decode, make_loader,  # noqa: E402
                                  scan_image_folder)

ROOT = Path(__file__).resolve().parent.parent
# Seconds a step may take on a loaded 2-core machine before it counts as a hang: far above the expected time.
DEADLINE = 120
SUBPROCESS_TIMEOUT = 600


@contextlib.contextmanager
def deadline(seconds=DEADLINE):
    """Fail (rather than wait for ever) when the body blocks longer than `seconds`: SIGALRM interrupts a blocking
    open() of a FIFO."""
    def expired(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def png_bytes(width=24, height=16, seed=0, mode="RGB"):
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def corrupted_pngs(count=30, seed=0):
    """`count` PNGs, each a valid one with 100 random bytes written over its image data (issue 27's recipe)."""
    valid = png_bytes(48, 32)
    rng = random.Random(seed)
    found = []
    for _ in range(count):
        data = bytearray(valid)
        at = rng.randrange(41, len(data) - 112)  # past the signature and IHDR, inside IDAT
        data[at:at + 100] = rng.randbytes(100)
        found.append(bytes(data))
    return found


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width=50_000, height=50_000) -> bytes:
    """A PNG whose header says width x height RGB pixels, with a few bytes of image data: a few hundred bytes
    that would decode to 7.5 GB. The ceiling must refuse it on the header alone."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000)))
            + chunk(b"IEND", b""))


def valid_png(path, seed=0, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(seed=seed, mode=mode))
    return path


# ---------------------------------------------------------------------------------------------------------------
# Decoding

def test_corrupted_pngs_are_skipped_and_named_not_crashes(tmp_path):
    """30 corrupted PNGs crashed torchvision.io's PNG decoder (SIGSEGV) 30 times out of 30; here, in this very
    process, each is skipped with its reason, once, through the loader."""
    folder = tmp_path / "bad"
    folder.mkdir()
    items = []
    for number, data in enumerate(corrupted_pngs()):
        (folder / f"{number:02}.png").write_bytes(data)
        items.append((folder / f"{number:02}.png", 0))
    loader = make_loader(ImageFiles(items, 3), 8, list(range(len(items))), workers=0, pin_memory=False,
                         generator=None)
    with deadline():
        batches = list(loader)
    skipped = [reason for _, _, reasons in batches for reason in reasons]
    assert sum(len(y) for _, y, _ in batches) == 0
    assert [reason.split(": ")[0] for reason in skipped] == [str(path) for path, _ in items]
    assert all(len(reason.split(": ", 1)[1]) > 3 for reason in skipped)


def test_corrupted_pngs_through_worker_processes(tmp_path):
    """Issue 27 saw exit 3 with DataLoader workers: a worker killed by a signal. Two workers, a few bad files
    among good ones: the good ones are batched, the bad ones named."""
    items = []
    for number, data in enumerate(corrupted_pngs(6, seed=1)):
        (tmp_path / f"bad{number}.png").write_bytes(data)
        items.append((tmp_path / f"bad{number}.png", 0))
        items.append((valid_png(tmp_path / f"good{number}.png", seed=number), 1))
    from netspec.train.transforms import eval_transform

    dataset = ImageFiles(items, 3, eval_transform(Recipe(), (16, 16), False, [0.5] * 3, [0.25] * 3))
    loader = make_loader(dataset, 4, list(range(len(items))), workers=2, pin_memory=False,
                         generator=torch.Generator().manual_seed(0))
    with deadline():
        batches = list(loader)
    assert sum(len(y) for _, y, _ in batches) == 6
    assert sorted(r.split(": ")[0] for _, _, rs in batches for r in rs) == sorted(
        str(tmp_path / f"bad{n}.png") for n in range(6))


def test_a_decompression_bomb_is_refused_on_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    assert bomb.stat().st_size < 1000
    with pytest.raises(ImageTooLarge, match=re.escape(f"50,000 x 50,000 pixels, over the limit of {MAX_PIXELS:,}")):
        decode(bomb, 3)
    assert ImageFiles([(bomb, 0)], 3)[0] == Skipped(
        f"{bomb}: 50,000 x 50,000 pixels, over the limit of 89,478,485")
    # Just within a lower ceiling the same header passes the check (and then fails on its short data).
    small = tmp_path / "small.png"
    small.write_bytes(png_bomb(100, 100))
    with pytest.raises(ImageTooLarge, match=r"100 x 100 pixels, over the limit of 9,999"):
        decode(small, 3, max_pixels=9_999)
    # A format read through Image.open (BMP): Pillow's own ceiling refuses it first; the reason still says so.
    header = struct.pack("<2sIHHI", b"BM", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 50_000, 50_000, 1, 24,
                                                                      0, 0, 0, 0, 0, 0)
    (tmp_path / "bomb.bmp").write_bytes(header + bytes(64))
    with pytest.raises(ImageTooLarge, match=r"2,500,000,000 pixels, over the limit of 89,478,485"):
        decode(tmp_path / "bomb.bmp", 3)


def test_pngs_decode_as_torchvision_decoded_them():
    """PNGs moved from torchvision.io's decoder to Pillow's: every kind of PNG gives the same RGB pixels, and the
    same grey ones for grey PNGs (colour PNGs read grey go through rgb_to_grayscale, as other formats do)."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    rng = random.Random(3)
    rgba = Image.frombytes("RGBA", (17, 13), rng.randbytes(17 * 13 * 4))
    palette = rgba.convert("RGB").quantize(64)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    wide = Image.frombytes("I;16", (17, 13), rng.randbytes(17 * 13 * 2))
    kinds = {"rgb": rgba.convert("RGB"), "rgba": rgba, "grey": rgba.convert("L"), "grey_alpha": rgba.convert("LA"),
             "palette": palette, "palette_alpha": transparent, "bits": rgba.convert("1"), "grey16": wide}
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for name, image in kinds.items():
            path = Path(folder) / f"{name}.png"
            image.save(path)
            data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
            colour = decode_image(data, mode=ImageReadMode.RGB)
            grey = decode_image(data, mode=ImageReadMode.GRAY)
            if colour.dtype != torch.uint8:
                colour, grey = ((x.to(torch.int32) >> 8).to(torch.uint8) for x in (colour, grey))
            assert torch.equal(decode(path, 3), colour), name
            if image.mode in ("RGB", "RGBA", "P"):  # libpng's own RGB-to-grey differed by a level at most
                assert torch.equal(decode(path, 1), TF.rgb_to_grayscale(colour)), name
                assert (decode(path, 1).int() - grey.int()).abs().max() <= 1, name
            else:
                assert torch.equal(decode(path, 1), grey), name


# ---------------------------------------------------------------------------------------------------------------
# Scanning

def test_a_fifo_in_a_class_folder_is_skipped_not_waited_on(tmp_path):
    valid_png(tmp_path / "train" / "cat" / "a.png")
    valid_png(tmp_path / "train" / "dog" / "a.png", seed=1)
    fifo = tmp_path / "train" / "dog" / "pipe.png"
    os.mkfifo(fifo)
    with deadline():
        items = scan_image_folder(tmp_path).splits["train"]
        assert [path.name for path, _ in items] == ["a.png", "a.png", "pipe.png"]
        assert ImageFiles(items, 3)[2] == Skipped(f"{fifo}: a FIFO (named pipe), not a regular file")
        with pytest.raises(OSError, match="a FIFO"):
            decode(fifo, 3)


def test_symlink_loops_add_nothing(tmp_path):
    cat = tmp_path / "train" / "cat"
    for n in range(3):
        valid_png(cat / f"{n}.png", seed=n)
    valid_png(cat / "deeper" / "3.png", seed=3)
    (cat / "a").symlink_to(".")  # issue 27: this multiplied the class's images 41-fold
    (cat / "deeper" / "up").symlink_to("..")
    (cat / "self").symlink_to("self")  # a link to itself: not a folder, not an image
    valid_png(tmp_path / "train" / "dog" / "0.png")
    with deadline():
        items = scan_image_folder(tmp_path).splits["train"]
    assert [str(path.relative_to(tmp_path)) for path, _ in items] == [
        "train/cat/0.png", "train/cat/1.png", "train/cat/2.png", "train/cat/deeper/3.png", "train/dog/0.png"]


def test_a_link_to_another_folder_is_still_followed(tmp_path):
    """Links are followed (ImageFolder follows them): a class folder may gather images kept elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    valid_png(elsewhere / "x.png")
    valid_png(tmp_path / "tree" / "train" / "cat" / "0.png")
    (tmp_path / "tree" / "train" / "cat" / "more").symlink_to(elsewhere)
    items = scan_image_folder(tmp_path / "tree").splits["train"]
    assert [path.name for path, _ in items] == ["0.png", "x.png"]


# ---------------------------------------------------------------------------------------------------------------
# Whole runs

TINY = "network Tiny(classes=2) { input x: [3, 16, 16]  conv(4, kernel=3) -> relu()  global_avgpool()  flatten()  " \
       "linear(classes) }"


def hostile_tree(root: Path) -> tuple[Path, dict]:
    """train/ and test/ of two classes, 8 and 4 good PNGs each, with a corrupted PNG in train/ and test/, a bomb
    in test/, a FIFO in train/ and a symlink loop in train/."""
    for split, count in (("train", 8), ("test", 4)):
        for label, name in enumerate(("dark", "light")):
            for i in range(count):
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                shade = 40 + 160 * label
                Image.new("RGB", (16 + i, 16), (shade, shade, shade)).save(path)
    bad = corrupted_pngs(2, seed=7)
    hostile = {"train_corrupt": root / "train" / "dark" / "corrupt.png",
               "test_corrupt": root / "test" / "light" / "corrupt.png",
               "test_bomb": root / "test" / "dark" / "bomb.png",
               "train_fifo": root / "train" / "light" / "pipe.png"}
    hostile["train_corrupt"].write_bytes(bad[0])
    hostile["test_corrupt"].write_bytes(bad[1])
    hostile["test_bomb"].write_bytes(png_bomb())
    os.mkfifo(hostile["train_fifo"])
    (root / "train" / "dark" / "loop").symlink_to(".")
    return root, hostile


def test_bad_test_images_are_left_out_of_the_test_count(tmp_path):
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    root, hostile = hostile_tree(tmp_path / "tree")
    messages = []
    with deadline(300):
        result = run(netspec.load(spec), Recipe(data="imagefolder", epochs=1, batch_size=8, lr=0.01, validation=0),
                     tmp_path / "run", str(root), "cpu", progress=False, log=messages.append,
                     options=RunOptions(data=DataOptions(workers=0)))
    assert "tree streamed: 18 train, 10 test" in messages[0]  # the loop added nothing
    named = [m.split(": ", 1)[1] for m in messages if m.startswith("skipped an unreadable image: ")]
    reasons = dict(line.split(": ", 1) for line in named)
    assert len(reasons) == len(named)  # each named once
    assert {hostile["train_corrupt"], hostile["train_fifo"]} <= {Path(path) for path in reasons}
    assert reasons[str(hostile["train_fifo"])] == "a FIFO (named pipe), not a regular file"
    assert result["test_images"] == 8  # 10 files, 2 unreadable: 8 evaluated, 8 reported
    assert re.search(r"^test: .*\(loss .*, 8 images\)", "\n".join(messages), re.M)
    assert result["skipped_images"] == 4


def test_evaluation_names_each_skipped_image_once(tmp_path):
    from netspec.train.distributed import Context
    from netspec.train.loop import evaluate
    from netspec.train.streamed import StreamedSplit
    from netspec.train.transforms import eval_transform

    root, hostile = hostile_tree(tmp_path / "tree")
    items = scan_image_folder(root).splits["test"]
    dataset = ImageFiles(items, 3, eval_transform(Recipe(), (16, 16), False, [0.5] * 3, [0.25] * 3))
    split = StreamedSplit(dataset, Context(torch.device("cpu")), 0, 0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    graph = netspec.load(spec)
    for _ in range(2):  # each evaluation tries every file again, and names what it skipped
        messages = []
        loss, accuracy = evaluate(model, graph, Recipe(), split, lambda x: x, 4, split.ctx, log=messages.append)
        assert split.images == 8 and 0 <= accuracy <= 1
        assert messages == [f"skipped an unreadable image: {hostile['test_bomb']}: 50,000 x 50,000 pixels, over the "
                            "limit of 89,478,485",
                            f"skipped an unreadable image: {hostile['test_corrupt']}: "
                            + messages[1].split(": ", 2)[2]]


def test_netspec_train_on_hostile_files_exits_0_naming_them(tmp_path):
    """End to end through the command line, in a subprocess: a crash would be a signal, a hang the timeout."""
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    root, hostile = hostile_tree(tmp_path / "tree")
    done = subprocess.run(
        [sys.executable, "-m", "netspec", "train", str(spec), "--data", "imagefolder", "--data-dir", str(root),
         "--device", "cpu", "--no-progress", "--epochs", "1", "--batch-size", "8", "--validation", "0",
         "--workers", "1", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert f"skipped an unreadable image: {hostile['train_corrupt']}: " in out
    assert f"skipped an unreadable image: {hostile['train_fifo']}: a FIFO (named pipe), not a regular file" in out
    assert re.search(r"test: .*8 images\)", out), out[-2000:]
