"""``adaptive_blur`` as a ``torch.library`` custom op, so ``torch.compile(fullgraph=True)`` captures it.

The eager function reads the sigma map back to size its tiles and loops over them in
Python, which a compiled graph cannot hold. Under ``torch.compile`` it calls
``adaptiveblur::adaptive_blur`` instead: one opaque op with a shape function (the output
is the image's shape) and a registered backward, ``adaptiveblur::adaptive_blur_backward``,
which recomputes the blur under autograd and returns the gradients to the image and to
sigma (the native CPU backward, or the reference one, as eager gradients are). Both run
the eager code when the compiled graph executes, so results and gradients are the eager
ones. Not twice differentiable.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch


def blur_op(
    image: torch.Tensor,
    sigma: torch.Tensor,
    truncate: float,
    border: str,
    method: str,
    backend: str | None,
    max_memory: int | None,
    sigma_bound: float | None,
) -> torch.Tensor:
    """``adaptive_blur(image, sigma, ...)`` through the custom op (same arguments, tensors only)."""
    return torch.ops.adaptiveblur.adaptive_blur(
        image, sigma, truncate, border, method, backend, max_memory, sigma_bound
    )


def _eager(image: torch.Tensor, sigma: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
    from adaptiveblur.ops.blur import adaptive_blur

    return adaptive_blur(image, sigma, **options)


def _options(
    truncate: float,
    border: str,
    method: str,
    backend: str | None,
    max_memory: int | None,
    sigma_bound: float | None,
) -> dict[str, Any]:
    return {
        "truncate": truncate,
        "border": border,
        "method": method,
        "backend": backend,
        "max_memory": max_memory,
        "sigma_bound": sigma_bound,
    }


@torch.library.custom_op("adaptiveblur::adaptive_blur", mutates_args=())
def _blur(
    image: torch.Tensor,
    sigma: torch.Tensor,
    truncate: float,
    border: str,
    method: str,
    backend: str | None,
    max_memory: int | None,
    sigma_bound: float | None,
) -> torch.Tensor:
    options = _options(truncate, border, method, backend, max_memory, sigma_bound)
    with torch.no_grad():
        return _eager(image, sigma, options).clone()


@_blur.register_fake
def _blur_shape(
    image: torch.Tensor,
    sigma: torch.Tensor,
    truncate: float,
    border: str,
    method: str,
    backend: str | None,
    max_memory: int | None,
    sigma_bound: float | None,
) -> torch.Tensor:
    return torch.empty_like(image)


@torch.library.custom_op("adaptiveblur::adaptive_blur_backward", mutates_args=())
def _blur_backward(
    grad_out: torch.Tensor,
    image: torch.Tensor,
    sigma: torch.Tensor,
    truncate: float,
    border: str,
    method: str,
    backend: str | None,
    max_memory: int | None,
    sigma_bound: float | None,
    wanted: list[bool],
) -> list[torch.Tensor]:
    """The gradients to ``image`` and ``sigma`` (an empty tensor for one not ``wanted``)."""
    options = _options(truncate, border, method, backend, max_memory, sigma_bound)

    def differentiate() -> list[torch.Tensor]:
        inputs = [
            image.detach().requires_grad_(wanted[0]),
            sigma.detach().requires_grad_(wanted[1]),
        ]
        needed = [tensor for tensor in inputs if tensor.requires_grad]
        if not needed:
            return []
        out = _eager(inputs[0], inputs[1], options)
        return list(torch.autograd.grad(out, needed, grad_out))

    # An op's kernel runs below autograd, which then records nothing, even under
    # enable_grad(). What autograd skips is kept per thread, so the recomputed blur is
    # differentiated on a thread of its own, where autograd records as usual.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptiveblur-grad") as pool:
        found = iter(pool.submit(differentiate).result())
    return [next(found) if want else image.new_empty(0) for want in wanted]


@_blur_backward.register_fake
def _blur_backward_shape(
    grad_out: torch.Tensor,
    image: torch.Tensor,
    sigma: torch.Tensor,
    truncate: float,
    border: str,
    method: str,
    backend: str | None,
    max_memory: int | None,
    sigma_bound: float | None,
    wanted: list[bool],
) -> list[torch.Tensor]:
    return [
        torch.empty_like(like) if want else image.new_empty(0)
        for want, like in zip(wanted, (image, sigma), strict=True)
    ]


def _setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    image, sigma, *options = inputs
    ctx.save_for_backward(image, sigma)
    ctx.options = options


def _gradients(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    image, sigma = ctx.saved_tensors
    wanted = [bool(flag) for flag in ctx.needs_input_grad[:2]]
    grads = torch.ops.adaptiveblur.adaptive_blur_backward(
        grad_out, image, sigma, *ctx.options, wanted
    )
    return (*(grad if want else None for grad, want in zip(grads, wanted, strict=True)),) + (
        None,
    ) * len(ctx.options)


_blur.register_autograd(_gradients, setup_context=_setup)
