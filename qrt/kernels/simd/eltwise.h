/* Loops of the elementwise kernels (qrt/kernels/elementwise.pyx) that have vector paths; bit-exact with qrt/ops/<op>.py on every path, which differ only in
 * speed.
 *
 * Each path's functions are chosen once per bound op (qrt_eltwise_ops_for, stored in the
 * op's struct); the row functions do what their path does at a time and return how many, the
 * scalar rule does the rest.
 *
 * qrt_add_run, qrt_mul_run: ADD/SUB and MUL over two contiguous int8 operands of one length
 * (the residual add of ResNet and MobileNetV2: same shapes, no broadcast).
 * ADD/SUB: a' = rs((a - zp_a) << 20, m_a, n_a), b' likewise (negated for SUB),
 *          y = clamp(zp + rs(a' + b', m, n), lo, hi), rs(v, m, n) = (v*m + 2^(n-1)) >> n.
 *   scalar: a' and b' from 256-entry tables by the operand's byte (filled at bind time);
 *   avx512: a' = rs(a - zp_a, m_a, n_a - 20) in 64-bit lanes, the same integer: n_a >= 31, so
 *           dividing v*m_a*2^20 + 2^(n_a-1) and 2^n_a by 2^20 leaves both integers.
 * MUL: y = clamp(zp + rs((a - zp_a)*(b - zp_b), m, n), lo, hi); |product| <= 255^2.
 * The final rounding is SPEC.md 4.2 in 64-bit lanes (requant.h).
 *   avx2: in 32-bit lanes, 16 elements at a time. a' = rs(v, m_a, k), v = a - zp_a, with
 *         m_a = mh * 2^j + ml (j = min(16, k - 1)):
 *           v*m_a + 2^(k-1) = 2^j * (v*mh + 2^(k-1-j)) + v*ml, so
 *           a' = (v*mh + 2^(k-1-j) + ((v*ml) >> j)) >> (k - j)
 *         exactly (floor division nests), every term below 2^30 for |v| <= 255, k <= 42. The
 *         output rounding is requant.h's 32-bit form, so this path is taken when n >= 33 (the
 *         usual case: n is about 20 + 31) and |zp| <= 2^16; else the scalar one. MUL likewise,
 *         on the product.
 * Long rows are split over `threads`; each element is computed alike on every thread, so the
 * result does not depend on the thread count.
 *
 * qrt_quant_run: QUANTIZE float32 -> int8/uint8/int16 and DEQUANTIZE
 * back, x [N][C][P] -> y [N][P][C]: the graph boundary's NCHW <-> NHWC change in the same
 * pass (C = 1: plain order). QUANTIZE is the reference's float64 division and round half to
 * even (vdivpd, vroundpd on AVX2 and up), NaN -> 0 before the clamp; DEQUANTIZE one float32
 * multiplication. Vector paths take 8 pixels of every channel at a time: a plain row (C = 1)
 * straight, byte types 8 channels at a time through an 8 x 8 transpose in registers, the
 * remaining channels (and int16) through a small transposed tile. */
#ifndef QRT_ELTWISE_H
#define QRT_ELTWISE_H

#include <stdint.h>
#include <immintrin.h>
#include "isa.h"
#include "api.h"  /* the structs, the rule and the dispatch the Cython modules see */
#include "requant.h"

#define QRT_BINARY_SPLIT 32768  /* elements per thread at least: below, a parallel region costs
                                   more than it saves */

/* The scalar rows (qrt_add_row_c1__scalar, qrt_mul_row_c1__scalar) and the row dispatch
 * (qrt_add_row, qrt_mul_row) are in api.h: the Cython loops use them too. */

/* ---------------------------------------------------------------- avx2: 16 per step */

#pragma GCC push_options
#pragma GCC target("avx2,fma")

/* One operand's rescale rs(x - zp, m, k) (see the top), constants in registers. */
typedef struct {
    __m256i zp, mh, ml, r;
    __m128i j, sh;
} qrt_rescale_avx2;

static inline qrt_rescale_avx2 qrt_rescale_avx2_make(int32_t zp, int32_t m, int32_t k) {
    qrt_rescale_avx2 c;
    int32_t j = k - 1 < 16 ? k - 1 : 16;
    c.zp = _mm256_set1_epi32(zp);
    c.mh = _mm256_set1_epi32(m >> j);
    c.ml = _mm256_set1_epi32(m & ((1 << j) - 1));
    c.r = _mm256_set1_epi32(1 << (k - 1 - j));
    c.j = _mm_cvtsi32_si128(j);
    c.sh = _mm_cvtsi32_si128(k - j);
    return c;
}

/* The 8 int8 in the low half of x, as int32 lanes minus the zero point. */
static inline __attribute__((always_inline)) __m256i qrt_centered8_avx2(__m128i x, __m256i zp) {
    return _mm256_sub_epi32(_mm256_cvtepi8_epi32(x), zp);
}

static inline __attribute__((always_inline)) __m256i qrt_rescale8_avx2(__m128i x,
                                                                      const qrt_rescale_avx2 *c) {
    __m256i v = qrt_centered8_avx2(x, c->zp);
    __m256i a = _mm256_add_epi32(_mm256_mullo_epi32(v, c->mh), c->r);
    __m256i b = _mm256_sra_epi32(_mm256_mullo_epi32(v, c->ml), c->j);
    return _mm256_sra_epi32(_mm256_add_epi32(a, b), c->sh);
}

/* The output rounding of every lane with one m, n >= 33 (requant.h's 32-bit form). */
static inline qrt_n33_avx2 qrt_n33_avx2_uniform(int32_t m, int32_t n, int32_t zp, int32_t lo,
                                                int32_t hi) {
    int32_t mm[8], nn[8], r32[8], s32[8], zero[8] = {0};
    for (int i = 0; i < 8; i++) {
        mm[i] = m;
        nn[i] = n;
    }
    qrt_requant_tables32(nn, 8, zp, r32, s32);
    return qrt_n33_avx2_load(zero, mm, r32, s32, zp, lo, hi);
}

/* The 32-bit output rounding applies (as requant.h qrt_requant_tables32 decides it). */
static inline int qrt_n33_uniform_ok(int32_t n, int32_t zp) {
    return n >= 33 && qrt_n33_zp_ok(zp);
}

static int64_t qrt_add_row_c16__avx2(const qrt_add *p, const int8_t *a, const int8_t *b, int8_t *y,
                            int64_t count) {
    if (!qrt_n33_uniform_ok(p->n, p->zp))
        return 0;
    const qrt_rescale_avx2 ca = qrt_rescale_avx2_make(p->za, p->ma, p->ka);
    const qrt_rescale_avx2 cb = qrt_rescale_avx2_make(p->zb, p->mb, p->kb);
    const qrt_n33_avx2 t = qrt_n33_avx2_uniform(p->m, p->n, p->zp, p->lo, p->hi);
    const int subtract = p->sign < 0;
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m128i xa = _mm_loadu_si128((const __m128i *)(a + i));
        __m128i xb = _mm_loadu_si128((const __m128i *)(b + i));
        __m256i s[2];
        for (int h = 0; h < 2; h++, xa = _mm_srli_si128(xa, 8), xb = _mm_srli_si128(xb, 8)) {
            __m256i va = qrt_rescale8_avx2(xa, &ca), vb = qrt_rescale8_avx2(xb, &cb);
            s[h] = subtract ? _mm256_sub_epi32(va, vb) : _mm256_add_epi32(va, vb);
        }
        qrt_store16_avx2(y + i, qrt_requant8_avx2_n33_with(s[0], &t),
                         qrt_requant8_avx2_n33_with(s[1], &t), 16);
    }
    return i;
}

static int64_t qrt_mul_row_c16__avx2(const qrt_mul *p, const int8_t *a, const int8_t *b, int8_t *y,
                            int64_t count) {
    if (!qrt_n33_uniform_ok(p->n, p->zp))
        return 0;
    const __m256i za = _mm256_set1_epi32(p->za), zb = _mm256_set1_epi32(p->zb);
    const qrt_n33_avx2 t = qrt_n33_avx2_uniform(p->m, p->n, p->zp, p->lo, p->hi);
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m128i xa = _mm_loadu_si128((const __m128i *)(a + i));
        __m128i xb = _mm_loadu_si128((const __m128i *)(b + i));
        __m256i s[2];
        for (int h = 0; h < 2; h++, xa = _mm_srli_si128(xa, 8), xb = _mm_srli_si128(xb, 8))
            s[h] = _mm256_mullo_epi32(qrt_centered8_avx2(xa, za), qrt_centered8_avx2(xb, zb));
        qrt_store16_avx2(y + i, qrt_requant8_avx2_n33_with(s[0], &t),
                         qrt_requant8_avx2_n33_with(s[1], &t), 16);
    }
    return i;
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- avx512: 8 per vector
 * (int8, and the int16 form's rows: one body each for ADD/SUB and MUL, by element size) */

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")

/* 8 elements at p as 64-bit lanes: int8, or int16 (es = 2 bytes per element). */
static inline __attribute__((always_inline)) __m512i qrt_load8x64_avx512(const void *p, const int es) {
    if (es == 1)
        return _mm512_cvtepi8_epi64(_mm_loadl_epi64((const __m128i *)p));
    return _mm512_cvtepi16_epi64(_mm_loadu_si128((const __m128i *)p));
}

/* 8 results (64-bit lanes within the output's range) narrowed to int8, or int16 (es = 2), at y. */
static inline __attribute__((always_inline)) void qrt_store8x64_avx512(void *y, __m512i v, const int es) {
    if (es == 1)
        _mm_storel_epi64((__m128i *)y, _mm512_cvtepi64_epi8(v));
    else
        _mm_storeu_si128((__m128i *)y, _mm512_cvtepi64_epi16(v));
}

/* rs(v, m, k) per 64-bit lane; v and m in the low 32 bits, m >= 0, |v*m| < 2^62. */
static inline __attribute__((always_inline)) __m512i qrt_rs64_avx512(__m512i v, __m512i m,
                                                                     __m512i k) {
    __m512i half = _mm512_sllv_epi64(_mm512_set1_epi64(1), _mm512_sub_epi64(k, _mm512_set1_epi64(1)));
    return _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(v, m), half), k);
}

/* ADD/SUB and MUL 8 elements at a time, one body for int8 (es = 1) and the int16 form (es = 2,
 * see qrt_add16_row below): the same rule in 64-bit lanes, the operand factors' shifts k_a,
 * k_b set at bind for the element size. */
static inline __attribute__((always_inline)) int64_t
qrt_add_row_c8__avx512vnni_with(const qrt_add *p, const void *a, const void *b, void *y, int64_t count,
                                const int es) {
    const __m512i za = _mm512_set1_epi64(p->za), zb = _mm512_set1_epi64(p->zb);
    const __m512i ma = _mm512_set1_epi64(p->ma), mb = _mm512_set1_epi64(p->mb);
    const __m512i ka = _mm512_set1_epi64(p->ka), kb = _mm512_set1_epi64(p->kb);
    const __m512i m = _mm512_set1_epi64(p->m), n = _mm512_set1_epi64(p->n);
    const __m512i zp = _mm512_set1_epi64(p->zp), lo = _mm512_set1_epi64(p->lo);
    const __m512i hi = _mm512_set1_epi64(p->hi);
    const int subtract = p->sign < 0;
    const char *ab = (const char *)a, *bb = (const char *)b;
    char *yb = (char *)y;
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m512i va = qrt_rs64_avx512(_mm512_sub_epi64(qrt_load8x64_avx512(ab + i * es, es), za), ma, ka);
        __m512i vb = qrt_rs64_avx512(_mm512_sub_epi64(qrt_load8x64_avx512(bb + i * es, es), zb), mb, kb);
        __m512i s = subtract ? _mm512_sub_epi64(va, vb) : _mm512_add_epi64(va, vb);
        qrt_store8x64_avx512(yb + i * es, qrt_requant_lanes_avx512(s, m, n, zp, lo, hi), es);
    }
    return i;
}

static inline __attribute__((always_inline)) int64_t
qrt_mul_row_c8__avx512vnni_with(const qrt_mul *p, const void *a, const void *b, void *y, int64_t count,
                                const int es) {
    const __m512i za = _mm512_set1_epi64(p->za), zb = _mm512_set1_epi64(p->zb);
    const __m512i m = _mm512_set1_epi64(p->m), n = _mm512_set1_epi64(p->n);
    const __m512i zp = _mm512_set1_epi64(p->zp), lo = _mm512_set1_epi64(p->lo);
    const __m512i hi = _mm512_set1_epi64(p->hi);
    const char *ab = (const char *)a, *bb = (const char *)b;
    char *yb = (char *)y;
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m512i va = _mm512_sub_epi64(qrt_load8x64_avx512(ab + i * es, es), za);
        __m512i vb = _mm512_sub_epi64(qrt_load8x64_avx512(bb + i * es, es), zb);
        qrt_store8x64_avx512(yb + i * es, qrt_requant_lanes_avx512(_mm512_mul_epi32(va, vb), m, n, zp, lo, hi),
                             es);
    }
    return i;
}

static int64_t qrt_add_row_c8__avx512vnni(const qrt_add *p, const int8_t *a, const int8_t *b, int8_t *y,
                                          int64_t count) {
    return qrt_add_row_c8__avx512vnni_with(p, a, b, y, count, 1);
}

static int64_t qrt_mul_row_c8__avx512vnni(const qrt_mul *p, const int8_t *a, const int8_t *b, int8_t *y,
                                          int64_t count) {
    return qrt_mul_row_c8__avx512vnni_with(p, a, b, y, count, 1);
}

static int64_t qrt_add16_row_c8__avx512vnni(const qrt_add *p, const int16_t *a, const int16_t *b,
                                            int16_t *y, int64_t count) {
    return qrt_add_row_c8__avx512vnni_with(p, a, b, y, count, 2);
}

static int64_t qrt_mul16_row_c8__avx512vnni(const qrt_mul *p, const int16_t *a, const int16_t *b,
                                            int16_t *y, int64_t count) {
    return qrt_mul_row_c8__avx512vnni_with(p, a, b, y, count, 2);
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- rows and threads */

/* How many threads a row of count elements is split over, and where part t starts (64-byte
 * aligned offsets, the last part ends at count). */
static inline int qrt_binary_parts(int threads, int64_t count) {
    int64_t most = count / QRT_BINARY_SPLIT;
    return threads < most ? threads : (int)(most > 1 ? most : 1);
}

static inline int64_t qrt_binary_start(int t, int parts, int64_t count) {
    return t == parts ? count : (count * t / parts) & ~(int64_t)63;
}

static void qrt_add_run(const qrt_add *p, const int8_t *a, const int8_t *b, int8_t *y,
                        int64_t count) {
    int parts = qrt_binary_parts(p->threads, count);
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
    for (int t = 0; t < parts; t++) {
        int64_t i0 = qrt_binary_start(t, parts, count), i1 = qrt_binary_start(t + 1, parts, count);
        qrt_add_row(p, a + i0, b + i0, y + i0, i1 - i0);
    }
}

static void qrt_mul_run(const qrt_mul *p, const int8_t *a, const int8_t *b, int8_t *y,
                        int64_t count) {
    int parts = qrt_binary_parts(p->threads, count);
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
    for (int t = 0; t < parts; t++) {
        int64_t i0 = qrt_binary_start(t, parts, count), i1 = qrt_binary_start(t + 1, parts, count);
        qrt_mul_row(p, a + i0, b + i0, y + i0, i1 - i0);
    }
}

/* ---------------------------------------------------------------- QUANTIZE / DEQUANTIZE */

static inline int32_t qrt_quantize_one(const qrt_quant *q, float x) {
    double v = __builtin_nearbyint((double)x / q->scale);
    if (v != v)
        v = 0;
    v = v < q->qlo ? q->qlo : v > q->qhi ? q->qhi : v;
    return (int32_t)v + q->zp;
}

static inline void qrt_quant_put(int kind, void *y, int64_t i, int32_t v) {
    if (kind == QRT_Q_INT8)
        ((int8_t *)y)[i] = (int8_t)v;
    else if (kind == QRT_Q_UINT8)
        ((uint8_t *)y)[i] = (uint8_t)v;
    else
        ((int16_t *)y)[i] = (int16_t)v;
}

static inline int32_t qrt_quant_get(int kind, const void *x, int64_t i) {
    return kind == QRT_Q_INT8 ? ((const int8_t *)x)[i]
         : kind == QRT_Q_UINT8 ? ((const uint8_t *)x)[i] : ((const int16_t *)x)[i];
}

/* Pixels [p0, p1) of image n, every channel, one at a time; nonzero if one of them was NaN or
 * infinite (the graph boundary then reports the feed: qrt.InputError). */
static int qrt_quantize_p1__scalar(const qrt_quant *q, const float *x, void *y, int64_t n, int64_t p0,
                                   int64_t p1) {
    int bad = 0;
    for (int64_t c = 0; c < q->C; c++) {
        const float *xr = x + (n * q->C + c) * q->P;
        for (int64_t p = p0; p < p1; p++) {
            bad |= !(__builtin_fabsf(xr[p]) <= __FLT_MAX__);  /* NaN compares false */
            qrt_quant_put(q->kind, y, (n * q->P + p) * q->C + c, qrt_quantize_one(q, xr[p]));
        }
    }
    return bad;
}

static void qrt_dequantize_p1__scalar(const qrt_quant *q, const void *x, float *y, int64_t n, int64_t p0,
                                  int64_t p1) {
    for (int64_t c = 0; c < q->C; c++) {
        float *yr = y + (n * q->C + c) * q->P;
        for (int64_t p = p0; p < p1; p++)
            yr[p] = q->s * (float)(qrt_quant_get(q->kind, x, (n * q->P + p) * q->C + c) - q->zp);
    }
}

#pragma GCC push_options
#pragma GCC target("avx2,fma")

/* An 8 x 8 byte matrix, row j in the low half of r[j], transposed: t[i] holds column 2i in
 * its low half and column 2i + 1 in its high half. The boundary's layout change for byte
 * types, 8 pixels x 8 channels at a time. */
static inline __attribute__((always_inline)) void qrt_transpose8x8_avx2(const __m128i r[8], __m128i t[4]) {
    __m128i a0 = _mm_unpacklo_epi8(r[0], r[1]), a1 = _mm_unpacklo_epi8(r[2], r[3]);
    __m128i a2 = _mm_unpacklo_epi8(r[4], r[5]), a3 = _mm_unpacklo_epi8(r[6], r[7]);
    __m128i b0 = _mm_unpacklo_epi16(a0, a1), b1 = _mm_unpackhi_epi16(a0, a1);
    __m128i b2 = _mm_unpacklo_epi16(a2, a3), b3 = _mm_unpackhi_epi16(a2, a3);
    t[0] = _mm_unpacklo_epi32(b0, b2), t[1] = _mm_unpackhi_epi32(b0, b2);
    t[2] = _mm_unpacklo_epi32(b1, b3), t[3] = _mm_unpackhi_epi32(b1, b3);
}

/* 8 floats quantized: int32 lanes within the integer type (see qrt_quantize_one). */
static inline __attribute__((always_inline)) __m256i qrt_quantize8_avx2(__m256 v, __m256d sc, __m256d lo,
                                                                       __m256d hi, __m256i zp) {
    __m256d a = _mm256_div_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), sc);
    __m256d b = _mm256_div_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), sc);
    a = _mm256_round_pd(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    b = _mm256_round_pd(b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    a = _mm256_and_pd(a, _mm256_cmp_pd(a, a, _CMP_ORD_Q));  /* NaN -> 0 */
    b = _mm256_and_pd(b, _mm256_cmp_pd(b, b, _CMP_ORD_Q));
    a = _mm256_min_pd(_mm256_max_pd(a, lo), hi);
    b = _mm256_min_pd(_mm256_max_pd(b, lo), hi);
    return _mm256_add_epi32(_mm256_set_m128i(_mm256_cvtpd_epi32(b), _mm256_cvtpd_epi32(a)), zp);
}

/* The callers collect v - v of every input vector: its bits are all zero unless v holds a NaN
 * or an infinity (x - x is +0.0 for every finite x). Whether any bit is set: */
static inline __attribute__((always_inline)) int qrt_quant_any(__m256 bad) {
    const __m256i b = _mm256_castps_si256(bad);
    return !_mm256_testz_si256(b, b);
}

/* Pixels [p0, p1) of image n, p1 - p0 a multiple of 8; tile holds 8 * C int32. One channel
 * (a plain row, no layout change): stored straight from the vector (the packs saturate,
 * which changes nothing in range). */
static int qrt_quantize_p8__avx2(const qrt_quant *q, const float *x, void *y, int64_t n, int64_t p0,
                                 int64_t p1, int32_t *tile) {
    __m256 bad = _mm256_setzero_ps();
    const __m256d sc = _mm256_set1_pd(q->scale), lo = _mm256_set1_pd(q->qlo), hi = _mm256_set1_pd(q->qhi);
    const __m256i zp = _mm256_set1_epi32(q->zp);
    const int64_t C = q->C;
    if (C == 1) {
        for (int64_t p = p0; p < p1; p += 8) {
            const __m256 v = _mm256_loadu_ps(x + n * q->P + p);
            bad = _mm256_or_ps(bad, _mm256_sub_ps(v, v));
            __m256i r = qrt_quantize8_avx2(v, sc, lo, hi, zp);
            __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
            int64_t at = n * q->P + p;
            if (q->kind == QRT_Q_INT8)
                _mm_storel_epi64((__m128i *)((int8_t *)y + at), _mm_packs_epi16(w, w));
            else if (q->kind == QRT_Q_UINT8)
                _mm_storel_epi64((__m128i *)((uint8_t *)y + at), _mm_packus_epi16(w, w));
            else
                _mm_storeu_si128((__m128i *)((int16_t *)y + at), w);
        }
        return qrt_quant_any(bad);
    }
    /* byte results: whole groups of 8 channels go through an 8 x 8 byte transpose in
     * registers, the rest (and int16) through the tile */
    const int64_t C8 = q->kind == QRT_Q_INT16 ? 0 : C / 8 * 8;
    for (int64_t p = p0; p < p1; p += 8) {
        uint8_t *yp = (uint8_t *)y + (n * q->P + p) * C;  /* pixel p, channel 0 (byte kinds) */
        for (int64_t c = 0; c < C8; c += 8) {
            __m128i r[8];  /* r[j]: channel c + j at the 8 pixels, bytes in the low half */
            for (int j = 0; j < 8; j++) {
                const __m256 f = _mm256_loadu_ps(x + (n * C + c + j) * q->P + p);
                bad = _mm256_or_ps(bad, _mm256_sub_ps(f, f));
                __m256i v = qrt_quantize8_avx2(f, sc, lo, hi, zp);
                __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
                r[j] = q->kind == QRT_Q_INT8 ? _mm_packs_epi16(w, w) : _mm_packus_epi16(w, w);
            }
            __m128i px[4];
            qrt_transpose8x8_avx2(r, px);
            for (int i = 0; i < 4; i++) {  /* pixels 2i and 2i + 1 */
                _mm_storel_epi64((__m128i *)(yp + 2 * i * C + c), px[i]);
                _mm_storel_epi64((__m128i *)(yp + (2 * i + 1) * C + c), _mm_unpackhi_epi64(px[i], px[i]));
            }
        }
        for (int64_t c = C8; c < C; c++) {
            const __m256 f = _mm256_loadu_ps(x + (n * C + c) * q->P + p);
            bad = _mm256_or_ps(bad, _mm256_sub_ps(f, f));
            _mm256_storeu_si256((__m256i *)(tile + c * 8), qrt_quantize8_avx2(f, sc, lo, hi, zp));
        }
        for (int i = 0; i < 8 && C8 < C; i++) {
            int64_t at = (n * q->P + p + i) * C;
            for (int64_t c = C8; c < C; c++)
                qrt_quant_put(q->kind, y, at + c, tile[c * 8 + i]);
        }
    }
    return qrt_quant_any(bad);
}

static void qrt_dequantize_p8__avx2(const qrt_quant *q, const void *x, float *y, int64_t n, int64_t p0,
                                int64_t p1, int32_t *tile) {
    const __m256 s = _mm256_set1_ps(q->s);
    const __m256i zp = _mm256_set1_epi32(q->zp);
    const int64_t C = q->C;
    if (C == 1) {  /* a plain row: loaded straight into the vector */
        for (int64_t p = p0; p < p1; p += 8) {
            int64_t at = n * q->P + p;
            __m128i b = q->kind == QRT_Q_INT16 ? _mm_loadu_si128((const __m128i *)((const int16_t *)x + at))
                                               : _mm_loadl_epi64((const __m128i *)((const int8_t *)x + at));
            __m256i v = q->kind == QRT_Q_INT8 ? _mm256_cvtepi8_epi32(b)
                      : q->kind == QRT_Q_UINT8 ? _mm256_cvtepu8_epi32(b) : _mm256_cvtepi16_epi32(b);
            _mm256_storeu_ps(y + at, _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_sub_epi32(v, zp))));
        }
        return;
    }
    /* byte inputs: whole groups of 8 channels through an 8 x 8 byte transpose in registers
     * (the mirror of qrt_quantize_p8__avx2's), the rest (and int16) through the tile */
    const int64_t C8 = q->kind == QRT_Q_INT16 ? 0 : C / 8 * 8;
    for (int64_t p = p0; p < p1; p += 8) {
        const uint8_t *xp = (const uint8_t *)x + (n * q->P + p) * C;  /* pixel p, channel 0 */
        for (int64_t c = 0; c < C8; c += 8) {
            __m128i r[8], rows[4];  /* r[i]: pixel i's channels c .. c + 7 */
            for (int i = 0; i < 8; i++)
                r[i] = _mm_loadl_epi64((const __m128i *)(xp + i * C + c));
            qrt_transpose8x8_avx2(r, rows);
            for (int j = 0; j < 8; j++) {
                __m128i row = j % 2 ? _mm_unpackhi_epi64(rows[j / 2], rows[j / 2]) : rows[j / 2];
                __m256i v = q->kind == QRT_Q_INT8 ? _mm256_cvtepi8_epi32(row) : _mm256_cvtepu8_epi32(row);
                _mm256_storeu_ps(y + (n * C + c + j) * q->P + p,
                                 _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_sub_epi32(v, zp))));
            }
        }
        for (int i = 0; i < 8 && C8 < C; i++) {
            int64_t at = (n * q->P + p + i) * C;
            for (int64_t c = C8; c < C; c++)
                tile[c * 8 + i] = qrt_quant_get(q->kind, x, at + c);
        }
        for (int64_t c = C8; c < C; c++) {
            __m256i v = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(tile + c * 8)), zp);
            _mm256_storeu_ps(y + (n * C + c) * q->P + p, _mm256_mul_ps(s, _mm256_cvtepi32_ps(v)));
        }
    }
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- the path's functions */


/* AMX has no elementwise code of its own: it runs the AVX-512 VNNI rows. */
static inline const qrt_eltwise_ops *qrt_eltwise_ops_for(int isa) {
    static const qrt_eltwise_ops ops[] = {
        [QRT_SCALAR] = {.add = qrt_add_row_c1__scalar, .mul = qrt_mul_row_c1__scalar},
        [QRT_AVX2] = {.add = qrt_add_row_c16__avx2, .mul = qrt_mul_row_c16__avx2,
                      .quantize = qrt_quantize_p8__avx2, .dequantize = qrt_dequantize_p8__avx2},
        [QRT_AVX512VNNI] = {.add = qrt_add_row_c8__avx512vnni, .mul = qrt_mul_row_c8__avx512vnni,
                            .quantize = qrt_quantize_p8__avx2, .dequantize = qrt_dequantize_p8__avx2},
        [QRT_AMX] = {.add = qrt_add_row_c8__avx512vnni, .mul = qrt_mul_row_c8__avx512vnni,
                     .quantize = qrt_quantize_p8__avx2, .dequantize = qrt_dequantize_p8__avx2},
    };
    return &ops[isa >= QRT_SCALAR && isa <= QRT_AMX ? isa : QRT_SCALAR];
}

/* Work items: (image, run of QRT_QUANT_PIXELS pixels); the last run of each image may be short
 * and its last P % 8 pixels take the scalar code (the same values). Returns 0, -2 (no scratch
 * memory), or 1 when QUANTIZE met a NaN or an infinity: it is noticed here, in the pass that
 * reads the floats anyway, so that the graph boundary's check costs nothing. */
#define QRT_QUANT_PIXELS 256

static int qrt_quant_run(const qrt_quant *q, const void *x, void *y, int quantize) {
    int64_t runs = (q->P + QRT_QUANT_PIXELS - 1) / QRT_QUANT_PIXELS, items = q->N * runs;
    int threads = q->threads < 1 ? 1 : q->threads;
    const qrt_eltwise_ops *ops = q->ops;
    int vector = ops->quantize != NULL;
    if (items * QRT_QUANT_PIXELS * q->C < 65536)  /* too little to share */
        threads = 1;
    int rc = 0, bad = 0;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && items > 1) reduction(min : rc) reduction(| : bad)
    for (int64_t it = 0; it < items; it++) {
        int64_t n = it / runs, p0 = (it % runs) * QRT_QUANT_PIXELS;
        int64_t p1 = p0 + QRT_QUANT_PIXELS < q->P ? p0 + QRT_QUANT_PIXELS : q->P;
        int64_t pv = vector ? p0 + (p1 - p0) / 8 * 8 : p0;
        if (pv > p0) {
            int32_t *tile = (int32_t *)qrt_scratch((size_t)q->C * 8 * sizeof(int32_t));
            if (tile == NULL) {
                rc = -2;
                continue;
            }
            if (quantize)
                bad |= ops->quantize(q, (const float *)x, y, n, p0, pv, tile) != 0;
            else
                ops->dequantize(q, x, (float *)y, n, p0, pv, tile);
        }
        if (quantize)
            bad |= qrt_quantize_p1__scalar(q, (const float *)x, y, n, pv, p1);
        else
            qrt_dequantize_p1__scalar(q, x, (float *)y, n, pv, p1);
    }
    return rc < 0 ? rc : bad;
}

/* ---------------------------------------------------------------- int16 ADD/SUB and MUL */

/* The int16 form (SPEC.md 4.6) of ADD/SUB and MUL, in the same structs (qrt_add's tables are
 * unused): int16 operands and output, any int16 zero points the binding checked.
 * ADD/SUB: a' = rs((a - zp_a) << 15, m_a, n_a) = rs(a - zp_a, m_a, k_a), k_a = n_a - 15 (the
 *   same integer: n_a >= 31, so dividing v*m_a*2^15 + 2^(n_a-1) and 2^n_a by 2^15 leaves
 *   both integers); b' likewise, negated for SUB; y = clamp(zp + rs(a' + b', m, n), lo, hi).
 *   The binding keeps the operand factors m_a / 2^n_a <= 1/2, so |a'|, |b'| <= |v| * 2^14 + 1,
 *   |v| <= 65535, and the sum fits int32: every step is exact in 64 bits.
 * MUL: y = clamp(zp + rs((a - zp_a) * (b - zp_b), m, n), lo, hi); the binding keeps the product
 *   in int32.
 * Vector paths take 8 elements at a time in 64-bit lanes: avx512vnni (and amx) with the int8
 * rows' own body (qrt_add_row_c8__avx512vnni_with, es = 2, above); avx2 as even and odd 32-bit
 * lanes (below: the int8 rows' 32-bit split of the rescale is exact only for |a - zp_a| <= 255,
 * and their 32-bit output rounding only for n >= 33); the scalar rule does the rest and every
 * strided (broadcast) row. The row dispatch is by p->isa: the path table of api.h has no int16
 * entries. */

static inline int16_t qrt_add16_one(int32_t a, int32_t b, int32_t za, int32_t zb, int32_t ma,
                                    int32_t mb, int32_t ka, int32_t kb, int subtract, int32_t m,
                                    int32_t n, int32_t zp, int32_t lo, int32_t hi) {
    int64_t va = qrt_rounding_shift(a - za, ma, ka), vb = qrt_rounding_shift(b - zb, mb, kb);
    int64_t v = qrt_rounding_shift(subtract ? va - vb : va + vb, m, n) + zp;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int16_t)v;
}

static inline int16_t qrt_mul16_one(int32_t a, int32_t b, int32_t za, int32_t zb, int32_t m,
                                    int32_t n, int32_t zp, int32_t lo, int32_t hi) {
    int64_t v = qrt_rounding_shift((int64_t)(a - za) * (b - zb), m, n) + zp;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int16_t)v;
}

#pragma GCC push_options
#pragma GCC target("avx2,fma")

/* rs(v, m, k) per 64-bit lane, v in the low 32 bits (signed), m >= 0 and k as 64-bit lanes. */
static inline __attribute__((always_inline)) __m256i qrt_rs64_avx2(__m256i v, __m256i m, __m256i k) {
    const __m256i one = _mm256_set1_epi64x(1);
    __m256i half = _mm256_sllv_epi64(one, _mm256_sub_epi64(k, one));
    return qrt_sra64_avx2(_mm256_add_epi64(_mm256_mul_epi32(v, m), half), k);
}

/* 8 int16 at p as int32 lanes minus the zero point. */
static inline __attribute__((always_inline)) __m256i qrt_centered16_avx2(const int16_t *p, __m256i zp) {
    return _mm256_sub_epi32(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)p)), zp);
}

/* Requantized even lanes (int64, in the low 32 bits of each 64-bit lane) and odd lanes, as 8
 * int16 in order at y. */
static inline __attribute__((always_inline)) void qrt_store16x8_avx2(int16_t *y, __m256i even, __m256i odd) {
    __m256i v = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    _mm_storeu_si128((__m128i *)y, _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
}

static int64_t qrt_add16_row_c8__avx2(const qrt_add *p, const int16_t *a, const int16_t *b, int16_t *y,
                                      int64_t count) {
    const __m256i za = _mm256_set1_epi32(p->za), zb = _mm256_set1_epi32(p->zb);
    const __m256i ma = _mm256_set1_epi64x(p->ma), mb = _mm256_set1_epi64x(p->mb);
    const __m256i ka = _mm256_set1_epi64x(p->ka), kb = _mm256_set1_epi64x(p->kb);
    const __m256i m = _mm256_set1_epi64x(p->m), n = _mm256_set1_epi64x(p->n);
    const __m256i zp = _mm256_set1_epi64x(p->zp), lo = _mm256_set1_epi64x(p->lo);
    const __m256i hi = _mm256_set1_epi64x(p->hi);
    const int subtract = p->sign < 0;
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256i va = qrt_centered16_avx2(a + i, za), vb = qrt_centered16_avx2(b + i, zb);
        __m256i s[2];
        for (int h = 0; h < 2; h++, va = _mm256_srli_epi64(va, 32), vb = _mm256_srli_epi64(vb, 32)) {
            __m256i ra = qrt_rs64_avx2(va, ma, ka), rb = qrt_rs64_avx2(vb, mb, kb);
            s[h] = qrt_requant_lanes_avx2(subtract ? _mm256_sub_epi64(ra, rb) : _mm256_add_epi64(ra, rb),
                                          m, n, zp, lo, hi);
        }
        qrt_store16x8_avx2(y + i, s[0], s[1]);
    }
    return i;
}

static int64_t qrt_mul16_row_c8__avx2(const qrt_mul *p, const int16_t *a, const int16_t *b, int16_t *y,
                                      int64_t count) {
    const __m256i za = _mm256_set1_epi32(p->za), zb = _mm256_set1_epi32(p->zb);
    const __m256i m = _mm256_set1_epi64x(p->m), n = _mm256_set1_epi64x(p->n);
    const __m256i zp = _mm256_set1_epi64x(p->zp), lo = _mm256_set1_epi64x(p->lo);
    const __m256i hi = _mm256_set1_epi64x(p->hi);
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256i prod = _mm256_mullo_epi32(qrt_centered16_avx2(a + i, za), qrt_centered16_avx2(b + i, zb));
        qrt_store16x8_avx2(y + i, qrt_requant_lanes_avx2(prod, m, n, zp, lo, hi),
                           qrt_requant_lanes_avx2(_mm256_srli_epi64(prod, 32), m, n, zp, lo, hi));
    }
    return i;
}

#pragma GCC pop_options

/* One row: element i of y from a[i * sa] and b[i * sb] (strides in elements; 0 broadcasts one
 * value). Contiguous rows take the path's vector code first. */
static void qrt_add16_row(const qrt_add *p, const int16_t *a, int64_t sa, const int16_t *b, int64_t sb,
                          int16_t *y, int64_t count) {
    int64_t i = 0;
    if (sa == 1 && sb == 1) {
        if (p->isa >= QRT_AVX512VNNI)
            i = qrt_add16_row_c8__avx512vnni(p, a, b, y, count);
        else if (p->isa == QRT_AVX2)
            i = qrt_add16_row_c8__avx2(p, a, b, y, count);
    }
    /* locals: the stores to y could otherwise make the compiler reload p's fields */
    const int32_t za = p->za, zb = p->zb, ma = p->ma, mb = p->mb, ka = p->ka, kb = p->kb;
    const int32_t m = p->m, n = p->n, zp = p->zp, lo = p->lo, hi = p->hi;
    const int subtract = p->sign < 0;
    for (; i < count; i++)
        y[i] = qrt_add16_one(a[i * sa], b[i * sb], za, zb, ma, mb, ka, kb, subtract, m, n, zp, lo, hi);
}

static void qrt_mul16_row(const qrt_mul *p, const int16_t *a, int64_t sa, const int16_t *b, int64_t sb,
                          int16_t *y, int64_t count) {
    int64_t i = 0;
    if (sa == 1 && sb == 1) {
        if (p->isa >= QRT_AVX512VNNI)
            i = qrt_mul16_row_c8__avx512vnni(p, a, b, y, count);
        else if (p->isa == QRT_AVX2)
            i = qrt_mul16_row_c8__avx2(p, a, b, y, count);
    }
    const int32_t za = p->za, zb = p->zb, m = p->m, n = p->n, zp = p->zp, lo = p->lo, hi = p->hi;
    for (; i < count; i++)
        y[i] = qrt_mul16_one(a[i * sa], b[i * sb], za, zb, m, n, zp, lo, hi);
}

/* Same-shape operands, long rows split over p->threads as qrt_add_run does. */
static void qrt_add16_run(const qrt_add *p, const int16_t *a, const int16_t *b, int16_t *y,
                          int64_t count) {
    int parts = qrt_binary_parts(p->threads, count);
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
    for (int t = 0; t < parts; t++) {
        int64_t i0 = qrt_binary_start(t, parts, count), i1 = qrt_binary_start(t + 1, parts, count);
        qrt_add16_row(p, a + i0, 1, b + i0, 1, y + i0, i1 - i0);
    }
}

static void qrt_mul16_run(const qrt_mul *p, const int16_t *a, const int16_t *b, int16_t *y,
                          int64_t count) {
    int parts = qrt_binary_parts(p->threads, count);
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
    for (int t = 0; t < parts; t++) {
        int64_t i0 = qrt_binary_start(t, parts, count), i1 = qrt_binary_start(t + 1, parts, count);
        qrt_mul16_row(p, a + i0, 1, b + i0, 1, y + i0, i1 - i0);
    }
}

#endif
