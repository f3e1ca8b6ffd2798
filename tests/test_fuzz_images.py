"""Mutated image bytes through netspec's decode, in this process: a crash would kill pytest, so passing means no
mutation here crashed the decoders (issue 27). Each file either decodes to uint8 [C, H, W] or raises, which the
loader turns into a named skip. The long run, with thousands of mutations decoded in child processes, is
bench/image_fuzz.py."""

import io
import random

import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from netspec.train.images import ImageFiles, Skipped, decode  # noqa: E402


def valid_files() -> dict[str, bytes]:
    """A small valid file of each format netspec reads by signature or through Pillow."""
    rng = random.Random(0)
    image = Image.frombytes("RGB", (24, 16), rng.randbytes(24 * 16 * 3))
    found = {}
    for kind, pillow_format, options in (("png", "PNG", {}), ("jpeg", "JPEG", {"quality": 85}),
                                         ("webp", "WEBP", {"quality": 80}), ("gif", "GIF", {}), ("bmp", "BMP", {})):
        buffer = io.BytesIO()
        image.save(buffer, pillow_format, **options)
        found[kind] = buffer.getvalue()
    return found


VALID = valid_files()


@st.composite
def mutated(draw):
    """(format, bytes): a valid file with bytes overwritten, inserted or cut off."""
    kind = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[kind])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(("overwrite", "insert", "truncate", "flip")))
        if how == "overwrite":
            data[at:at + 16] = draw(st.binary(min_size=1, max_size=16))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif how == "truncate":
            del data[max(1, at):]
        else:
            data[at] ^= 1 << draw(st.integers(0, 7))
    return kind, bytes(data)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_images_decode_or_are_skipped(tmp_path, case):
    kind, data = case
    path = tmp_path / f"fuzzed.{kind}"
    path.write_bytes(data)
    try:
        image = decode(path, 3)
    except Exception:  # what ImageFiles turns into a Skipped, named
        item = ImageFiles([(path, 0)], 3)[0]
        assert isinstance(item, Skipped) and item.reason.startswith(f"{path}: ") and len(item.reason) > len(
            str(path)) + 2
    else:
        assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
