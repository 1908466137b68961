/* DEPTHWISE_CONV_2D (SPEC.md 2.13.2, section 4); the reference is
 * qrt/ops/depthwise_conv_2d.py, bit for bit, on every path.
 *
 * Data path of one output row (image n, output row oh), on the thread that owns it:
 *   - tap pointers: one per tap, to the input pixel's C_out channels, or into a row of zp_x
 *     for taps in the padding (and for the dummy tap that makes the tap count even).
 *     The zero-point term is folded into the bias at load (bias - zp_x * sum_taps w), so the
 *     kernels multiply raw x, and a padding tap adds zp_x * w, which the bias has already
 *     taken away: exactly the reference's zero. No branch for borders in the inner loops.
 *   - the interior pixels of the row (every tap column inside the input) share one set of
 *     pointers that advances by sw * C_out elements per pixel (the zp_x row is long enough to
 *     advance with them, for padded input rows), so a row costs O(taps) pointer work; only
 *     the few border pixels get pointers of their own.
 *   - with depth multiplier M = 1 the pointers go straight into x (in the rows that reach the
 *     last input pixels, whose 32-channel blocks would read past x's end, into a copy made at
 *     the start of each run). With M > 1 the row's input rows are first expanded into scratch,
 *     each channel repeated M times, so that the same kernels see one input channel per
 *     output channel.
 *   - the vector paths take 32 channels at a time: x widened to int16, two taps interleaved
 *     per channel (unpacklo/hi_epi16), multiplied against weights packed at load as int16
 *     tap pairs in the same interleaved order, [block][pair][lo/hi][lane][4 channels][2 taps]
 *     (layout.h qrt_dw_packed_at, packed by qrt_dw_pack_weights),
 *     by vpdpwssd (AVX-512 VNNI) or vpmaddwd + vpaddd (AVX2). |x * w| <= 128 * 127, so no
 *     pair sum saturates; int32 sums wrap like the reference's accumulator (SPEC.md 4.5).
 *     The sums are put back in channel order, requantized (requant.h), stored.
 *     Taps are paired down the kernel's columns ((0, kw) with (1, kw), ...; an odd last row
 *     along itself), so that for 3x3 stride 1 an interleaved column pair serves three
 *     neighbouring pixels: the vector paths widen and interleave one new column per pixel.
 *   - the scalar path sums the same taps against the weights in the same tap order.
 * Threads take whole output rows, so results do not depend on the thread count. Per-thread
 * scratch holds the pointers (and, for M > 1, the expanded rows); nothing is allocated per
 * run once warm.
 *
 * The int16 mode (the int16 form, SPEC.md 4.6: x and y int16, x symmetric; the tables of
 * qrt_dw_int16_ops_for, whose .xs = 2) is this same data path: the same driver, tap pointers,
 * packed weights and blocks, each kernel compiled a second time from the same body with the
 * element size xs a constant. x's int16 are loaded as they are where int8 x is widened (a
 * 512-bit load of 32 int16 channels holds them in the order the widening gives, so the pairs
 * interleave with the same packed weights), and the sums are requantized by the same rule and
 * narrowed to int16 (requant.h *_s16). |x * w| <= 2^15 * 127, so no pair sum of vpmaddwd or
 * vpdpwssd saturates, and the loader's bound (sum_taps |w| * 2^15 + |bias| < 2^31 per channel)
 * keeps the int32 sums exact. zp_x is 0: the zp_x row holds zeros and the bias is unchanged.
 * The driver's pointers are bytes; offsets count elements and are scaled by xs. */
#ifndef QRT_DEPTHWISE_H
#define QRT_DEPTHWISE_H

#include <stdint.h>
#include <string.h>
#include <immintrin.h>
#include "isa.h"
#include "api.h"  /* the structs, the rule and the dispatch the Cython modules see */
#include "layout.h"  /* the packed weights: QRT_DW_BLOCK, qrt_dw_packed_at */
#include "requant.h"

/* Elements a tap pointer may be read at: whole 32-channel blocks. */
static inline int64_t qrt_dw_span(const qrt_dw *d) { return d->blocks * QRT_DW_BLOCK; }

static inline int64_t qrt_dw_round64(int64_t v) { return (v + 63) & ~(int64_t)63; }

/* Per-thread scratch: two sets of tap pointers, the scalar path's sums, the expanded rows (xs
 * bytes per element). */
static inline int64_t qrt_dw_table_bytes(const qrt_dw *d) {
    return qrt_dw_round64(4 * d->pairs * (int64_t)sizeof(const int8_t *));
}
static inline int64_t qrt_dw_acc_bytes(const qrt_dw *d) {
    return qrt_dw_round64(d->C_out * (int64_t)sizeof(uint32_t));
}
static inline int64_t qrt_dw_rows_bytes(const qrt_dw *d, int64_t xs) {
    return d->M > 1 ? (d->KH * d->W * d->C_out + qrt_dw_span(d)) * xs : 0;
}

/* ---------------------------------------------------------------- scalar (portable C) */

/* Element i of x (or of a row of zp_x, or of the expanded rows) from byte pointer p: int8, or
 * int16 (xs = 2). */
static inline __attribute__((always_inline)) int32_t qrt_dw_x(const int8_t *p, int64_t i, const int xs) {
    return xs == 1 ? p[i] : ((const int16_t *)(const void *)p)[i];
}

/* count pixels; tap k of pixel i at t[k] + i * step elements; xs bytes per element of x and y. */
static inline __attribute__((always_inline)) void
qrt_dw_pixels_c1__scalar_with(const qrt_dw *d, const int8_t *const *t, int64_t step, int64_t count,
                              uint32_t *acc, int8_t *y, const int xs) {
    qrt_dw l = *d;  /* a copy the int8 stores cannot alias: no reloads in the loops */
    for (int64_t i = 0; i < count; i++, y += l.C_out * xs) {
        for (int64_t c = 0; c < l.C_out; c++)
            acc[c] = (uint32_t)l.rq.bias[c];
        for (int64_t k = 0; k < l.taps; k++) {
            const int8_t *xk = t[k] + i * step * xs, *ws = l.w + k * l.C_out;
            for (int64_t c = 0; c < l.C_out; c++)  /* unsigned: wraps like the vector paths */
                acc[c] += (uint32_t)(qrt_dw_x(xk, c, xs) * ws[c]);
        }
        if (xs == 1)
            for (int64_t c = 0; c < l.C_out; c++)
                y[c] = qrt_requant_scalar((int32_t)acc[c], l.rq.mult[c], l.rq.shift[c], l.rq.zp_y, l.rq.lo, l.rq.hi);
        else
            for (int64_t c = 0; c < l.C_out; c++)
                ((int16_t *)(void *)y)[c] = qrt_requant_select_s16((int32_t)acc[c], l.rq.mult[c], l.rq.shift[c],
                                                                   l.rq.zp_y, l.rq.lo, l.rq.hi);
    }
}

static void qrt_dw_pixels_c1__scalar(const qrt_dw *d, const int8_t *const *t, int64_t step,
                                     int64_t count, uint32_t *acc, int8_t *y) {
    qrt_dw_pixels_c1__scalar_with(d, t, step, count, acc, y, 1);
}

static void qrt_dw_pixels_c1__scalar_s16s8(const qrt_dw *d, const int8_t *const *t, int64_t step,
                                           int64_t count, uint32_t *acc, int8_t *y) {
    qrt_dw_pixels_c1__scalar_with(d, t, step, count, acc, y, 2);
}

/* ---------------------------------------------------------------- AVX2: vpmaddwd */

#pragma GCC push_options
#pragma GCC target("avx2,fma")

/* 8 sums of channels [c, c + 8) to int8 (as int32 lanes): the 32-bit form when it applies. */
static inline __attribute__((always_inline)) __m256i qrt_dw_requant8_avx2(const qrt_dw *l, __m256i acc,
                                                                         int64_t c) {
    if (l->rq.n33)
        return qrt_requant8_avx2_n33(acc, l->rq.bias + c, l->rq.mult + c, l->rq.round32 + c, l->rq.shift32 + c,
                                     l->rq.zp_y, l->rq.lo, l->rq.hi);
    return qrt_requant8_avx2(acc, l->rq.bias + c, l->rq.mult + c, l->rq.shift + c, l->rq.zp_y, l->rq.lo, l->rq.hi);
}

/* 16 channels of x from element i on of p, as int16: int8 widened, int16 (xs = 2) as they are. */
static inline __attribute__((always_inline)) __m256i qrt_dw_load_avx2(const int8_t *p, int64_t i,
                                                                     const int xs) {
    if (xs == 1)
        return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + i)));
    return _mm256_loadu_si256((const __m256i *)(const void *)(p + 2 * i));
}

/* Two vectors of 8 results (channels c .. c + 15, within [lo, hi]) into y: count of them. */
static inline __attribute__((always_inline)) void qrt_dw_store16_avx2(int8_t *y, int64_t c, __m256i v0,
                                                                     __m256i v1, int64_t count,
                                                                     const int xs) {
    if (xs == 1)
        qrt_store16_avx2(y + c, v0, v1, count);
    else
        qrt_store16_s16_avx2((int16_t *)(void *)y + c, v0, v1, count);
}

/* count pixels, 16 channels at a time (half h of a 32-channel block): sums for channels
 * [0-3 | 8-11] in a0, [4-7 | 12-15] in a1; tap k of pixel i at t[k] + i * step elements. */
static inline __attribute__((always_inline)) void
qrt_dw_pixels_c16__avx2_pairs(const qrt_dw *d, const int8_t *const *t, int64_t step, int64_t count,
                     int8_t *y, const int64_t pairs, const int xs) {
    qrt_dw l = *d;  /* a copy the int8 stores cannot alias: no reloads per block */
    for (int64_t i = 0; i < count; i++, y += l.C_out * xs) {
        int64_t o = i * step;
        const int16_t *wb = l.wp;
        for (int64_t c0 = 0; c0 < l.C_out; c0 += QRT_DW_BLOCK, wb += qrt_dw_block_elems(pairs)) {
            for (int64_t h = 0; h < 2 && c0 + 16 * h < l.C_out; h++) {
                int64_t c = c0 + 16 * h, left = l.C_out - c;
                __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
                const int16_t *wh = wb + qrt_dw_packed_at(pairs, 16 * h, 0);  /* lanes 2h, 2h + 1 */
                for (int64_t p = 0; p < pairs; p++) {
                    __m256i x0 = qrt_dw_load_avx2(t[2 * p], o + c, xs);
                    __m256i x1 = qrt_dw_load_avx2(t[2 * p + 1], o + c, xs);
                    const int16_t *wq = wh + p * QRT_DW_PAIR_ELEMS;
                    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1),
                                                                _mm256_loadu_si256((const __m256i *)wq)));
                    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1),
                                                                _mm256_loadu_si256((const __m256i *)(wq + QRT_DW_HI_ELEMS))));
                }
                /* channels 8-15 of a last short block are padding: tables cover whole blocks */
                qrt_dw_store16_avx2(y, c, qrt_dw_requant8_avx2(&l, _mm256_permute2x128_si256(a0, a1, 0x20), c),
                                    qrt_dw_requant8_avx2(&l, _mm256_permute2x128_si256(a0, a1, 0x31), c + 8),
                                    left, xs);
            }
        }
    }
}

/* 3x3, stride 1, dilation 1: qrt_dw_pixels_3x3s1_c32__avx512vnni (see there) 16 channels at a time,
 * the weights read from memory (16 registers hold the interleaved columns and sums, not the
 * 10 weight vectors too). Each pixel widens 3 and interleaves 4 new vectors per 16 channels
 * instead of 10 and 10, and the requantization tables are loaded once per 16 channels. */
static inline __attribute__((always_inline)) void
qrt_dw_pixels_3x3s1_c16__avx2_with(const qrt_dw *d, const int8_t *const *t, int64_t count, int8_t *y,
                                   const int xs) {
    qrt_dw l = *d;
    const int64_t C = l.C_out;
    const int8_t *r0 = t[0], *r1 = t[1], *r2 = t[6];
    for (int64_t c = 0; c < C; c += 16) {
        const int16_t *w = l.wp + qrt_dw_packed_at(5, c, 0);
#define QRT_W(p, hi) _mm256_loadu_si256((const __m256i *)(w + QRT_DW_PAIR_ELEMS * (p) + QRT_DW_HI_ELEMS * (hi)))
        qrt_n33_avx2 t0, t1;
        if (l.rq.n33) {
            t0 = qrt_n33_avx2_load(l.rq.bias + c, l.rq.mult + c, l.rq.round32 + c, l.rq.shift32 + c, l.rq.zp_y, l.rq.lo, l.rq.hi);
            t1 = qrt_n33_avx2_load(l.rq.bias + c + 8, l.rq.mult + c + 8, l.rq.round32 + c + 8, l.rq.shift32 + c + 8,
                                   l.rq.zp_y, l.rq.lo, l.rq.hi);
        }
        __m256i x0 = qrt_dw_load_avx2(r0, c, xs), x1 = qrt_dw_load_avx2(r1, c, xs);
        __m256i u0l = _mm256_unpacklo_epi16(x0, x1), u0h = _mm256_unpackhi_epi16(x0, x1);
        x0 = qrt_dw_load_avx2(r0, C + c, xs), x1 = qrt_dw_load_avx2(r1, C + c, xs);
        __m256i u1l = _mm256_unpacklo_epi16(x0, x1), u1h = _mm256_unpackhi_epi16(x0, x1);
        __m256i x2 = qrt_dw_load_avx2(r2, c, xs), x2n = qrt_dw_load_avx2(r2, C + c, xs);
        __m256i v0l = _mm256_unpacklo_epi16(x2, x2n), v0h = _mm256_unpackhi_epi16(x2, x2n);
        x2 = qrt_dw_load_avx2(r2, 2 * C + c, xs);
        __m256i v1l = _mm256_unpacklo_epi16(x2n, x2), v1h = _mm256_unpackhi_epi16(x2n, x2);
        for (int64_t i = 0; i < count; i++) {
            int64_t o = (i + 2) * C + c;
            x0 = qrt_dw_load_avx2(r0, o, xs), x1 = qrt_dw_load_avx2(r1, o, xs);
            __m256i u2l = _mm256_unpacklo_epi16(x0, x1), u2h = _mm256_unpackhi_epi16(x0, x1);
            x2n = qrt_dw_load_avx2(r2, o + C, xs);
            __m256i v2l = _mm256_unpacklo_epi16(x2, x2n), v2h = _mm256_unpackhi_epi16(x2, x2n);
            __m256i a0 = _mm256_madd_epi16(u0l, QRT_W(0, 0));
            __m256i a1 = _mm256_madd_epi16(u0h, QRT_W(0, 1));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(u1l, QRT_W(1, 0)));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(u1h, QRT_W(1, 1)));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(u2l, QRT_W(2, 0)));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(u2h, QRT_W(2, 1)));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(v0l, QRT_W(3, 0)));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(v0h, QRT_W(3, 1)));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(v2l, QRT_W(4, 0)));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(v2h, QRT_W(4, 1)));
            __m256i s0 = _mm256_permute2x128_si256(a0, a1, 0x20), s1 = _mm256_permute2x128_si256(a0, a1, 0x31);
            if (l.rq.n33)
                qrt_dw_store16_avx2(y + i * C * xs, c, qrt_requant8_avx2_n33_with(s0, &t0),
                                    qrt_requant8_avx2_n33_with(s1, &t1), C - c, xs);
            else
                qrt_dw_store16_avx2(y + i * C * xs, c, qrt_dw_requant8_avx2(&l, s0, c),
                                    qrt_dw_requant8_avx2(&l, s1, c + 8), C - c, xs);
            u0l = u1l, u0h = u1h, u1l = u2l, u1h = u2h;
            v0l = v1l, v0h = v1h, v1l = v2l, v1h = v2h;
            x2 = x2n;
        }
#undef QRT_W
    }
}

static void qrt_dw_pixels_3x3s1_c16__avx2(const qrt_dw *d, const int8_t *const *t, int64_t count,
                                          int8_t *y) {
    qrt_dw_pixels_3x3s1_c16__avx2_with(d, t, count, y, 1);
}

static void qrt_dw_pixels_3x3s1_c16__avx2_s16s8(const qrt_dw *d, const int8_t *const *t, int64_t count,
                                                int8_t *y) {
    qrt_dw_pixels_3x3s1_c16__avx2_with(d, t, count, y, 2);
}

static void qrt_dw_pixels_c16__avx2(const qrt_dw *d, const int8_t *const *t, int64_t step,
                                    int64_t count, uint32_t *acc, int8_t *y) {
    (void)acc;  /* the scalar path's sums */
    if (d->pairs == 5)  /* 3x3: the tap loop unrolled */
        qrt_dw_pixels_c16__avx2_pairs(d, t, step, count, y, 5, 1);
    else
        qrt_dw_pixels_c16__avx2_pairs(d, t, step, count, y, d->pairs, 1);
}

static void qrt_dw_pixels_c16__avx2_s16s8(const qrt_dw *d, const int8_t *const *t, int64_t step,
                                          int64_t count, uint32_t *acc, int8_t *y) {
    (void)acc;
    if (d->pairs == 5)
        qrt_dw_pixels_c16__avx2_pairs(d, t, step, count, y, 5, 2);
    else
        qrt_dw_pixels_c16__avx2_pairs(d, t, step, count, y, d->pairs, 2);
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- AVX-512 VNNI: vpdpwssd */

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")

static inline __mmask16 qrt_dw_mask16(int64_t count) {
    return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1);
}

/* 32 channels of x from element i on of p, as int16: int8 widened, int16 (xs = 2) as they are
 * (the same order: channel j in element j). */
static inline __attribute__((always_inline)) __m512i qrt_dw_load_avx512(const int8_t *p, int64_t i,
                                                                       const int xs) {
    if (xs == 1)
        return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p + i)));
    return _mm512_loadu_si512((const void *)(p + 2 * i));
}

/* 16 sums of channels c .. c + 15 in order: requantized, stored up to the last channel. */
static inline __attribute__((always_inline)) void
qrt_dw_store16_avx512(const qrt_dw *l, __m512i acc, int64_t c, int64_t left, int8_t *y, const int xs) {
    if (xs == 1) {
        __m128i v = qrt_requant16_avx512(acc, l->rq.bias + c, l->rq.mult + c, l->rq.shift + c,
                                         l->rq.zp_y, l->rq.lo, l->rq.hi);
        _mm_mask_storeu_epi8(y + c, qrt_dw_mask16(left), v);
    } else {
        __m256i v = qrt_requant16_avx512_s16(acc, l->rq.bias + c, l->rq.mult + c, l->rq.shift + c,
                                             l->rq.zp_y, l->rq.lo, l->rq.hi);
        _mm256_mask_storeu_epi16((int16_t *)(void *)y + c, qrt_dw_mask16(left), v);
    }
}

/* The sums of the block at channel c, a0 (channels [0-3, 8-11, 16-19, 24-27]) and a1
 * ([4-7, ..., 28-31]): back in channel order, requantized, stored up to the last channel. */
static inline __attribute__((always_inline)) void
qrt_dw_store_avx512(const qrt_dw *l, __m512i a0, __m512i a1, int64_t c, int8_t *y, const int xs) {
    const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28,
                                             29, 30, 31);
    int64_t left = l->C_out - c;
    qrt_dw_store16_avx512(l, _mm512_permutex2var_epi32(a0, first, a1), c, left, y, xs);
    if (left > 16)
        qrt_dw_store16_avx512(l, _mm512_permutex2var_epi32(a0, second, a1), c + 16, left - 16, y, xs);
}

/* count pixels, 32 channels per block; tap k of pixel i at t[k] + i * step elements. */
static inline __attribute__((always_inline)) void
qrt_dw_pixels_c32__avx512vnni_pairs(const qrt_dw *d, const int8_t *const *t, int64_t step, int64_t count,
                       int8_t *y, const int64_t pairs, const int xs) {
    qrt_dw l = *d;  /* a copy the int8 stores cannot alias: no reloads per block */
    for (int64_t i = 0; i < count; i++, y += l.C_out * xs) {
        int64_t o = i * step;
        const int16_t *wb = l.wp;
        for (int64_t c = 0; c < l.C_out; c += QRT_DW_BLOCK, wb += qrt_dw_block_elems(pairs)) {
            __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
            for (int64_t p = 0; p < pairs; p++) {
                __m512i x0 = qrt_dw_load_avx512(t[2 * p], o + c, xs);
                __m512i x1 = qrt_dw_load_avx512(t[2 * p + 1], o + c, xs);
                a0 = _mm512_dpwssd_epi32(a0, _mm512_unpacklo_epi16(x0, x1),
                                         _mm512_loadu_si512((const void *)(wb + p * QRT_DW_PAIR_ELEMS)));
                a1 = _mm512_dpwssd_epi32(a1, _mm512_unpackhi_epi16(x0, x1),
                                         _mm512_loadu_si512((const void *)(wb + p * QRT_DW_PAIR_ELEMS + QRT_DW_HI_ELEMS)));
            }
            qrt_dw_store_avx512(&l, a0, a1, c, y, xs);
        }
    }
}

static void qrt_dw_pixels_c32__avx512vnni(const qrt_dw *d, const int8_t *const *t, int64_t step,
                                          int64_t count, uint32_t *acc, int8_t *y) {
    (void)acc;  /* the scalar path's sums */
    if (d->pairs == 5)  /* 3x3: the tap loop unrolled */
        qrt_dw_pixels_c32__avx512vnni_pairs(d, t, step, count, y, 5, 1);
    else
        qrt_dw_pixels_c32__avx512vnni_pairs(d, t, step, count, y, d->pairs, 1);
}

static void qrt_dw_pixels_c32__avx512vnni_s16s8(const qrt_dw *d, const int8_t *const *t, int64_t step,
                                                int64_t count, uint32_t *acc, int8_t *y) {
    (void)acc;
    if (d->pairs == 5)
        qrt_dw_pixels_c32__avx512vnni_pairs(d, t, step, count, y, 5, 2);
    else
        qrt_dw_pixels_c32__avx512vnni_pairs(d, t, step, count, y, d->pairs, 2);
}

/* 3x3, stride 1, dilation 1, count pixels: pixel i reads columns i .. i+2 of input rows r0, r1,
 * r2 (tap pointers t[0], t[1], t[6] of pixel 0). Its pairs are (r0, r1) in each column, then
 * (r2 col i, r2 col i+1) and (r2 col i+2, dummy): the last is read as (r2 col i+2, r2 col i+3)
 * at weight 0, the pair pixel i+2 uses for its first two r2 taps. So each interleaved column
 * pair serves up to three pixels, and a pixel widens 3 and interleaves 4 new vectors per block
 * instead of 10 and 10. Column i+3 must exist: callers leave the last interior pixel out. */
static inline __attribute__((always_inline)) void
qrt_dw_pixels_3x3s1_c32__avx512vnni_with(const qrt_dw *d, const int8_t *const *t, int64_t count,
                                         int8_t *y, const int xs) {
    qrt_dw l = *d;
    const int64_t C = l.C_out;
    const int8_t *r0 = t[0], *r1 = t[1], *r2 = t[6];
    const int16_t *wb = l.wp;
    for (int64_t c = 0; c < C; c += QRT_DW_BLOCK, wb += qrt_dw_block_elems(5)) {
        __m512i w[10];  /* pair q / 2, lo or hi */
        for (int q = 0; q < 10; q++)
            w[q] = _mm512_loadu_si512((const void *)(wb + (q / 2) * QRT_DW_PAIR_ELEMS + (q % 2) * QRT_DW_HI_ELEMS));
        /* u0, u1: (r0, r1) at columns i, i+1; v0, v1: r2 at (i, i+1), (i+1, i+2); x2: r2 at i+2 */
        __m512i x0 = qrt_dw_load_avx512(r0, c, xs), x1 = qrt_dw_load_avx512(r1, c, xs);
        __m512i u0l = _mm512_unpacklo_epi16(x0, x1), u0h = _mm512_unpackhi_epi16(x0, x1);
        x0 = qrt_dw_load_avx512(r0, C + c, xs), x1 = qrt_dw_load_avx512(r1, C + c, xs);
        __m512i u1l = _mm512_unpacklo_epi16(x0, x1), u1h = _mm512_unpackhi_epi16(x0, x1);
        __m512i x2 = qrt_dw_load_avx512(r2, c, xs), x2n = qrt_dw_load_avx512(r2, C + c, xs);
        __m512i v0l = _mm512_unpacklo_epi16(x2, x2n), v0h = _mm512_unpackhi_epi16(x2, x2n);
        x2 = qrt_dw_load_avx512(r2, 2 * C + c, xs);
        __m512i v1l = _mm512_unpacklo_epi16(x2n, x2), v1h = _mm512_unpackhi_epi16(x2n, x2);
        for (int64_t i = 0; i < count; i++) {
            int64_t o = (i + 2) * C + c;
            x0 = qrt_dw_load_avx512(r0, o, xs), x1 = qrt_dw_load_avx512(r1, o, xs);
            __m512i u2l = _mm512_unpacklo_epi16(x0, x1), u2h = _mm512_unpackhi_epi16(x0, x1);
            x2n = qrt_dw_load_avx512(r2, o + C, xs);
            __m512i v2l = _mm512_unpacklo_epi16(x2, x2n), v2h = _mm512_unpackhi_epi16(x2, x2n);
            __m512i a0 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), u0l, w[0]);
            __m512i a1 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), u0h, w[1]);
            a0 = _mm512_dpwssd_epi32(a0, u1l, w[2]);
            a1 = _mm512_dpwssd_epi32(a1, u1h, w[3]);
            a0 = _mm512_dpwssd_epi32(a0, u2l, w[4]);
            a1 = _mm512_dpwssd_epi32(a1, u2h, w[5]);
            a0 = _mm512_dpwssd_epi32(a0, v0l, w[6]);
            a1 = _mm512_dpwssd_epi32(a1, v0h, w[7]);
            a0 = _mm512_dpwssd_epi32(a0, v2l, w[8]);
            a1 = _mm512_dpwssd_epi32(a1, v2h, w[9]);
            qrt_dw_store_avx512(&l, a0, a1, c, y + i * C * xs, xs);
            u0l = u1l, u0h = u1h, u1l = u2l, u1h = u2h;
            v0l = v1l, v0h = v1h, v1l = v2l, v1h = v2h;
            x2 = x2n;
        }
    }
}

static void qrt_dw_pixels_3x3s1_c32__avx512vnni(const qrt_dw *d, const int8_t *const *t, int64_t count,
                                                int8_t *y) {
    qrt_dw_pixels_3x3s1_c32__avx512vnni_with(d, t, count, y, 1);
}

static void qrt_dw_pixels_3x3s1_c32__avx512vnni_s16s8(const qrt_dw *d, const int8_t *const *t,
                                                      int64_t count, int8_t *y) {
    qrt_dw_pixels_3x3s1_c32__avx512vnni_with(d, t, count, y, 2);
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- driver */

/* count pixels, every channel; tap k of pixel i at t[k] + i * step elements; acc: C_out sums of
 * scratch. Pointers are bytes: t[k], y at int8, or int16 in the int16 mode. */
typedef void (*qrt_dw_pixels_fn)(const qrt_dw *d, const int8_t *const *t, int64_t step,
                                 int64_t count, uint32_t *acc, int8_t *y);
/* 3x3, stride 1, dilation 1: count pixels of a row's interior from pixel 0's tap pointers. */
typedef void (*qrt_dw_pixels_3x3s1_fn)(const qrt_dw *d, const int8_t *const *t, int64_t count,
                                       int8_t *y);

/* What differs between the paths (and modes), chosen once per bound op (qrt_dw_ops_for,
 * qrt_dw_int16_ops_for). */
struct qrt_dw_ops {
    qrt_dw_pixels_fn pixels;
    qrt_dw_pixels_3x3s1_fn pixels_3x3s1;  /* NULL: pixels does those too */
    int64_t xs;                           /* bytes per element of x and y: 1 (int8), 2 (int16) */
};

/* Where tap (kh, kw) of output pixel ow of image n, output row oh reads: zrow in the padding,
 * else the expanded rows (M > 1) or x (or its copied tail); xs bytes per element. */
static inline const int8_t *qrt_dw_tap(const qrt_dw *d, const int8_t *x, const int8_t *rows,
                                       int64_t n, int64_t oh, int64_t ow, int64_t kh, int64_t kw,
                                       int64_t xs) {
    int64_t ih = oh * d->sh - d->top + kh * d->dh, iw = ow * d->sw - d->left + kw * d->dw;
    if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W)
        return d->zrow;
    if (d->M > 1)
        return rows + (kh * d->W + iw) * d->C_out * xs;
    int64_t off = ((n * d->H + ih) * d->W + iw) * d->C;
    return off < d->tail_at ? x + off * xs : d->tail + (off - d->tail_at) * xs;
}

/* All tap pointers of a pixel into t, in the packed weights' tap order (see the top). */
static inline void qrt_dw_taps(const qrt_dw *d, const int8_t *x, const int8_t *rows, int64_t n,
                               int64_t oh, int64_t ow, const int8_t **t, const int64_t xs) {
    int64_t k = 0;
    for (int64_t kh = 0; kh + 1 < d->KH; kh += 2)
        for (int64_t kw = 0; kw < d->KW; kw++) {
            t[k++] = qrt_dw_tap(d, x, rows, n, oh, ow, kh, kw, xs);
            t[k++] = qrt_dw_tap(d, x, rows, n, oh, ow, kh + 1, kw, xs);
        }
    if (d->KH % 2)
        for (int64_t kw = 0; kw < d->KW; kw++)
            t[k++] = qrt_dw_tap(d, x, rows, n, oh, ow, d->KH - 1, kw, xs);
    if (k < 2 * d->pairs)
        t[k] = d->zrow;  /* the dummy tap: weight 0 */
}

/* AMX has no depthwise code of its own: it runs the AVX-512 VNNI kernels. */
static inline const qrt_dw_ops *qrt_dw_ops_for(int isa) {
    static const qrt_dw_ops ops[] = {
        [QRT_SCALAR] = {.pixels = qrt_dw_pixels_c1__scalar, .xs = 1},
        [QRT_AVX2] = {.pixels = qrt_dw_pixels_c16__avx2,
                      .pixels_3x3s1 = qrt_dw_pixels_3x3s1_c16__avx2, .xs = 1},
        [QRT_AVX512VNNI] = {.pixels = qrt_dw_pixels_c32__avx512vnni,
                            .pixels_3x3s1 = qrt_dw_pixels_3x3s1_c32__avx512vnni, .xs = 1},
        [QRT_AMX] = {.pixels = qrt_dw_pixels_c32__avx512vnni,
                     .pixels_3x3s1 = qrt_dw_pixels_3x3s1_c32__avx512vnni, .xs = 1},
    };
    return &ops[isa >= QRT_SCALAR && isa <= QRT_AMX ? isa : QRT_SCALAR];
}

/* The int16 mode's (int16 x and y, SPEC.md 4.6): the same kernels compiled with xs = 2. */
static inline const qrt_dw_ops *qrt_dw_int16_ops_for(int isa) {
    static const qrt_dw_ops ops[] = {
        [QRT_SCALAR] = {.pixels = qrt_dw_pixels_c1__scalar_s16s8, .xs = 2},
        [QRT_AVX2] = {.pixels = qrt_dw_pixels_c16__avx2_s16s8,
                      .pixels_3x3s1 = qrt_dw_pixels_3x3s1_c16__avx2_s16s8, .xs = 2},
        [QRT_AVX512VNNI] = {.pixels = qrt_dw_pixels_c32__avx512vnni_s16s8,
                            .pixels_3x3s1 = qrt_dw_pixels_3x3s1_c32__avx512vnni_s16s8, .xs = 2},
        [QRT_AMX] = {.pixels = qrt_dw_pixels_c32__avx512vnni_s16s8,
                     .pixels_3x3s1 = qrt_dw_pixels_3x3s1_c32__avx512vnni_s16s8, .xs = 2},
    };
    return &ops[isa >= QRT_SCALAR && isa <= QRT_AMX ? isa : QRT_SCALAR];
}

/* count elements of src, each repeated M times into dst: int8, or int16 (xs = 2). */
static void qrt_dw_expand(const int8_t *src, int8_t *dst, int64_t count, int64_t M, int64_t xs) {
    if (xs == 1) {
        for (int64_t i = 0; i < count; i++)
            for (int64_t j = 0; j < M; j++)
                dst[i * M + j] = src[i];
    } else {
        const int16_t *s = (const int16_t *)(const void *)src;
        int16_t *o = (int16_t *)(void *)dst;
        for (int64_t i = 0; i < count; i++)
            for (int64_t j = 0; j < M; j++)
                o[i * M + j] = s[i];
    }
}

/* Output row `row` (n * OH + oh) into y, with this thread's scratch s; xs bytes per element of
 * x and y (a constant: qrt_dw_row, qrt_dw_row_s16). */
static inline __attribute__((always_inline)) void
qrt_dw_row_with(const qrt_dw *d, const int8_t *x, int64_t row, int8_t *y, uint8_t *s, const int64_t xs) {
    const qrt_dw_ops *ops = d->ops;
    const int8_t **base = (const int8_t **)s, **own = base + 2 * d->pairs;
    uint32_t *acc = (uint32_t *)(s + qrt_dw_table_bytes(d));
    int8_t *rows = (int8_t *)(s + qrt_dw_table_bytes(d) + qrt_dw_acc_bytes(d));
    int64_t n = row / d->OH, oh = row - n * d->OH, C_out = d->C_out, OW = d->OW;
    int64_t ystep = C_out * xs;  /* bytes per output pixel */
    int64_t ih0 = oh * d->sh - d->top, ih_last = -1;
    for (int64_t kh = 0; kh < d->KH; kh++) {
        int64_t ih = ih0 + kh * d->dh;
        if (ih < 0 || ih >= d->H)
            continue;
        ih_last = ih;
        if (d->M > 1)
            qrt_dw_expand(x + (n * d->H + ih) * d->W * d->C * xs, rows + kh * d->W * C_out * xs,
                          d->W * d->C, d->M, xs);
    }
    if (d->M > 1)  /* the last pixel's block read runs past the rows: keep it defined */
        memset(rows + d->KH * d->W * C_out * xs, 0, (size_t)(qrt_dw_span(d) * xs));
    /* Interior pixels [a, b): every tap column inside the input. Rows that reach x's copied
     * tail have none, so that their pointers are mapped one by one. */
    int64_t a = (d->left + d->sw - 1) / d->sw, reach = d->W - 1 + d->left - (d->KW - 1) * d->dw;
    int64_t b = reach < 0 ? 0 : reach / d->sw + 1;
    a = a < OW ? a : OW;
    b = b < OW ? b : OW;
    if (b < a || (d->M == 1 && ih_last >= 0 && (n * d->H + ih_last + 1) * d->W * d->C > d->tail_at))
        b = a;
    if (b > a) {
        qrt_dw_taps(d, x, rows, n, oh, a, base, xs);
        if (ops->pixels_3x3s1 && d->KH == 3 && d->KW == 3 && d->sw == 1 && d->dw == 1
            && b - a > 1) {
            ops->pixels_3x3s1(d, base, b - a - 1, y + a * ystep);
            qrt_dw_taps(d, x, rows, n, oh, b - 1, own, xs);
            ops->pixels(d, own, 0, 1, acc, y + (b - 1) * ystep);
        } else {
            ops->pixels(d, base, d->sw * C_out, b - a, acc, y + a * ystep);
        }
    }
    for (int64_t ow = 0; ow < OW; ow++) {
        if (ow == a)
            ow = b;  /* past the interior */
        if (ow < OW) {
            qrt_dw_taps(d, x, rows, n, oh, ow, own, xs);
            ops->pixels(d, own, 0, 1, acc, y + ow * ystep);
        }
    }
}

static void qrt_dw_row(const qrt_dw *d, const int8_t *x, int64_t row, int8_t *y, uint8_t *s) {
    qrt_dw_row_with(d, x, row, y, s, 1);
}

static void qrt_dw_row_s16(const qrt_dw *d, const int8_t *x, int64_t row, int8_t *y, uint8_t *s) {
    qrt_dw_row_with(d, x, row, y, s, 2);
}

/* The whole op; returns 0 or -2 (no scratch memory). x and y: the tensors' bytes (int8, or
 * int16 in the int16 mode). */
static int qrt_dw_run(const qrt_dw *d, const int8_t *x, int8_t *y) {
    int64_t rows = d->N * d->OH, xs = d->ops->xs;
    if (rows == 0 || d->OW == 0 || d->C_out == 0)
        return 0;
    int64_t total = d->N * d->H * d->W * d->C;
    if (d->M == 1 && d->tail_at < total)
        memcpy(d->tail, x + d->tail_at * xs, (size_t)((total - d->tail_at) * xs));
    size_t need = (size_t)(qrt_dw_table_bytes(d) + qrt_dw_acc_bytes(d) + qrt_dw_rows_bytes(d, xs));
    int threads = d->threads < 1 ? 1 : d->threads;
    int rc = 0;
    void (*row_fn)(const qrt_dw *, const int8_t *, int64_t, int8_t *, uint8_t *) =
        xs == 2 ? qrt_dw_row_s16 : qrt_dw_row;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows > 1) reduction(min : rc)
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *s = qrt_scratch(need);
        if (s == NULL)
            rc = -2;
        else
            row_fn(d, x, r, y + r * d->OW * d->C_out * xs, s);
    }
    return rc;
}

#endif
