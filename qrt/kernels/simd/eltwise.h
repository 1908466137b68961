/* Loops of the elementwise and pooling kernels (qrt/kernels/elementwise.pyx, pool.pyx) that
 * have vector paths; bit-exact with qrt/reference/ops.py on every path, which differ only in
 * speed.
 *
 * qrt_requant1_row: a row of int32 sums sharing one multiplier and shift (average pool, mean)
 * to int8 by SPEC.md 4.2; avx512: requant.h's 16-lane routine.
 *
 * qrt_add_run, qrt_mul_run: ADD/SUB and MUL over two contiguous int8 operands of one length
 * (the residual add of ResNet and MobileNetV2: same shapes, no broadcast).
 * ADD/SUB: a' = rs((a - zp_a) << 20, m_a, n_a), b' likewise (negated for SUB),
 *          y = clamp(zp + rs(a' + b', m, n), lo, hi), rs(v, m, n) = (v*m + 2^(n-1)) >> n.
 *   scalar: a' and b' from 256-entry tables by the operand's byte (filled at bind time);
 *   avx512: a' = rs(a - zp_a, m_a, n_a - 20) in 64-bit lanes, the same integer: n_a >= 31, so
 *           dividing v*m_a*2^20 + 2^(n_a-1) and 2^n_a by 2^20 leaves both integers.
 * MUL: y = clamp(zp + rs((a - zp_a)*(b - zp_b), m, n), lo, hi); |product| <= 255^2.
 * The final rounding is SPEC.md 4.2 in 64-bit lanes (requant.h). AVX2 takes the scalar path
 * everywhere: without 64-bit arithmetic shifts and min/max its 64-bit lanes are slower than
 * the scalar code (measured: ADD's tables, 56x56x64, about 1.2x).
 * Long rows are split over `threads`; each element is computed alike on every thread, so the
 * result does not depend on the thread count. */
#ifndef QRT_ELTWISE_H
#define QRT_ELTWISE_H

#include <stdint.h>
#include <immintrin.h>
#include "isa.h"
#include "requant.h"

typedef struct {
    int32_t ta[256], tb[256];  /* a', b' by the byte of the operand (tb negated for SUB) */
    int32_t za, zb, ma, mb, ka, kb, sign;  /* the same in closed form: k = n_operand - 20 */
    int32_t m, n, zp, lo, hi;  /* output requantization */
    int isa, threads;
} qrt_add;

typedef struct {
    int32_t za, zb, m, n, zp, lo, hi;
    int isa, threads;
} qrt_mul;

#define QRT_BINARY_SPLIT 32768  /* elements per thread at least: below, a parallel region costs
                                   more than it saves */

/* ---------------------------------------------------------------- scalar */

/* SPEC.md 4.2 as requant.h's qrt_requant_scalar, the clamp written as two selects so that it
 * compiles without branches: with a fused ReLU about half the outputs clamp, and a branch
 * there mispredicts on every other element. */
static inline int8_t qrt_requant_select(int32_t acc, int32_t m, int32_t n, int32_t zp, int32_t lo,
                                        int32_t hi) {
    int64_t v = (((int64_t)acc * m + ((int64_t)1 << (n - 1))) >> n) + zp;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int8_t)v;
}

/* The parameters are copied to locals first: y is int8, which may alias anything, so reading
 * them through p would reload every one after each store. */
static void qrt_add_scalar(const qrt_add *p, const int8_t *a, const int8_t *b, int8_t *y,
                           int64_t count) {
    const int32_t *ta = p->ta, *tb = p->tb;
    const int32_t m = p->m, n = p->n, zp = p->zp, lo = p->lo, hi = p->hi;
    for (int64_t i = 0; i < count; i++)
        y[i] = qrt_requant_select(ta[(uint8_t)a[i]] + tb[(uint8_t)b[i]], m, n, zp, lo, hi);
}

static void qrt_mul_scalar(const qrt_mul *p, const int8_t *a, const int8_t *b, int8_t *y,
                           int64_t count) {
    const int32_t za = p->za, zb = p->zb, m = p->m, n = p->n, zp = p->zp, lo = p->lo, hi = p->hi;
    for (int64_t i = 0; i < count; i++)
        y[i] = qrt_requant_select((a[i] - za) * (b[i] - zb), m, n, zp, lo, hi);
}

/* ---------------------------------------------------------------- avx512: 8 per vector */

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")

static inline __attribute__((always_inline)) __m512i qrt_load8x64_avx512(const int8_t *p) {
    return _mm512_cvtepi8_epi64(_mm_loadl_epi64((const __m128i *)p));
}

/* rs(v, m, k) per 64-bit lane; v and m in the low 32 bits, m >= 0, |v*m| < 2^62. */
static inline __attribute__((always_inline)) __m512i qrt_rs64_avx512(__m512i v, __m512i m,
                                                                     __m512i k) {
    __m512i half = _mm512_sllv_epi64(_mm512_set1_epi64(1), _mm512_sub_epi64(k, _mm512_set1_epi64(1)));
    return _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(v, m), half), k);
}

static int64_t qrt_add_avx512(const qrt_add *p, const int8_t *a, const int8_t *b, int8_t *y,
                              int64_t count) {
    const __m512i za = _mm512_set1_epi64(p->za), zb = _mm512_set1_epi64(p->zb);
    const __m512i ma = _mm512_set1_epi64(p->ma), mb = _mm512_set1_epi64(p->mb);
    const __m512i ka = _mm512_set1_epi64(p->ka), kb = _mm512_set1_epi64(p->kb);
    const __m512i m = _mm512_set1_epi64(p->m), n = _mm512_set1_epi64(p->n);
    const __m512i zp = _mm512_set1_epi64(p->zp), lo = _mm512_set1_epi64(p->lo);
    const __m512i hi = _mm512_set1_epi64(p->hi);
    const int subtract = p->sign < 0;
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m512i va = qrt_rs64_avx512(_mm512_sub_epi64(qrt_load8x64_avx512(a + i), za), ma, ka);
        __m512i vb = qrt_rs64_avx512(_mm512_sub_epi64(qrt_load8x64_avx512(b + i), zb), mb, kb);
        __m512i s = subtract ? _mm512_sub_epi64(va, vb) : _mm512_add_epi64(va, vb);
        _mm_storel_epi64((__m128i *)(y + i),
                         _mm512_cvtepi64_epi8(qrt_requant_lanes_avx512(s, m, n, zp, lo, hi)));
    }
    return i;
}

static int64_t qrt_mul_avx512(const qrt_mul *p, const int8_t *a, const int8_t *b, int8_t *y,
                              int64_t count) {
    const __m512i za = _mm512_set1_epi64(p->za), zb = _mm512_set1_epi64(p->zb);
    const __m512i m = _mm512_set1_epi64(p->m), n = _mm512_set1_epi64(p->n);
    const __m512i zp = _mm512_set1_epi64(p->zp), lo = _mm512_set1_epi64(p->lo);
    const __m512i hi = _mm512_set1_epi64(p->hi);
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m512i va = _mm512_sub_epi64(qrt_load8x64_avx512(a + i), za);
        __m512i vb = _mm512_sub_epi64(qrt_load8x64_avx512(b + i), zb);
        _mm_storel_epi64((__m128i *)(y + i), _mm512_cvtepi64_epi8(qrt_requant_lanes_avx512(
                                                 _mm512_mul_epi32(va, vb), m, n, zp, lo, hi)));
    }
    return i;
}

static int64_t qrt_requant1_avx512(const int32_t *acc, int64_t count, int32_t m, int32_t n,
                                   int32_t zp, int32_t lo, int32_t hi, int8_t *y) {
    int32_t mm[16], nn[16], zero[16] = {0};
    for (int i = 0; i < 16; i++) {
        mm[i] = m;
        nn[i] = n;
    }
    int64_t i = 0;
    for (; i + 16 <= count; i += 16)
        _mm_storeu_si128((__m128i *)(y + i), qrt_requant16_avx512(_mm512_loadu_si512(acc + i),
                                                                  zero, mm, nn, zp, lo, hi));
    return i;
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- rows and threads */

static inline void qrt_requant1_row(int isa, const int32_t *acc, int64_t count, int32_t m,
                                    int32_t n, int32_t zp, int32_t lo, int32_t hi, int8_t *y) {
    int64_t i = isa >= QRT_AVX512VNNI ? qrt_requant1_avx512(acc, count, m, n, zp, lo, hi, y) : 0;
    for (; i < count; i++)
        y[i] = qrt_requant_select(acc[i], m, n, zp, lo, hi);
}

/* One contiguous row: the vector path where it applies (avx512vnni, and amx, which has it), the
 * scalar rule for the rest. */
static inline void qrt_add_row(const qrt_add *p, const int8_t *a, const int8_t *b, int8_t *y,
                               int64_t count) {
    int64_t i = p->isa >= QRT_AVX512VNNI ? qrt_add_avx512(p, a, b, y, count) : 0;
    qrt_add_scalar(p, a + i, b + i, y + i, count - i);
}

static inline void qrt_mul_row(const qrt_mul *p, const int8_t *a, const int8_t *b, int8_t *y,
                               int64_t count) {
    int64_t i = p->isa >= QRT_AVX512VNNI ? qrt_mul_avx512(p, a, b, y, count) : 0;
    qrt_mul_scalar(p, a + i, b + i, y + i, count - i);
}

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

#endif
