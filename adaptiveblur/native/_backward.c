/*
 * The exact blur's backward pass on the CPU, as two gathers (no atomics, so every run
 * gives the same bits whatever the threads).
 *
 * The forward pass (_native.c) computes, for each output pixel p with sigma s (floored at
 * SIGMA_FLOOR) and radius r,
 *     out_p = sum_{|dx|,|dy| <= r} g(dx) g(dy) I(p + d) / S^2,
 *     g(d) = exp(-d^2 / (2 s^2)),   S = sum_{|d| <= r} g(d),
 * on the tile padded by `halo` (the border is the caller's, in torch). With a(d) =
 * g(dx) g(dy) / S^2 the normalised weights and G the gradient of the output:
 *   - dL/ds_p  = sum_c G_c(p) sum_d a(d) (dx^2 + dy^2) (I_c(p + d) - out_c(p)) / s^3
 *              = sum_c G_c(p) (m2_c - out_c M2) / s^3,  m2_c = sum a d^2 I_c, M2 = 2 T / S,
 *     with T = sum_{|d| <= r} g(d) d^2; 0 where s is below the floor (the forward pass
 *     does not change there). The radius is a step function of s: no gradient.
 *   - dL/dI(q) = sum over the pixels p whose window holds q of a_p(q - p) G(p), for every
 *     q of the padded tile; torch folds it back through the border.
 *
 * Pass 1 (`adaptiveblur_backward_sigma`, by output rows) writes each pixel's table
 * g(0..halo) (zero past its radius) and 1 / S^2, and dL/ds. Pass 2
 * (`adaptiveblur_backward_input`, by padded rows) gathers dL/dI from the tables. Sums are
 * in double; REAL is the tensors' element type. Compiled once per element type through
 * the BACKWARD macro below.
 */

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* kernels.SIGMA_FLOOR, as in _native.c. */
#define BACKWARD_SIGMA_FLOOR 1e-3

enum { BACKWARD_OK = 0, BACKWARD_BAD_RADIUS = 1 };

#define BACKWARD(REAL, SUFFIX)                                                                  \
    int adaptiveblur_backward_sigma_##SUFFIX(                                                  \
        const REAL *in, const REAL *sigma, const int64_t *radius, const REAL *grad_out,        \
        double *table, double *inverse, REAL *grad_sigma, int64_t channels, int64_t height,    \
        int64_t width, int64_t halo, int64_t row0, int64_t row1)                               \
    {                                                                                           \
        const ptrdiff_t pitch = width + 2 * halo, in_plane = pitch * (height + 2 * halo);      \
        const ptrdiff_t out_plane = width * height;                                             \
        for (int64_t y = row0; y < row1; ++y) {                                                 \
            for (int64_t x = 0; x < width; ++x) {                                               \
                const ptrdiff_t p = y * width + x;                                              \
                const int64_t r = radius[p];                                                    \
                if (r < 0 || r > halo)                                                          \
                    return BACKWARD_BAD_RADIUS;                                                 \
                const double given = (double)sigma[p];                                          \
                const double s = given < BACKWARD_SIGMA_FLOOR ? BACKWARD_SIGMA_FLOOR : given;   \
                const double c = -0.5 / (s * s);                                                \
                double *g = table + p * (halo + 1);                                             \
                double total = 1.0, moment = 0.0;                                               \
                g[0] = 1.0;                                                                     \
                for (int64_t d = 1; d <= halo; ++d) {                                           \
                    g[d] = d <= r ? exp(c * (double)(d * d)) : 0.0;                             \
                    total += 2.0 * g[d];                                                        \
                    moment += 2.0 * g[d] * (double)(d * d);                                     \
                }                                                                               \
                const double norm = 1.0 / (total * total);                                      \
                inverse[p] = norm;                                                              \
                if (given < BACKWARD_SIGMA_FLOOR || r == 0) {                                   \
                    grad_sigma[p] = 0;                                                          \
                    continue;                                                                   \
                }                                                                               \
                const double spread = 2.0 * moment / total; /* M2 = sum a d^2 */                \
                double result = 0.0;                                                            \
                for (int64_t k = 0; k < channels; ++k) {                                        \
                    const REAL *centre = in + k * in_plane + (y + halo) * pitch + (x + halo);   \
                    double mean = 0.0, second = 0.0;                                            \
                    for (int64_t dy = -r; dy <= r; ++dy) {                                      \
                        const REAL *row = centre + dy * pitch;                                  \
                        const double gy = g[dy < 0 ? -dy : dy];                                 \
                        double plain = 0.0, weighted = 0.0;                                     \
                        for (int64_t dx = -r; dx <= r; ++dx) {                                  \
                            const double w = g[dx < 0 ? -dx : dx] * (double)row[dx];            \
                            plain += w;                                                         \
                            weighted += w * (double)(dx * dx);                                  \
                        }                                                                       \
                        mean += gy * plain;                                                     \
                        second += gy * (weighted + plain * (double)(dy * dy));                  \
                    }                                                                           \
                    mean *= norm;                                                               \
                    second *= norm;                                                             \
                    result += (double)grad_out[k * out_plane + p] * (second - mean * spread);   \
                }                                                                               \
                grad_sigma[p] = (REAL)(result / (s * s * s));                                   \
            }                                                                                   \
        }                                                                                       \
        return BACKWARD_OK;                                                                     \
    }                                                                                           \
                                                                                                \
    int adaptiveblur_backward_input_##SUFFIX(                                                  \
        const int64_t *radius, const REAL *grad_out, const double *table,                      \
        const double *inverse, REAL *grad_in, int64_t channels, int64_t height, int64_t width, \
        int64_t halo, int64_t row0, int64_t row1)                                              \
    {                                                                                           \
        const ptrdiff_t pitch = width + 2 * halo, in_plane = pitch * (height + 2 * halo);      \
        const ptrdiff_t out_plane = width * height;                                             \
        double sums[4];                                                                         \
        for (int64_t v = row0; v < row1; ++v) {        /* padded row of q */                   \
            const int64_t y0 = v - 2 * halo > 0 ? v - 2 * halo : 0;                             \
            const int64_t y1 = v < height - 1 ? v : height - 1;                                 \
            for (int64_t u = 0; u < pitch; ++u) {      /* padded column of q */                \
                const int64_t x0 = u - 2 * halo > 0 ? u - 2 * halo : 0;                         \
                const int64_t x1 = u < width - 1 ? u : width - 1;                               \
                for (int64_t first = 0; first < channels; first += 4) {                         \
                    const int64_t count = channels - first < 4 ? channels - first : 4;          \
                    for (int64_t k = 0; k < count; ++k)                                         \
                        sums[k] = 0.0;                                                          \
                    for (int64_t y = y0; y <= y1; ++y) {                                        \
                        const int64_t dy = v - halo - y, ady = dy < 0 ? -dy : dy;               \
                        for (int64_t x = x0; x <= x1; ++x) {                                    \
                            const ptrdiff_t p = y * width + x;                                  \
                            const int64_t dx = u - halo - x, adx = dx < 0 ? -dx : dx;           \
                            const int64_t r = radius[p];                                        \
                            if (ady > r || adx > r)                                             \
                                continue;                                                       \
                            const double *g = table + p * (halo + 1);                           \
                            const double w = g[ady] * g[adx] * inverse[p];                      \
                            for (int64_t k = 0; k < count; ++k)                                 \
                                sums[k] += w * (double)grad_out[(first + k) * out_plane + p];   \
                        }                                                                       \
                    }                                                                           \
                    for (int64_t k = 0; k < count; ++k)                                         \
                        grad_in[(first + k) * in_plane + v * pitch + u] = (REAL)sums[k];        \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        return BACKWARD_OK;                                                                     \
    }

BACKWARD(float, f32)
BACKWARD(double, f64)
