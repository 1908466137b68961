/* CONV_2D and FULLY_CONNECTED with dynamic inputs: float32 x, y and bias, int8 weights per
 * output channel, each row of x quantized to int8 at run time from its own range (the rule:
 * qrt/ops/hybrid.py quantize_rows and dequantize_sums; references: fully_connected.py and
 * conv_2d.py reference_dynamic), bit for bit on every path.
 *
 * One call (qrt_dynamic_run):
 *   1. range: min and max of each row (FC: a vector along K; CONV_2D: a whole image), in
 *      chunks of `chunk` floats so that threads share one long row; NaNs noted apart.
 *   2. per row, in float32 as quantize_rows: lo = min(0, min), hi = max(0, max),
 *      s = (hi - lo) / 255 (1 if 0), zp = clamp(-128 - rint(lo / s), -128, 127).
 *   3. quantize: q = fmin(fmax(rint(x / s) + zp, -128), 127) into the bound buffer q (true
 *      division, round half to even; a NaN gives -128, as vmaxps(v, -128) does).
 *   4. the int8 GEMM (gemm.h) in its int32 mode, over q: weights packed with bias 0 and the
 *      rows flipped to unsigned as for every GEMM, so each micro-kernel stores
 *      S = sum_k (q + 128) w[c, k] (wrapping int32) into y's own memory; CONV_2D's padding
 *      is the image's zp + 128 (qrt_gemm.pad_n), real 0 once the zero point is taken off.
 *   5. epilogue, in place: acc = S - (zp + 128) * wsum[c] in int32 (exact: the verifier's
 *      bound K x 255 x 127 <= 2^31 - 1 holds, checked again at pack), then
 *      y = clamp(fl(fl(float32(acc) * fl(s_x * s_w[c])) + bias[c]), lo, hi): no fused
 *      multiply-add (every module is compiled with -ffp-contract=off, setup.py; objdump shows
 *      none), the clamp as np.clip does it (NaN kept, y itself where y equals a bound).
 * A row with a NaN or -inf (with s = inf) has lo / s NaN: NumPy's zp is then INT32_MIN (the
 * float-to-int conversion of NaN) and every q -128. Such a row is quantized as q = -127 with
 * padding 0 instead, so that S counts the weights of the real (not padded) inputs, and its
 * epilogue takes acc = (-128 - zp) * S in int64, as the reference's int64 sum does.
 * Threads (OpenMP) split chunks, the GEMM (gemm.h) and output rows; every value is computed
 * whole by one thread in a fixed order, so results do not depend on the thread count. */
#ifndef QRT_DYNAMIC_H
#define QRT_DYNAMIC_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <immintrin.h>
#include "isa.h"
#include "api.h"
#include "gemm.h"

/* ---------------------------------------------------------------- the rule, scalar */

/* One element of step 3. */
static inline __attribute__((always_inline)) int8_t qrt_dyn_quantize1(float x, float s, float zp) {
    float v = rintf(x / s) + zp;
    v = v >= -128.0f ? v : -128.0f;  /* fmax: NaN -> -128 */
    v = v <= 127.0f ? v : 127.0f;
    return (int8_t)(int32_t)v;
}

/* One element of step 5 from acc. */
static inline __attribute__((always_inline)) float qrt_dyn_output1(float acc, float s_x, float s_w,
                                                                  float bias, float lo, float hi) {
    float v = acc * (s_x * s_w) + bias;  /* two roundings: -ffp-contract=off */
    v = lo > v ? lo : v;  /* np.clip: NaN stays, and so does y equal to a bound */
    v = hi < v ? hi : v;
    return v;
}

/* Step 2 for one row: its scale and zero point (INT32_MIN where lo / s is NaN, as NumPy's
 * float-to-int32 conversion gives). */
static inline void qrt_dyn_row_params(float mn, float mx, int nan, float *s_out, int32_t *zp_out) {
    float lo = NAN, hi = NAN;
    if (!nan) {
        lo = mn < 0.0f ? mn : 0.0f;
        hi = mx > 0.0f ? mx : 0.0f;
    }
    float s = (hi - lo) / 255.0f;
    if (s == 0.0f)
        s = 1.0f;
    float t = -128.0f - rintf(lo / s);
    *s_out = s;
    *zp_out = t != t ? INT32_MIN : t < -128.0f ? -128 : t > 127.0f ? 127 : (int32_t)t;
}

static inline int qrt_dyn_zp_ok(int32_t zp) { return zp >= -128 && zp <= 127; }

static int qrt_dyn_range__scalar(const float *x, int64_t n, float *mn, float *mx) {
    float lo = INFINITY, hi = -INFINITY;
    int nan = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        nan |= v != v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *mn = lo;
    *mx = hi;
    return nan;
}

static void qrt_dyn_quantize__scalar(const float *x, int64_t n, float s, float zp, int8_t *q) {
    for (int64_t i = 0; i < n; i++)
        q[i] = qrt_dyn_quantize1(x[i], s, zp);
}

/* Step 5 for elements [c0, n) of a row, in place (y holds the int32 sums). */
static inline __attribute__((always_inline)) void
qrt_dyn_dequantize_from(float *y, int64_t c0, int64_t n, float s_x, int32_t zc, const int32_t *wsum,
                        const float *s_w, const float *bias, float lo, float hi) {
    for (int64_t c = c0; c < n; c++) {
        int32_t S;
        memcpy(&S, y + c, sizeof S);
        int32_t acc = (int32_t)((uint32_t)S - (uint32_t)zc * (uint32_t)wsum[c]);
        y[c] = qrt_dyn_output1((float)acc, s_x, s_w[c], bias[c], lo, hi);
    }
}

static void qrt_dyn_dequantize__scalar(float *y, int64_t n, float s_x, int32_t zc, const int32_t *wsum,
                                       const float *s_w, const float *bias, float lo, float hi) {
    qrt_dyn_dequantize_from(y, 0, n, s_x, zc, wsum, s_w, bias, lo, hi);
}

/* Step 5 of a non-finite row (see the top): S counts the real inputs' weights, acc in int64. */
static void qrt_dyn_dequantize_wide(float *y, int64_t n, float s_x, int32_t zp, const float *s_w,
                                    const float *bias, float lo, float hi) {
    const int64_t d = -128 - (int64_t)zp;
    for (int64_t c = 0; c < n; c++) {
        int32_t S;
        memcpy(&S, y + c, sizeof S);
        y[c] = qrt_dyn_output1((float)(d * S), s_x, s_w[c], bias[c], lo, hi);
    }
}

/* ---------------------------------------------------------------- AVX2 */

#pragma GCC push_options
#pragma GCC target("avx2,fma")

static int qrt_dyn_range__avx2(const float *x, int64_t n, float *mn, float *mx) {
    __m256 lo0 = _mm256_set1_ps(INFINITY), lo1 = lo0, hi0 = _mm256_set1_ps(-INFINITY), hi1 = hi0;
    __m256 nan = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        lo0 = _mm256_min_ps(a, lo0);  /* a NaN gives the second operand: skipped */
        lo1 = _mm256_min_ps(b, lo1);
        hi0 = _mm256_max_ps(a, hi0);
        hi1 = _mm256_max_ps(b, hi1);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    }
    lo0 = _mm256_min_ps(lo0, lo1);
    hi0 = _mm256_max_ps(hi0, hi1);
    float l[8], h[8];
    _mm256_storeu_ps(l, lo0);
    _mm256_storeu_ps(h, hi0);
    float lo, hi;
    int found = qrt_dyn_range__scalar(x + i, n - i, &lo, &hi) | _mm256_movemask_ps(nan);
    for (int j = 0; j < 8; j++) {
        lo = l[j] < lo ? l[j] : lo;
        hi = h[j] > hi ? h[j] : hi;
    }
    *mn = lo;
    *mx = hi;
    return found != 0;
}

static inline __attribute__((always_inline)) __m256i qrt_dyn_quantize8_avx2(const float *x, __m256 s,
                                                                           __m256 zp) {
    __m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x), s),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_max_ps(_mm256_add_ps(v, zp), _mm256_set1_ps(-128.0f));  /* NaN -> -128 */
    v = _mm256_min_ps(v, _mm256_set1_ps(127.0f));
    return _mm256_cvtps_epi32(v);  /* integers already: exact */
}

static void qrt_dyn_quantize__avx2(const float *x, int64_t n, float s, float zp, int8_t *q) {
    const __m256 sv = _mm256_set1_ps(s), zv = _mm256_set1_ps(zp);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i a = qrt_dyn_quantize8_avx2(x + i, sv, zv), b = qrt_dyn_quantize8_avx2(x + i + 8, sv, zv);
        __m256i c = qrt_dyn_quantize8_avx2(x + i + 16, sv, zv), d = qrt_dyn_quantize8_avx2(x + i + 24, sv, zv);
        /* packs work per 128-bit lane: a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7 */
        __m256i v = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(v, order));
    }
    for (; i < n; i++)
        q[i] = qrt_dyn_quantize1(x[i], s, zp);
}

static void qrt_dyn_dequantize__avx2(float *y, int64_t n, float s_x, int32_t zc, const int32_t *wsum,
                                     const float *s_w, const float *bias, float lo, float hi) {
    const __m256 sx = _mm256_set1_ps(s_x), lov = _mm256_set1_ps(lo), hiv = _mm256_set1_ps(hi);
    const __m256i zcv = _mm256_set1_epi32(zc);
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        __m256i S = _mm256_loadu_si256((const __m256i *)(y + c));
        __m256i acc = _mm256_sub_epi32(S, _mm256_mullo_epi32(zcv, _mm256_loadu_si256((const __m256i *)(wsum + c))));
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_mul_ps(sx, _mm256_loadu_ps(s_w + c)));
        v = _mm256_add_ps(v, _mm256_loadu_ps(bias + c));
        v = _mm256_max_ps(lov, v);  /* lo > v ? lo : v: NaN stays */
        v = _mm256_min_ps(hiv, v);
        _mm256_storeu_ps(y + c, v);
    }
    qrt_dyn_dequantize_from(y, c, n, s_x, zc, wsum, s_w, bias, lo, hi);
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- AVX-512 (avx512vnni, amx) */

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")

static int qrt_dyn_range__avx512(const float *x, int64_t n, float *mn, float *mx) {
    __m512 lo0 = _mm512_set1_ps(INFINITY), lo1 = lo0, hi0 = _mm512_set1_ps(-INFINITY), hi1 = hi0;
    __mmask16 nan = 0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
        lo0 = _mm512_min_ps(a, lo0);  /* a NaN gives the second operand: skipped */
        lo1 = _mm512_min_ps(b, lo1);
        hi0 = _mm512_max_ps(a, hi0);
        hi1 = _mm512_max_ps(b, hi1);
        nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 a = _mm512_maskz_loadu_ps(k, x + i);
        lo0 = _mm512_mask_min_ps(lo0, k, a, lo0);
        hi0 = _mm512_mask_max_ps(hi0, k, a, hi0);
        nan |= _mm512_mask_cmp_ps_mask(k, a, a, _CMP_UNORD_Q);
    }
    *mn = _mm512_reduce_min_ps(_mm512_min_ps(lo0, lo1));  /* no NaN among them */
    *mx = _mm512_reduce_max_ps(_mm512_max_ps(hi0, hi1));
    return nan != 0;
}

static void qrt_dyn_quantize__avx512(const float *x, int64_t n, float s, float zp, int8_t *q) {
    const __m512 sv = _mm512_set1_ps(s), zv = _mm512_set1_ps(zp);
    const __m512 lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(k, x + i), sv),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, zv), lo), hi);  /* NaN -> -128 */
        _mm512_mask_cvtsepi32_storeu_epi8(q + i, k, _mm512_cvtps_epi32(v));
    }
}

static void qrt_dyn_dequantize__avx512(float *y, int64_t n, float s_x, int32_t zc, const int32_t *wsum,
                                       const float *s_w, const float *bias, float lo, float hi) {
    const __m512 sx = _mm512_set1_ps(s_x), lov = _mm512_set1_ps(lo), hiv = _mm512_set1_ps(hi);
    const __m512i zcv = _mm512_set1_epi32(zc);
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 k = n - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - c)) - 1);
        __m512i S = _mm512_maskz_loadu_epi32(k, y + c);
        __m512i acc = _mm512_sub_epi32(S, _mm512_mullo_epi32(zcv, _mm512_maskz_loadu_epi32(k, wsum + c)));
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(sx, _mm512_maskz_loadu_ps(k, s_w + c)));
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, bias + c));
        v = _mm512_max_ps(lov, v);  /* lo > v ? lo : v: NaN stays */
        v = _mm512_min_ps(hiv, v);
        _mm512_mask_storeu_ps(y + c, k, v);
    }
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- the path's functions */

static inline const qrt_dynamic_ops *qrt_dynamic_ops_for(int isa) {
    static const qrt_dynamic_ops ops[] = {
        [QRT_SCALAR] = {qrt_dyn_range__scalar, qrt_dyn_quantize__scalar, qrt_dyn_dequantize__scalar},
        [QRT_AVX2] = {qrt_dyn_range__avx2, qrt_dyn_quantize__avx2, qrt_dyn_dequantize__avx2},
        [QRT_AVX512VNNI] = {qrt_dyn_range__avx512, qrt_dyn_quantize__avx512, qrt_dyn_dequantize__avx512},
        [QRT_AMX] = {qrt_dyn_range__avx512, qrt_dyn_quantize__avx512, qrt_dyn_dequantize__avx512},
    };
    return &ops[isa >= QRT_SCALAR && isa <= QRT_AMX ? isa : QRT_SCALAR];
}

/* ---------------------------------------------------------------- driver */

/* The whole op: x [rows][row_len] float32 -> y [rows * out_rows][C_out] float32. Returns 0,
 * or -2 when the GEMM finds no scratch memory. */
static int qrt_dynamic_run(const qrt_dynamic *d, const float *x, float *y) {
    const int64_t rows = d->rows, L = d->row_len, chunk = d->chunk, chunks = d->chunks;
    const int64_t C = d->C_out, M = rows * d->out_rows;
    if (M == 0 || C == 0)
        return 0;
    const qrt_dynamic_ops *ops = d->ops;
    const int threads = d->threads < 1 ? 1 : d->threads;
    const int64_t items = rows * chunks;
    /* 1. each chunk's range */
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && items > 1)
    for (int64_t it = 0; it < items; it++) {
        int64_t r = it / chunks, i0 = (it - r * chunks) * chunk;
        int64_t n = L - i0 < chunk ? L - i0 : chunk;
        float mn, mx;
        int nan = ops->range(x + r * L + i0, n, &mn, &mx);
        d->range[2 * it] = nan ? NAN : mn;
        d->range[2 * it + 1] = mx;
    }
    /* 2. each row's scale and zero point */
    for (int64_t r = 0; r < rows; r++) {
        const float *rg = d->range + 2 * r * chunks;
        float mn = rg[0], mx = rg[1];
        int nan = mn != mn;
        for (int64_t j = 1; j < chunks; j++) {
            nan |= rg[2 * j] != rg[2 * j];
            mn = rg[2 * j] < mn ? rg[2 * j] : mn;
            mx = rg[2 * j + 1] > mx ? rg[2 * j + 1] : mx;
        }
        qrt_dyn_row_params(mn, mx, nan, d->s + r, d->zp + r);
        d->pads[r] = qrt_dyn_zp_ok(d->zp[r]) ? (uint8_t)(d->zp[r] + 128) : 0;
    }
    /* 3. quantize */
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && items > 1)
    for (int64_t it = 0; it < items; it++) {
        int64_t r = it / chunks, i0 = (it - r * chunks) * chunk;
        int64_t n = L - i0 < chunk ? L - i0 : chunk;
        if (qrt_dyn_zp_ok(d->zp[r]))
            ops->quantize(x + r * L + i0, n, d->s[r], (float)d->zp[r], d->q + r * L + i0);
        else
            memset(d->q + r * L + i0, -127, (size_t)n);  /* a non-finite row: see the top */
    }
    /* 4. the integer sums, into y's memory */
    qrt_gemm g = d->g;
    g.y32 = (int32_t *)(void *)y;
    g.pad_n = d->pads;
    int rc = qrt_gemm_run(&g, d->q, NULL);
    if (rc != 0)
        return rc;
    /* 5. the float epilogue, in place */
    const int64_t per = d->out_rows;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && M > 1)
    for (int64_t m = 0; m < M; m++) {
        int64_t r = m / per;
        int32_t zp = d->zp[r];
        if (qrt_dyn_zp_ok(zp))
            ops->dequantize(y + m * C, C, d->s[r], zp + 128, d->wsum, d->s_w, d->bias, d->lo, d->hi);
        else
            qrt_dyn_dequantize_wide(y + m * C, C, d->s[r], zp, d->s_w, d->bias, d->lo, d->hi);
    }
    return 0;
}

#endif
