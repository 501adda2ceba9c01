"""Reference for the "levels + strips" fast method: untruncated levels, truncation restored per pixel.

The exact operator at a pixel ``p`` with sigma ``s`` and radius ``R = floor(truncate * s
+ 0.5)`` is the separable kernel ``(g 1_R) x (g 1_R) / N**2``, where ``g`` is the sampled
Gaussian of ``s`` normalised over all integers and ``N`` its mass on ``|d| <= R``. By
inclusion-exclusion on the square ``|dx|, |dy| <= R``::

    (g 1_R) x (g 1_R) = g x g  -  (g 1_{dx>R} + g 1_{dx<-R}) x g  -  g x (g 1_{dy>R} + g 1_{dy<-R})
                        +  corners (both |dx| and |dy| > R)

This module applies, for every pixel with ``R > EXACT_RADIUS``::

    out(p) = sum_k w_k(s) [ U_k(p) - sum_m a_km (Ex_km(x+R+1) + Ex_km(R+1-x) + Ey_km(y+R+1) + Ey_km(R+1-y)) ]
             / (1 - 4 sum_k w_k sum_m a_km / (1 - z_km))

- ``U_k``: the image blurred with the *untruncated* sampled Gaussian of node ``s_k``.
- ``w_k``: cubic Lagrange weights in ``log(s)`` over four nodes (:func:`node_sigmas`,
  :func:`adaptiveblur.ops.levels.stencil_weights`).
- ``Ex_km(u) = sum_{t >= 0} z_km**t Yk(u + t)`` along x, where ``Yk`` is the image blurred
  along y only at ``s_k``; ``Ey_km`` is the same with the axes swapped. The strips beyond
  the window edge are then one read per pole, at the pixel's own offset ``R + 1``; the left
  (top) strip reads ``Ex`` at ``R + 1 - x`` because the mirrored image is even.
- ``z_km = exp(-c_m / s_k)`` with :data:`POLE_RATES` ``c_m``; ``a_km`` fit the tail
  ``g_s(R + 1 + t), t >= 0`` by least squares, tabulated per radius (:func:`tail_coefficients`).
- The corners are dropped; the denominator makes the kernel's mass exactly 1 (a constant
  image stays constant).

Borders: mirrored (torch ``reflect``, scipy ``mirror``) only. Every image above is
computed by FFT over one period ``2 n - 2`` of the mirrored extension, so the operator is
exactly the infinite-plane operator applied to the mirrored extension (see
``docs/strips_method.md``). Pixels with ``0 < R <= EXACT_RADIUS`` are computed exactly by
:func:`adaptiveblur.ops.small_exact.blur_exact_small`; ``R = 0`` pixels are copied.

Cost per pixel does not depend on sigma apart from the node count (``log(sigma)``): per
node one main image and ``2 * len(POLE_RATES)`` strip images (FFT here, recursions in a
fused kernel) and, per pixel, 4 stencil nodes x (1 + 4 x 3) reads. This reference is
plain torch on CPU (float32 or float64 images; per-pixel coefficients in float64).

The effective kernel of one pixel, built from the same functions (:func:`pixel_kernel`),
gives the proven bound :data:`ERROR_BOUND` (``python benchmarks/bench_fast.py
--strips-bound``). With ``main="pyramid"`` the ``U_k`` come from a decimated Gaussian
pyramid with Gaussian reconstruction (:func:`pyramid_levels`, cost per pixel independent
of sigma); its per-phase kernels (:func:`pyramid_kernel`) enter the bound
:data:`PYRAMID_ERROR_BOUND` (``--strips-bound --strips-main pyramid``). With
``strips="recursive"`` the strip images come without FFT (:func:`strip_images`): the
profiles ``Yk`` from the same pyramid along one axis (full resolution along the other),
then the one-sided recursion as a blocked scan started from the closed-form periodic sum
(:func:`geometric_scan`, exact: no truncated tail); the profiles' deviation enters
:data:`RECURSIVE_ERROR_BOUND` (``--strips-bound --strips-main pyramid --strips-images
recursive``). Derivation and measurements: ``docs/strips_method.md``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from adaptiveblur.borders import read_window
from adaptiveblur.errors import InvalidParameterError
from adaptiveblur.kernels import DEFAULT_TRUNCATE, radius_map
from adaptiveblur.ops.levels import EXACT_RADIUS, level_sigmas, stencil_weights
from adaptiveblur.ops.small_exact import blur_exact_small
from adaptiveblur.ops.tile import TileInput

LEVELS_PER_OCTAVE = 5  # node density; the bound below is proven for 5 (and printed for 4)
POLE_RATES = (2.5, 4.0, 7.0)  # strip poles z = exp(-c / s_k) for each node s_k
TABLE_STEPS = 4  # least-squares tail fits per radius band, linearly interpolated in sigma
# Proven max |fast - exact| for images in [0, 1], truncate 3, 5 levels per octave, pixel
# sigmas up to 256 (``bench_fast.py --strips-bound``); a ceiling over the printed maximum.
ERROR_BOUND = 0.1 / 255
MAIN_TERMS = ("fft", "pyramid")  # how the untruncated main term U_k is computed
# The same with main="pyramid" (``--strips-bound --strips-main pyramid``), pixel sigmas up
# to 256 (max 0.0859 LSB).
PYRAMID_ERROR_BOUND = 0.1 / 255
STRIP_TERMS = ("fft", "recursive")  # how the strip images Ex_km, Ey_km are computed
# The same with strips="recursive" (profiles on the pyramid, recursions along the strip
# axis), with either main term (``--strips-bound --strips-images recursive``).
RECURSIVE_ERROR_BOUND = 0.1 / 255
_SCAN_BLOCK = 32  # block length of the recursions' blocked scan (multiply-adds per pixel)

_STENCIL = 4  # cubic Lagrange in log(sigma), as in adaptiveblur.ops.levels
_POISSON_TERMS = 3  # aliases m = -3..3 in the Gaussian's spectrum (ample for s >= 1)


def strips_blur(
    image: torch.Tensor,
    sigma: torch.Tensor,
    truncate: float = DEFAULT_TRUNCATE,
    levels_per_octave: int = LEVELS_PER_OCTAVE,
    main: str = "fft",
    strips: str = "fft",
) -> torch.Tensor:
    """Blur ``image`` with per-pixel ``sigma`` within :data:`ERROR_BOUND` of the exact blur.

    Args:
        image: ``(B, C, H, W)`` float32 or float64, on the CPU.
        sigma: ``(B, 1, H, W)`` or ``(1, 1, H, W)`` per-pixel sigma in pixels, finite, ``>= 0``.
        truncate: window radius in sigmas (``R = floor(truncate * sigma + 0.5)``), ``> 0``.
        levels_per_octave: node density (the bound is proven for the default).
        main: how the main term ``U_k`` is computed: ``"fft"`` (over the mirrored period) or
            ``"pyramid"`` (:func:`pyramid_levels`; bound :data:`PYRAMID_ERROR_BOUND`).
        strips: how the strip images are computed: ``"fft"`` (exact profiles and geometric
            sums by FFT) or ``"recursive"`` (:func:`strip_images`: profiles on the pyramid,
            first-order recursions; bound :data:`RECURSIVE_ERROR_BOUND`).

    Returns:
        ``(B, C, H, W)`` in ``image``'s dtype; mirrored borders.

    Raises:
        InvalidParameterError: wrong ranks, shapes, dtypes, a non-finite or negative sigma, or
            ``truncate <= 0`` / ``levels_per_octave < 1``, or ``main`` not in :data:`MAIN_TERMS`
            or ``strips`` not in :data:`STRIP_TERMS`.
    """
    _check(image, sigma, truncate, levels_per_octave)
    _check_terms(main, strips)
    batch, _, height, width = image.shape
    sigma = sigma.expand(batch, 1, height, width).to(torch.float64)
    radius = radius_map(sigma, truncate)
    output = image.clone()  # radius 0: as is
    small = (radius > 0) & (radius <= EXACT_RADIUS)
    large = radius > EXACT_RADIUS
    if bool(small.any()):
        reach = int(radius[small].max())
        padded = read_window(image, -reach, height + reach, -reach, width + reach, "reflect")
        tile = TileInput(
            padded.contiguous(),
            sigma.to(image.dtype),
            torch.where(small, radius, 0),
            reach,
            truncate=truncate,
        )
        blur_exact_small(tile, reach, output)
    if bool(large.any()):
        lowest = float(sigma[large].min())
        highest = float(sigma[large].max())
        nodes = node_sigmas(lowest, highest, levels_per_octave)
        blurred = _large_blur(image, sigma, radius, large, nodes, truncate, main, strips)
        output = torch.where(large, blurred, output)
    return output


def node_sigmas(lowest: float, highest: float, per_octave: int = LEVELS_PER_OCTAVE) -> list[float]:
    """Ascending node sigmas for pixel sigmas in ``[lowest, highest]``:
    :func:`adaptiveblur.ops.levels.level_sigmas` with ``per_octave`` nodes per octave
    (``highest``, then ``highest * 2**(-(k + 1/2) / per_octave)`` down to the first node
    below ``lowest`` and one more; at least four nodes)."""
    return level_sigmas(lowest, highest, per_octave)


def poles(node: float) -> np.ndarray:
    """The strip poles of node sigma ``node``: ``exp(-c / node)`` for ``c`` in :data:`POLE_RATES`."""
    return np.exp(-np.asarray(POLE_RATES, dtype=np.float64) / node)


def gaussian_mass(sigma: float) -> float:
    """``sum_{d in Z} exp(-d^2 / (2 sigma^2))`` (Poisson summation, exact to rounding)."""
    m = np.arange(1, _POISSON_TERMS + 1)
    return (
        sigma
        * math.sqrt(2 * math.pi)
        * (1.0 + 2.0 * float(np.exp(-2 * (math.pi * sigma * m) ** 2).sum()))
    )


@functools.lru_cache(maxsize=65536)
def _tail_table(node: float, radius: int, truncate: float) -> np.ndarray:
    """Least-squares coefficients ``(TABLE_STEPS + 1, M)`` of the tail at ``radius``.

    Row ``q`` is for ``s_q = lo + q (hi - lo) / TABLE_STEPS`` over the radius band
    ``[lo, hi] = [(R - 1/2), (R + 1/2)] / truncate``: the ``a`` minimising
    ``sum_{t >= 0} (g_s(R + 1 + t) - sum_m a_m z_m**t)**2`` (Gram matrix in closed form).
    """
    z = poles(node)
    lo, hi = (radius - 0.5) / truncate, (radius + 0.5) / truncate
    gram = 1.0 / (1.0 - z[:, None] * z[None, :])
    steps = np.arange(TABLE_STEPS + 1)
    sigmas = lo + (hi - lo) * steps / TABLE_STEPS
    length = int(math.ceil(max(12.0 * hi, 40.0 * node / min(POLE_RATES)))) + 16
    t = np.arange(length, dtype=np.float64)
    d = radius + 1 + t
    tails = np.exp(-(d[None, :] ** 2) / (2.0 * sigmas[:, None] ** 2))
    tails /= np.array([gaussian_mass(s) for s in sigmas])[:, None]
    basis = z[None, :] ** t[:, None]  # (length, M)
    rhs = tails @ basis  # (Q + 1, M)
    return np.linalg.solve(gram, rhs.T).T


def tail_coefficients(
    sigma: np.ndarray, radius: np.ndarray, node: float, truncate: float
) -> np.ndarray:
    """Each pixel's strip coefficients ``a_m`` for node ``node``: ``(len(sigma), M)`` float64.

    Linear interpolation in sigma of :func:`_tail_table` within the pixel's radius band
    (a sigma rounded just outside its band is clamped to the band's end).
    """
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    radius = np.asarray(radius, dtype=np.int64).reshape(-1)
    values, inverse = np.unique(radius, return_inverse=True)  # O(N log N), not O(N * radii)
    if values.size == 0:
        return np.empty((0, len(POLE_RATES)))
    tables = np.stack([_tail_table(float(node), int(v), float(truncate)) for v in values])
    lo, hi = (values - 0.5) / truncate, (values + 0.5) / truncate
    u = np.clip((sigma - lo[inverse]) / (hi - lo)[inverse] * TABLE_STEPS, 0.0, TABLE_STEPS)
    first = np.minimum(np.floor(u).astype(np.int64), TABLE_STEPS - 1)
    frac = (u - first)[:, None]
    return (1.0 - frac) * tables[inverse, first] + frac * tables[inverse, first + 1]


def pixel_kernel(
    sigma: float,
    nodes: list[float],
    truncate: float,
    reach: int,
    main: str = "fft",
    strips: str = "fft",
    position: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray, float]:
    """The effective 1-D factors of one pixel's kernel, for the bound and the tests.

    Built from the functions the operator uses (:func:`adaptiveblur.ops.levels.stencil_weights`
    in float64, :func:`tail_coefficients`, :func:`poles`); offsets ``-reach..reach``. With
    ``main="pyramid"`` the main term's factors, and with ``strips="recursive"`` the strips'
    profiles along the edge, are the pyramid's kernels (:func:`pyramid_kernel`) at the
    phases of the pixel at ``position = (y, x)`` (cropped to ``-reach..reach``).

    Returns:
        ``(rows, cols, scale)``: the kernel is ``scale * sum_j rows[j] (x) cols[j]``
        (``rows`` and ``cols`` are ``(J, 2 reach + 1)``, ``rows`` along y).
    """
    _check_terms(main, strips)
    s = torch.tensor([[[[sigma]]]], dtype=torch.float64)
    start, weights = stencil_weights(s, nodes)
    first = int(start.flatten()[0])
    radius = int(radius_map(s, truncate).flatten()[0])
    d = np.arange(-reach, reach + 1, dtype=np.float64)
    beyond = np.abs(d) - (radius + 1)  # t at the strip's offsets, negative inside
    rows, cols = [], []
    mass = 0.0
    for i in range(_STENCIL):
        weight = float(weights[i].flatten()[0])
        node = nodes[first + i]
        gauss = np.exp(-(d * d) / (2.0 * node * node)) / gaussian_mass(node)
        main_y = main_x = profile_y = profile_x = gauss
        if main == "pyramid" or strips == "recursive":
            along_y = _phase_kernel(node, position[0], reach)
            along_x = _phase_kernel(node, position[1], reach)
            if main == "pyramid":
                main_y, main_x = along_y, along_x
            if strips == "recursive":
                profile_y, profile_x = along_y, along_x
        coefficients = tail_coefficients(np.array([sigma]), np.array([radius]), node, truncate)[0]
        z = poles(node)
        strip = np.zeros_like(d)
        outside = beyond >= 0
        for a, pole in zip(coefficients, z, strict=True):
            strip[outside] += a * pole ** beyond[outside]
            mass += weight * a / (1.0 - pole)
        rows += [weight * main_y, -weight * profile_y, -weight * strip]
        cols += [main_x, strip, profile_x]
    return np.stack(rows), np.stack(cols), 1.0 / (1.0 - 4.0 * mass)


def _phase_kernel(node: float, coordinate: int, reach: int) -> np.ndarray:
    """Row ``coordinate mod h`` of :func:`pyramid_kernel`, on offsets ``-reach..reach``."""
    kernel = pyramid_kernel(node)
    support = kernel.shape[1] // 2
    row = kernel[coordinate % kernel.shape[0]]
    out = np.zeros(2 * reach + 1)
    keep = min(support, reach)
    out[reach - keep : reach + keep + 1] = row[support - keep : support + keep + 1]
    return out


def exact_kernel_1d(sigma: float, truncate: float, reach: int) -> np.ndarray:
    """The exact operator's normalised 1-D factor on ``-reach..reach`` (its kernel is its square)."""
    radius = math.floor(truncate * sigma + 0.5)
    d = np.arange(-reach, reach + 1, dtype=np.float64)
    taps = np.exp(-(d * d) / (2.0 * sigma * sigma)) * (np.abs(d) <= radius)
    return taps / taps.sum()


def pixel_bound(
    sigma: float,
    nodes: list[float],
    truncate: float = DEFAULT_TRUNCATE,
    main: str = "fft",
    strips: str = "fft",
) -> float:
    """``sup`` over images in [0, 1] of ``|strips - exact|`` at a pixel of ``sigma``.

    ``0.5 ||D||_1 + 0.5 |sum D|`` with ``D`` the effective kernel (:func:`pixel_kernel`)
    minus the exact one, on a box reaching ``R + 1 + 6 max(node)``, plus an upper bound of
    the effective kernel's l1 mass outside the box (computed from its 1-D factors on a
    box three times as wide).

    With ``main="pyramid"`` the main term of node ``k`` is ``A_k = k_ry (x) k_rx`` (the
    pyramid's kernels at the pixel's phases, :func:`pyramid_kernel`) instead of ``G_k =
    g_k (x) g_k``, so ``D`` gains ``scale sum_k w_k (A_k - G_k)``; by the triangle
    inequality, ``||A_k - G_k||_1 <= e_k (a_k + 1)`` and ``|sum (A_k - G_k)|`` too, with
    ``(e_k, a_k)`` from :func:`pyramid_error` (max over phases), this adds
    ``|scale| sum_k |w_k| e_k (a_k + 1)`` to the FFT bound, for every phase.

    With ``strips="recursive"`` the strips' profiles along the edge are the pyramid's
    ``k_r`` instead of ``g_k`` (the recursions themselves are exact: :func:`geometric_scan`),
    so node ``k``'s four strips ``-w_k (g_k (x) S_k + S_k (x) g_k)`` (``S_k`` the two-sided
    strip factor) change by ``-w_k ((k_ry - g_k) (x) S_k + S_k (x) (k_rx - g_k))``, of
    ``l1`` norm (and absolute sum) at most ``2 |w_k| e_k ||S_k||_1`` with ``||S_k||_1 <= 2
    sum_m |a_km| / (1 - z_km)``; ``|scale|`` times their sum is added, for every phase.
    """
    _check_terms(main, strips)
    radius = math.floor(truncate * sigma + 0.5)
    start, stencil = stencil_weights(torch.tensor([[[[sigma]]]], dtype=torch.float64), nodes)
    first = int(start.flatten()[0])
    reach = radius + 1 + int(math.ceil(6.0 * nodes[first + _STENCIL - 1]))
    wide = 3 * reach
    rows, cols, scale = pixel_kernel(sigma, nodes, truncate, wide)
    inner = slice(wide - reach, wide + reach + 1)
    # Outside the box: |sum_j r_j x c_j| <= sum_j (|r_j|_1 |c_j|_1 - |r_j|_in |c_j|_in).
    whole = np.abs(rows).sum(1) * np.abs(cols).sum(1)
    inside = np.abs(rows[:, inner]).sum(1) * np.abs(cols[:, inner]).sum(1)
    outside = abs(scale) * float((whole - inside).sum())
    # Inside: one quadrant (the kernel is even in x and in y), each cell counted by multiplicity.
    quarter = slice(wide, wide + reach + 1)
    r, c = rows[:, quarter], cols[:, quarter]
    effective = scale * np.einsum("ji,jk->ik", r, c)
    exact = exact_kernel_1d(sigma, truncate, reach)[reach:]
    difference = effective - np.outer(exact, exact)
    multiplicity = np.full(reach + 1, 2.0)
    multiplicity[0] = 1.0
    weighted = difference * multiplicity[:, None] * multiplicity[None, :]
    total = float(weighted.sum())
    bound = 0.5 * (float(np.abs(weighted).sum()) + outside) + 0.5 * (abs(total) + outside)
    if main == "pyramid":
        for i in range(_STENCIL):
            error, norm = pyramid_error(nodes[first + i])
            bound += abs(scale) * abs(float(stencil[i].flatten()[0])) * error * (norm + 1.0)
    if strips == "recursive":
        for i in range(_STENCIL):
            node = nodes[first + i]
            error, _ = pyramid_error(node)
            a = tail_coefficients(np.array([sigma]), np.array([radius]), node, truncate)[0]
            strip_norm = 2.0 * float((np.abs(a) / (1.0 - poles(node))).sum())
            weight = abs(float(stencil[i].flatten()[0]))
            bound += abs(scale) * weight * 2.0 * error * strip_norm
    return bound


def _large_blur(
    image: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    large: torch.Tensor,
    nodes: list[float],
    truncate: float,
    main: str = "fft",
    strips: str = "fft",
) -> torch.Tensor:
    """The levels-and-strips operator at every pixel (meaningful where ``large``).

    ``sigma`` is ``(B, 1, H, W)`` float64, ``radius`` its radii, ``main`` and ``strips`` as
    in :func:`strips_blur`. Returns ``(B, C, H, W)``.
    """
    dtype = image.dtype
    height, width = image.shape[-2:]
    extended = _mirror_period(image)
    period_y, period_x = extended.shape[-2:]
    spectrum = torch.fft.rfft2(extended) if "fft" in (main, strips) else None
    start, weights = stencil_weights(sigma, nodes)
    ys = torch.arange(height).view(1, 1, -1, 1)
    xs = torch.arange(width).view(1, 1, 1, -1)
    shift = radius + 1
    read_right = torch.remainder(xs + shift, period_x).expand(image.shape)
    read_left = torch.remainder(shift - xs, period_x).expand(image.shape)
    read_down = torch.remainder(ys + shift, period_y).expand(image.shape)
    read_up = torch.remainder(shift - ys, period_y).expand(image.shape)
    total = torch.zeros(image.shape, dtype=dtype)
    mass = torch.zeros(sigma.shape, dtype=torch.float64)
    sigma_large, radius_large = sigma[large].numpy(), radius[large].numpy()
    node_weights = []
    for k in range(len(nodes)):
        weight = torch.zeros_like(sigma)
        for i in range(_STENCIL):
            weight = torch.where(start + i == k, weights[i], weight)
        node_weights.append(torch.where(large, weight, 0.0))
    used = [k for k, weight in enumerate(node_weights) if bool((weight != 0).any())]
    if main == "pyramid" and used:
        ranges = [(0, height - 1), (0, width - 1)]
        pyramid = pyramid_levels(extended, (-2, -1), ranges, [nodes[k] for k in used])
        main_terms = dict(zip(used, pyramid, strict=True))
    if strips == "recursive" and used:
        profiles = dict(
            zip(used, _recursive_profiles(image, [nodes[k] for k in used]), strict=True)
        )
    for k in used:
        node, weight = nodes[k], node_weights[k]
        coefficients = torch.zeros((len(POLE_RATES),) + tuple(sigma.shape), dtype=torch.float64)
        table = tail_coefficients(sigma_large, radius_large, node, truncate)
        coefficients[:, large] = torch.from_numpy(table.T.copy())
        if main == "pyramid":
            level = main_terms.pop(k)
        else:
            assert spectrum is not None
            gauss_y = _gaussian_spectrum(node, period_y, onesided=False).to(dtype)
            gauss_x = _gaussian_spectrum(node, period_x, onesided=True).to(dtype)
            blurred = torch.fft.irfft2(
                spectrum * torch.outer(gauss_y, gauss_x), s=(period_y, period_x)
            )
            level = blurred[..., :height, :width]
        if strips == "recursive":
            e_xs, e_ys = _recursive_strips(*profiles.pop(k), node)
        else:
            assert spectrum is not None
            e_xs, e_ys = _fft_strips(spectrum, node, height, width)
        strip = torch.zeros_like(level)
        for m, pole in enumerate(poles(node)):
            a = coefficients[m].to(dtype)
            e_x, e_y = e_xs[m], e_ys[m]
            strip += a * (torch.gather(e_x, -1, read_right) + torch.gather(e_x, -1, read_left))
            strip += a * (torch.gather(e_y, -2, read_down) + torch.gather(e_y, -2, read_up))
            mass += weight * coefficients[m] / (1.0 - float(pole))
        total += weight.to(dtype) * (level - strip)
    return total / (1.0 - 4.0 * mass).to(dtype)


def strip_images(
    image: torch.Tensor, nodes: list[float], strips: str = "fft"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The strip images of ``image`` at every node, mirrored borders.

    Per node ``(Ex, Ey)``: ``Ex[m]`` is ``E_km(u) = sum_{t >= 0} z_km**t Y_k(u + t)`` along x
    on rows ``0..H-1`` and one period ``Px = max(2 W - 2, 1)`` of columns ``u``, with ``Y_k``
    the image blurred along y at ``s_k`` (``(M, B, C, H, Px)``); ``Ey`` the same with the
    axes swapped (``(M, B, C, Py, W)``). ``strips="fft"``: exact to rounding; ``"recursive"``:
    ``Y_k`` on the pyramid (:func:`pyramid_levels` along y only, full resolution along x),
    then :func:`geometric_scan` (exact on the periodic extension).

    Raises:
        InvalidParameterError: ``strips`` not in :data:`STRIP_TERMS`.
    """
    _check_terms("fft", strips)
    height, width = image.shape[-2:]
    if strips == "recursive":
        profiles = _recursive_profiles(image, nodes)
        return [
            _recursive_strips(py, px, node) for (py, px), node in zip(profiles, nodes, strict=True)
        ]
    spectrum = torch.fft.rfft2(_mirror_period(image))
    return [_fft_strips(spectrum, node, height, width) for node in nodes]


def _fft_strips(
    spectrum: torch.Tensor, node: float, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`strip_images` of node ``node`` from the mirrored period's ``rfft2``, by FFT."""
    period_y = spectrum.shape[-2]
    period_x = max(2 * width - 2, 1)
    real = torch.float64 if spectrum.dtype == torch.complex128 else torch.float32
    gauss_y = _gaussian_spectrum(node, period_y, onesided=False).to(real)
    gauss_x = _gaussian_spectrum(node, period_x, onesided=True).to(real)
    along_y = spectrum * gauss_y[:, None]  # blurred along y: the horizontal strips' profile
    along_x = spectrum * gauss_x[None, :]
    e_xs, e_ys = [], []
    for pole in poles(node):
        recursion_x = _geometric_spectrum(float(pole), period_x, onesided=True)
        e_x = torch.fft.irfft2(
            along_y * recursion_x.to(spectrum.dtype)[None, :], s=(period_y, period_x)
        )
        e_xs.append(e_x[..., :height, :])
        recursion_y = _geometric_spectrum(float(pole), period_y, onesided=False)
        e_y = torch.fft.irfft2(
            along_x * recursion_y.to(spectrum.dtype)[:, None], s=(period_y, period_x)
        )
        e_ys.append(e_y[..., :, :width])
    return torch.stack(e_xs), torch.stack(e_ys)


def _recursive_profiles(
    image: torch.Tensor, nodes: list[float]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per node, ``image`` blurred along y only and along x only, on the pyramid: ``(B, C, H, W)`` each."""
    height, width = image.shape[-2:]
    along_y = pyramid_levels(_mirror_dim(image, -2), (-2,), [(0, height - 1)], nodes)
    along_x = pyramid_levels(_mirror_dim(image, -1), (-1,), [(0, width - 1)], nodes)
    return list(zip(along_y, along_x, strict=True))


def _recursive_strips(
    profile_y: torch.Tensor, profile_x: torch.Tensor, node: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`strip_images` of one node from its profiles (blurred along y, along x)."""
    z = poles(node)
    return (
        geometric_scan(_mirror_dim(profile_y, -1), -1, z),
        geometric_scan(_mirror_dim(profile_x, -2), -2, z),
    )


def geometric_scan(values: torch.Tensor, dim: int, z: np.ndarray) -> torch.Tensor:
    """``E_m(u) = sum_{t >= 0} z_m**t Y((u + t) mod P)`` for one period ``Y`` along ``dim``.

    The first-order recursion ``E(u) = Y(u) + z E(u + 1)`` run backwards over the period,
    as a blocked scan (:data:`_SCAN_BLOCK` multiply-adds per value and pole, plus one carry
    per block, whatever ``z``): within each block of ``b`` values a triangular matrix of
    ``z**j`` gives the sums to the block's end; a loop over blocks carries ``E'((j + 1) b)``
    (``E'`` sums to the period's end only); then ``E(u) = E'(u) + z**(P - u) E(0)`` with
    ``E(0) = E'(0) / (1 - z**P)``, the closed form of the periodic sum: no truncation.

    Args:
        values: one period along ``dim`` (negative), float32 or float64.
        dim: the recursion's axis, ``< 0``.
        z: poles, each in ``[0, 1)``.

    Returns:
        ``(len(z),) + values.shape`` in ``values``' dtype.
    """
    dtype = values.dtype
    z = np.asarray(z, dtype=np.float64)
    count = z.size
    moved = values.movedim(dim, -1)
    period = moved.shape[-1]
    batch = moved.shape[:-1]
    block = min(_SCAN_BLOCK, period)
    blocks = -(-period // block)
    flat = torch.nn.functional.pad(moved.reshape(-1, period), (0, blocks * block - period))
    i = np.arange(block)
    lag = i[:, None] - i[None, :]  # [i', i]: i' - i
    powers = np.where(lag >= 0, z[:, None, None] ** np.maximum(lag, 0), 0.0)  # (M, b, b)
    matrix = torch.from_numpy(powers.transpose(1, 0, 2).reshape(block, count * block).copy())
    # local[n, j, m, i] = sum_{i' >= i} z_m**(i' - i) Y(j b + i'): sums to the block's end
    local = (flat.reshape(-1, block) @ matrix.to(dtype)).reshape(-1, blocks, count, block)
    step = torch.from_numpy(z**block).to(dtype)
    carry = torch.zeros(local.shape[0], blocks + 1, count, dtype=dtype)  # E'(j b)
    for j in range(blocks - 1, -1, -1):
        carry[:, j] = local[:, j, :, 0] + step * carry[:, j + 1]
    decay = torch.from_numpy(z[:, None] ** (block - i)[None, :]).to(dtype)  # (M, b)
    partial = local + carry[:, 1:, :, None] * decay  # E'(u): sums to the period's end
    partial = partial.permute(2, 0, 1, 3).reshape(count, -1, blocks * block)[..., :period]
    first = carry[:, 0] * torch.from_numpy(1.0 / (1.0 - z**period)).to(dtype)  # E(0), (N, M)
    wrap = torch.from_numpy(z[:, None] ** (period - np.arange(period))[None, :]).to(dtype)
    out = partial + first.T[:, :, None] * wrap[:, None, :]
    return out.reshape((count,) + tuple(batch) + (period,)).movedim(-1, dim)


def _mirror_dim(image: torch.Tensor, dim: int) -> torch.Tensor:
    """One period of the mirrored extension along ``dim`` (-2 or -1): ``max(2 n - 2, 1)``
    samples."""
    height, width = image.shape[-2:]
    rows = _period(height) if dim == -2 else height
    cols = _period(width) if dim == -1 else width
    return read_window(image, 0, rows, 0, cols, "reflect")


def _mirror_period(image: torch.Tensor) -> torch.Tensor:
    """One period of the mirrored extension along both axes: ``(B, C, Py, Px)``, ``P = max(2n - 2, 1)``."""
    height, width = image.shape[-2:]
    return read_window(image, 0, _period(height), 0, _period(width), "reflect")


def _period(size: int) -> int:
    """The mirrored extension's period along an axis of ``size`` samples."""
    return max(2 * size - 2, 1)


def _frequencies(period: int, onesided: bool) -> torch.Tensor:
    """Frequencies in cycles per pixel of a length-``period`` FFT, folded into ``[-1/2, 1/2)``."""
    count = period // 2 + 1 if onesided else period
    nu = torch.arange(count, dtype=torch.float64) / period
    return nu - torch.round(nu)


def _gaussian_spectrum(node: float, period: int, onesided: bool) -> torch.Tensor:
    """DFT (real, float64) of the normalised untruncated sampled Gaussian folded onto ``period``.

    Poisson summation: ``sum_m exp(-2 pi^2 s^2 (nu - m)^2)`` divided by its value at ``nu = 0``.
    """
    nu = _frequencies(period, onesided)
    m = torch.arange(-_POISSON_TERMS, _POISSON_TERMS + 1, dtype=torch.float64)
    factor = -2.0 * (math.pi * node) ** 2
    values = torch.exp(factor * (nu[:, None] - m[None, :]) ** 2).sum(1)
    return values / torch.exp(factor * m * m).sum()


def _geometric_spectrum(pole: float, period: int, onesided: bool) -> torch.Tensor:
    """Multiplier (complex128) of ``E(u) = sum_{t >= 0} pole**t Y(u + t)`` on a ``period``-periodic ``Y``."""
    count = period // 2 + 1 if onesided else period
    angle = 2.0 * math.pi * torch.arange(count, dtype=torch.float64) / period
    return 1.0 / (1.0 - pole * torch.polar(torch.ones_like(angle), angle))


def _check_terms(main: str, strips: str) -> None:
    """Raise ``ValueError`` unless ``main`` and ``strips`` name known computations."""
    if main not in MAIN_TERMS:
        raise InvalidParameterError(f"expected main in {MAIN_TERMS}, got {main!r}")
    if strips not in STRIP_TERMS:
        raise InvalidParameterError(f"expected strips in {STRIP_TERMS}, got {strips!r}")


def _check(image: torch.Tensor, sigma: torch.Tensor, truncate: float, per_octave: int) -> None:
    """Raise ``ValueError`` unless the arguments fit :func:`strips_blur`."""
    if image.dim() != 4 or sigma.dim() != 4:
        raise InvalidParameterError(
            f"expected 4-D image and sigma, got {image.dim()} and {sigma.dim()} dims"
        )
    batch, _, height, width = image.shape
    if (
        sigma.shape[1] != 1
        or sigma.shape[0] not in (1, batch)
        or sigma.shape[2:] != (height, width)
    ):
        raise InvalidParameterError(
            f"expected sigma of shape (B|1, 1, {height}, {width}), got {tuple(sigma.shape)}"
        )
    if image.dtype not in (torch.float32, torch.float64) or not sigma.is_floating_point():
        raise InvalidParameterError(
            f"expected a float32/float64 image and float sigma, got {image.dtype}, {sigma.dtype}"
        )
    if image.device.type != "cpu" or sigma.device.type != "cpu":
        raise InvalidParameterError("strips_blur is a CPU reference: expected CPU tensors")
    if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
        raise InvalidParameterError("expected finite sigma >= 0")
    if not (math.isfinite(truncate) and truncate > 0) or per_octave < 1:
        raise InvalidParameterError(
            f"expected truncate > 0 and levels_per_octave >= 1, got {truncate}, {per_octave}"
        )


# ---------------------------------------------------------------- the main term on a pyramid
#
# Level 0 is the image; level j (step h = 2**j) is level j - 1 blurred by a sampled Gaussian
# (sigma 2 on level 0's grid for j = 1, sqrt(3) on level j - 1's grid after) and decimated
# by 2, so level j carries a blur of h full-resolution pixels. A node s >= 2 * PYRAMID_SPAN
# uses the level j with PYRAMID_SPAN * h <= s < 2 * PYRAMID_SPAN * h: a coarse FIR of
# sigma sqrt(s**2 - 2 h**2) / h on that grid, then a reconstruction at full resolution,
# out(x) = sum_m w(x - m h) C(m) / sum_m w(x - m h), with w the Gaussian of sigma h. Smaller
# nodes are one direct FIR at full resolution. Every FIR is sampled on |i| <= 6 sigma and
# normalised to sum 1, and the reconstruction is normalised per phase, so each output phase's
# kernel has mass 1 exactly. All of it is linear and separable; along one axis it commutes
# with shifts by h (the grids are aligned at pixel 0), so its kernel depends on x mod h
# (:func:`pyramid_kernel`). Level 0 is one period of the mirrored extension and coarser
# levels are read modulo their own period or on the window the outputs need, so the result
# is the plane operator applied to the mirrored extension, as for the FFT.

PYRAMID_SPAN = 1.8  # node s uses level j with 1.8 * 2**j <= s < 3.6 * 2**j (j >= 1)
_TAP_SIGMAS = 6.0  # every FIR is sampled on |i| <= ceil(6 sigma)


def pyramid_level(node: float) -> int:
    """The pyramid level (step ``2**j``) that node sigma ``node`` is computed on (0: direct FIR)."""
    level = 0
    while node >= 2.0 * PYRAMID_SPAN * 2.0**level:
        level += 1
    return level


def _taps(sigma: float) -> np.ndarray:
    """Sampled Gaussian of ``sigma`` on ``|i| <= ceil(6 sigma)``, normalised to sum 1 (float64)."""
    half = int(math.ceil(_TAP_SIGMAS * sigma))
    i = np.arange(-half, half + 1, dtype=np.float64)
    taps = np.exp(-(i * i) / (2.0 * sigma * sigma))
    return taps / taps.sum()


def _increment(level: int) -> float:
    """Sigma, in level ``level - 1`` pixels, that takes level ``level - 1``'s blur to ``2**level``."""
    return 2.0 if level == 1 else math.sqrt(3.0)


def _coarse_sigma(node: float, level: int) -> float:
    """Sigma of the coarse FIR of ``node`` on ``level``, in that level's pixels."""
    step = 2.0**level
    return math.sqrt(node * node - 2.0 * step * step) / step


@functools.lru_cache(maxsize=64)
def _reconstruction(level: int) -> np.ndarray:
    """Conv weights ``(h, 2 K + 3)`` of the reconstruction: row ``r``, tap ``k`` is ``w(r + (K + 1 - k) h)``.

    ``w`` is the Gaussian of sigma ``h``, ``K = ceil(6)``; each row (output phase) sums to 1.
    """
    step = 2**level
    half = int(math.ceil(_TAP_SIGMAS)) + 1
    offsets = np.arange(step)[:, None] + (half - np.arange(2 * half + 1))[None, :] * step
    weights = np.exp(-(offsets.astype(np.float64) ** 2) / (2.0 * step * step))
    return weights / weights.sum(1, keepdims=True)


def _recon_half() -> int:
    """Half-width, in coarse pixels, of the reconstruction's taps (``K + 1``)."""
    return int(math.ceil(_TAP_SIGMAS)) + 1


def pyramid_support(node: float) -> int:
    """An upper bound of the half-width, in pixels, of the pyramid main term's kernel for ``node``."""
    level = pyramid_level(node)
    if level == 0:
        return len(_taps(node)) // 2
    step = 2**level
    reach = (_recon_half() + 1) * step + (len(_taps(_coarse_sigma(node, level))) // 2) * step
    for j in range(1, level + 1):
        reach += (len(_taps(_increment(j))) // 2) * 2 ** (j - 1)
    return reach


def _read(
    values: torch.Tensor, dim: int, start: int, period: int | None, lo: int, hi: int
) -> torch.Tensor:
    """Samples ``lo..hi`` (coarse indices) of a level stored from ``start`` (or one ``period``)."""
    index = np.arange(lo, hi + 1)
    if period is not None:
        index = np.remainder(index, period)
    else:
        index = index - start
        if index[0] < 0 or index[-1] >= values.shape[dim]:
            raise AssertionError("pyramid window too small")  # a bug, not a user error
    return values.index_select(dim, torch.from_numpy(index))


def _filter(values: torch.Tensor, dim: int, taps: np.ndarray, stride: int) -> torch.Tensor:
    """Valid correlation of ``values`` along ``dim`` with symmetric ``taps``, every ``stride``-th output."""
    moved = values.movedim(dim, -1)
    shape = moved.shape
    weight = torch.from_numpy(taps).to(values.dtype).view(1, 1, -1)
    out = torch.nn.functional.conv1d(moved.reshape(-1, 1, shape[-1]), weight, stride=stride)
    return out.reshape(shape[:-1] + (out.shape[-1],)).movedim(-1, dim)


def _interleave(values: torch.Tensor, dim: int, level: int) -> torch.Tensor:
    """Reconstruction along ``dim``: coarse ``C(c_lo..c_hi)`` to full ``x = q h + r`` for
    ``q`` in ``c_lo + K + 1 .. c_hi - K - 1`` and every phase ``r``."""
    weights = _reconstruction(level)
    moved = values.movedim(dim, -1)
    shape = moved.shape
    weight = torch.from_numpy(weights).to(values.dtype)[:, None, :]
    out = torch.nn.functional.conv1d(moved.reshape(-1, 1, shape[-1]), weight)  # (N, h, Lq)
    out = out.transpose(1, 2).reshape(shape[:-1] + (-1,))
    return out.movedim(-1, dim)


def _windows(
    period: int, lo: int, hi: int, needs: dict[int, int], top: int
) -> list[tuple[int, int, int | None]]:
    """Per level ``0..top``: ``(start, stop, period)`` of the stored samples along one axis.

    Level 0 is one ``period`` of the mirrored extension. Level ``j >= 1`` stores the union of
    what its nodes (coarse FIR half-widths ``needs[j]``, outputs ``lo..hi``) and level
    ``j + 1`` read, or one whole period ``period / gcd(period, 2**j)`` when that is shorter.
    """
    windows: list[tuple[int, int, int | None]] = [(0, period - 1, period)] * (top + 1)
    child: tuple[int, int] | None = None
    half = _recon_half()
    for level in range(top, 0, -1):
        step = 2**level
        spans = []
        if level in needs:
            spans.append((lo // step - half - needs[level], hi // step + half + needs[level]))
        if child is not None:
            reach = len(_taps(_increment(level + 1))) // 2
            spans.append((2 * child[0] - reach, 2 * child[1] + reach))
        start, stop = min(s for s, _ in spans), max(s for _, s in spans)
        own = period // math.gcd(period, step)
        windows[level] = (0, own - 1, own) if stop - start + 1 >= own else (start, stop, None)
        child = (start, stop)
    return windows


def pyramid_levels(
    extended: torch.Tensor, dims: tuple[int, ...], ranges: list[tuple[int, int]], nodes: list[float]
) -> list[torch.Tensor]:
    """The pyramid main term of every node, separable over ``dims``.

    Args:
        extended: one period of the (mirrored) input along each of ``dims``, any other dims
            are batch; float32 or float64.
        dims: the blurred dims (``(-1,)`` or ``(-2, -1)``).
        ranges: per dim, the output indices ``lo..hi`` (may leave the period: read modulo).
        nodes: node sigmas, each ``> 0``.

    Returns:
        One tensor per node: ``extended`` with each of ``dims`` replaced by ``hi - lo + 1``.
    """
    levels = [pyramid_level(s) for s in nodes]
    top = max(levels)
    needs: dict[int, int] = {}
    for node, level in zip(nodes, levels, strict=True):
        if level > 0:
            half = len(_taps(_coarse_sigma(node, level))) // 2
            needs[level] = max(needs.get(level, 0), half)
    periods = [extended.shape[d] for d in dims]
    windows = [_windows(p, lo, hi, needs, top) for p, (lo, hi) in zip(periods, ranges, strict=True)]
    stored = [extended]
    for level in range(1, top + 1):
        taps = _taps(_increment(level))
        reach = len(taps) // 2
        values = stored[-1]
        for axis, dim in enumerate(dims):
            start, _, period = windows[axis][level - 1]
            lo, hi, _ = windows[axis][level]
            values = _read(values, dim, start, period, 2 * lo - reach, 2 * hi + reach)
            values = _filter(values, dim, taps, 2)
        stored.append(values)
    out = []
    half = _recon_half()
    for node, level in zip(nodes, levels, strict=True):
        values = stored[level]
        step = 2**level
        for axis, dim in enumerate(dims):
            start, _, period = windows[axis][level]
            lo, hi = ranges[axis]
            if level == 0:
                taps = _taps(node)
                reach = len(taps) // 2
                values = _read(values, dim, start, period, lo - reach, hi + reach)
                values = _filter(values, dim, taps, 1)
                continue
            taps = _taps(_coarse_sigma(node, level))
            reach = len(taps) // 2
            first, last = lo // step, hi // step
            values = _read(values, dim, start, period, first - half - reach, last + half + reach)
            values = _interleave(_filter(values, dim, taps, 1), dim, level)
            values = values.narrow(dim, lo - first * step, hi - lo + 1)
        out.append(values)
    return out


def main_levels(image: torch.Tensor, nodes: list[float], main: str = "fft") -> list[torch.Tensor]:
    """The untruncated main term ``U_k`` of ``image`` at every node, mirrored borders.

    Args:
        image: ``(B, C, H, W)`` float32 or float64 (any device for ``"pyramid"``).
        nodes: node sigmas, each ``> 0``.
        main: ``"fft"`` (exact to rounding) or ``"pyramid"`` (:func:`pyramid_levels`).

    Returns:
        One ``(B, C, H, W)`` tensor per node, in ``image``'s dtype.

    Raises:
        InvalidParameterError: ``main`` not in :data:`MAIN_TERMS`, or a node ``<= 0``.
    """
    if main not in MAIN_TERMS:
        raise InvalidParameterError(f"expected main in {MAIN_TERMS}, got {main!r}")
    if not all(math.isfinite(node) and node > 0 for node in nodes):
        raise InvalidParameterError(f"expected finite node sigmas > 0, got {nodes}")
    height, width = image.shape[-2:]
    extended = _mirror_period(image)
    if main == "pyramid":
        return pyramid_levels(extended, (-2, -1), [(0, height - 1), (0, width - 1)], nodes)
    period_y, period_x = extended.shape[-2:]
    spectrum = torch.fft.rfft2(extended)
    out = []
    for node in nodes:
        gauss_y = _gaussian_spectrum(node, period_y, onesided=False).to(image.dtype)
        gauss_x = _gaussian_spectrum(node, period_x, onesided=True).to(image.dtype)
        blurred = torch.fft.irfft2(spectrum * torch.outer(gauss_y, gauss_x), s=(period_y, period_x))
        out.append(blurred[..., :height, :width].contiguous())  # frees the period
    return out


@functools.lru_cache(maxsize=4096)
def pyramid_kernel(node: float) -> np.ndarray:
    """The pyramid main term's 1-D kernel per output phase: ``(h, 2 S + 1)`` float64.

    Row ``r`` is for outputs ``x = r (mod h)``, ``h = 2**pyramid_level(node)``: ``out(x) =
    sum_d k[r, d + S] in(x + d)``, with ``S = pyramid_support(node)`` (the kernel is zero
    beyond). Built by :func:`pyramid_levels` on impulses at every phase.
    """
    step = 2 ** pyramid_level(node)
    support = pyramid_support(node)
    period = step * (-(-(2 * support + 2 * step) // step))  # no wrapped copy reaches the window
    impulses = torch.zeros(step, period, dtype=torch.float64)
    impulses[torch.arange(step), torch.arange(step)] = 1.0
    lo = -support
    (response,) = pyramid_levels(impulses, (-1,), [(lo, step - 1 + support)], [node])
    columns = response.numpy()  # columns[c, x - lo]: output x for an impulse at c
    d = np.arange(-support, support + 1)
    kernel = np.empty((step, d.size))
    for r in range(step):
        c = np.remainder(r + d, step)
        kernel[r] = columns[c, c - d - lo]
    return kernel


@functools.lru_cache(maxsize=65536)
def pyramid_error(node: float) -> tuple[float, float]:
    """``(e, a)``: the max over phases of ``||k_r - g||_1`` (``g`` the untruncated normalised
    sampled Gaussian of ``node``, over all integers) and of ``||k_r||_1``."""
    kernel = pyramid_kernel(node)
    support = kernel.shape[1] // 2
    d = np.arange(-support, support + 1, dtype=np.float64)
    gauss = np.exp(-(d * d) / (2.0 * node * node)) / gaussian_mass(node)
    outside = max(0.0, 1.0 - float(gauss.sum()))  # g's mass beyond the support
    error = float(np.abs(kernel - gauss[None, :]).sum(1).max()) + outside
    return error, float(np.abs(kernel).sum(1).max())
