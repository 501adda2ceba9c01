"""Choosing the compute device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

:func:`parse_device` and :func:`cuda_visible` need no torch (the command line decides
with them whether torch is needed at all); :func:`resolve_device` imports it.
"""

from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING

from adaptiveblur.errors import DeviceUnavailableError, InvalidParameterError

if TYPE_CHECKING:
    import torch


def parse_device(device: str) -> tuple[str, int | None]:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as ``(kind, index)``.

    Raises:
        InvalidParameterError: the name is not one of those.

    Example:
        >>> parse_device("auto"), parse_device(" CUDA:1 ")
        (('auto', None), ('cuda', 1))
    """
    text = device.strip().lower() if isinstance(device, str) else ""
    kind, _, index = text.partition(":")
    if kind in ("auto", "cpu") and not index:
        return kind, None
    if kind == "cuda" and (not index or index.isdigit()):
        return kind, int(index) if index else None
    raise InvalidParameterError(
        f"expected a device like 'auto', 'cpu', 'cuda' or 'cuda:1', got {device!r}"
    )


def cuda_visible() -> bool:
    """Whether this machine looks like it has a usable NVIDIA GPU, asked without torch.

    True when the NVIDIA driver lists a GPU (or its device file is there) and
    ``CUDA_VISIBLE_DEVICES`` does not hide them all. It can be wrong the other way (a
    CPU-only torch on a GPU host); :func:`resolve_device` has the last word.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and (not visible.strip() or visible.strip().startswith("-1")):
        return False
    return bool(glob.glob("/proc/driver/nvidia/gpus/*")) or os.path.exists("/dev/nvidia0")


def resolve_device(
    device: str | torch.device | None, fallback: torch.device | None = None
) -> torch.device:
    """Turn a user's device request into a usable :class:`torch.device`.

    ``None`` means ``fallback`` (the input's device) when given, else ``auto``; ``auto``
    means the first CUDA device when there is one, else the CPU.

    Raises:
        InvalidParameterError: the name is not a device.
        DeviceUnavailableError: CUDA was asked for and is not there.
    """
    import torch

    if device is None and fallback is not None:
        return fallback
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, ValueError) as error:
        raise InvalidParameterError(
            f"expected a device like 'auto', 'cpu', 'cuda' or 'cuda:1', got {device!r}"
        ) from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {str(resolved)!r} was requested but CUDA is not available on this machine"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise DeviceUnavailableError(
                f"device {str(resolved)!r} was requested but this machine has {count} CUDA device(s)"
            )
    elif resolved.type != "cpu":
        raise InvalidParameterError(f"expected a device of type 'cpu' or 'cuda', got {device!r}")
    return resolved
