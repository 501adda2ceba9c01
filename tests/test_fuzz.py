"""Mutated image files through ``run``: every outcome is a result or one clean input error.

Small PNG, JPEG, TIFF, WebP, BMP and GIF files have bytes flipped, runs overwritten,
bytes inserted or their tail cut, in the header or the body (seeded; ``--seed`` replays
a failure). Whatever pillow makes of them, the command must exit 0 with a readable
output, or exit 3 (input error) with one line on stderr and nothing left behind: never
an internal error (70), a traceback, a partial output or a temporary.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import features

from adaptiveblur.errors import EXIT_INPUT, EXIT_OK
from tests.helpers import PREFIX, cli, temporaries

CASES_PER_FORMAT = 60
HEADER_BYTES = 64  # mutations aimed at the header land in the first this many bytes
# A damaged header may claim a huge size: the bomb guard refuses it at once (exit 3).
LIMIT = ["--max-pixels", "100000"]

FORMATS = [
    ("png", "PNG", {}),
    ("jpg", "JPEG", {"quality": 80}),
    ("tif", "TIFF", {}),
    ("bmp", "BMP", {}),
    ("gif", "GIF", {}),
]
if features.check("webp"):
    FORMATS.append(("webp", "WEBP", {"quality": 80}))


def encoded(rng: np.random.Generator, format: str, options: dict[str, object]) -> bytes:
    """A small image of a random size and mode, encoded as ``format``."""
    height, width = int(rng.integers(1, 24)), int(rng.integers(1, 24))
    mode = str(
        rng.choice(["L", "RGB", "RGBA"] if format in ("PNG", "TIFF", "WEBP") else ["L", "RGB"])
    )
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    values = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    picture = PILImage.fromarray(values[..., 0] if channels == 1 else values, mode)
    buffer = io.BytesIO()
    picture.save(buffer, format=format, **options)
    return buffer.getvalue()


def mutated(rng: np.random.Generator, data: bytes) -> bytes:
    """``data`` with one random kind of damage, in the header or anywhere."""
    body = bytearray(data)
    span = min(len(body), HEADER_BYTES) if rng.random() < 0.5 else len(body)
    kind = rng.integers(0, 4)
    if kind == 0:  # flip a few bytes
        for position in rng.integers(0, span, int(rng.integers(1, 9))):
            body[position] ^= int(rng.integers(1, 256))
    elif kind == 1:  # overwrite a run with one value (0, 0xFF or random)
        start = int(rng.integers(0, span))
        length = int(rng.integers(1, 17))
        value = int(rng.choice([0, 0xFF, int(rng.integers(0, 256))]))
        body[start : start + length] = bytes([value]) * len(body[start : start + length])
    elif kind == 2:  # insert random bytes
        start = int(rng.integers(0, span))
        body[start:start] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    else:  # cut the tail
        del body[int(rng.integers(0, len(body))) :]
    return bytes(body)


@pytest.mark.parametrize(("extension", "format", "options"), FORMATS, ids=[f[1] for f in FORMATS])
def test_mutated_files_end_in_a_result_or_an_input_error(
    work: Path, capsys, rng: np.random.Generator, extension: str, format: str, options: dict
) -> None:
    outcomes = {EXIT_OK: 0, EXIT_INPUT: 0}
    for case in range(CASES_PER_FORMAT):
        source = work / f"in.{extension}"
        source.write_bytes(mutated(rng, encoded(rng, format, options)))
        out = work / "out.png"
        out.unlink(missing_ok=True)
        code, stdout, err = cli(
            capsys, "run", source.name, out.name, "--max-sigma", "1.5", "-q", *LIMIT
        )
        context = f"case {case}: exit {code}: {err.strip()}"
        assert code in (EXIT_OK, EXIT_INPUT), context
        assert "Traceback" not in err and stdout == "", context
        if code == EXIT_OK:
            with PILImage.open(out) as written:
                written.load()
        else:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(PREFIX), context
            assert not out.exists(), context
        assert temporaries(work) == [], context
        outcomes[code] += 1
    assert outcomes[EXIT_INPUT] > 0  # the damage is real: some files are refused
