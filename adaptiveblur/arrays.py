"""Arrays in, arrays out: the pixels ``adaptiveblur run`` writes, without files.

* :func:`blur_array`: one ``(H, W)`` or ``(H, W, C)`` numpy array (uint8, uint16 or float
  in ``[0, 1]``; C of 1 to 4: gray, gray + alpha, RGB, RGBA), optionally with a map array.
* :func:`blur_pil`: the same for a PIL image.
* :class:`BlurBatch`: settings in the constructor, ``__call__(batch: dict) -> dict`` on a
  column of images, in the containers dataset tools hand over (Ray Data's
  ``map_batches``, Hugging Face ``datasets.map(batched=True)``, Dask, Spark): an
  ``(N, H, W[, C])`` array, an object array of differently sized images, or a list of
  arrays or PIL images; the same container and dtype come back. It imports no Ray, and
  keeps its per-device state (the decoded map, recorded CUDA graphs) between calls.

Integer arrays give exactly the samples ``run`` writes to PNG with the same settings (the
same route: the fused native path on a CPU); float arrays are blurred by torch and come
back as floats, unrounded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptiveblur import io
from adaptiveblur.errors import InvalidParameterError
from adaptiveblur.run import DeviceTokens, FileBlur, check_finite, check_map_size
from adaptiveblur.settings import BlurSettings, FileOptions

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from adaptiveblur.render import Replayer

_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_DEPTHS = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}
# PNG holds 8 and 16 bits in every mode, so an array's depth comes back as it went in.
_FORMAT = "PNG"


def blur_array(
    pixels: np.ndarray,
    map_array: np.ndarray | None = None,
    *,
    resize_map: bool = False,
    **settings: Any,
) -> np.ndarray:
    """Blur one image array as ``adaptiveblur run`` would.

    Args:
        pixels: ``(H, W)`` or ``(H, W, C)``, C in 1..4 (alpha last, straight); uint8,
            uint16, or float with values in ``[0, 1]``.
        map_array: the map (``--map``): an array of the same kinds; its size must be the
            image's unless ``resize_map``.
        settings: the fields of :class:`~adaptiveblur.settings.BlurSettings`
            (``max_sigma=4``, ``focus=0.5``, ``device="cuda"``, ...).

    Returns:
        An array of ``pixels``' shape and dtype.

    Raises:
        InvalidParameterError: a bad setting, or an array that is no image.
        InputImageError: a map of another size (without ``resize_map``).
    """
    return BlurBatch(resize_map=resize_map, **settings).blur(pixels, map_array)


def blur_pil(
    picture: PILImage.Image, map_picture: PILImage.Image | None = None, **settings: Any
) -> PILImage.Image:
    """:func:`blur_array` for a PIL image (modes L, LA, RGB, RGBA, I;16); same mode back."""
    return BlurBatch(**settings).blur_pil(picture, map_picture)


class BlurBatch:
    """A batch callable: ``BlurBatch(max_sigma=4)(batch)`` blurs ``batch[column]``.

    Args:
        column: the key of the images in each batch (Ray Data's ``read_images`` uses
            ``"image"``).
        map_column: a key holding one map per image, else ``None``.
        map_array: one map for every image (decoded once), else ``None``.
        resize_map: resize maps of another size to each image.
        settings: :class:`~adaptiveblur.settings.BlurSettings` fields.

    Raises:
        InvalidParameterError: a bad setting (at construction, before any image).
    """

    def __init__(
        self,
        *,
        column: str = "image",
        map_column: str | None = None,
        map_array: np.ndarray | None = None,
        resize_map: bool = False,
        **settings: Any,
    ) -> None:
        try:
            self.settings = BlurSettings(**settings)
        except TypeError as error:
            raise InvalidParameterError(f"unknown setting: {error}") from None
        self.settings.check()
        self.options = FileOptions(resize_map=resize_map, max_pixels=None)
        self.column, self.map_column = column, map_column
        shared = None if map_array is None else _image_of(map_array, "map_array")
        if shared is not None:
            check_finite(shared, "map_array")
        self._shared = FileBlur(self.settings, self.options, shared)
        self._replayers: dict[str, Replayer] = {}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` with ``batch[column]`` blurred (other keys as they are)."""
        images = batch[self.column]
        maps = None if self.map_column is None else batch[self.map_column]
        out = dict(batch)
        if isinstance(images, np.ndarray) and images.dtype != object:
            blurred = [
                self.blur(images[n], None if maps is None else maps[n]) for n in range(len(images))
            ]
            out[self.column] = np.stack(blurred) if blurred else images.copy()
            return out
        results: list[Any] = []
        for number, image in enumerate(images):
            given_map = None if maps is None else maps[number]
            if hasattr(image, "getbands"):  # a PIL image
                results.append(self.blur_pil(image, given_map))
            else:
                results.append(self.blur(np.asarray(image), given_map))
        if isinstance(images, np.ndarray):
            container = np.empty(len(results), dtype=object)
            container[:] = results
            out[self.column] = container
        else:
            out[self.column] = results
        return out

    def blur(self, pixels: np.ndarray, map_array: np.ndarray | None = None) -> np.ndarray:
        """One array (see :func:`blur_array`)."""
        image = _image_of(pixels, "pixels")
        job = self._shared
        if map_array is not None:
            driver = _image_of(map_array, "map")
            check_finite(driver, "the map")
            job = FileBlur(self.settings, self.options, driver)
        if job.sigma_source is not None and not self.options.resize_map:
            check_map_size(job.sigma_source, image)
        route = job.route_for(image)
        if not _integers(image) and route.engine == "native":
            route = replace(route, engine="torch")  # the fused path reads integer samples
        replayers = None  # a recording keeps its map: only for the map every image shares
        if job is self._shared and route.engine != "native" and route.device.startswith("cuda"):
            self._replayers.setdefault(route.device, _graphs(route.device))
            replayers = self._replayers
        result, _, _ = job.blur_loaded(
            image, _FORMAT, route, DeviceTokens([route.device]), replayers=replayers
        )
        return _array_like(result, pixels)

    def blur_pil(
        self, picture: PILImage.Image, map_picture: PILImage.Image | None = None
    ) -> PILImage.Image:
        """One PIL image (see :func:`blur_pil`)."""
        from PIL import Image as PILImage

        mode = picture.mode
        if mode not in ("L", "LA", "RGB", "RGBA", "I;16"):
            raise InvalidParameterError(
                f"expected a PIL image in L, LA, RGB, RGBA or I;16, got {mode}"
            )
        pixels = np.asarray(picture)
        if mode == "I;16":
            pixels = pixels.astype(np.uint16)
        given_map = None if map_picture is None else np.asarray(map_picture)
        blurred = self.blur(pixels, given_map)
        return PILImage.fromarray(blurred, mode)


def _image_of(pixels: np.ndarray, name: str) -> io.Image:
    """An array as an :class:`io.Image` (integer samples as they are, floats as float pixels)."""
    array = np.asarray(pixels)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in _MODES or 0 in array.shape:
        raise InvalidParameterError(
            f"expected {name} of shape (H, W) or (H, W, C) with C in 1..4, got {array.shape}"
        )
    mode = _MODES[array.shape[2]]
    if array.dtype in _DEPTHS:
        return io.Image(
            pixels=np.ascontiguousarray(array), mode=mode, bit_depth=_DEPTHS[array.dtype]
        )
    if array.dtype.kind == "f":
        values = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InvalidParameterError(f"expected float {name} with values in [0, 1]")
        return io.Image(pixels=values, mode=mode, bit_depth=16)
    raise InvalidParameterError(f"expected {name} of uint8, uint16 or float, got {array.dtype}")


def _integers(image: io.Image) -> bool:
    return np.dtype(image.pixels.dtype).kind in "ui"


def _array_like(result: io.Image, like: np.ndarray) -> np.ndarray:
    """``result``'s pixels in ``like``'s dtype and shape (floats to integers as saving rounds)."""
    pixels = result.pixels
    dtype = np.asarray(like).dtype
    if dtype.kind in "ui" and np.dtype(pixels.dtype) != dtype:
        pixels = io.quantise(np.asarray(pixels, dtype=np.float32), _DEPTHS[dtype]).astype(dtype)
    elif dtype.kind == "f":
        pixels = np.asarray(pixels, dtype=dtype)
    return pixels.reshape(np.shape(like))


def _graphs(device: str) -> Replayer:
    import torch

    from adaptiveblur.batch.graphs import ShapeGraphs

    return ShapeGraphs(torch.device(device))
