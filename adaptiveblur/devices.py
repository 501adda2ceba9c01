"""Choosing the compute device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch

from adaptiveblur.errors import DeviceUnavailableError, InvalidParameterError


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
