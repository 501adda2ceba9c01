/*
 * The fused CPU pipeline of the command line: decoded integer samples in, integer samples
 * out, one band of output rows per call (adaptiveblur/native/render.py drives it).
 *
 * For each band of rows [row0, row1):
 *   1. sigma and radius of every output pixel, from its driver samples (the image itself or
 *      a map): intensity (one channel, Rec. 709 luminance or the mean), then
 *      sigma = min_sigma + (max_sigma - min_sigma) * curve(v), radius = floor(truncate s + 0.5);
 *   2. the band's input planes with a halo of the band's largest radius, borders folded
 *      (reflect, replicate, constant): each sample looked up in the value tables (sRGB
 *      decoded when blurring in linear light), colour premultiplied by alpha;
 *   3. the blur: adaptiveblur_blur_f32 of _native.c, the native backend's own kernel;
 *   4. alpha divided out, clamped, sRGB encoded (linear light), rounded half to even.
 *
 * Every step is the float32 arithmetic of the torch path (adaptiveblur/render.py with the
 * native backend), operation for operation, so both give the same samples: the tables are
 * made by numpy exactly as torch computes the same values; the transfer curves and the
 * gamma are computed in double and rounded to float, as colour.py and sigma.py do. No
 * multiply-add here may be contracted into an FMA (that would round once where torch
 * rounds twice): the functions below are compiled without contraction.
 *
 * Memory per call: the band's planes ((row1 - row0 + 2 halo) x (width + 2 halo) floats per
 * channel), its blurred planes and its sigma and radius; nothing image-sized.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__clang__)
#define ROUNDED_FUNCTION static
#define ROUNDED_BODY _Pragma("clang fp contract(off)")
#else
#define ROUNDED_FUNCTION static __attribute__((optimize("fp-contract=off")))
#define ROUNDED_BODY
#endif

int adaptiveblur_blur_f32(const float *in, const float *sigma, const int64_t *radius, float *out,
                          int64_t channels, int64_t height, int64_t width, int64_t halo,
                          int64_t row0, int64_t row1);

enum { INTENSITY_CHANNEL = 0, INTENSITY_LUMINANCE = 1, INTENSITY_MEAN = 2 };
enum { BORDER_REFLECT = 0, BORDER_REPLICATE = 1, BORDER_CONSTANT = 2 };
enum { STATUS_OK = 0, STATUS_BAD_RADIUS = 1, STATUS_NO_MEMORY = 2, STATUS_BAD_JOB = 3 };

/* render.py's _ALPHA_FLOOR: below this blurred alpha a pixel keeps its own colour. */
#define ALPHA_FLOOR 1e-6f

/* Mirrored by library.RenderJob (adaptiveblur/native/library.py), field for field. */
typedef struct {
    int64_t height, width;
    const void *samples;        /* (height, width, channels), uint8 or uint16 */
    int64_t channels, sample_bytes, alpha; /* alpha: the last channel is alpha */
    const float *value;         /* value[s] = s / max: alpha, and colour as stored */
    const float *colour;        /* what a colour sample is blurred as: value, or linear light */
    const void *driver;         /* (height, width, driver_channels) samples, or NULL */
    int64_t driver_channels, driver_bytes;
    const float *driver_value;  /* the value table at the driver's depth */
    const float *luma;          /* 3 tables: float(weight_c) * driver_value[s] */
    int64_t intensity, driver_channel;
    const float *sigma_map;     /* (height, width) sigma, used when driver is NULL */
    float min_sigma, sigma_scale; /* float(min_sigma), float(max_sigma - min_sigma) */
    double gamma;
    int64_t invert;
    double truncate;
    int64_t border, linear;     /* linear: encode the blurred colour back to sRGB */
    void *out;                  /* (height, width, channels), out_bytes per sample */
    int64_t out_bytes;
    float out_max;              /* 255 or 65535 */
    float *sigma_out;           /* (height, width) sigma written here, or NULL */
} render_job;

static inline uint32_t sample_at(const void *base, int64_t bytes, int64_t index)
{
    return bytes == 1 ? ((const uint8_t *)base)[index] : ((const uint16_t *)base)[index];
}

static inline float clamp_unit(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

/* borders.border_index: where position i of a line of n samples reads. -1: a zero. */
static inline int64_t fold(int64_t i, int64_t n, int64_t border)
{
    if (i >= 0 && i < n)
        return i;
    if (border == BORDER_REPLICATE)
        return i < 0 ? 0 : n - 1;
    if (border == BORDER_CONSTANT)
        return -1;
    if (n == 1)
        return 0;
    const int64_t period = 2 * (n - 1);
    int64_t folded = i % period;
    folded = folded < 0 ? folded + period : folded;
    return folded < n ? folded : period - folded;
}

/* sigma.intensity then sigma.sigma_from_intensity, for the driver pixel at `pixel`. */
ROUNDED_FUNCTION float sigma_at(const render_job *job, int64_t pixel)
{
    ROUNDED_BODY
    if (job->driver == NULL)
        return job->sigma_map[pixel];
    const int64_t base = pixel * job->driver_channels, entries = (int64_t)1 << (8 * job->driver_bytes);
    const void *driver = job->driver;
    const int64_t bytes = job->driver_bytes;
    float v;
    if (job->intensity == INTENSITY_LUMINANCE) {
        const float *luma = job->luma;
        v = luma[sample_at(driver, bytes, base)] + luma[entries + sample_at(driver, bytes, base + 1)];
        v = clamp_unit(v + luma[2 * entries + sample_at(driver, bytes, base + 2)]);
    } else if (job->intensity == INTENSITY_MEAN) {
        const float *value = job->driver_value;
        v = value[sample_at(driver, bytes, base)] + value[sample_at(driver, bytes, base + 1)];
        v = (v + value[sample_at(driver, bytes, base + 2)]) / 3.0f;
    } else {
        v = job->driver_value[sample_at(driver, bytes, base + job->driver_channel)];
    }
    v = clamp_unit(v);
    if (job->invert)
        v = 1.0f - v;
    if (job->gamma != 1.0)
        v = (float)pow((double)v, job->gamma);
    const float scaled = v * job->sigma_scale;
    return scaled + job->min_sigma;
}

/* kernels.radius_map: floor(sigma * truncate + 0.5), in double. */
ROUNDED_FUNCTION int64_t radius_of(double sigma, double truncate)
{
    ROUNDED_BODY
    const double reach = sigma * truncate;
    return (int64_t)floor(reach + 0.5);
}

/* color.linear_to_srgb, in double, rounded to float. */
ROUNDED_FUNCTION float srgb_encoded(float linear)
{
    ROUNDED_BODY
    const double v = (double)clamp_unit(linear);
    if (v <= 0.0031308)
        return (float)(v * 12.92);
    const double curve = 1.055 * pow(v, 1.0 / 2.4);
    return (float)(curve - 0.055);
}

/* io.quantise: clip to [0, 1], scale, round half to even. */
static inline float quantised(float v, float out_max) { return nearbyintf(clamp_unit(v) * out_max); }

static inline void store_sample(void *out, int64_t bytes, int64_t index, float rounded)
{
    if (bytes == 1)
        ((uint8_t *)out)[index] = (uint8_t)rounded;
    else
        ((uint16_t *)out)[index] = (uint16_t)rounded;
}

/* One input row y (0 <= y < height) into the planes' row at `row` (its halo columns too). */
static void fill_row(const render_job *job, int64_t y, float *row, ptrdiff_t plane, int64_t halo)
{
    const int64_t width = job->width, channels = job->channels;
    const int64_t colours = channels - job->alpha;
    const int64_t base = y * width * channels;
    float *centre = row + halo;
    for (int64_t x = 0; x < width; ++x) {
        const int64_t at = base + x * channels;
        if (job->alpha) {
            const float a = job->value[sample_at(job->samples, job->sample_bytes, at + colours)];
            for (int64_t c = 0; c < colours; ++c)
                centre[c * plane + x] =
                    job->colour[sample_at(job->samples, job->sample_bytes, at + c)] * a;
            centre[colours * plane + x] = a;
        } else {
            for (int64_t c = 0; c < colours; ++c)
                centre[c * plane + x] = job->colour[sample_at(job->samples, job->sample_bytes, at + c)];
        }
    }
    for (int64_t c = 0; c < channels; ++c) {
        float *line = centre + c * plane;
        for (int64_t i = 1; i <= halo; ++i) {
            const int64_t left = fold(-i, width, job->border), right = fold(width - 1 + i, width, job->border);
            line[-i] = left < 0 ? 0.0f : line[left];
            line[width - 1 + i] = right < 0 ? 0.0f : line[right];
        }
    }
}

/* The blurred planes of rows [row0, row1) back to samples (render.blur_samples' last steps). */
ROUNDED_FUNCTION void write_rows(const render_job *job, const float *blurred, int64_t row0, int64_t row1)
{
    ROUNDED_BODY
    const int64_t width = job->width, channels = job->channels;
    const int64_t colours = channels - job->alpha;
    const ptrdiff_t plane = (row1 - row0) * width;
    for (int64_t y = row0; y < row1; ++y) {
        for (int64_t x = 0; x < width; ++x) {
            const int64_t i = (y - row0) * width + x, at = (y * width + x) * channels;
            float alpha = 1.0f;
            int opaque = 1;
            if (job->alpha) {
                alpha = clamp_unit(blurred[colours * plane + i]);
                opaque = alpha > ALPHA_FLOOR;
                store_sample(job->out, job->out_bytes, at + colours, quantised(alpha, job->out_max));
            }
            for (int64_t c = 0; c < colours; ++c) {
                float v = blurred[c * plane + i];
                if (job->alpha)
                    v = opaque ? v / alpha
                               : job->colour[sample_at(job->samples, job->sample_bytes, at + c)];
                v = clamp_unit(v);
                if (job->linear)
                    v = srgb_encoded(v);
                store_sample(job->out, job->out_bytes, at + c, quantised(v, job->out_max));
            }
        }
    }
}

/*
 * Render output rows [row0, row1). Returns 0, 2 (no memory) or 3 (a field out of range).
 * Calls for disjoint row ranges may run at once on different threads.
 */
int adaptiveblur_render(const render_job *job, int64_t row0, int64_t row1)
{
    const int64_t height = job->height, width = job->width, channels = job->channels;
    if (row0 < 0 || row1 > height || row0 >= row1 || channels < 1 || channels > 4 ||
        (job->driver == NULL && job->sigma_map == NULL) || job->truncate <= 0.0)
        return STATUS_BAD_JOB;
    const int64_t rows = row1 - row0, pixels = rows * width;
    float *sigma = malloc((size_t)pixels * sizeof(float));
    int64_t *radius = malloc((size_t)pixels * sizeof(int64_t));
    float *blurred = malloc((size_t)(channels * pixels) * sizeof(float));
    float *planes = NULL;
    int status = STATUS_OK;
    if (sigma == NULL || radius == NULL || blurred == NULL) {
        status = STATUS_NO_MEMORY;
        goto done;
    }
    int64_t halo = 0;
    for (int64_t i = 0; i < pixels; ++i) {
        const float s = sigma_at(job, row0 * width + i);
        const int64_t r = radius_of((double)s, job->truncate);
        sigma[i] = s;
        radius[i] = r < 0 ? 0 : r;
        halo = radius[i] > halo ? radius[i] : halo;
    }
    if (job->sigma_out != NULL)
        memcpy(job->sigma_out + row0 * width, sigma, (size_t)pixels * sizeof(float));
    const ptrdiff_t pitch = width + 2 * halo, plane = pitch * (rows + 2 * halo);
    planes = malloc((size_t)(channels * plane) * sizeof(float));
    if (planes == NULL) {
        status = STATUS_NO_MEMORY;
        goto done;
    }
    for (int64_t j = 0; j < rows + 2 * halo; ++j) {
        const int64_t y = fold(row0 - halo + j, height, job->border);
        float *row = planes + j * pitch;
        if (y < 0) {
            for (int64_t c = 0; c < channels; ++c)
                memset(row + c * plane, 0, (size_t)pitch * sizeof(float));
        } else {
            fill_row(job, y, row, plane, halo);
        }
    }
    status = adaptiveblur_blur_f32(planes, sigma, radius, blurred, channels, rows, width, halo, 0, rows);
    if (status == STATUS_OK)
        write_rows(job, blurred, row0, row1);
done:
    free(sigma);
    free(radius);
    free(blurred);
    free(planes);
    return status;
}
