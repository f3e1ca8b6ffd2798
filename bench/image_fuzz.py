"""The long image fuzz run (issue 27): mutated PNG, JPEG, WebP, GIF and BMP bytes through an image decoder, each
batch decoded in a child process, so that a crash (a signal) or a hang is counted rather than fatal.

    python bench/image_fuzz.py --mutations 2000                     # netspec's decode, 400 mutations a format
    python bench/image_fuzz.py --mutations 500 --decoder torchvision --formats png jpeg
    python bench/image_fuzz.py --mutations 2000 --keep /tmp/found   # crashing and hanging inputs saved there

Small valid images of each format are written by Pillow (RGB, grey, RGBA or palette; a few sizes), then mutated at
random: bytes flipped, random bytes inserted or overwritten, the file truncated, a chunk of it repeated, or a
header field (PNG's IHDR, a GIF's screen size) set to an extreme. The child decodes the files one by one and says
which it is on; when it dies by a signal the file it was on is a crash, when one file takes longer than --timeout it
is a hang (the child is killed), and the child is restarted on the next file. Decoders:

    netspec       netspec.train.images.decode (what `netspec train` runs): a bad file raises, and is a skip
    torchvision   torchvision.io.decode_image alone (BMP files through Pillow, which torchvision does not read)
    pillow        PIL.Image.open(...).load()

Prints, per format: mutations tried, decoded, skipped (by reason), crashes, hangs; then the totals.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

FORMATS = ("png", "jpeg", "webp", "gif", "bmp")
ROOT = Path(__file__).resolve().parent.parent

# The child: reads "path" lines on stdin, answers "start i", then "ok i" or "skip i reason" for each.
CHILD = r"""
import sys, warnings
warnings.filterwarnings("ignore")
decoder = sys.argv[1]
if decoder == "netspec":
    from pathlib import Path
    from netspec.train.images import decode, failure_reason
    def run(path):
        decode(Path(path), 3)
elif decoder == "torchvision":
    from torchvision.io import ImageReadMode, decode_image, read_file
    from PIL import Image
    def run(path):
        if path.endswith(".bmp"):
            Image.open(path).convert("RGB")
        else:
            decode_image(read_file(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
else:
    from PIL import Image
    def run(path):
        with Image.open(path) as image:
            image.load()
for index, line in enumerate(sys.stdin):
    print("start", index, flush=True)
    try:
        run(line.rstrip("\n"))
        print("ok", index, flush=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print("skip", index, type(err).__name__ + ": " + reason, flush=True)
"""


def samples(seed: int) -> dict[str, list[bytes]]:
    """A few small valid files of each format: RGB, grey, RGBA or palette images of a few sizes."""
    from PIL import Image

    rng = random.Random(seed)
    found: dict[str, list[bytes]] = {kind: [] for kind in FORMATS}
    for width, height in ((1, 1), (7, 5), (32, 24), (64, 48)):
        pixels = bytes(rng.randrange(256) for _ in range(width * height * 4))
        rgba = Image.frombytes("RGBA", (width, height), pixels)
        for mode in ("RGB", "L", "RGBA", "P"):
            image = rgba.convert(mode) if mode != "P" else rgba.convert("RGB").quantize(16)
            for kind, pillow_format, options in (("png", "PNG", {}), ("jpeg", "JPEG", {"quality": 85}),
                                                 ("webp", "WEBP", {"quality": 80}), ("gif", "GIF", {}),
                                                 ("bmp", "BMP", {})):
                if kind == "jpeg" and mode in ("RGBA", "P"):
                    continue
                if kind == "bmp" and mode == "RGBA":
                    continue
                buffer = io.BytesIO()
                image.save(buffer, pillow_format, **options)
                found[kind].append(buffer.getvalue())
    return found


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """One random mutation (sometimes two) of a file's bytes."""
    out = bytearray(data)
    for _ in range(1 + (rng.random() < 0.3)):
        how = rng.randrange(7)
        at = rng.randrange(len(out)) if out else 0
        if how == 0:  # flip a few bits
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(out))
                out[i] ^= 1 << rng.randrange(8)
        elif how == 1:  # set a few bytes to anything
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] = rng.randrange(256)
        elif how == 2:  # insert random bytes
            out[at:at] = rng.randbytes(rng.randint(1, 100))
        elif how == 3:  # overwrite a run with random bytes
            span = rng.randint(1, 100)
            out[at:at + span] = rng.randbytes(span)
        elif how == 4:  # truncate
            del out[max(1, at):]
        elif how == 5:  # repeat a chunk
            span = rng.randint(1, 200)
            out[at:at] = out[at:at + span]
        else:  # an extreme header field: sizes, bit depths, counts
            out = bytearray(extreme_header(bytes(out), kind, rng))
    return bytes(out)


def extreme_header(data: bytes, kind: str, rng: random.Random) -> bytes:
    """A header field set to 0, 1, 0xFF.., or a huge value: PNG IHDR width/height/depth, GIF screen size, or any
    16/32-bit word near the start."""
    out = bytearray(data)
    value = rng.choice((0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 50_000))
    if kind == "png" and len(out) >= 29:
        field = rng.choice((16, 20))
        out[field:field + 4] = (value & 0xFFFFFFFF).to_bytes(4, "big")
        if rng.random() < 0.5:  # keep the CRC right, so the size is believed
            import zlib
            out[29:33] = zlib.crc32(bytes(out[12:29])).to_bytes(4, "big")
    elif kind == "gif" and len(out) >= 10:
        field = rng.choice((6, 8))
        out[field:field + 2] = (value & 0xFFFF).to_bytes(2, "little")
    elif len(out) > 4:
        field = rng.randrange(min(len(out) - 4, 64))
        out[field:field + 4] = (value & 0xFFFFFFFF).to_bytes(4, rng.choice(("big", "little")))
    return bytes(out)


class Child:
    """A decoding process fed one path at a time."""

    def __init__(self, decoder: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen([sys.executable, "-c", CHILD, decoder], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.started = False
        self.pending = b""  # bytes read from the child past the last whole line

    def line(self, timeout: float) -> str | None:
        """The child's next line; None when it died or said nothing for `timeout` seconds. Read unbuffered with
        os.read: select() on a buffered pipe would miss a line already sitting in the buffer."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, left))
            if not ready:
                return None
            more = os.read(self.process.stdout.fileno(), 4096)
            if not more:
                return None
            self.pending += more
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode("utf-8", "replace")

    def decode(self, path: Path, timeout: float, startup: float) -> tuple[str, str]:
        """("ok" | "skip" | "crash" | "hang", detail) for one file."""
        try:
            self.process.stdin.write(f"{path}\n".encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            return self.failure()
        # The first file waits for the child's imports as well.
        begun = self.line(startup if not self.started else timeout)
        self.started = True
        if begun is None:
            return self.failure()
        answer = self.line(timeout)
        if answer is None:
            return self.failure()
        verdict, _, rest = answer.partition(" ")
        detail = rest.partition(" ")[2]
        return verdict, detail

    def failure(self) -> tuple[str, str]:
        try:
            code = self.process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return "hang", ""
        return ("crash", f"signal {-code}") if code < 0 else ("crash", f"exit {code}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def reason_class(detail: str) -> str:
    """A skip's reason without numbers and paths, so that like reasons count together."""
    detail = re.sub(r"/\S+", "<path>", detail)
    detail = re.sub(r"\d[\d,]*", "N", detail)
    return detail[:90]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=2000, help="in all, shared evenly over the formats")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--decoder", choices=("netspec", "torchvision", "pillow"), default="netspec")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one file may take")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="a folder to save crashing and hanging inputs in")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    valid = samples(args.seed)
    per_format = max(1, args.mutations // len(args.formats))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    totals: Counter = Counter()
    print(f"decoder {args.decoder}, {per_format} mutations per format, seed {args.seed}, timeout {args.timeout} s")
    with tempfile.TemporaryDirectory() as work:
        for kind in args.formats:
            counts: Counter = Counter()
            reasons: Counter = Counter()
            child = Child(args.decoder)
            for number in range(per_format):
                data = mutate(rng.choice(valid[kind]), kind, rng)
                path = Path(work) / f"m{number}.{kind}"
                path.write_bytes(data)
                verdict, detail = child.decode(path, args.timeout, startup=120.0)
                counts[verdict] += 1
                if verdict == "skip":
                    reasons[reason_class(detail)] += 1
                if verdict in ("crash", "hang"):
                    if args.keep:
                        (args.keep / f"{verdict}_{args.decoder}_{kind}_{number}.{kind}").write_bytes(data)
                    child = Child(args.decoder)
                path.unlink()
            child.close()
            totals += counts
            print(f"{kind:5} tried {per_format:5}  decoded {counts['ok']:5}  skipped {counts['skip']:5}  "
                  f"crashes {counts['crash']:4}  hangs {counts['hang']:3}")
            for reason, count in reasons.most_common(8):
                print(f"        {count:5}  {reason}")
            if len(reasons) > 8:
                print(f"        {sum(reasons.values()) - sum(c for _, c in reasons.most_common(8)):5}  "
                      f"({len(reasons) - 8} other reasons)")
    tried = per_format * len(args.formats)
    print(f"total tried {tried}  decoded {totals['ok']}  skipped {totals['skip']}  crashes {totals['crash']}  "
          f"hangs {totals['hang']}  ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
