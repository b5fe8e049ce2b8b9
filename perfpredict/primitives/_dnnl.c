/* conv.dnnl and conv.dnnl_int8: a 2-D convolution run by oneDNN through its C API, with nothing between
 * Python and oneDNN but one ctypes call.
 *
 * pp_dnnl_conv_create builds, once, everything a call needs: the primitive for one input shape (channels-last
 * source and destination but in a chain's stem, weights in the blocked format oneDNN picks, bias, an eltwise
 * post-op), the weights reordered into that format, and memory objects for source and destination without data.
 * pp_dnnl_conv_run then points those at the caller's buffers and executes. The scratchpad is the caller's too (user
 * mode), so that the memory a call holds is allocated, and seen, by the caller's allocator.
 *
 * At int8 (a non-NULL pp_dnnl_quant) source and destination are u8 with a per-tensor scale and zero point, the
 * weights s8 with one scale per output channel, the bias f32: oneDNN computes
 *   dst_f32 = post_ops(src_scale * w_scale[oc] * sum((src - src_zp) * w) + bias)
 *   dst = saturate_u8(round(dst_f32 / dst_scale) + dst_zp)
 * with the weights' and destination's scales and zero point fixed at create and the source's given with each
 * call (they live in the struct; the primitive reads them through memory objects when it executes).
 *
 * Errors are returned as dnnl_status_t values (0 is success); create reports its status through *status.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_max_threads(void) { return 1; }
static int omp_get_thread_num(void) { return 0; }
#endif

#include "dnnl.h"
#include "dnnl_debug.h"

typedef struct {
    float src_scale, dst_scale;
    int32_t src_zp, dst_zp;
    const float *w_scales; /* k floats, one per output channel */
} pp_dnnl_quant;

typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t conv;
    dnnl_memory_t src, weights, bias, dst;
    dnnl_memory_t scratch;
    size_t scratch_bytes;
    /* int8 only: the quantisation parameters and the memory objects that show them to the primitive */
    int int8;
    float src_scale, dst_scale;
    int32_t src_zp, dst_zp;
    float *w_scales;
    dnnl_memory_t m_src_scale, m_w_scales, m_dst_scale, m_src_zp, m_dst_zp;
    /* a residual added to the output (a folded Add): the tensor's memory object and its post-op's index */
    dnnl_memory_t residual;
    int residual_post;
    /* int8 only: a table that maps each output code to the code of the activation of its value, applied in place
     * after the call (pp_dnnl_conv_set_table); count is the output's number of values */
    int has_table, table_isa;
    uint8_t table[256];
    size_t count;
    /* fp32 only: 1 when the swish runs as our own pass over the output after the call (pp_swish_f32) */
    int own_swish;
    size_t batch, channels; /* n and k: the output's images and channels */
    int dst_fmt;     /* the output's memory format (format_tag) */
} pp_dnnl_conv;

#define TRY(call)                      \
    do {                               \
        st = (call);                   \
        if (st != dnnl_success) goto fail; \
    } while (0)

static int quant_isa(void); /* the (de)quantisation loops' ISA, below: 2 AVX-512, 1 AVX2 with FMA, 0 scalar */

/* body(ctx, from, count) over [0, n): in one call below min_n values (or with one thread), else split over the
 * OpenMP threads (oneDNN's and torch's pool) in parts of a multiple of align values; below min_n one thread is
 * faster than waking the others. The elementwise loops of this file (tables, swish, (de)quantisations) run so. */
static void split_over_threads(size_t n, size_t min_n, size_t align, void (*body)(void *, size_t, size_t),
                               void *ctx) {
    if (n < min_n || omp_get_max_threads() < 2) {
        body(ctx, 0, n);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel
    {
        size_t k = (size_t)omp_get_num_threads(), part = ((n + k - 1) / k + align - 1) / align * align;
        size_t a = part * (size_t)omp_get_thread_num();
        if (a < n) body(ctx, a, n - a < part ? n - a : part);
    }
#endif
}

/* ------------------------------------------------------------------------------------- u8 tables, in place */

/* x[i] = table[x[i]] for n bytes: with AVX-512 VBMI 64 bytes at a time (two 128-byte halves of the table looked
 * up by vpermi2b, chosen by each byte's top bit), else a byte at a time. Large tensors are split over the OpenMP
 * threads as the (de)quantisations are. */
static void table_scalar(uint8_t *x, size_t n, const uint8_t *table) {
    for (size_t i = 0; i < n; ++i) x[i] = table[x[i]];
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void table_vbmi(uint8_t *x, size_t n,
                                                                               const uint8_t *table) {
    const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
    const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i v = _mm512_loadu_si512(x + i);
        __m512i lo = _mm512_permutex2var_epi8(t0, v, t1), hi = _mm512_permutex2var_epi8(t2, v, t3);
        _mm512_storeu_si512(x + i, _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi));
    }
    table_scalar(x + i, n - i, table);
}
#endif

/* 1 when this CPU runs the VBMI loop, else 0 */
static int table_isa(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bw")) return 1;
#endif
    return 0;
}

/* the loop table_isa picks on this CPU (1: AVX-512 VBMI, 0: scalar) */
int pp_table_isa(void) { return table_isa(); }

static void table_part(int isa, uint8_t *x, size_t n, const uint8_t *table) {
#if defined(__x86_64__)
    if (isa == 1) {
        table_vbmi(x, n, table);
        return;
    }
#endif
    table_scalar(x, n, table);
}

#define PP_T_PARALLEL 65536

typedef struct {
    int isa;
    uint8_t *x;
    const uint8_t *table;
} table_job;

static void table_body(void *ctx, size_t from, size_t n) {
    table_job *j = ctx;
    table_part(j->isa, j->x + from, n, j->table);
}

/* n bytes of x mapped through table in place, by the loop for isa (pp_table_isa's or below) */
void pp_table_u8(int isa, uint8_t *x, size_t n, const uint8_t *table) {
    table_job j = {isa, x, table};
    split_over_threads(n, PP_T_PARALLEL, 64, table_body, &j);
}

/* --------------------------------------------------------------------------------- fp32 swish, in place */

/* x = x * sigmoid(x) = x / (1 + exp(-x)) over n floats. oneDNN 3.2's swish post-op costs its fp32 convolutions
 * 0.15-0.27 ns per output value on the AMX Xeon VM (benchmarks/bench_epilogue.py); with AVX-512 this pass is 17
 * vector instructions per 16 values (0.13-0.14 ns per value there): k = round(-x log2 e) (x clamped so that
 * exp(-x) stays finite), s = x + k ln 2 in two parts (so exp(-x) = 2^k exp(-s), |s| <= ln 2 / 2), exp(-s) from a
 * degree-5 polynomial fitted for the least largest relative error on that range (1.3e-7 in float), 2^k by
 * vscalefps, and 1 / (1 + exp(-x)) from vrcp14ps and one Newton step (relative error about 3e-7 against the exact
 * in all). */
static void swish_scalar(float *x, size_t n) {
    for (size_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + expf(-x[i]));
}

#if defined(__x86_64__)
/* the swish of 16 floats */
__attribute__((target("avx512f"))) static inline __m512 swish16(__m512 v) {
    const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f), neg_log2e = _mm512_set1_ps(-1.44269504f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    /* x clamped to [-87, 88]: exp(-x) and the reciprocal of 1 + exp(-x) stay normal floats (an infinite x too) */
    __m512 c = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(c, neg_log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 s = _mm512_fmadd_ps(k, ln2_lo, _mm512_fmadd_ps(k, ln2_hi, c)); /* x + k ln 2 */
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(-8.296633139e-3f), s, _mm512_set1_ps(4.191532359e-2f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-1.666758955e-1f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(4.999889433e-1f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-9.999997020e-1f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(1.000000119f));
    __m512 d = _mm512_add_ps(_mm512_scalef_ps(p, k), one); /* 1 + exp(-x) */
    __m512 q = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(_mm512_mul_ps(v, q), _mm512_fnmadd_ps(d, q, two));
}

__attribute__((target("avx512f"))) static void swish_avx512(float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, swish16(_mm512_loadu_ps(x + i)));
    swish_scalar(x + i, n - i);
}

/* the swish of `pixels` pixels of c channels each (channels-last) at x, each channel's swish added into sum */
__attribute__((target("avx512f"))) static void swish_sum_avx512(float *x, size_t pixels, size_t c, float *sum) {
    size_t vec = c / 16 * 16;
    for (size_t p = 0; p < pixels; ++p, x += c) {
        for (size_t j = 0; j < vec; j += 16) {
            __m512 y = swish16(_mm512_loadu_ps(x + j));
            _mm512_storeu_ps(x + j, y);
            _mm512_storeu_ps(sum + j, _mm512_add_ps(_mm512_loadu_ps(sum + j), y));
        }
        swish_scalar(x + vec, c - vec);
        for (size_t j = vec; j < c; ++j) sum[j] += x[j];
    }
}
#endif

static void swish_part(int isa, float *x, size_t n) {
#if defined(__x86_64__)
    if (isa == 2) {
        swish_avx512(x, n);
        return;
    }
#endif
    swish_scalar(x, n);
}

typedef struct {
    int isa;
    float *x;
} swish_job;

static void swish_body(void *ctx, size_t from, size_t n) {
    swish_job *j = ctx;
    swish_part(j->isa, j->x + from, n);
}

/* n floats of x replaced by their swish, by the loop for isa (pp_quant_isa's numbering: 2 AVX-512, else scalar) */
void pp_swish_f32(int isa, float *x, size_t n) {
    swish_job j = {isa, x};
    split_over_threads(n, PP_T_PARALLEL / 4, 16, swish_body, &j);
}

static void swish_sum_scalar(float *x, size_t pixels, size_t c, float *sum) {
    for (size_t p = 0; p < pixels; ++p, x += c) {
        swish_scalar(x, c);
        for (size_t j = 0; j < c; ++j) sum[j] += x[j];
    }
}

typedef struct {
    int isa;
    float *x;
    size_t c;
    float *sums; /* c floats per thread */
} swish_mean_job;

static void swish_mean_body(void *ctx, size_t from, size_t n) {
    swish_mean_job *j = ctx;
    float *sum = j->sums + (size_t)omp_get_thread_num() * j->c;
#if defined(__x86_64__)
    if (j->isa == 2) {
        swish_sum_avx512(j->x + from * j->c, n, j->c, sum);
        return;
    }
#endif
    swish_sum_scalar(j->x + from * j->c, n, j->c, sum);
}

/* the swish of a channels-last tensor of `pixels` pixels of c channels at x, in place, and each channel's mean over
 * the pixels into mean (c floats): a GlobalAveragePool of the swish's output folded into its pass, which then reads
 * the tensor once instead of twice. 0, or dnnl_out_of_memory. */
int pp_swish_mean_f32(int isa, float *x, size_t pixels, size_t c, float *mean) {
    int threads = omp_get_max_threads();
    float *sums = calloc((size_t)threads * c, sizeof(float));
    if (sums == NULL) return (int)dnnl_out_of_memory;
    swish_mean_job j = {isa, x, c, sums};
    size_t min_pixels = (PP_T_PARALLEL / 4 + c - 1) / c;
    split_over_threads(pixels, min_pixels, 1, swish_mean_body, &j);
    for (size_t k = 0; k < c; ++k) {
        float total = 0.0f;
        for (int t = 0; t < threads; ++t) total += sums[(size_t)t * c + k];
        mean[k] = total / (float)pixels;
    }
    free(sums);
    return 0;
}

void pp_dnnl_conv_destroy(pp_dnnl_conv *c) {
    if (c == NULL) return;
    if (c->conv) dnnl_primitive_destroy(c->conv);
    if (c->src) dnnl_memory_destroy(c->src);
    if (c->weights) dnnl_memory_destroy(c->weights);
    if (c->bias) dnnl_memory_destroy(c->bias);
    if (c->dst) dnnl_memory_destroy(c->dst);
    if (c->residual) dnnl_memory_destroy(c->residual);
    if (c->scratch) dnnl_memory_destroy(c->scratch);
    if (c->m_src_scale) dnnl_memory_destroy(c->m_src_scale);
    if (c->m_w_scales) dnnl_memory_destroy(c->m_w_scales);
    if (c->m_dst_scale) dnnl_memory_destroy(c->m_dst_scale);
    if (c->m_src_zp) dnnl_memory_destroy(c->m_src_zp);
    if (c->m_dst_zp) dnnl_memory_destroy(c->m_dst_zp);
    free(c->w_scales);
    if (c->stream) dnnl_stream_destroy(c->stream);
    if (c->engine) dnnl_engine_destroy(c->engine);
    free(c);
}

/* a memory object of `count` values of type dt at `data` (the caller keeps `data` alive) */
static dnnl_status_t vector_memory(dnnl_memory_t *m, dnnl_engine_t engine, int count, dnnl_data_type_t dt,
                                   void *data) {
    dnnl_memory_desc_t md = NULL;
    dnnl_dims_t dims = {count};
    dnnl_status_t st = dnnl_memory_desc_create_with_tag(&md, 1, dims, dt, dnnl_a);
    if (st == dnnl_success) st = dnnl_memory_create(m, md, engine, data);
    if (md) dnnl_memory_desc_destroy(md);
    return st;
}

/* the CPU engine and a stream on it, which every primitive here runs on */
static dnnl_status_t open_engine(dnnl_engine_t *engine, dnnl_stream_t *stream) {
    dnnl_status_t st = dnnl_engine_create(engine, dnnl_cpu, 0);
    return st != dnnl_success ? st : dnnl_stream_create(stream, *engine, dnnl_stream_default_flags);
}

/* primitive attributes whose scratchpad the caller passes with each call (user mode) */
static dnnl_status_t user_scratchpad_attr(dnnl_primitive_attr_t *attr) {
    dnnl_status_t st = dnnl_primitive_attr_create(attr);
    return st != dnnl_success ? st : dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
}

/* the primitive of pd, the bytes of scratchpad a call needs and, when it needs any, a memory object for it */
static dnnl_status_t make_primitive(const_dnnl_primitive_desc_t pd, dnnl_engine_t engine, dnnl_primitive_t *prim,
                                   dnnl_memory_t *scratch, size_t *scratch_bytes) {
    dnnl_status_t st = dnnl_primitive_create(prim, pd);
    if (st != dnnl_success) return st;
    const_dnnl_memory_desc_t md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    *scratch_bytes = md ? dnnl_memory_desc_get_size(md) : 0;
    return *scratch_bytes > 0 ? dnnl_memory_create(scratch, md, engine, DNNL_MEMORY_NONE) : dnnl_success;
}

/* oneDNN 3.2's int8 1x1 AMX kernel (jit_1x1:avx512_core_amx) writes past the end of a u8 destination whose
 * pixel count is not a multiple of its tile rows (e.g. 1536 bytes past a 6x6x128 output: 12 pixels of 128
 * channels), corrupting whatever follows it on the heap. 62 of the 322 distinct 1x1 convolutions of the zoo at
 * 96 and 224 px did so; no other kernel wrote past its output or scratchpad. Move on to the next
 * implementation oneDNN offers (its general AMX kernel). */
static dnnl_status_t skip_overrunning_impls(dnnl_primitive_desc_t pd) {
    for (;;) {
        const char *impl = NULL;
        dnnl_status_t st = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        if (st != dnnl_success) return st;
        if (impl == NULL || strcmp(impl, "jit_1x1:avx512_core_amx") != 0) return dnnl_success;
        st = dnnl_primitive_desc_next_impl(pd);
        if (st != dnnl_success) return dnnl_unimplemented; /* never run the faulty one */
    }
}

/* a tensor's memory format by number: 0 planar (nchw), 1 channels-last (nhwc), 2 channels in blocks of 16 (nChw16c,
 * oneDNN's own; only inside a chain) */
static dnnl_format_tag_t format_tag(int fmt) { return fmt == 0 ? dnnl_nchw : fmt == 2 ? dnnl_nChw16c : dnnl_nhwc; }

/* shape: n, c, h, w (input), k, oh, ow (output); kernel kh, kw; stride sh, sw; pads top, left, bottom, right;
 * dilation dh, dw (1 = dense); groups. weight: k x (c / groups) x kh x kw values, floats (fp32) or int8 (when
 * q is not NULL); bias: k floats or NULL. act: 0 none, 1 relu, 2 clip to [lo, hi], 3 swish, 4 hardswish,
 * 5 sigmoid. q: NULL for fp32, else the int8 quantisation parameters. residual: 1 adds a tensor of the output's
 * shape, layout and type (given with each call) before the activation, as a folded residual Add; at int8 it is u8
 * with scale res_scale and zero point res_zp, each call's tensor on that grid. src_fmt, dst_fmt: the source's and
 * destination's memory formats (format_tag; 1 channels-last but for a chain's stem). */
pp_dnnl_conv *pp_dnnl_conv_create(int n, int c, int h, int w, int k, int oh, int ow, int kh, int kw, int sh,
                                  int sw, int pt, int pl, int pb, int pr, int dh, int dw, int groups,
                                  const void *weight, const float *bias, int act, float lo, float hi,
                                  const pp_dnnl_quant *q, int residual, float res_scale, int res_zp, int src_fmt,
                                  int dst_fmt, int *status) {
    dnnl_status_t st = dnnl_success;
    pp_dnnl_conv *cv = calloc(1, sizeof(*cv));
    dnnl_memory_desc_t src_md = NULL, dst_md = NULL, w_any = NULL, w_plain = NULL, b_md = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL, reorder_pd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t w_user = NULL;
    if (cv == NULL) {
        st = dnnl_out_of_memory;
        goto fail;
    }
    TRY(open_engine(&cv->engine, &cv->stream));
    cv->int8 = q != NULL;
    dnnl_data_type_t act_dt = q ? dnnl_u8 : dnnl_f32, w_dt = q ? dnnl_s8 : dnnl_f32;

    dnnl_dims_t src_dims = {n, c, h, w}, dst_dims = {n, k, oh, ow}, bias_dims = {k};
    TRY(dnnl_memory_desc_create_with_tag(&src_md, 4, src_dims, act_dt, format_tag(src_fmt)));
    TRY(dnnl_memory_desc_create_with_tag(&dst_md, 4, dst_dims, act_dt, format_tag(dst_fmt)));
    TRY(dnnl_memory_desc_create_with_tag(&b_md, 1, bias_dims, dnnl_f32, dnnl_a));
    if (groups > 1) {
        dnnl_dims_t wd = {groups, k / groups, c / groups, kh, kw};
        TRY(dnnl_memory_desc_create_with_tag(&w_any, 5, wd, w_dt, dnnl_format_tag_any));
        TRY(dnnl_memory_desc_create_with_tag(&w_plain, 5, wd, w_dt, dnnl_goihw));
    } else {
        dnnl_dims_t wd = {k, c, kh, kw};
        TRY(dnnl_memory_desc_create_with_tag(&w_any, 4, wd, w_dt, dnnl_format_tag_any));
        TRY(dnnl_memory_desc_create_with_tag(&w_plain, 4, wd, w_dt, dnnl_oihw));
    }

    TRY(user_scratchpad_attr(&attr));
    if (q) {
        cv->src_scale = q->src_scale;
        cv->dst_scale = q->dst_scale;
        cv->src_zp = q->src_zp;
        cv->dst_zp = q->dst_zp;
        cv->w_scales = malloc((size_t)k * sizeof(float));
        if (cv->w_scales == NULL) {
            st = dnnl_out_of_memory;
            goto fail;
        }
        memcpy(cv->w_scales, q->w_scales, (size_t)k * sizeof(float));
        /* per output channel: dimension 0 of plain weights, dimensions 0 and 1 (groups, k / groups) of grouped */
        TRY(dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_SRC, 0));
        TRY(dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_WEIGHTS, groups > 1 ? 3 : 1));
        TRY(dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_DST, 0));
        TRY(dnnl_primitive_attr_set_zero_points_mask(attr, DNNL_ARG_SRC, 0));
        TRY(dnnl_primitive_attr_set_zero_points_mask(attr, DNNL_ARG_DST, 0));
        TRY(vector_memory(&cv->m_src_scale, cv->engine, 1, dnnl_f32, &cv->src_scale));
        TRY(vector_memory(&cv->m_dst_scale, cv->engine, 1, dnnl_f32, &cv->dst_scale));
        TRY(vector_memory(&cv->m_w_scales, cv->engine, k, dnnl_f32, cv->w_scales));
        TRY(vector_memory(&cv->m_src_zp, cv->engine, 1, dnnl_s32, &cv->src_zp));
        TRY(vector_memory(&cv->m_dst_zp, cv->engine, 1, dnnl_s32, &cv->dst_zp));
    }
    cv->own_swish = !q && act == 3 && !residual && quant_isa() == 2;
    if (cv->own_swish) act = 0; /* applied after the call, by pp_swish_f32 */
    if (act != 0 || residual) TRY(dnnl_post_ops_create(&post));
    if (residual) {
        /* dst_f32 + residual: binary post-ops take their operand's values as they are, so at int8 the u8
         * residual r (real value res_scale * (r - res_zp)) is added as res_scale * (dst / res_scale - res_zp + r) */
        if (q) TRY(dnnl_post_ops_append_eltwise(post, dnnl_eltwise_linear, 1.0f / res_scale, (float)-res_zp));
        cv->residual_post = dnnl_post_ops_len(post);
        TRY(dnnl_post_ops_append_binary(post, dnnl_binary_add, dst_md));
        if (q) TRY(dnnl_post_ops_append_eltwise(post, dnnl_eltwise_linear, res_scale, 0.0f));
        TRY(dnnl_memory_create(&cv->residual, dst_md, cv->engine, DNNL_MEMORY_NONE));
    }
    if (act != 0) {
        if (act == 1)
            TRY(dnnl_post_ops_append_eltwise(post, dnnl_eltwise_relu, 0.0f, 0.0f));
        else if (act == 2)
            TRY(dnnl_post_ops_append_eltwise(post, dnnl_eltwise_clip, lo, hi));
        else if (act == 3) /* x * sigmoid(alpha x) */
            TRY(dnnl_post_ops_append_eltwise(post, dnnl_eltwise_swish, 1.0f, 0.0f));
        else if (act == 4) /* x * clamp(alpha x + beta, 0, 1) */
            TRY(dnnl_post_ops_append_eltwise(post, dnnl_eltwise_hardswish, 1.0f / 6.0f, 0.5f));
        else if (act == 5)
            TRY(dnnl_post_ops_append_eltwise(post, dnnl_eltwise_logistic, 0.0f, 0.0f));
        else {
            st = dnnl_invalid_arguments;
            goto fail;
        }
    }
    if (post) TRY(dnnl_primitive_attr_set_post_ops(attr, post));

    /* oneDNN's dilation counts the gaps between taps: 0 for a dense kernel */
    dnnl_dims_t strides = {sh, sw}, dilation = {dh - 1, dw - 1}, pad_l = {pt, pl}, pad_r = {pb, pr};
    TRY(dnnl_convolution_forward_primitive_desc_create(&pd, cv->engine, dnnl_forward_inference,
                                                       dnnl_convolution_direct, src_md, w_any,
                                                       bias ? b_md : NULL, dst_md, strides, dilation, pad_l,
                                                       pad_r, attr));
    if (q) TRY(skip_overrunning_impls(pd));
    TRY(make_primitive(pd, cv->engine, &cv->conv, &cv->scratch, &cv->scratch_bytes));

    const_dnnl_memory_desc_t w_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    TRY(dnnl_memory_create(&cv->weights, w_md, cv->engine, DNNL_MEMORY_ALLOCATE));

    /* the weights, reordered once into the primitive's format */
    TRY(dnnl_memory_create(&w_user, w_plain, cv->engine, (void *)weight));
    TRY(dnnl_reorder_primitive_desc_create(&reorder_pd, w_plain, cv->engine, w_md, cv->engine, NULL));
    TRY(dnnl_primitive_create(&reorder, reorder_pd));
    dnnl_exec_arg_t rargs[2] = {{DNNL_ARG_FROM, w_user}, {DNNL_ARG_TO, cv->weights}};
    TRY(dnnl_primitive_execute(reorder, cv->stream, 2, rargs));
    TRY(dnnl_stream_wait(cv->stream));

    if (bias) {
        void *data = NULL;
        TRY(dnnl_memory_create(&cv->bias, b_md, cv->engine, DNNL_MEMORY_ALLOCATE));
        TRY(dnnl_memory_get_data_handle(cv->bias, &data));
        memcpy(data, bias, (size_t)k * sizeof(float));
    }
    TRY(dnnl_memory_create(&cv->src, src_md, cv->engine, DNNL_MEMORY_NONE));
    TRY(dnnl_memory_create(&cv->dst, dst_md, cv->engine, DNNL_MEMORY_NONE));
    cv->count = (size_t)n * (size_t)k * (size_t)oh * (size_t)ow;
    cv->batch = (size_t)n;
    cv->channels = (size_t)k;
    cv->dst_fmt = dst_fmt;

fail:
    if (reorder) dnnl_primitive_destroy(reorder);
    if (reorder_pd) dnnl_primitive_desc_destroy(reorder_pd);
    if (w_user) dnnl_memory_destroy(w_user);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (src_md) dnnl_memory_desc_destroy(src_md);
    if (dst_md) dnnl_memory_desc_destroy(dst_md);
    if (b_md) dnnl_memory_desc_destroy(b_md);
    if (w_any) dnnl_memory_desc_destroy(w_any);
    if (w_plain) dnnl_memory_desc_destroy(w_plain);
    *status = (int)st;
    if (st != dnnl_success) {
        pp_dnnl_conv_destroy(cv);
        return NULL;
    }
    return cv;
}

/* bytes of scratchpad a call needs (the caller passes a buffer of at least this size to run) */
size_t pp_dnnl_conv_scratch_bytes(const pp_dnnl_conv *c) { return c->scratch_bytes; }

/* the oneDNN call of pp_dnnl_conv_run, without what follows it (a table of codes, our own swish) */
static int conv_execute(pp_dnnl_conv *c, void *src, void *dst, void *scratch, float src_scale, int src_zp,
                        void *residual) {
    dnnl_status_t st;
    dnnl_exec_arg_t args[11];
    int nargs = 0;
    if ((st = dnnl_memory_set_data_handle(c->src, src)) != dnnl_success) return (int)st;
    if ((st = dnnl_memory_set_data_handle(c->dst, dst)) != dnnl_success) return (int)st;
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->weights};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->dst};
    if (c->bias) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->bias};
    if (c->scratch) {
        if ((st = dnnl_memory_set_data_handle(c->scratch, scratch)) != dnnl_success) return (int)st;
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, c->scratch};
    }
    if (c->residual) {
        if ((st = dnnl_memory_set_data_handle(c->residual, residual)) != dnnl_success) return (int)st;
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_MULTIPLE_POST_OP(c->residual_post) | DNNL_ARG_SRC_1,
                                          c->residual};
    }
    if (c->int8) {
        c->src_scale = src_scale;
        c->src_zp = src_zp;
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, c->m_src_scale};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, c->m_w_scales};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, c->m_dst_scale};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, c->m_src_zp};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, c->m_dst_zp};
    }
    if ((st = dnnl_primitive_execute(c->conv, c->stream, nargs, args)) != dnnl_success) return (int)st;
    return (int)dnnl_stream_wait(c->stream);
}

/* one convolution: src and dst are buffers (float, or u8 at int8) of the shapes and formats given at create;
 * src_scale and src_zp quantise src at int8 (ignored at fp32); residual is the tensor added to the output when the
 * primitive was created with one (ignored otherwise) */
int pp_dnnl_conv_run(pp_dnnl_conv *c, void *src, void *dst, void *scratch, float src_scale, int src_zp,
                     void *residual) {
    int st = conv_execute(c, src, dst, scratch, src_scale, src_zp, residual);
    if (st != 0) return st;
    if (c->has_table) pp_table_u8(c->table_isa, (uint8_t *)dst, c->count, c->table);
    if (c->own_swish) pp_swish_f32(2, (float *)dst, c->count);
    return 0;
}

/* 1 when the convolution applies its swish as our own pass over its output (pp_swish_f32), else 0 */
int pp_dnnl_conv_own_swish(const pp_dnnl_conv *c) { return c->own_swish; }

/* one fp32 convolution whose swish is our own pass (pp_dnnl_conv_own_swish) and channels-last output is also
 * averaged over each image's pixels, channel by channel, into mean (n x k floats): the GlobalAveragePool that reads
 * the output, folded into the swish's pass (pp_swish_mean_f32) */
int pp_dnnl_conv_run_mean(pp_dnnl_conv *c, void *src, void *dst, void *scratch, float *mean) {
    if (!c->own_swish || c->dst_fmt != 1) return (int)dnnl_invalid_arguments;
    int st = conv_execute(c, src, dst, scratch, 1.0f, 0, NULL);
    if (st != 0) return st;
    size_t per_image = c->count / c->batch, pixels = per_image / c->channels;
    for (size_t i = 0; i < c->batch; ++i) /* each image's own means: a GlobalAveragePool keeps the batch */
        if ((st = pp_swish_mean_f32(2, (float *)dst + i * per_image, pixels, c->channels, mean + i * c->channels)))
            return st;
    return 0;
}

/* from now on, every call maps its u8 output through table (256 codes) in place: the convolution's primitive
 * writes the values before an activation on their own grid, the table gives each code the code of the
 * activation of its value on the output's grid. 0, or an error when the convolution is not int8. */
int pp_dnnl_conv_set_table(pp_dnnl_conv *c, const uint8_t *table) {
    if (!c->int8) return (int)dnnl_invalid_arguments;
    memcpy(c->table, table, 256);
    c->table_isa = table_isa();
    c->has_table = 1;
    return 0;
}

/* n convolutions back to back, each as pp_dnnl_conv_run runs it (scales[i] and zps[i] quantise srcs[i] at int8),
 * all on one scratchpad of the largest's size: oneDNN's own time for a sequence of calls, with no caller between
 * them (benchmarks/bench_sequence.py) */
int pp_dnnl_conv_run_chain(int n, pp_dnnl_conv **convs, void **srcs, void **dsts, void **residuals,
                           const float *scales, const int *zps, void *scratch) {
    for (int i = 0; i < n; ++i) {
        int st = pp_dnnl_conv_run(convs[i], srcs[i], dsts[i], scratch, scales[i], zps[i], residuals[i]);
        if (st != 0) return st;
    }
    return 0;
}

/* oneDNN's name of a status code, e.g. "invalid_arguments" */
const char *pp_dnnl_status(int status) { return dnnl_status2str((dnnl_status_t)status); }

/* oneDNN's version, for the record: major * 10000 + minor * 100 + patch */
int pp_dnnl_version(void) {
    const dnnl_version_t *v = dnnl_version();
    return v->major * 10000 + v->minor * 100 + v->patch;
}

/* the name of the implementation oneDNN chose for a created primitive, e.g. "brg:avx512_core_amx" */
static const char *impl_name(const_dnnl_primitive_t prim) {
    const_dnnl_primitive_desc_t pd = NULL;
    const char *name = NULL;
    if (dnnl_primitive_get_primitive_desc(prim, &pd) != dnnl_success) return "unknown";
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) != dnnl_success || name == NULL)
        return "unknown";
    return name;
}

const char *pp_dnnl_conv_impl(const pp_dnnl_conv *c) { return impl_name(c->conv); }

/* pool.dnnl: a 2-D max or average pool by oneDNN (forward inference: no workspace), channels-last source and
 * destination, f32 or (int8) u8; an average pool of u8 keeps the source's scale and zero point. */
typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t pool;
    dnnl_memory_t src, dst, scratch;
    size_t scratch_bytes;
    /* a channels-last u8 max pool runs our own loop (u8_max_pool) where the CPU has AVX-512 BW: its geometry */
    int own, n, c, h, w, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw;
} pp_dnnl_pool;

/* 1 when this CPU has AVX-512 BW (byte-wise max of 64 lanes), else 0 */
static int u8_max_isa(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

/* A channels-last u8 max pool by our own loop: per output pixel, the byte-wise max of its window's valid pixels,
 * 64 channels at a time (the last part masked). oneDNN 3.2's jit_int:avx512_core took 2-4x as long on
 * squeezenet1_1's three pools (52.7 against 13.1 us for 64 channels 111x111 -> 55x55, 2 threads, the AMX Xeon VM).
 * The output rows of all images are split over the OpenMP threads. */
#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw"))) static void u8_max_rows(const pp_dnnl_pool *p, const uint8_t *x,
                                                                   uint8_t *y, size_t from, size_t rows) {
    const int c = p->c;
    const __mmask64 tail = c % 64 ? (~0ULL >> (64 - c % 64)) : ~0ULL;
    for (size_t r = from; r < from + rows; ++r) {
        const size_t img = r / (size_t)p->oh;
        const int oy = (int)(r % (size_t)p->oh);
        const uint8_t *xi = x + img * (size_t)p->h * p->w * c;
        uint8_t *yr = y + r * (size_t)p->ow * c;
        for (int ox = 0; ox < p->ow; ++ox) {
            for (int ch = 0; ch < c; ch += 64) {
                const __mmask64 m = ch + 64 <= c ? ~0ULL : tail;
                __m512i best = _mm512_setzero_si512();
                for (int ky = 0; ky < p->kh; ++ky) {
                    const int iy = oy * p->sh - p->pt + ky * p->dh;
                    if (iy < 0 || iy >= p->h) continue;
                    for (int kx = 0; kx < p->kw; ++kx) {
                        const int ix = ox * p->sw - p->pl + kx * p->dw;
                        if (ix < 0 || ix >= p->w) continue;
                        best = _mm512_max_epu8(best, _mm512_maskz_loadu_epi8(m, xi + ((size_t)iy * p->w + ix) * c + ch));
                    }
                }
                _mm512_mask_storeu_epi8(yr + (size_t)ox * c + ch, m, best);
            }
        }
    }
}
#endif

typedef struct {
    const pp_dnnl_pool *p;
    const uint8_t *x;
    uint8_t *y;
} pool_job;

static void u8_max_body(void *ctx, size_t from, size_t n) {
#if defined(__x86_64__)
    const pool_job *j = ctx;
    u8_max_rows(j->p, j->x, j->y, from, n);
#else
    (void)ctx, (void)from, (void)n;
#endif
}

void pp_dnnl_pool_destroy(pp_dnnl_pool *p) {
    if (p == NULL) return;
    if (p->pool) dnnl_primitive_destroy(p->pool);
    if (p->src) dnnl_memory_destroy(p->src);
    if (p->dst) dnnl_memory_destroy(p->dst);
    if (p->scratch) dnnl_memory_destroy(p->scratch);
    if (p->stream) dnnl_stream_destroy(p->stream);
    if (p->engine) dnnl_engine_destroy(p->engine);
    free(p);
}

/* shape n, c, h, w -> oh, ow; kernel kh, kw; stride sh, sw; pads top, left, bottom, right (bottom and right may
 * exceed the node's own to give ceil-mode windows: padded positions never count for max, nor for alg 2);
 * dilation dh, dw (1 = dense). alg: 0 max, 1 average counting padded positions, 2 average without them. fmt: the
 * source's and destination's memory format (format_tag). */
pp_dnnl_pool *pp_dnnl_pool_create(int n, int c, int h, int w, int oh, int ow, int kh, int kw, int sh, int sw, int pt,
                                  int pl, int pb, int pr, int dh, int dw, int alg, int int8, int fmt, int *status) {
    dnnl_status_t st = dnnl_success;
    pp_dnnl_pool *pp = calloc(1, sizeof(*pp));
    dnnl_memory_desc_t src_md = NULL, dst_md = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    if (pp == NULL) {
        st = dnnl_out_of_memory;
        goto fail;
    }
    TRY(open_engine(&pp->engine, &pp->stream));
    dnnl_data_type_t dt = int8 ? dnnl_u8 : dnnl_f32;
    dnnl_dims_t src_dims = {n, c, h, w}, dst_dims = {n, c, oh, ow};
    TRY(dnnl_memory_desc_create_with_tag(&src_md, 4, src_dims, dt, format_tag(fmt)));
    TRY(dnnl_memory_desc_create_with_tag(&dst_md, 4, dst_dims, dt, format_tag(fmt)));
    TRY(user_scratchpad_attr(&attr));
    dnnl_alg_kind_t kind = alg == 0 ? dnnl_pooling_max
                           : alg == 1 ? dnnl_pooling_avg_include_padding : dnnl_pooling_avg_exclude_padding;
    dnnl_dims_t strides = {sh, sw}, kernel = {kh, kw}, dilation = {dh - 1, dw - 1}, pad_l = {pt, pl},
                pad_r = {pb, pr};
    /* the descriptor checks the geometry for our own loop too; only oneDNN's kernel needs the primitive */
    TRY(dnnl_pooling_forward_primitive_desc_create(&pd, pp->engine, dnnl_forward_inference, kind, src_md, dst_md,
                                                   strides, kernel, dilation, pad_l, pad_r, attr));
    if (alg == 0 && int8 && fmt == 1 && u8_max_isa()) {
        pp->own = 1;
        pp->n = n, pp->c = c, pp->h = h, pp->w = w, pp->oh = oh, pp->ow = ow, pp->kh = kh, pp->kw = kw;
        pp->sh = sh, pp->sw = sw, pp->pt = pt, pp->pl = pl, pp->dh = dh, pp->dw = dw;
        goto fail; /* no error: the cleanup */
    }
    TRY(make_primitive(pd, pp->engine, &pp->pool, &pp->scratch, &pp->scratch_bytes));
    TRY(dnnl_memory_create(&pp->src, src_md, pp->engine, DNNL_MEMORY_NONE));
    TRY(dnnl_memory_create(&pp->dst, dst_md, pp->engine, DNNL_MEMORY_NONE));

fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (src_md) dnnl_memory_desc_destroy(src_md);
    if (dst_md) dnnl_memory_desc_destroy(dst_md);
    *status = (int)st;
    if (st != dnnl_success) {
        pp_dnnl_pool_destroy(pp);
        return NULL;
    }
    return pp;
}

size_t pp_dnnl_pool_scratch_bytes(const pp_dnnl_pool *p) { return p->scratch_bytes; }

const char *pp_dnnl_pool_impl(const pp_dnnl_pool *p) { return p->own ? "perfpredict:avx512bw" : impl_name(p->pool); }

#define PP_POOL_PARALLEL 8192 /* output bytes: below, one thread */

/* one pool: src and dst are buffers of the shapes and format given at create */
int pp_dnnl_pool_run(pp_dnnl_pool *p, void *src, void *dst, void *scratch) {
    if (p->own) {
        pool_job j = {p, src, dst};
        size_t rows = (size_t)p->n * (size_t)p->oh, row_bytes = (size_t)p->ow * (size_t)p->c;
        split_over_threads(rows, (PP_POOL_PARALLEL + row_bytes - 1) / row_bytes, 1, u8_max_body, &j);
        return 0;
    }
    dnnl_status_t st;
    dnnl_exec_arg_t args[3];
    int nargs = 0;
    if ((st = dnnl_memory_set_data_handle(p->src, src)) != dnnl_success) return (int)st;
    if ((st = dnnl_memory_set_data_handle(p->dst, dst)) != dnnl_success) return (int)st;
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, p->src};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, p->dst};
    if (p->scratch) {
        if ((st = dnnl_memory_set_data_handle(p->scratch, scratch)) != dnnl_success) return (int)st;
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->scratch};
    }
    if ((st = dnnl_primitive_execute(p->pool, p->stream, nargs, args)) != dnnl_success) return (int)st;
    return (int)dnnl_stream_wait(p->stream);
}

/* mul.dnnl: a 4-D Mul by oneDNN's binary primitive, src0 (n, c, h, w) times a per-channel gate (n, c, 1, 1),
 * channels-last or planar (nhwc flag): a squeeze-excite gate. At int8, src0, the gate and dst are u8 with per-tensor
 * scales and zero points given with each call. The primitive then takes src0 as raw integers and the gate as two
 * per-channel f32 vectors made here from the call's quantisation parameters,
 *   G[c] = s0 * sg * (gate[c] - zg) / sd,   B[c] = zd - z0 * G[c],
 * so that one pass writes dst = saturate_u8(round(src0 * G + B)): the requantised product, the add being a
 * binary post-op. */
typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t bin;
    dnnl_memory_t src0, src1, dst, add, scratch;
    size_t scratch_bytes;
    int int8, channels; /* channels: n * c, the length of G and B */
    float *g, *b;
} pp_dnnl_binary;

void pp_dnnl_binary_destroy(pp_dnnl_binary *b) {
    if (b == NULL) return;
    if (b->bin) dnnl_primitive_destroy(b->bin);
    if (b->src0) dnnl_memory_destroy(b->src0);
    if (b->src1) dnnl_memory_destroy(b->src1);
    if (b->dst) dnnl_memory_destroy(b->dst);
    if (b->add) dnnl_memory_destroy(b->add);
    if (b->scratch) dnnl_memory_destroy(b->scratch);
    if (b->stream) dnnl_stream_destroy(b->stream);
    if (b->engine) dnnl_engine_destroy(b->engine);
    free(b->g);
    free(b->b);
    free(b);
}

pp_dnnl_binary *pp_dnnl_binary_create(int n, int c, int h, int w, int nhwc, int int8, int *status) {
    dnnl_status_t st = dnnl_success;
    pp_dnnl_binary *b = calloc(1, sizeof(*b));
    dnnl_memory_desc_t src0_md = NULL, src1_md = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL;
    if (b == NULL) {
        st = dnnl_out_of_memory;
        goto fail;
    }
    b->int8 = int8;
    b->channels = n * c;
    TRY(open_engine(&b->engine, &b->stream));
    dnnl_dims_t dims = {n, c, h, w}, gate = {n, c, 1, 1};
    TRY(dnnl_memory_desc_create_with_tag(&src0_md, 4, dims, int8 ? dnnl_u8 : dnnl_f32, nhwc ? dnnl_nhwc : dnnl_nchw));
    TRY(dnnl_memory_desc_create_with_tag(&src1_md, 4, gate, dnnl_f32, dnnl_nchw));
    TRY(user_scratchpad_attr(&attr));
    if (int8) {
        b->g = malloc(sizeof(float) * (size_t)b->channels);
        b->b = malloc(sizeof(float) * (size_t)b->channels);
        if (b->g == NULL || b->b == NULL) {
            st = dnnl_out_of_memory;
            goto fail;
        }
        TRY(dnnl_post_ops_create(&post));
        TRY(dnnl_post_ops_append_binary(post, dnnl_binary_add, src1_md));
        TRY(dnnl_primitive_attr_set_post_ops(attr, post));
    }
    TRY(dnnl_binary_primitive_desc_create(&pd, b->engine, dnnl_binary_mul, src0_md, src1_md, src0_md, attr));
    TRY(make_primitive(pd, b->engine, &b->bin, &b->scratch, &b->scratch_bytes));
    TRY(dnnl_memory_create(&b->src0, src0_md, b->engine, DNNL_MEMORY_NONE));
    TRY(dnnl_memory_create(&b->dst, src0_md, b->engine, DNNL_MEMORY_NONE));
    if (int8) {
        TRY(dnnl_memory_create(&b->src1, src1_md, b->engine, b->g));
        TRY(dnnl_memory_create(&b->add, src1_md, b->engine, b->b));
    } else {
        TRY(dnnl_memory_create(&b->src1, src1_md, b->engine, DNNL_MEMORY_NONE));
    }

fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (src0_md) dnnl_memory_desc_destroy(src0_md);
    if (src1_md) dnnl_memory_desc_destroy(src1_md);
    *status = (int)st;
    if (st != dnnl_success) {
        pp_dnnl_binary_destroy(b);
        return NULL;
    }
    return b;
}

size_t pp_dnnl_binary_scratch_bytes(const pp_dnnl_binary *b) { return b->scratch_bytes; }

const char *pp_dnnl_binary_impl(const pp_dnnl_binary *b) { return impl_name(b->bin); }

/* one product: src0 and dst of the create shape and layout, the gate n * c values (f32, or at int8 u8 with the
 * quantisation parameters that follow; they are ignored at fp32) */
int pp_dnnl_binary_run(pp_dnnl_binary *b, void *src0, void *gate, void *dst, void *scratch, float s0, int z0,
                       float sg, int zg, float sd, int zd) {
    dnnl_status_t st;
    dnnl_exec_arg_t args[5];
    int nargs = 0;
    if (b->int8) {
        const uint8_t *q = gate;
        float k = s0 * sg / sd;
        for (int i = 0; i < b->channels; ++i) {
            b->g[i] = k * (float)((int)q[i] - zg);
            b->b[i] = (float)zd - (float)z0 * b->g[i];
        }
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, b->add};
    } else if ((st = dnnl_memory_set_data_handle(b->src1, gate)) != dnnl_success) {
        return (int)st;
    }
    if ((st = dnnl_memory_set_data_handle(b->src0, src0)) != dnnl_success) return (int)st;
    if ((st = dnnl_memory_set_data_handle(b->dst, dst)) != dnnl_success) return (int)st;
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC_0, b->src0};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC_1, b->src1};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, b->dst};
    if (b->scratch) {
        if ((st = dnnl_memory_set_data_handle(b->scratch, scratch)) != dnnl_success) return (int)st;
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, b->scratch};
    }
    if ((st = dnnl_primitive_execute(b->bin, b->stream, nargs, args)) != dnnl_success) return (int)st;
    return (int)dnnl_stream_wait(b->stream);
}

/* ---------------------------------------------------------------------------------------------- channel concat */

/* Two channels-last tensors joined along the channels: per pixel, the first's channels then the second's, copied
 * here rather than by oneDNN 3.2's concat (simple:any), which took 2-3x as long on squeezenet1_1's u8 concats and
 * 1.3-1.6x on its float ones (28.6 against 8.7 us for 32 + 64 channels at 55x55, u8; 41.3 against 28.3 us for
 * 64 + 64 floats; the AMX Xeon VM, 2 threads). Large tensors are split over the OpenMP threads by pixels. */
#define PP_CAT_PARALLEL 16384 /* bytes: below, one thread */

typedef struct {
    size_t pixels, bytes0, bytes1; /* pixels (n * h * w); bytes of each part per pixel */
} pp_dnnl_concat;

void pp_dnnl_concat_destroy(pp_dnnl_concat *c) { free(c); }

/* two channels-last tensors (n, c0, h, w) and (n, c1, h, w), floats or u8 (int8: on one grid, which the copy
 * keeps), joined along the channels into a channels-last (n, c0 + c1, h, w) */
pp_dnnl_concat *pp_dnnl_concat_create(int n, int c0, int c1, int h, int w, int int8, int *status) {
    pp_dnnl_concat *cc = NULL;
    if (n < 1 || c0 < 1 || c1 < 1 || h < 1 || w < 1) {
        *status = (int)dnnl_invalid_arguments;
        return NULL;
    }
    if ((cc = calloc(1, sizeof(*cc))) == NULL) {
        *status = (int)dnnl_out_of_memory;
        return NULL;
    }
    size_t es = int8 ? 1 : sizeof(float);
    cc->pixels = (size_t)n * (size_t)h * (size_t)w;
    cc->bytes0 = (size_t)c0 * es;
    cc->bytes1 = (size_t)c1 * es;
    *status = (int)dnnl_success;
    return cc;
}

size_t pp_dnnl_concat_scratch_bytes(const pp_dnnl_concat *c) {
    (void)c;
    return 0;
}

const char *pp_dnnl_concat_impl(const pp_dnnl_concat *c) { return c ? "perfpredict:copy" : ""; }

typedef struct {
    const pp_dnnl_concat *c;
    const char *src0, *src1;
    char *dst;
} concat_job;

static void concat_body(void *ctx, size_t from, size_t n) {
    const concat_job *j = ctx;
    size_t b0 = j->c->bytes0, b1 = j->c->bytes1;
    const char *a = j->src0 + from * b0, *b = j->src1 + from * b1;
    char *d = j->dst + from * (b0 + b1);
    for (size_t p = 0; p < n; ++p, a += b0, b += b1, d += b0 + b1) {
        memcpy(d, a, b0);
        memcpy(d + b0, b, b1);
    }
}

int pp_dnnl_concat_run(pp_dnnl_concat *c, void *src0, void *src1, void *dst, void *scratch) {
    (void)scratch;
    concat_job j = {c, src0, src1, dst};
    size_t per_pixel = c->bytes0 + c->bytes1;
    split_over_threads(c->pixels, (PP_CAT_PARALLEL + per_pixel - 1) / per_pixel, 1, concat_body, &j);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- reorders */

/* Quantisation and dequantisation of a buffer whose layout stays, bit for bit as torch computes them (fbgemm's
 * per-tensor quint8 scheme): q = clamp(round_half_even(fma(x, 1 / scale, zp)), 0, 255), one rounding of the
 * product plus the zero point, and x = (q - zp) * scale, in float.
 * oneDNN 3.2's reorder takes 4-7x as long once it is given runtime scales (85 against 13 us for 400k values on
 * the AMX Xeon VM), so a (de)quantisation that keeps the layout runs here instead: AVX-512 or AVX2 where the CPU
 * has it, else scalar code. The vector conversions round half to even under the default MXCSR, as lrintf does. */
#define PP_Q_MAX_F 2147483520.0f /* the largest float below 2^31: larger products would convert to INT_MIN */

static void quantize_scalar(const float *x, uint8_t *q, size_t from, size_t n, float inv, int zp) {
    for (size_t i = from; i < n; ++i) {
        float t = fmaf(x[i], inv, (float)zp);
        long r = t >= PP_Q_MAX_F ? 255 : t <= -PP_Q_MAX_F ? 0 : lrintf(t);
        q[i] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
    }
}

static void dequantize_scalar(const uint8_t *q, float *x, size_t from, size_t n, float scale, int zp) {
    for (size_t i = from; i < n; ++i) x[i] = (float)((int)q[i] - zp) * scale;
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void quantize_avx512(const float *x, uint8_t *q, size_t n, float inv,
                                                               int zp) {
    const __m512 vinv = _mm512_set1_ps(inv), vzp = _mm512_set1_ps((float)zp), vmax = _mm512_set1_ps(PP_Q_MAX_F);
    const __m512i lo = _mm512_setzero_si512(), hi = _mm512_set1_epi32(255);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i r = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_fmadd_ps(_mm512_loadu_ps(x + i), vinv, vzp), vmax));
        r = _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(r));
    }
    quantize_scalar(x, q, i, n, inv, zp);
}

__attribute__((target("avx512f"))) static void dequantize_avx512(const uint8_t *q, float *x, size_t n, float scale,
                                                                 int zp) {
    const __m512 vs = _mm512_set1_ps(scale);
    const __m512i vzp = _mm512_set1_epi32(zp);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + i)));
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v, vzp)), vs));
    }
    dequantize_scalar(q, x, i, n, scale, zp);
}

__attribute__((target("avx2,fma"))) static void quantize_avx2(const float *x, uint8_t *q, size_t n, float inv,
                                                               int zp) {
    const __m256 vinv = _mm256_set1_ps(inv), vzp = _mm256_set1_ps((float)zp), vmax = _mm256_set1_ps(PP_Q_MAX_F);
    const __m256i lo = _mm256_setzero_si256(), hi = _mm256_set1_epi32(255);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i r = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_fmadd_ps(_mm256_loadu_ps(x + i), vinv, vzp), vmax));
        r = _mm256_min_epi32(_mm256_max_epi32(r, lo), hi);
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(w, w));
    }
    quantize_scalar(x, q, i, n, inv, zp);
}

__attribute__((target("avx2,fma"))) static void dequantize_avx2(const uint8_t *q, float *x, size_t n, float scale,
                                                            int zp) {
    const __m256 vs = _mm256_set1_ps(scale);
    const __m256i vzp = _mm256_set1_epi32(zp);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(v, vzp)), vs));
    }
    dequantize_scalar(q, x, i, n, scale, zp);
}
#endif

/* the widest of the loops above this CPU runs: 2 AVX-512, 1 AVX2 with FMA, 0 scalar */
static int quant_isa(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

/* the ISA quant_isa picks on this CPU (for the tests, which run each loop the CPU has) */
int pp_quant_isa(void) { return quant_isa(); }

static void quantize_part(int isa, const float *x, uint8_t *q, size_t n, float inv, int zp) {
#if defined(__x86_64__)
    if (isa == 2) {
        quantize_avx512(x, q, n, inv, zp);
        return;
    }
    if (isa == 1) {
        quantize_avx2(x, q, n, inv, zp);
        return;
    }
#endif
    quantize_scalar(x, q, 0, n, inv, zp);
}

static void dequantize_part(int isa, const uint8_t *q, float *x, size_t n, float scale, int zp) {
#if defined(__x86_64__)
    if (isa == 2) {
        dequantize_avx512(q, x, n, scale, zp);
        return;
    }
    if (isa == 1) {
        dequantize_avx2(q, x, n, scale, zp);
        return;
    }
#endif
    dequantize_scalar(q, x, 0, n, scale, zp);
}

/* Tensors of at least this many values are split over the threads (split_over_threads). */
#define PP_Q_PARALLEL 32768

typedef struct {
    int quantize, isa;
    const void *src;
    void *dst;
    float scale;
    int zp;
} quant_job;

/* part [from, from + n) of a (de)quantisation of src into dst: scale is 1 / scale when quantising */
static void quant_body(void *ctx, size_t from, size_t n) {
    quant_job *j = ctx;
    if (j->quantize)
        quantize_part(j->isa, (const float *)j->src + from, (uint8_t *)j->dst + from, n, j->scale, j->zp);
    else dequantize_part(j->isa, (const uint8_t *)j->src + from, (float *)j->dst + from, n, j->scale, j->zp);
}

static void quant_all(int quantize, int isa, const void *src, void *dst, size_t n, float scale, int zp) {
    quant_job j = {quantize, isa, src, dst, scale, zp};
    split_over_threads(n, PP_Q_PARALLEL, 64, quant_body, &j);
}

/* n floats x quantised into q (u8) with the per-tensor grid (scale, zp), by the loop for isa (pp_quant_isa's or
 * below) */
void pp_quantize_u8(int isa, const float *x, uint8_t *q, size_t n, float scale, int zp) {
    quant_all(1, isa, x, q, n, 1.0f / scale, zp);
}

/* n u8 values q on the grid (scale, zp) dequantised into x */
void pp_dequantize_u8(int isa, const uint8_t *q, float *x, size_t n, float scale, int zp) {
    quant_all(0, isa, q, x, n, scale, zp);
}

/* a 4-D (n, c, h, w) tensor copied into another data type or layout: a quantisation (f32 to u8, on a per-tensor
 * grid), a dequantisation (u8 to f32) or a change of layout (nchw, nhwc) of floats. A (de)quantisation that keeps
 * the layout runs the loops above; the others run oneDNN's reorder (dst = saturate_u8(round(src / scale) + zp) when
 * it quantises as it changes the layout). The quantised side's scale and zero point come with each call. */
typedef struct {
    dnnl_engine_t engine; /* this and the oneDNN objects below: NULL when `direct` */
    dnnl_stream_t stream;
    dnnl_primitive_t reorder;
    dnnl_memory_t src, dst, scratch, m_scale, m_zp;
    size_t scratch_bytes;
    int q_arg; /* DNNL_ARG_SRC or DNNL_ARG_DST: the side that is u8; 0 when neither is */
    float scale;
    int32_t zp;
    int direct; /* 1: the layout stays and one side is u8, so the loops above run it; isa: theirs */
    int isa;
    size_t count;
} pp_dnnl_reorder;

void pp_dnnl_reorder_destroy(pp_dnnl_reorder *r) {
    if (r == NULL) return;
    if (r->reorder) dnnl_primitive_destroy(r->reorder);
    if (r->src) dnnl_memory_destroy(r->src);
    if (r->dst) dnnl_memory_destroy(r->dst);
    if (r->scratch) dnnl_memory_destroy(r->scratch);
    if (r->m_scale) dnnl_memory_destroy(r->m_scale);
    if (r->m_zp) dnnl_memory_destroy(r->m_zp);
    if (r->stream) dnnl_stream_destroy(r->stream);
    if (r->engine) dnnl_engine_destroy(r->engine);
    free(r);
}

/* src_u8 / dst_u8: that side is u8 on a per-tensor grid (at most one of them), else f32; src_fmt / dst_fmt: that
 * side's memory format (format_tag) */
pp_dnnl_reorder *pp_dnnl_reorder_create(int n, int c, int h, int w, int src_u8, int src_fmt, int dst_u8,
                                        int dst_fmt, int *status) {
    dnnl_status_t st = dnnl_success;
    pp_dnnl_reorder *r = calloc(1, sizeof(*r));
    dnnl_memory_desc_t src_md = NULL, dst_md = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    if (r == NULL || (src_u8 && dst_u8)) {
        st = r == NULL ? dnnl_out_of_memory : dnnl_invalid_arguments;
        goto fail;
    }
    r->q_arg = src_u8 ? DNNL_ARG_SRC : dst_u8 ? DNNL_ARG_DST : 0;
    r->scale = 1.0f;
    r->direct = r->q_arg != 0 && src_fmt == dst_fmt && src_fmt != 2;
    r->isa = quant_isa();
    r->count = (size_t)n * (size_t)c * (size_t)h * (size_t)w;
    if (r->direct) goto fail; /* the loops above run it: no oneDNN object to make (st is success: r is returned) */
    TRY(open_engine(&r->engine, &r->stream));
    dnnl_dims_t dims = {n, c, h, w};
    TRY(dnnl_memory_desc_create_with_tag(&src_md, 4, dims, src_u8 ? dnnl_u8 : dnnl_f32, format_tag(src_fmt)));
    TRY(dnnl_memory_desc_create_with_tag(&dst_md, 4, dims, dst_u8 ? dnnl_u8 : dnnl_f32, format_tag(dst_fmt)));
    TRY(user_scratchpad_attr(&attr));
    if (r->q_arg) {
        TRY(dnnl_primitive_attr_set_scales_mask(attr, r->q_arg, 0));
        TRY(dnnl_primitive_attr_set_zero_points_mask(attr, r->q_arg, 0));
        TRY(vector_memory(&r->m_scale, r->engine, 1, dnnl_f32, &r->scale));
        TRY(vector_memory(&r->m_zp, r->engine, 1, dnnl_s32, &r->zp));
    }
    TRY(dnnl_reorder_primitive_desc_create(&pd, src_md, r->engine, dst_md, r->engine, attr));
    TRY(make_primitive(pd, r->engine, &r->reorder, &r->scratch, &r->scratch_bytes));
    TRY(dnnl_memory_create(&r->src, src_md, r->engine, DNNL_MEMORY_NONE));
    TRY(dnnl_memory_create(&r->dst, dst_md, r->engine, DNNL_MEMORY_NONE));

fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (src_md) dnnl_memory_desc_destroy(src_md);
    if (dst_md) dnnl_memory_desc_destroy(dst_md);
    *status = (int)st;
    if (st != dnnl_success) {
        pp_dnnl_reorder_destroy(r);
        return NULL;
    }
    return r;
}

size_t pp_dnnl_reorder_scratch_bytes(const pp_dnnl_reorder *r) { return r->scratch_bytes; }

const char *pp_dnnl_reorder_impl(const pp_dnnl_reorder *r) {
    static const char *loops[] = {"perfpredict:scalar", "perfpredict:avx2", "perfpredict:avx512f"};
    return r->direct ? loops[r->isa] : impl_name(r->reorder);
}

/* one reorder of src into dst (buffers of the create shape, types and layouts); scale and zp are the u8 side's grid
 * (ignored when neither side is u8) */
int pp_dnnl_reorder_run(pp_dnnl_reorder *r, void *src, void *dst, void *scratch, float scale, int zp) {
    dnnl_status_t st;
    dnnl_exec_arg_t args[5];
    int nargs = 0;
    if (r->direct) {
        if (r->q_arg == DNNL_ARG_DST) pp_quantize_u8(r->isa, src, dst, r->count, scale, zp);
        else pp_dequantize_u8(r->isa, src, dst, r->count, scale, zp);
        return 0;
    }
    if ((st = dnnl_memory_set_data_handle(r->src, src)) != dnnl_success) return (int)st;
    if ((st = dnnl_memory_set_data_handle(r->dst, dst)) != dnnl_success) return (int)st;
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_FROM, r->src};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_TO, r->dst};
    if (r->scratch) {
        if ((st = dnnl_memory_set_data_handle(r->scratch, scratch)) != dnnl_success) return (int)st;
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, r->scratch};
    }
    if (r->q_arg) {
        r->scale = scale;
        r->zp = zp;
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_SCALES | r->q_arg, r->m_scale};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_ZERO_POINTS | r->q_arg, r->m_zp};
    }
    if ((st = dnnl_primitive_execute(r->reorder, r->stream, nargs, args)) != dnnl_success) return (int)st;
    return (int)dnnl_stream_wait(r->stream);
}

/* ------------------------------------------------------------------------------------------------------ chains */

/* a chain of n oneDNN calls run as one call of the runtime: prims[i] is a convolution (kinds[i] 0), a pool (1), a
 * channel concat of src[i] and res[i] (2), a gate product of src[i] by the gate res[i] (3), a reorder (4: a
 * (de)quantisation or a change of layout) or a convolution with our own swish that also writes its output's channel
 * means to res[i] (5: pp_dnnl_conv_run_mean). Each tensor is given by where it lives, as an offset >= 0 into the arena
 * (the chain's own tensors, laid out at build) or as -1 - k for the caller's buffer ext[k] (the chain's inputs and
 * the outputs read after it); res[i] is PP_NO_RESIDUAL when a convolution adds none. At int8, scales[3i..3i+2] and
 * zps[3i..3i+2] are the grids of src i, of res i and of dst i (a convolution takes its source's; a product all three;
 * a reorder its u8 side's). Stops at the first failure, returning its status and setting *failed to its index. */
#define PP_NO_RESIDUAL INT64_MIN
int pp_dnnl_chain_run(int n, void **prims, const int *kinds, const int64_t *src, const int64_t *dst,
                      const int64_t *res, void **ext, char *arena, const float *scales, const int *zps, void *scratch,
                      int *failed) {
    for (int i = 0; i < n; ++i) {
        void *s = src[i] >= 0 ? (void *)(arena + src[i]) : ext[-1 - src[i]];
        void *d = dst[i] >= 0 ? (void *)(arena + dst[i]) : ext[-1 - dst[i]];
        void *r = res[i] == PP_NO_RESIDUAL ? NULL : res[i] >= 0 ? (void *)(arena + res[i]) : ext[-1 - res[i]];
        const float *sc = scales + 3 * i;
        const int *zp = zps + 3 * i;
        int st;
        switch (kinds[i]) {
            case 1: st = pp_dnnl_pool_run((pp_dnnl_pool *)prims[i], s, d, scratch); break;
            case 5: st = pp_dnnl_conv_run_mean((pp_dnnl_conv *)prims[i], s, d, scratch, (float *)r); break;
            case 2: st = pp_dnnl_concat_run((pp_dnnl_concat *)prims[i], s, r, d, scratch); break;
            case 3:
                st = pp_dnnl_binary_run((pp_dnnl_binary *)prims[i], s, r, d, scratch, sc[0], zp[0], sc[1], zp[1],
                                        sc[2], zp[2]);
                break;
            case 4: {
                pp_dnnl_reorder *ro = (pp_dnnl_reorder *)prims[i];
                int k = ro->q_arg == DNNL_ARG_SRC ? 0 : 2;
                st = pp_dnnl_reorder_run(ro, s, d, scratch, sc[k], zp[k]);
                break;
            }
            default: st = pp_dnnl_conv_run((pp_dnnl_conv *)prims[i], s, d, scratch, sc[0], zp[0], r);
        }
        if (st != 0) {
            *failed = i;
            return st;
        }
    }
    return 0;
}
