/* Requantization of int32 sums to int8 (SPEC.md 4.2), or to int16 (the *_s16 forms, int16
 * outputs: SPEC.md 4.6), on every path:
 *   y = clamp(zp + ((acc * m + 2^(n-1)) >> n), lo, hi)
 * with the product, rounding and shift in 64 bits and the clamp before narrowing, so no
 * intermediate can wrap (1 <= n <= 62, 0 <= m < 2^31: |acc * m| + 2^(n-1) < 2^63).
 * Reference: qrt/numerics.py requantize. The rule itself (qrt_rounding_shift, the scalar forms,
 * the 32-bit form's tables) and the row dispatch are in api.h; its vector forms are here. */
#ifndef QRT_REQUANT_H
#define QRT_REQUANT_H

#include <stdint.h>
#include <string.h>
#include <immintrin.h>
#include "isa.h"
#include "api.h"  /* the structs, the rule and the dispatch the Cython modules see */

/* The rule into int16 (int16 outputs, SPEC.md 4.6: [lo, hi] inside [-32768, 32767]), the clamp
 * as two selects like qrt_requant_select. The vector int16 forms are the *_s16 ones below. */
static inline int16_t qrt_requant_select_s16(int32_t acc, int32_t m, int32_t n, int32_t zp, int32_t lo,
                                             int32_t hi) {
    int64_t v = qrt_rounding_shift(acc, m, n) + zp;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int16_t)v;
}

#pragma GCC push_options
#pragma GCC target("avx2,fma")

/* v >> n, arithmetic, per 64-bit lane (AVX2 has only the logical shift). */
static inline __attribute__((always_inline)) __m256i qrt_sra64_avx2(__m256i v, __m256i n) {
    __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
    return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(v, sign), n), sign);
}

static inline __attribute__((always_inline)) __m256i qrt_clamp64_avx2(__m256i v, __m256i lo,
                                                                     __m256i hi) {
    v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
    return _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
}

/* 4 lanes of int64 (the sums in the low halves): requantized, clamped, still int64. */
static inline __attribute__((always_inline)) __m256i
qrt_requant_lanes_avx2(__m256i acc, __m256i m, __m256i n, __m256i zp, __m256i lo, __m256i hi) {
    const __m256i one = _mm256_set1_epi64x(1);
    __m256i v = _mm256_mul_epi32(acc, m);
    v = _mm256_add_epi64(v, _mm256_sllv_epi64(one, _mm256_sub_epi64(n, one)));
    v = _mm256_add_epi64(qrt_sra64_avx2(v, n), zp);
    return qrt_clamp64_avx2(v, lo, hi);
}

/* 8 int32 sums + bias -> 8 int8 results, as int32 lanes. */
static inline __attribute__((always_inline)) __m256i
qrt_requant8_avx2(__m256i acc, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                  int32_t zp, int32_t lo, int32_t hi) {
    const __m256i low = _mm256_set1_epi64x(0xFFFFFFFF);
    __m256i zpv = _mm256_set1_epi64x(zp), lov = _mm256_set1_epi64x(lo), hiv = _mm256_set1_epi64x(hi);
    acc = _mm256_add_epi32(acc, _mm256_loadu_si256((const __m256i *)bias));
    __m256i m = _mm256_loadu_si256((const __m256i *)mult);
    __m256i n = _mm256_loadu_si256((const __m256i *)shift);
    __m256i even = qrt_requant_lanes_avx2(acc, m, _mm256_and_si256(n, low), zpv, lov, hiv);
    __m256i odd = qrt_requant_lanes_avx2(_mm256_srli_epi64(acc, 32), _mm256_srli_epi64(m, 32),
                                         _mm256_srli_epi64(n, 32), zpv, lov, hiv);
    return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

/* The tables of qrt_requant8_avx2_n33 for 8 channels, in registers: a micro-kernel loads them
 * once for all its rows. */
typedef struct {
    __m256i bias, mult, mult_odd, round32, shift32, lo, hi, zp;
} qrt_n33_avx2;

static inline __attribute__((always_inline)) qrt_n33_avx2
qrt_n33_avx2_load(const int32_t *bias, const int32_t *mult, const int32_t *round32,
                  const int32_t *shift32, int32_t zp, int32_t lo, int32_t hi) {
    qrt_n33_avx2 t;
    t.bias = _mm256_loadu_si256((const __m256i *)bias);
    t.mult = _mm256_loadu_si256((const __m256i *)mult);
    t.mult_odd = _mm256_srli_epi64(t.mult, 32);
    t.round32 = _mm256_loadu_si256((const __m256i *)round32);
    t.shift32 = _mm256_loadu_si256((const __m256i *)shift32);
    t.lo = _mm256_set1_epi32(lo - zp);
    t.hi = _mm256_set1_epi32(hi - zp);
    t.zp = _mm256_set1_epi32(zp);
    return t;
}

static inline __attribute__((always_inline)) __m256i
qrt_requant8_avx2_n33_with(__m256i acc, const qrt_n33_avx2 *t) {
    acc = _mm256_add_epi32(acc, t->bias);
    __m256i even = _mm256_mul_epi32(acc, t->mult);
    __m256i odd = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), t->mult_odd);
    __m256i top = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    __m256i v = _mm256_srav_epi32(_mm256_add_epi32(top, t->round32), t->shift32);
    v = _mm256_min_epi32(_mm256_max_epi32(v, t->lo), t->hi);
    return _mm256_add_epi32(v, t->zp);
}

/* The same for layers whose shifts are all >= 33 (real multipliers below 1/4, the usual case),
 * in 32-bit lanes after the product: with x = acc * m (|x| < 2^62) and hi = x >> 32,
 *   (x + 2^(n-1)) >> n  ==  (hi + 2^(n-33)) >> (n-32)
 * exactly (2^(n-1) is a multiple of 2^32, and |hi| + 2^29 < 2^31 cannot wrap). round32 holds
 * 2^(n-33) and shift32 n-32 per channel; the clamp bounds are lo-zp and hi-zp, then zp is added
 * (the result fits int32, so this equals clamping after adding). */
static inline __attribute__((always_inline)) __m256i
qrt_requant8_avx2_n33(__m256i acc, const int32_t *bias, const int32_t *mult, const int32_t *round32,
                      const int32_t *shift32, int32_t zp, int32_t lo, int32_t hi) {
    qrt_n33_avx2 t = qrt_n33_avx2_load(bias, mult, round32, shift32, zp, lo, hi);
    return qrt_requant8_avx2_n33_with(acc, &t);
}

/* Store the low byte of each int32 lane of v at y: count bytes (all 8 when count >= 8). */
static inline __attribute__((always_inline)) void qrt_store8_avx2(int8_t *y, __m256i v,
                                                                 int64_t count) {
    __m256i b = _mm256_shuffle_epi8(v, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1,
                                                        -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1,
                                                        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
    uint32_t lo4 = (uint32_t)_mm256_extract_epi32(b, 0), hi4 = (uint32_t)_mm256_extract_epi32(b, 4);
    uint64_t bytes = (uint64_t)lo4 | ((uint64_t)hi4 << 32);
    if (count >= 8) {
        memcpy(y, &bytes, 8);
    } else {
        for (int64_t i = 0; i < count; i++)
            y[i] = (int8_t)(bytes >> (8 * i));
    }
}

/* Two vectors of 8 int32 lanes already within [lo, hi] (as the requant8 routines leave them)
 * -> 16 int8 in order at y: count bytes (all 16 when count >= 16). The packs saturate, which
 * changes nothing in range. */
static inline __attribute__((always_inline)) void qrt_store16_avx2(int8_t *y, __m256i v0, __m256i v1,
                                                                  int64_t count) {
    __m256i w = _mm256_packs_epi32(v0, v1);   /* int16: v0 0-3, v1 0-3 | v0 4-7, v1 4-7 */
    w = _mm256_permute4x64_epi64(w, 0xD8);    /* v0 0-7 | v1 0-7 */
    __m128i b = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    if (count >= 16) {
        _mm_storeu_si128((__m128i *)y, b);
    } else {
        int8_t t[16];
        _mm_storeu_si128((__m128i *)t, b);
        memcpy(y, t, count);
    }
}

/* The same into 16 int16 at y (int16 outputs, [lo, hi] inside int16): count of them. */
static inline __attribute__((always_inline)) void qrt_store16_s16_avx2(int16_t *y, __m256i v0, __m256i v1,
                                                                      int64_t count) {
    __m256i w = _mm256_packs_epi32(v0, v1);   /* v0 0-3, v1 0-3 | v0 4-7, v1 4-7 */
    w = _mm256_permute4x64_epi64(w, 0xD8);    /* v0 0-7 | v1 0-7 */
    if (count >= 16) {
        _mm256_storeu_si256((__m256i *)y, w);
    } else {
        int16_t t[16];
        _mm256_storeu_si256((__m256i *)t, w);
        memcpy(y, t, (size_t)count * sizeof(int16_t));
    }
}

#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")

static inline __attribute__((always_inline)) __m512i
qrt_requant_lanes_avx512(__m512i acc, __m512i m, __m512i n, __m512i zp, __m512i lo, __m512i hi) {
    const __m512i one = _mm512_set1_epi64(1);
    __m512i v = _mm512_mul_epi32(acc, m);
    v = _mm512_add_epi64(v, _mm512_sllv_epi64(one, _mm512_sub_epi64(n, one)));
    v = _mm512_add_epi64(_mm512_srav_epi64(v, n), zp);
    return _mm512_min_epi64(_mm512_max_epi64(v, lo), hi);
}

/* 16 int32 sums + bias -> 16 results requantized and clamped to [lo, hi], as int32 lanes: the
 * int8 and int16 forms below narrow them. */
static inline __attribute__((always_inline)) __m512i
qrt_requant16_avx512_lanes(__m512i acc, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int32_t zp, int32_t lo, int32_t hi) {
    const __m512i low = _mm512_set1_epi64(0xFFFFFFFF);
    __m512i zpv = _mm512_set1_epi64(zp), lov = _mm512_set1_epi64(lo), hiv = _mm512_set1_epi64(hi);
    acc = _mm512_add_epi32(acc, _mm512_loadu_si512((const void *)bias));
    __m512i m = _mm512_loadu_si512((const void *)mult);
    __m512i n = _mm512_loadu_si512((const void *)shift);
    __m512i even = qrt_requant_lanes_avx512(acc, m, _mm512_and_si512(n, low), zpv, lov, hiv);
    __m512i odd = qrt_requant_lanes_avx512(_mm512_srli_epi64(acc, 32), _mm512_srli_epi64(m, 32),
                                           _mm512_srli_epi64(n, 32), zpv, lov, hiv);
    return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

/* 16 int32 sums + bias -> 16 int8 results. */
static inline __attribute__((always_inline)) __m128i
qrt_requant16_avx512(__m512i acc, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                     int32_t zp, int32_t lo, int32_t hi) {
    return _mm512_cvtepi32_epi8(qrt_requant16_avx512_lanes(acc, bias, mult, shift, zp, lo, hi));
}

/* The same into 16 int16 results ([lo, hi] inside int16: the narrowing keeps them). */
static inline __attribute__((always_inline)) __m256i
qrt_requant16_avx512_s16(__m512i acc, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                         int32_t zp, int32_t lo, int32_t hi) {
    return _mm512_cvtepi32_epi16(qrt_requant16_avx512_lanes(acc, bias, mult, shift, zp, lo, hi));
}

/* 16 lanes of qrt_requant8_avx2_n33 (see there), as int32 lanes. */
static inline __attribute__((always_inline)) __m512i
qrt_requant16_avx512_n33_lanes(__m512i acc, const int32_t *bias, const int32_t *mult,
                               const int32_t *round32, const int32_t *shift32, int32_t zp, int32_t lo,
                               int32_t hi) {
    acc = _mm512_add_epi32(acc, _mm512_loadu_si512((const void *)bias));
    __m512i m = _mm512_loadu_si512((const void *)mult);
    __m512i even = _mm512_mul_epi32(acc, m);
    __m512i odd = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), _mm512_srli_epi64(m, 32));
    __m512i top = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
    top = _mm512_add_epi32(top, _mm512_loadu_si512((const void *)round32));
    __m512i v = _mm512_srav_epi32(top, _mm512_loadu_si512((const void *)shift32));
    v = _mm512_min_epi32(_mm512_max_epi32(v, _mm512_set1_epi32(lo - zp)), _mm512_set1_epi32(hi - zp));
    return _mm512_add_epi32(v, _mm512_set1_epi32(zp));
}

/* 16 lanes of qrt_requant8_avx2_n33 into int8. */
static inline __attribute__((always_inline)) __m128i
qrt_requant16_avx512_n33(__m512i acc, const int32_t *bias, const int32_t *mult,
                         const int32_t *round32, const int32_t *shift32, int32_t zp, int32_t lo,
                         int32_t hi) {
    return _mm512_cvtepi32_epi8(qrt_requant16_avx512_n33_lanes(acc, bias, mult, round32, shift32, zp, lo, hi));
}

/* The same into int16. */
static inline __attribute__((always_inline)) __m256i
qrt_requant16_avx512_n33_s16(__m512i acc, const int32_t *bias, const int32_t *mult,
                             const int32_t *round32, const int32_t *shift32, int32_t zp, int32_t lo,
                             int32_t hi) {
    return _mm512_cvtepi32_epi16(qrt_requant16_avx512_n33_lanes(acc, bias, mult, round32, shift32, zp, lo, hi));
}

#pragma GCC pop_options

/* A row of count sums with per-channel m, n (bias 0), into y: the vector
 * routines above driven on their own, so tests can reach every accumulator value. The 32-bit
 * form is taken when every shift is >= 33, as the kernels do. */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
static void qrt_requant_row_c16__avx512vnni(const int32_t *acc, const int32_t *m, const int32_t *n,
                                   int64_t count, int32_t zp, int32_t lo, int32_t hi, int8_t *y,
                                   int n33) {
    int32_t a[16], mm[16], nn[16], r32[16], s32[16], zero[16] = {0};
    for (int64_t c = 0; c < count; c += 16) {
        int64_t k = count - c < 16 ? count - c : 16;
        for (int i = 0; i < 16; i++) {
            a[i] = i < k ? acc[c + i] : 0;
            mm[i] = i < k ? m[c + i] : 0;
            nn[i] = i < k ? n[c + i] : 33;
            r32[i] = qrt_round32(nn[i]);
            s32[i] = qrt_shift32(nn[i]);
        }
        __m512i av = _mm512_loadu_si512((const void *)a);
        __m128i v = n33 ? qrt_requant16_avx512_n33(av, zero, mm, r32, s32, zp, lo, hi)
                        : qrt_requant16_avx512(av, zero, mm, nn, zp, lo, hi);
        _mm_mask_storeu_epi8(y + c, (__mmask16)((1u << k) - 1), v);
    }
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
static void qrt_requant_row_c8__avx2(const int32_t *acc, const int32_t *m, const int32_t *n,
                                 int64_t count, int32_t zp, int32_t lo, int32_t hi, int8_t *y,
                                 int n33) {
    int32_t a[8], mm[8], nn[8], r32[8], s32[8], zero[8] = {0};
    for (int64_t c = 0; c < count; c += 8) {
        int64_t k = count - c < 8 ? count - c : 8;
        for (int i = 0; i < 8; i++) {
            a[i] = i < k ? acc[c + i] : 0;
            mm[i] = i < k ? m[c + i] : 0;
            nn[i] = i < k ? n[c + i] : 33;
            r32[i] = qrt_round32(nn[i]);
            s32[i] = qrt_shift32(nn[i]);
        }
        __m256i av = _mm256_loadu_si256((const __m256i *)a);
        __m256i v = n33 ? qrt_requant8_avx2_n33(av, zero, mm, r32, s32, zp, lo, hi)
                        : qrt_requant8_avx2(av, zero, mm, nn, zp, lo, hi);
        qrt_store8_avx2(y + c, v, k);
    }
}
#pragma GCC pop_options

static void qrt_requant_row_c1__scalar(const int32_t *acc, const int32_t *m, const int32_t *n,
                                       int64_t count, int32_t zp, int32_t lo, int32_t hi, int8_t *y,
                                       int n33) {
    (void)n33;
    for (int64_t c = 0; c < count; c++)
        y[c] = qrt_requant_scalar(acc[c], m[c], n[c], zp, lo, hi);
}

/* A row of count sums sharing one m, n (average pool, mean): as many as the path does at a
 * time; returns how many (the caller does the rest with qrt_requant_select). */
static int64_t qrt_requant1_row_c1__scalar(const int32_t *acc, int64_t count, int32_t m, int32_t n,
                                           int32_t zp, int32_t lo, int32_t hi, int8_t *y) {
    for (int64_t i = 0; i < count; i++)
        y[i] = qrt_requant_select(acc[i], m, n, zp, lo, hi);
    return count;
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
static int64_t qrt_requant1_row_c16__avx512vnni(const int32_t *acc, int64_t count, int32_t m,
                                                int32_t n, int32_t zp, int32_t lo, int32_t hi,
                                                int8_t *y) {
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

/* AVX2 has no one-multiplier row of its own (the 64-bit form of 8 lanes is no faster). */
static inline const qrt_requant_ops *qrt_requant_ops_for(int isa) {
    static const qrt_requant_ops ops[] = {
        [QRT_SCALAR] = {.row = qrt_requant_row_c1__scalar, .row1 = qrt_requant1_row_c1__scalar},
        [QRT_AVX2] = {.row = qrt_requant_row_c8__avx2, .row1 = qrt_requant1_row_c1__scalar},
        [QRT_AVX512VNNI] = {.row = qrt_requant_row_c16__avx512vnni,
                            .row1 = qrt_requant1_row_c16__avx512vnni},
        [QRT_AMX] = {.row = qrt_requant_row_c16__avx512vnni, .row1 = qrt_requant1_row_c16__avx512vnni},
    };
    return &ops[isa >= QRT_SCALAR && isa <= QRT_AMX ? isa : QRT_SCALAR];
}

#endif
