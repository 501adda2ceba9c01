/*
 * Fused exact adaptive Gaussian blur for CPUs (the "native" backend).
 *
 * Compiled at first use by adaptiveblur/native/build.py and loaded with ctypes. One call
 * blurs a band of output rows of one batch item:
 *
 *   out(p) = sum_q w_p(q - p) I(q) / sum_q w_p(q - p),
 *   w_p(dx, dy) = g_p(dx) g_p(dy),  g_p(d) = exp(-d^2 / (2 sigma_p^2)) for |d| <= r_p, else 0,
 *
 * where r_p comes precomputed from Python (kernels.radius_map, float64 rounding).
 *
 * Layout (all contiguous, row-major):
 *   in     (C, height + 2*halo, width + 2*halo)   border already filled
 *   sigma  (height, width)                          same element type as in
 *   radius (height, width) int64                    0 <= radius <= halo (checked)
 *   out    (C, height, width)
 *
 * Vector kernel: LANES neighbouring output pixels of one row form a group (one SIMD
 * register of floats or doubles). Each lane keeps its own weights: tab[d][lane] =
 * g_lane(d) for d = 0..R (R = the group's largest radius), 0 past the lane's own
 * radius, so every lane sums exactly its own window while the group only loops over
 * its own (not the tile's) largest window. The weights are separable and symmetric,
 * so the rows of the window are first folded about the output row, once per chunk of
 * GROUPS_PER_CHUNK groups (the groups of a row share them):
 *
 *   F(dy, x) = I(y + dy, x) + I(y - dy, x)                                 (dy = 1..R)
 *   t(dy)    = F(dy, x) + sum_{dx=1..R} tab[dx] * (F(dy, x + dx) + F(dy, x - dx))
 *   acc      = t(0) + sum_{dy=1..R} tab[dy] * t(dy)          (t(0) from row y itself)
 *   out      = acc / (sum_{|d|<=r} g(d))^2
 *
 * Four taps (+-dx, +-dy) cost two loads, one add and one FMA per channel, and a weight
 * vector is loaded once for up to CHANNEL_BLOCK channels. A lane's result does not
 * depend on which group computed it or on the group's R (the extra taps add exact
 * zeros), so overlapping groups and any split into row bands give identical output.
 *
 * The second half of this file is a template over the element type: it is included
 * twice (float, double) through #include __FILE__, which native/build.py makes safe by
 * compiling a copy with a plain file name.
 *
 * No -ffast-math: exp and the sums stay IEEE. The weights use a vectorisable exp
 * (Taylor polynomial after Cody-Waite range reduction, ~1 ulp) so that computing
 * them costs little next to the window sums.
 */
#ifndef ADAPTIVEBLUR_TEMPLATE

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define HAVE_MXCSR 1
#endif

/* Bumped whenever the exported functions change; native/build.py checks it. */
#define ABI_VERSION 2

/* One SIMD register. GCC and clang lower wider vector types to several registers, so
 * this only has to match the hardware for speed, not for correctness. */
#if defined(__AVX512F__)
#define VECTOR_BYTES 64
#elif defined(__AVX__)
#define VECTOR_BYTES 32
#else
#define VECTOR_BYTES 16
#endif

/* Channels summed together in one pass over a window (they share the weight loads). */
#define CHANNEL_BLOCK 4

/* SIMD groups per chunk of a row: the rows of the window are folded once per chunk. */
#ifndef GROUPS_PER_CHUNK
#define GROUPS_PER_CHUNK 16
#endif

/* kernels.SIGMA_FLOOR (adaptiveblur/kernels.py): keeps exp(-d^2 / (2 s^2)) defined when s is 0. */
#define SIGMA_FLOOR 1e-3

enum { STATUS_OK = 0, STATUS_BAD_RADIUS = 1, STATUS_NO_MEMORY = 2 };

int adaptiveblur_abi_version(void) { return ABI_VERSION; }
int adaptiveblur_vector_bytes(void) { return VECTOR_BYTES; }

/* Tiny weights only turn into subnormal products, which cost a microcode assist per
 * operation on x86. Flushing them to zero changes results by less than 1e-38. The
 * caller's floating-point state is restored before returning. */
typedef struct {
#ifdef HAVE_MXCSR
    unsigned int mxcsr;
#else
    int unused;
#endif
} fp_state;

static inline fp_state flush_subnormals(void)
{
    fp_state saved;
#ifdef HAVE_MXCSR
    saved.mxcsr = _mm_getcsr();
    _mm_setcsr(saved.mxcsr | 0x8040); /* FTZ | DAZ */
#else
    saved.unused = 0;
#endif
    return saved;
}

static inline void restore_fp(fp_state saved)
{
#ifdef HAVE_MXCSR
    _mm_setcsr(saved.mxcsr);
#else
    (void)saved;
#endif
}

/* malloc with the alignment a vector type needs; free with free(base). */
static void *aligned_block(size_t bytes, void **base)
{
    *base = malloc(bytes + VECTOR_BYTES);
    if (*base == NULL)
        return NULL;
    uintptr_t address = ((uintptr_t)*base + VECTOR_BYTES - 1) & ~(uintptr_t)(VECTOR_BYTES - 1);
    return (void *)address;
}

/* ---- the element-type template, twice ------------------------------------------------ */

#define ADAPTIVEBLUR_TEMPLATE
#define REAL float
#define NAME(name) name##_f32
#define WEIGHTS_BY_RECURRENCE 1
#include __FILE__
#undef REAL
#undef NAME
#undef WEIGHTS_BY_RECURRENCE

#define REAL double
#define NAME(name) name##_f64
#define WEIGHTS_BY_RECURRENCE 0
#include __FILE__
#undef REAL
#undef NAME
#undef WEIGHTS_BY_RECURRENCE

#else /* ADAPTIVEBLUR_TEMPLATE: everything below is compiled once per element type */

#define LANES ((int)(VECTOR_BYTES / sizeof(REAL)))
/* Weights are computed in double, SLICE lanes at a time (one register of doubles). */
#define SLICE (LANES < 8 ? LANES : 8)

typedef REAL NAME(real_v) __attribute__((vector_size(VECTOR_BYTES)));
/* The same vector at any element-aligned address (unaligned loads and stores). */
typedef REAL NAME(real_u) __attribute__((vector_size(VECTOR_BYTES), aligned(sizeof(REAL)), may_alias));
/* SLICE lanes as REAL, double, int64 and uint64. */
typedef REAL NAME(slice_r) __attribute__((vector_size(SLICE * sizeof(REAL))));
typedef double NAME(slice_d) __attribute__((vector_size(SLICE * 8)));
typedef int64_t NAME(slice_i) __attribute__((vector_size(SLICE * 8)));
typedef uint64_t NAME(slice_u) __attribute__((vector_size(SLICE * 8)));

#define real_v NAME(real_v)
#define real_u NAME(real_u)
#define slice_r NAME(slice_r)
#define slice_d NAME(slice_d)
#define slice_i NAME(slice_i)
#define slice_u NAME(slice_u)

static inline real_v NAME(load)(const REAL *p) { return *(const real_u *)p; }
static inline void NAME(store)(REAL *p, real_v v) { *(real_u *)p = v; }

/* a where mask is set (all ones), else b: GNU C has no vector ?: in C. Comparisons are
 * cast to slice_i at each use, since compilers differ in their result's element type. */
static inline slice_d NAME(select)(slice_i mask, slice_d a, slice_d b)
{
    return (slice_d)(((slice_i)a & mask) | ((slice_i)b & ~mask));
}

/*
 * exp(x) for x <= 0, lane by lane. x = n ln2 + t with |t| <= ln2 / 2; exp(x) = 2^n exp(t),
 * exp(t) by its Taylor series to t^13 (truncation error < 5e-18; about 1 ulp in all).
 * Below -708 the result is 0 (e^-708 is far below anything a weight can matter at).
 */
static inline slice_d NAME(exp_nonpositive)(slice_d x)
{
    const slice_d zero = {0};
    const double shifter = 0x1.8p52; /* adding it rounds to an integer (|value| < 2^51) */
    const double ln2_hi = 0x1.62e42fefa3800p-1; /* ln2 split so that n * ln2_hi is exact */
    const double ln2_lo = 0x1.ef35793c76730p-45;
    const slice_i keep = (slice_i)(x >= -708.0);
    x = NAME(select)(keep, x, zero - 708.0);
    slice_d k = x * 0x1.71547652b82fep0 + shifter; /* x log2(e), rounded */
    /* The low mantissa bits of k now hold n: bits(k) = bits(shifter) + n. */
    slice_u biased = (slice_u)k - (slice_u)(zero + shifter) + 1023; /* n + 1023 >= 1 */
    k -= shifter;
    slice_d t = (x - k * ln2_hi) - k * ln2_lo;
    slice_d p = t * (1.0 / 6227020800.0) + 1.0 / 479001600.0; /* 1/13!, 1/12! */
    p = p * t + 1.0 / 39916800.0;
    p = p * t + 1.0 / 3628800.0;
    p = p * t + 1.0 / 362880.0;
    p = p * t + 1.0 / 40320.0;
    p = p * t + 1.0 / 5040.0;
    p = p * t + 1.0 / 720.0;
    p = p * t + 1.0 / 120.0;
    p = p * t + 1.0 / 24.0;
    p = p * t + 1.0 / 6.0;
    p = p * t + 0.5;
    p = p * t + 1.0;
    p = p * t + 1.0;
    return NAME(select)(keep, p * (slice_d)(biased << 52), zero);
}

/* For tests: y[i] = exp(x[i]) for x[i] <= 0, through the code that makes the weights. */
void NAME(adaptiveblur_exp)(int64_t count, const double *x, double *y)
{
    for (int64_t i = 0; i < count; i += SLICE) {
        double lanes[SLICE] = {0};
        const int64_t n = count - i < SLICE ? count - i : SLICE;
        memcpy(lanes, x + i, (size_t)n * sizeof(double));
        slice_d v;
        memcpy(&v, lanes, sizeof v);
        v = NAME(exp_nonpositive)(v);
        memcpy(lanes, &v, sizeof v);
        memcpy(y + i, lanes, (size_t)n * sizeof(double));
    }
}

/*
 * Weights of the group whose first pixel is sigma[0] / radius[0]: tab[d][lane] for
 * d = 0..R. Returns R (the largest radius) or -1 if a radius is outside [0, halo].
 * *inverse_norm gets 1 / (sum_{|d|<=r} g(d))^2 per lane.
 */
static inline int NAME(group_weights)(const REAL *sigma, const int64_t *radius, int64_t halo,
                                      real_v *restrict tab, real_v *inverse_norm)
{
    int64_t largest = 0, smallest = 0;
    for (int lane = 0; lane < LANES; ++lane) {
        largest = radius[lane] > largest ? radius[lane] : largest;
        smallest = radius[lane] < smallest ? radius[lane] : smallest;
    }
    if (smallest < 0 || largest > halo)
        return -1;
    const int R = (int)largest;
    tab[0] = (real_v){0} + (REAL)1;
    REAL *weights = (REAL *)tab, *inverse = (REAL *)inverse_norm;
    for (int first = 0; first < LANES; first += SLICE) {
        slice_r sigma_r;
        slice_i r;
        memcpy(&sigma_r, sigma + first, sizeof sigma_r);
        memcpy(&r, radius + first, sizeof r);
        const slice_d zero = {0};
        slice_d s = __builtin_convertvector(sigma_r, slice_d);
        s = NAME(select)((slice_i)(s >= SIGMA_FLOOR), s, zero + SIGMA_FLOOR);
        const slice_d c = (zero - 0.5) / (s * s); /* g(d) = exp(c d^2) */
        slice_d total = zero + 1.0;
#if WEIGHTS_BY_RECURRENCE
        /* g(d + 1) = g(d) a^(2d + 1) with a = exp(c): two multiplies a step. In double the
         * relative error grows like d^2 * 1e-16, far below float rounding for any radius. */
        const slice_d a = NAME(exp_nonpositive)(c), a2 = a * a;
        slice_d step = a, g = zero + 1.0;
        for (int d = 1; d <= R; ++d) {
            g *= step;
            step *= a2;
            const slice_d inside = NAME(select)((slice_i)(r >= d), g, zero);
            slice_r rounded = __builtin_convertvector(inside, slice_r);
            memcpy(weights + d * LANES + first, &rounded, sizeof rounded);
            total += 2.0 * inside;
        }
#else
        /* Double results: one exp per tap keeps every weight within an ulp or two. */
        for (int d = 1; d <= R; ++d) {
            const slice_d tap = NAME(exp_nonpositive)(c * (double)d * (double)d);
            const slice_d g = NAME(select)((slice_i)(r >= d), tap, zero);
            slice_r rounded = __builtin_convertvector(g, slice_r);
            memcpy(weights + d * LANES + first, &rounded, sizeof rounded);
            total += 2.0 * g;
        }
#endif
        slice_r norm = __builtin_convertvector(1.0 / (total * total), slice_r);
        memcpy(inverse + first, &norm, sizeof norm);
    }
    return R;
}

/*
 * sums[c] = row[c][0] + sum_{d=1..R} tab[d] * (row[c][d] + row[c][-d]) for c < nc, where
 * row[c][d] = row[c * channel_stride + d]. nc is a compile-time constant at every call
 * (always_inline), so the channel loops unroll and the sums stay in registers. Two
 * partial sums per channel (even and odd d) keep two FMA chains in flight even for one
 * channel; the weight vector is loaded once for all channels.
 */
static inline __attribute__((always_inline)) void
NAME(row_sums)(const int nc, const REAL *restrict row, ptrdiff_t channel_stride,
               const real_v *restrict tab, int R, real_v sums[CHANNEL_BLOCK])
{
    real_v even[CHANNEL_BLOCK], odd[CHANNEL_BLOCK];
    for (int c = 0; c < nc; ++c) {
        even[c] = NAME(load)(row + c * channel_stride);
        odd[c] = (real_v){0};
    }
    int d = 1;
    for (; d + 1 <= R; d += 2) {
        real_v g0 = tab[d], g1 = tab[d + 1];
        for (int c = 0; c < nc; ++c) {
            const REAL *r = row + c * channel_stride;
            even[c] += g0 * (NAME(load)(r + d) + NAME(load)(r - d));
            odd[c] += g1 * (NAME(load)(r + d + 1) + NAME(load)(r - d - 1));
        }
    }
    if (d <= R) {
        real_v g0 = tab[d];
        for (int c = 0; c < nc; ++c) {
            const REAL *r = row + c * channel_stride;
            even[c] += g0 * (NAME(load)(r + d) + NAME(load)(r - d));
        }
    }
    for (int c = 0; c < nc; ++c)
        sums[c] = even[c] + odd[c];
}

/*
 * One group, nc (<= CHANNEL_BLOCK) channels. centre: the group's first pixel in the
 * first channel's input plane. folded: the same column in the first channel's folded
 * rows (folded + (dy - 1) * span holds I(y + dy, .) + I(y - dy, .)). target: the
 * group's first output pixel.
 */
static inline __attribute__((always_inline)) void
NAME(blur_group)(const int nc, const REAL *restrict centre, ptrdiff_t in_plane,
                 const REAL *restrict folded, ptrdiff_t span, ptrdiff_t folded_plane,
                 const real_v *restrict tab, int R, real_v inverse_norm, REAL *restrict target,
                 ptrdiff_t out_plane)
{
    real_v acc[CHANNEL_BLOCK], t[CHANNEL_BLOCK];
    NAME(row_sums)(nc, centre, in_plane, tab, R, acc);
    for (int dy = 1; dy <= R; ++dy) {
        NAME(row_sums)(nc, folded + (dy - 1) * span, folded_plane, tab, R, t);
        real_v gy = tab[dy];
        for (int c = 0; c < nc; ++c)
            acc[c] += gy * t[c];
    }
    for (int c = 0; c < nc; ++c)
        NAME(store)(target + c * out_plane, acc[c] * inverse_norm);
}

/* Narrow tiles (width < LANES): one pixel at a time, all in double. */
static int NAME(blur_rows_narrow)(const REAL *in, const REAL *sigma, const int64_t *radius,
                                  REAL *out, int64_t channels, int64_t height, int64_t width,
                                  int64_t halo, int64_t row0, int64_t row1)
{
    const ptrdiff_t pitch = width + 2 * halo, in_plane = pitch * (height + 2 * halo);
    const ptrdiff_t out_plane = width * height;
    double *g = malloc((size_t)(halo + 1) * sizeof(double));
    if (g == NULL)
        return STATUS_NO_MEMORY;
    int status = STATUS_OK;
    for (int64_t y = row0; y < row1 && status == STATUS_OK; ++y) {
        for (int64_t x = 0; x < width; ++x) {
            const int64_t r = radius[y * width + x];
            if (r < 0 || r > halo) {
                status = STATUS_BAD_RADIUS;
                break;
            }
            double s = (double)sigma[y * width + x];
            s = s < SIGMA_FLOOR ? SIGMA_FLOOR : s;
            double total = 1.0;
            g[0] = 1.0;
            for (int64_t d = 1; d <= r; ++d) {
                g[d] = exp(-(double)(d * d) / (2.0 * s * s));
                total += 2.0 * g[d];
            }
            for (int64_t c = 0; c < channels; ++c) {
                const REAL *centre = in + c * in_plane + (y + halo) * pitch + (x + halo);
                double acc = 0.0;
                for (int64_t dy = -r; dy <= r; ++dy) {
                    double row = 0.0;
                    for (int64_t dx = -r; dx <= r; ++dx)
                        row += g[dx < 0 ? -dx : dx] * (double)centre[dy * pitch + dx];
                    acc += g[dy < 0 ? -dy : dy] * row;
                }
                out[c * out_plane + y * width + x] = (REAL)(r == 0 ? (double)centre[0] : acc / (total * total));
            }
        }
    }
    free(g);
    return status;
}

/*
 * Blur output rows [row0, row1) of one batch item (layout at the top of the file).
 * Returns 0, 1 (a radius outside [0, halo]; nothing past it is written) or 2 (no memory).
 */
int NAME(adaptiveblur_blur)(const REAL *in, const REAL *sigma, const int64_t *radius, REAL *out,
                            int64_t channels, int64_t height, int64_t width, int64_t halo,
                            int64_t row0, int64_t row1)
{
    if (width < LANES)
        return NAME(blur_rows_narrow)(in, sigma, radius, out, channels, height, width, halo,
                                      row0, row1);
    const ptrdiff_t pitch = width + 2 * halo, in_plane = pitch * (height + 2 * halo);
    const ptrdiff_t out_plane = width * height;
    const int64_t groups = (width + LANES - 1) / LANES;
    const ptrdiff_t widest_span = GROUPS_PER_CHUNK * LANES + 2 * halo;
    void *tab_base, *folded_base;
    real_v *tab = aligned_block((size_t)(halo + 1) * sizeof(real_v), &tab_base);
    REAL *folded = aligned_block((size_t)(CHANNEL_BLOCK * halo * widest_span + 1) * sizeof(REAL),
                                 &folded_base);
    if (tab == NULL || folded == NULL) {
        free(tab_base);
        free(folded_base);
        return STATUS_NO_MEMORY;
    }
    fp_state saved = flush_subnormals();
    int status = STATUS_OK;
    for (int64_t y = row0; y < row1 && status == STATUS_OK; ++y) {
        for (int64_t first = 0; first < groups && status == STATUS_OK; first += GROUPS_PER_CHUNK) {
            const int64_t last = first + GROUPS_PER_CHUNK < groups ? first + GROUPS_PER_CHUNK : groups;
            /* Group g covers [x, x + LANES) with x = min(g * LANES, width - LANES): the last
             * group is shifted left to end at the edge, and the pixels it shares with the
             * previous group get the same values again. */
            const int64_t x_first = first * LANES < width - LANES ? first * LANES : width - LANES;
            const int64_t x_end = (last - 1) * LANES < width - LANES ? last * LANES : width;
            int64_t chunk_radius = 0;
            for (int64_t x = x_first; x < x_end; ++x) {
                const int64_t r = radius[y * width + x];
                chunk_radius = r > chunk_radius ? r : chunk_radius;
            }
            if (chunk_radius > halo) {
                status = STATUS_BAD_RADIUS;
                break;
            }
            const int R_chunk = (int)chunk_radius;
            const ptrdiff_t span = x_end - x_first + 2 * R_chunk, folded_plane = R_chunk * span;
            for (int64_t c = 0; c < channels && status == STATUS_OK; c += CHANNEL_BLOCK) {
                const int nc = channels - c < CHANNEL_BLOCK ? (int)(channels - c) : CHANNEL_BLOCK;
                /* Fold the window's rows about row y once for the whole chunk:
                 * folded[k][dy - 1][j] = I_k(y + dy, x_first - R + j) + I_k(y - dy, ...). */
                for (int k = 0; k < nc; ++k) {
                    const REAL *plane = in + (c + k) * in_plane + (x_first + halo - R_chunk);
                    for (int dy = 1; dy <= R_chunk; ++dy) {
                        const REAL *restrict upper = plane + (y + halo - dy) * pitch;
                        const REAL *restrict lower = plane + (y + halo + dy) * pitch;
                        REAL *restrict sum = folded + k * folded_plane + (dy - 1) * span;
                        ptrdiff_t j = 0;
                        for (; j + LANES <= span; j += LANES)
                            NAME(store)(sum + j, NAME(load)(upper + j) + NAME(load)(lower + j));
                        for (; j < span; ++j)
                            sum[j] = upper[j] + lower[j];
                    }
                }
                for (int64_t g = first; g < last; ++g) {
                    const int64_t x = g * LANES < width - LANES ? g * LANES : width - LANES;
                    real_v inverse_norm;
                    int R = NAME(group_weights)(sigma + y * width + x, radius + y * width + x, halo,
                                                tab, &inverse_norm);
                    if (R < 0) {
                        status = STATUS_BAD_RADIUS;
                        break;
                    }
                    const REAL *centre = in + c * in_plane + (y + halo) * pitch + (x + halo);
                    const REAL *fold = folded + (x - x_first + R_chunk);
                    REAL *target = out + c * out_plane + y * width + x;
                    if (R == 0) { /* every lane keeps its own value */
                        for (int k = 0; k < nc; ++k)
                            NAME(store)(target + k * out_plane, NAME(load)(centre + k * in_plane));
                        continue;
                    }
                    switch (nc) {
                    case 1: NAME(blur_group)(1, centre, in_plane, fold, span, folded_plane, tab, R, inverse_norm, target, out_plane); break;
                    case 2: NAME(blur_group)(2, centre, in_plane, fold, span, folded_plane, tab, R, inverse_norm, target, out_plane); break;
                    case 3: NAME(blur_group)(3, centre, in_plane, fold, span, folded_plane, tab, R, inverse_norm, target, out_plane); break;
                    default: NAME(blur_group)(4, centre, in_plane, fold, span, folded_plane, tab, R, inverse_norm, target, out_plane); break;
                    }
                }
            }
        }
    }
    restore_fp(saved);
    free(tab_base);
    free(folded_base);
    return status;
}

int NAME(adaptiveblur_lanes)(void) { return LANES; }

#undef real_v
#undef real_u
#undef slice_r
#undef slice_d
#undef slice_i
#undef slice_u
#undef SLICE
#undef LANES

#endif /* ADAPTIVEBLUR_TEMPLATE */
