"""Images in and out: decode, EXIF orientation, formats, encode, atomic writes, the PNG codec.

The names most callers need are here; each lives in the module of its one job:
:mod:`~adaptiveblur.io.image` (the decoded image, float <-> samples),
:mod:`~adaptiveblur.io.decode`, :mod:`~adaptiveblur.io.exif`,
:mod:`~adaptiveblur.io.formats`, :mod:`~adaptiveblur.io.encode`,
:mod:`~adaptiveblur.io.atomic`, :mod:`~adaptiveblur.io.png` and
:mod:`~adaptiveblur.io.remote` (URLs, through fsspec). No torch here.
"""

from __future__ import annotations

from adaptiveblur.io.atomic import write_text_atomically
from adaptiveblur.io.decode import (
    DEFAULT_MAX_PIXELS,
    check_regular_file,
    image_size,
    load_image,
    open_regular_file,
    regular_file_problem,
)
from adaptiveblur.io.encode import save_image
from adaptiveblur.io.formats import (
    SUPPORTED_OUTPUT_FORMATS,
    check_float_range,
    check_output_format,
    check_quality,
    format_for_path,
    output_bit_depth,
    readable_extensions,
)
from adaptiveblur.io.image import (
    ALPHA_MODES,
    FLOAT_DEPTH,
    MAX_VALUE,
    MODES,
    SAMPLE_TYPES,
    Image,
    has_alpha,
    quantise,
    to_float,
)

__all__ = [
    "ALPHA_MODES",
    "DEFAULT_MAX_PIXELS",
    "FLOAT_DEPTH",
    "MAX_VALUE",
    "MODES",
    "readable_extensions",
    "SAMPLE_TYPES",
    "SUPPORTED_OUTPUT_FORMATS",
    "Image",
    "check_float_range",
    "check_output_format",
    "check_quality",
    "check_regular_file",
    "open_regular_file",
    "regular_file_problem",
    "format_for_path",
    "has_alpha",
    "image_size",
    "load_image",
    "output_bit_depth",
    "quantise",
    "save_image",
    "to_float",
    "write_text_atomically",
]
