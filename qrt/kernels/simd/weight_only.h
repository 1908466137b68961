/* CONV_2D and FULLY_CONNECTED in their weight-only form (qrt/ops/hybrid.py): float32
 * activations, int8 or int4 weights with one float32 scale per (output channel, group of
 * group_size k), dequantized here, in registers. The references are qrt/ops/fully_connected.py
 * and conv_2d.py reference_weight_only, bit for bit, on every path:
 *     w[c, k] = float32(q[c, k]) * s[c, k / group_size]                     (one rounding)
 *     y[m, c] = (...((0 + x[m,0] w[c,0]) + x[m,1] w[c,1]) ... + x[m,K-1] w[c,K-1]) + b[c]
 *     y = min(max(y, lo), hi)                                     (np.clip: NaN stays NaN)
 * every product and sum rounded to float32, k in order. So nothing here may be reassociated or
 * contracted into a fused multiply-add: every module is compiled with -ffp-contract=off (setup.py;
 * and never with -ffast-math), so the products and sums are separate instructions (vmulps, then
 * vaddps; no vfmadd anywhere: tests/runtime/test_kernels_weight_only.py checks the result on
 * data where FMA would differ, tests/runtime/test_paths.py the instructions).
 *
 * Data path of one call, per group of channels:
 *   - weights were packed once at load (weight_only.pyx PackedWeightOnly) into panels of
 *     QRT_WO_PANEL = 16 output channels: int8 [panel][K][16] (16 bytes per k: one vpmovsxbd
 *     away from 16 int32 lanes), int4 [panel][ceil(K/2)][16] bytes, byte j of row r holding
 *     channel j's k = 2r in its low nibble and k = 2r + 1 in its high one (the k pairs of one
 *     channel share a byte, so one 16-byte load serves two k); scales [panel][groups][16]
 *     float32; the bias [panel][16]. Padding channels have weight 0, scale 0, bias 0 and are
 *     never stored. The layout is the same for every path.
 *   - the rows: FULLY_CONNECTED's x rows (and a 1x1, stride-1, unpadded conv's pixels) are read
 *     in place; any other conv gathers the im2col rows of a block of output pixels, (kh, kw,
 *     c) order, padding 0.0, into per-thread float scratch (isa.h qrt_scratch), at most
 *     QRT_WO_BLOCK_BYTES at a time (it stays in L2).
 *   - a micro-kernel keeps MR rows x NR panels of float32 sums in registers over the whole K:
 *     per k it dequantizes the NR weight vectors (widen and convert, or for int4 on AVX-512 a
 *     vpermps lookup of the nibbles' values; times the group's scale, held in registers over
 *     the group) and, per row, broadcasts x[m, k], multiplies and adds.
 *     The sums run across output channels, so each one still adds its k in order. Then bias,
 *     clamp, and a masked store of the channels that exist. AVX-512 (the avx512vnni and amx
 *     paths): 10 rows x 1 panel, or 1 row x 8 panels / 2 rows x 4 for GEMV; AVX2: 8 floats per
 *     ymm, two per panel, 6 rows x 1 panel, or 1 row x 4 panels / 2 rows x 2; scalar: 1 x 16.
 * Threads split blocks of rows (or, when there are too few, panels of channels); each output is
 * computed whole by one thread, and its arithmetic never depends on the tile it falls in, so
 * results do not depend on the thread count or the path. */

/* ---------------------------------------------------------------- what Cython sees */
#ifndef QRT_WEIGHT_ONLY_API_H
#define QRT_WEIGHT_ONLY_API_H

#include <stdint.h>

#define QRT_WO_PANEL 16  /* output channels per packed panel */

typedef struct qrt_weight_only_ops qrt_weight_only_ops;

typedef struct {
    int64_t N, H, W, C_in;          /* input, NHWC (FULLY_CONNECTED: N rows, H = W = 1, C_in = K) */
    int64_t OH, OW, C_out;          /* output, NHWC */
    int64_t KH, KW, sh, sw, dh, dw, top, left;
    int64_t groups, cin_g, cout_g;  /* per group: cin_g inputs, cout_g outputs */
    int64_t K;                      /* KH * KW * cin_g: the reduction */
    int64_t panels;                 /* ceil(cout_g / 16) per group */
    int64_t group_size;             /* k per scale (K when per channel or per tensor) */
    int64_t kgroups;                /* ceil(K / group_size): scales per channel */
    int int4;                       /* weights are int4 nibbles, else int8 */
    const uint8_t *w;               /* [groups][panels][K or ceil(K/2)][16] */
    const float *scales;            /* [groups][panels][kgroups][16] */
    const float *bias;              /* [groups][panels][16] */
    float lo, hi;                   /* the fused activation's clamp (+-inf: none) */
    int isa, threads;
    const qrt_weight_only_ops *ops; /* the path's functions: qrt_weight_only_ops_for(isa), at bind */
} qrt_weight_only;

/* rows rows of a (row i at a + i * lda) x panels [p0, p1) of one group (w, s, bias at the
 * group's first panel), into y (row i at y + i * C_out, the group's first channel). */
typedef void (*qrt_weight_only_block_fn)(const qrt_weight_only *g, const float *a, int64_t lda,
                                         int64_t rows, const uint8_t *w, const float *s,
                                         const float *bias, float *y, int64_t p0, int64_t p1);

struct qrt_weight_only_ops {
    qrt_weight_only_block_fn block;
    int64_t mr;  /* rows per micro-kernel call in a full tile */
};

#endif /* QRT_WEIGHT_ONLY_API_H */

/* ---------------------------------------------------------------- the paths' code
 * (compiled only into qrt.kernels.isa; simd_weight_only.pxd includes the part above alone) */
#if !defined(QRT_WEIGHT_ONLY_API_ONLY) && !defined(QRT_WEIGHT_ONLY_H)
#define QRT_WEIGHT_ONLY_H

#include <string.h>
#include <immintrin.h>
#include "isa.h"

#define QRT_WO_BLOCK_BYTES (192 * 1024)  /* gathered rows per block: stays in L2 */

/* Bytes of one packed panel, and scales per panel. */
static inline int64_t qrt_wo_panel_bytes(const qrt_weight_only *g) {
    return (g->int4 ? (g->K + 1) / 2 : g->K) * QRT_WO_PANEL;
}
static inline int64_t qrt_wo_panel_scales(const qrt_weight_only *g) {
    return g->kgroups * QRT_WO_PANEL;
}

/* The int4 nibble values as floats, by nibble (two's complement): the AVX-512 path looks them
 * up with vpermps, whose index is the low 4 bits of each lane. */
static const float qrt_wo_int4_values[16] __attribute__((aligned(64))) = {
    0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, -8.f, -7.f, -6.f, -5.f, -4.f, -3.f, -2.f, -1.f};

/* ---------------------------------------------------------------- im2col gather (all paths) */

/* The im2col rows of output pixels [m0, m1), group grp: K floats each, (kh, kw, c) order,
 * padding 0.0, one after another at dst. */
static void qrt_wo_gather(const qrt_weight_only *g, const float *x, int64_t m0, int64_t m1,
                          int64_t grp, float *dst) {
    const int64_t cin = g->cin_g, K = g->K;
    int64_t per_image = g->OH * g->OW;
    int64_t n = m0 / per_image, r = m0 - n * per_image;
    int64_t oh = r / g->OW, ow = r - oh * g->OW;
    for (int64_t m = m0; m < m1; m++, dst += K) {
        int64_t ih0 = oh * g->sh - g->top, iw0 = ow * g->sw - g->left, k = 0;
        int64_t iw_last = iw0 + (g->KW - 1) * g->dw;
        const float *image = x + n * g->H * g->W * g->C_in + grp * cin;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t ih = ih0 + kh * g->dh;
            if (ih < 0 || ih >= g->H) {
                memset(dst + k, 0, (size_t)(g->KW * cin) * sizeof(float));
                k += g->KW * cin;
            } else if (g->dw == 1 && iw0 >= 0 && iw_last < g->W && cin == g->C_in) {
                memcpy(dst + k, image + (ih * g->W + iw0) * g->C_in, (size_t)(g->KW * cin) * sizeof(float));
                k += g->KW * cin;
            } else {
                for (int64_t kw = 0; kw < g->KW; kw++, k += cin) {
                    int64_t iw = iw0 + kw * g->dw;
                    if (iw < 0 || iw >= g->W)
                        memset(dst + k, 0, (size_t)cin * sizeof(float));
                    else
                        memcpy(dst + k, image + (ih * g->W + iw) * g->C_in, (size_t)cin * sizeof(float));
                }
            }
        }
        if (++ow == g->OW) {
            ow = 0;
            if (++oh == g->OH) {
                oh = 0;
                n++;
            }
        }
    }
}

/* ---------------------------------------------------------------- scalar (portable C) */

/* np.clip's order and ties: y below lo -> lo, then above hi -> hi; NaN compares false and
 * stays. */
static inline float qrt_wo_clamp(float y, float lo, float hi) {
    y = lo > y ? lo : y;
    return hi < y ? hi : y;
}

static inline int32_t qrt_wo_q(const qrt_weight_only *g, const uint8_t *wp, int64_t k, int c) {
    if (!g->int4)
        return (int8_t)wp[k * QRT_WO_PANEL + c];
    uint8_t b = wp[(k >> 1) * QRT_WO_PANEL + c];
    return (int8_t)(k & 1 ? b : (uint8_t)(b << 4)) >> 4;  /* sign-extended nibble */
}

/* One row x one panel at a time, 16 sums. */
static void qrt_wo_block_1x16__scalar(const qrt_weight_only *g, const float *a, int64_t lda,
                                      int64_t rows, const uint8_t *w, const float *s,
                                      const float *bias, float *y, int64_t p0, int64_t p1) {
    const int64_t K = g->K, G = g->group_size, pb = qrt_wo_panel_bytes(g), ps = qrt_wo_panel_scales(g);
    for (int64_t p = p0; p < p1; p++) {
        const uint8_t *wp = w + p * pb;
        const float *sp = s + p * ps;
        int64_t n = g->cout_g - p * QRT_WO_PANEL;
        n = n < QRT_WO_PANEL ? n : QRT_WO_PANEL;
        for (int64_t i = 0; i < rows; i++) {
            const float *x = a + i * lda;
            float acc[QRT_WO_PANEL];
            for (int c = 0; c < QRT_WO_PANEL; c++)
                acc[c] = 0.f;
            for (int64_t kg = 0; kg < g->kgroups; kg++) {
                int64_t k1 = K - kg * G < G ? K : kg * G + G;
                for (int64_t k = kg * G; k < k1; k++) {
                    const float xk = x[k];
                    for (int c = 0; c < QRT_WO_PANEL; c++) {
                        const float wv = (float)qrt_wo_q(g, wp, k, c) * sp[kg * QRT_WO_PANEL + c];
                        const float prod = xk * wv;
                        acc[c] = acc[c] + prod;
                    }
                }
            }
            float *yr = y + i * g->C_out + p * QRT_WO_PANEL;
            for (int64_t c = 0; c < n; c++)
                yr[c] = qrt_wo_clamp(acc[c] + bias[p * QRT_WO_PANEL + c], g->lo, g->hi);
        }
    }
}

/* ---------------------------------------------------------------- the vector paths' blocks */

/* The body of a vector path's block function (qrt_weight_only_block_fn; its parameters g, a0,
 * lda, rows, w, s, bias, y, p0, p1 in scope), one for both. TILE is the path's always_inline
 * tile, TILE(g, MR, NR, INT4, a, lda, w, s, bias, y, ncols), called with constant sizes: one
 * instance per (rows, panels, int4), its sums in registers. Panels in chunks of NC (4 or 8);
 * per chunk, tiles of MR (<= 10) rows x 1 panel, each panel down the rows (it stays in L1 while
 * the rows stream; per tile the dequantization is paid once per k and panel, so tall tiles of
 * one panel amortize it best), then the rows left: 3 .. MR - 1 one panel at a time, 1 row
 * across up to NC panels and 2 rows across up to 4 (independent sums that hide the adds'
 * latency at GEMV sizes). */
#define QRT_WO_BLOCK_BODY(TILE, MR, NC)                                                       \
    const int64_t pb = qrt_wo_panel_bytes(g), ps = qrt_wo_panel_scales(g);                    \
    for (int64_t c = p0; c < p1; c += NC) {                                                   \
        const int64_t c1 = c + NC < p1 ? c + NC : p1;                                         \
        const int64_t m = rows - rows % MR, r = rows - m;                                     \
        for (int64_t q = c; q < c1; q++)                                                      \
            for (int64_t i = 0; i < m; i += MR)                                               \
                QRT_WO_CALL(TILE, MR, 1, a0 + i * lda, y + i * g->C_out);                     \
        const float *a = a0 + m * lda;                                                        \
        float *yr = y + m * g->C_out;                                                         \
        for (int64_t q = c; r > 0 && q < c1;) {                                               \
            const int64_t left = c1 - q;                                                      \
            if (r == 1 && left >= NC) {                                                       \
                QRT_WO_CALL(TILE, 1, NC, a, yr);                                              \
                q += NC;                                                                      \
            } else if (NC >= 8 && r <= 2 && left >= 4) {                                      \
                if (r == 1)                                                                   \
                    QRT_WO_CALL(TILE, 1, 4, a, yr);                                           \
                else                                                                          \
                    QRT_WO_CALL(TILE, 2, 4, a, yr);                                           \
                q += 4;                                                                       \
            } else if (r <= 2 && left >= 2) {                                                 \
                if (r == 1)                                                                   \
                    QRT_WO_CALL(TILE, 1, 2, a, yr);                                           \
                else                                                                          \
                    QRT_WO_CALL(TILE, 2, 2, a, yr);                                           \
                q += 2;                                                                       \
            } else {                                                                          \
                switch (r) {  /* the cases from MR on are never compiled */                   \
                case 1: QRT_WO_CALL(TILE, 1, 1, a, yr); break;                                \
                case 2: QRT_WO_CALL(TILE, 2, 1, a, yr); break;                                \
                case 3: QRT_WO_CALL(TILE, 3, 1, a, yr); break;                                \
                case 4: QRT_WO_CALL(TILE, 4, 1, a, yr); break;                                \
                case 5: QRT_WO_CALL(TILE, 5, 1, a, yr); break;                                \
                case 6: if (MR > 6) QRT_WO_CALL(TILE, 6, 1, a, yr); break;                    \
                case 7: if (MR > 7) QRT_WO_CALL(TILE, 7, 1, a, yr); break;                    \
                case 8: if (MR > 8) QRT_WO_CALL(TILE, 8, 1, a, yr); break;                    \
                default: if (MR > 9) QRT_WO_CALL(TILE, 9, 1, a, yr); break;                   \
                }                                                                             \
                q += 1;                                                                       \
            }                                                                                 \
        }                                                                                     \
    }

/* One tile, MR_ rows x NR_ panels from panel q: rows at a, outputs at yo. */
#define QRT_WO_CALL(TILE, MR_, NR_, a, yo)                                                    \
    (g->int4 ? TILE(g, MR_, NR_, 1, a, lda, w + q * pb, s + q * ps, bias + q * QRT_WO_PANEL,  \
                    (yo) + q * QRT_WO_PANEL, g->cout_g - q * QRT_WO_PANEL)                    \
             : TILE(g, MR_, NR_, 0, a, lda, w + q * pb, s + q * ps, bias + q * QRT_WO_PANEL,  \
                    (yo) + q * QRT_WO_PANEL, g->cout_g - q * QRT_WO_PANEL))

/* ---------------------------------------------------------------- AVX2: 8 floats per ymm */

#pragma GCC push_options
#pragma GCC target("avx2,fma")

/* 8 int8 weights of half a panel's row, as floats. */
static inline __attribute__((always_inline)) __m256 qrt_wo_q8__avx2(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* 8 bytes of nibble pairs, one per 32-bit lane, sign-extended (so the high nibble is one
 * arithmetic shift away). */
static inline __attribute__((always_inline)) __m256i qrt_wo_nib__avx2(const uint8_t *p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
}

/* The low (even k) and high (odd k) nibble of each lane, sign-extended, as floats. */
static inline __attribute__((always_inline)) __m256 qrt_wo_lo__avx2(__m256i v) {
    return _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(v, 28), 28));
}
static inline __attribute__((always_inline)) __m256 qrt_wo_hi__avx2(__m256i v) {
    return _mm256_cvtepi32_ps(_mm256_srai_epi32(v, 4));
}

/* acc[i][h] += x[i][k] * w[h], h over the NR panels' 2 NR halves: a product, then a sum. */
#define QRT_WO_STEP_AVX2(K_)                                                                  \
    for (int i = 0; i < MR; i++) {                                                            \
        const __m256 xv = _mm256_broadcast_ss(a + i * lda + (K_));                            \
        for (int h = 0; h < 2 * NR; h++)                                                      \
            acc[i][h] = _mm256_add_ps(acc[i][h], _mm256_mul_ps(xv, wv[h]));                   \
    }

static inline __attribute__((always_inline)) void
qrt_wo_tile__avx2(const qrt_weight_only *g, const int MR, const int NR, const int INT4,
                  const float *a, int64_t lda, const uint8_t *w, const float *s,
                  const float *bias, float *y, int64_t ncols) {
    const int64_t K = g->K, G = g->group_size, pb = qrt_wo_panel_bytes(g), ps = qrt_wo_panel_scales(g);
    __m256 acc[6][8];
    for (int i = 0; i < MR; i++)
        for (int h = 0; h < 2 * NR; h++)
            acc[i][h] = _mm256_setzero_ps();
    for (int64_t kg = 0; kg < g->kgroups; kg++) {
        int64_t k = kg * G, k1 = K - k < G ? K : k + G;
        __m256 sv[8], wv[8];
        for (int h = 0; h < 2 * NR; h++)
            sv[h] = _mm256_loadu_ps(s + (h / 2) * ps + kg * QRT_WO_PANEL + (h % 2) * 8);
        if (!INT4) {
            for (; k < k1; k++) {
                for (int h = 0; h < 2 * NR; h++)
                    wv[h] = _mm256_mul_ps(qrt_wo_q8__avx2(w + (h / 2) * pb + k * QRT_WO_PANEL + (h % 2) * 8), sv[h]);
                QRT_WO_STEP_AVX2(k)
            }
            continue;
        }
        if (k & 1) {  /* a group that starts on an odd k: its high nibble first */
            for (int h = 0; h < 2 * NR; h++)
                wv[h] = _mm256_mul_ps(qrt_wo_hi__avx2(qrt_wo_nib__avx2(
                    w + (h / 2) * pb + (k >> 1) * QRT_WO_PANEL + (h % 2) * 8)), sv[h]);
            QRT_WO_STEP_AVX2(k)
            k++;
        }
        for (; k + 2 <= k1; k += 2) {
            __m256i v[8];
            for (int h = 0; h < 2 * NR; h++) {
                v[h] = qrt_wo_nib__avx2(w + (h / 2) * pb + (k >> 1) * QRT_WO_PANEL + (h % 2) * 8);
                wv[h] = _mm256_mul_ps(qrt_wo_lo__avx2(v[h]), sv[h]);
            }
            QRT_WO_STEP_AVX2(k)
            for (int h = 0; h < 2 * NR; h++)
                wv[h] = _mm256_mul_ps(qrt_wo_hi__avx2(v[h]), sv[h]);
            QRT_WO_STEP_AVX2(k + 1)
        }
        if (k < k1) {  /* a group that ends on an even k */
            for (int h = 0; h < 2 * NR; h++)
                wv[h] = _mm256_mul_ps(qrt_wo_lo__avx2(qrt_wo_nib__avx2(
                    w + (h / 2) * pb + (k >> 1) * QRT_WO_PANEL + (h % 2) * 8)), sv[h]);
            QRT_WO_STEP_AVX2(k)
        }
    }
    const __m256 lo = _mm256_set1_ps(g->lo), hi = _mm256_set1_ps(g->hi);
    for (int h = 0; h < 2 * NR; h++) {
        int64_t c0 = h * 8;
        if (c0 >= ncols)
            break;
        const __m256 b = _mm256_loadu_ps(bias + c0);
        const int64_t n = ncols - c0 < 8 ? ncols - c0 : 8;
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int i = 0; i < MR; i++) {
            /* max(lo, y): lo where lo > y, y otherwise (NaN stays); then min(hi, .) alike */
            __m256 v = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_add_ps(acc[i][h], b)));
            _mm256_maskstore_ps(y + i * g->C_out + c0, keep, v);
        }
    }
}
#undef QRT_WO_STEP_AVX2

/* Tiles of 6 rows x 1 panel (12 sums: with the 2 weight vectors, the broadcast and a product,
 * all 16 ymm registers), panels in chunks of 4. */
static void qrt_wo_block_6x16__avx2(const qrt_weight_only *g, const float *a0, int64_t lda,
                                    int64_t rows, const uint8_t *w, const float *s,
                                    const float *bias, float *y, int64_t p0, int64_t p1) {
    QRT_WO_BLOCK_BODY(qrt_wo_tile__avx2, 6, 4)
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- AVX-512: 16 floats per zmm */

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")

/* 16 int8 weights of a panel's row, as floats. */
static inline __attribute__((always_inline)) __m512 qrt_wo_q8__avx512(const uint8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

/* 16 bytes of nibble pairs, one per 32-bit lane; the low nibble (even k) or high one (odd k)
 * of each lane as its float value, by table lookup. */
static inline __attribute__((always_inline)) __m512i qrt_wo_nib__avx512(const uint8_t *p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}
static inline __attribute__((always_inline)) __m512 qrt_wo_lo__avx512(__m512i v, __m512 table) {
    return _mm512_permutexvar_ps(v, table);  /* index: bits 0-3 of each lane */
}
static inline __attribute__((always_inline)) __m512 qrt_wo_hi__avx512(__m512i v, __m512 table) {
    return _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table);
}

#define QRT_WO_STEP_AVX512(K_)                                                                \
    for (int i = 0; i < MR; i++) {                                                            \
        const __m512 xv = _mm512_set1_ps(a[i * lda + (K_)]);                                  \
        for (int j = 0; j < NR; j++)                                                          \
            acc[i][j] = _mm512_add_ps(acc[i][j], _mm512_mul_ps(xv, wv[j]));                   \
    }

static inline __attribute__((always_inline)) void
qrt_wo_tile__avx512(const qrt_weight_only *g, const int MR, const int NR, const int INT4,
                    const float *a, int64_t lda, const uint8_t *w, const float *s,
                    const float *bias, float *y, int64_t ncols) {
    const int64_t K = g->K, G = g->group_size, pb = qrt_wo_panel_bytes(g), ps = qrt_wo_panel_scales(g);
    const __m512 table = _mm512_load_ps(qrt_wo_int4_values);
    __m512 acc[10][8];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
            acc[i][j] = _mm512_setzero_ps();
    for (int64_t kg = 0; kg < g->kgroups; kg++) {
        int64_t k = kg * G, k1 = K - k < G ? K : k + G;
        __m512 sv[8], wv[8];
        for (int j = 0; j < NR; j++)
            sv[j] = _mm512_loadu_ps(s + j * ps + kg * QRT_WO_PANEL);
        if (!INT4) {
            for (; k < k1; k++) {
                for (int j = 0; j < NR; j++)
                    wv[j] = _mm512_mul_ps(qrt_wo_q8__avx512(w + j * pb + k * QRT_WO_PANEL), sv[j]);
                QRT_WO_STEP_AVX512(k)
            }
            continue;
        }
        if (k & 1) {  /* a group that starts on an odd k: its high nibble first */
            for (int j = 0; j < NR; j++)
                wv[j] = _mm512_mul_ps(qrt_wo_hi__avx512(qrt_wo_nib__avx512(
                    w + j * pb + (k >> 1) * QRT_WO_PANEL), table), sv[j]);
            QRT_WO_STEP_AVX512(k)
            k++;
        }
        for (; k + 2 <= k1; k += 2) {
            __m512i v[8];
            for (int j = 0; j < NR; j++) {
                v[j] = qrt_wo_nib__avx512(w + j * pb + (k >> 1) * QRT_WO_PANEL);
                wv[j] = _mm512_mul_ps(qrt_wo_lo__avx512(v[j], table), sv[j]);
            }
            QRT_WO_STEP_AVX512(k)
            for (int j = 0; j < NR; j++)
                wv[j] = _mm512_mul_ps(qrt_wo_hi__avx512(v[j], table), sv[j]);
            QRT_WO_STEP_AVX512(k + 1)
        }
        if (k < k1) {  /* a group that ends on an even k */
            for (int j = 0; j < NR; j++)
                wv[j] = _mm512_mul_ps(qrt_wo_lo__avx512(qrt_wo_nib__avx512(
                    w + j * pb + (k >> 1) * QRT_WO_PANEL), table), sv[j]);
            QRT_WO_STEP_AVX512(k)
        }
    }
    const __m512 lo = _mm512_set1_ps(g->lo), hi = _mm512_set1_ps(g->hi);
    for (int j = 0; j < NR; j++) {
        int64_t c0 = j * QRT_WO_PANEL;
        if (c0 >= ncols)
            break;
        const __m512 b = _mm512_loadu_ps(bias + c0);
        const __mmask16 keep = ncols - c0 >= 16 ? (__mmask16)0xFFFF
                                                : (__mmask16)((1u << (ncols - c0)) - 1);
        for (int i = 0; i < MR; i++) {
            /* max(lo, y): lo where lo > y, y otherwise (NaN stays); then min(hi, .) alike */
            __m512 v = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc[i][j], b)));
            _mm512_mask_storeu_ps(y + i * g->C_out + c0, keep, v);
        }
    }
}
#undef QRT_WO_STEP_AVX512

/* Tiles of 10 rows x 1 panel (the dequantization of a k's 16 weights shared by 10 rows), panels
 * in chunks of 8. Measured on Zen 4: one panel per tile beats 2-4 at any height (6 x 2 was 1.4
 * times slower than 10 x 1 at 120 rows), and 1 x 8 is the fastest GEMV. */
static void qrt_wo_block_10x16__avx512(const qrt_weight_only *g, const float *a0, int64_t lda,
                                       int64_t rows, const uint8_t *w, const float *s,
                                       const float *bias, float *y, int64_t p0, int64_t p1) {
    QRT_WO_BLOCK_BODY(qrt_wo_tile__avx512, 10, 8)
}

#pragma GCC pop_options

#undef QRT_WO_BLOCK_BODY
#undef QRT_WO_CALL

/* ---------------------------------------------------------------- the path's functions */

static inline const qrt_weight_only_ops *qrt_weight_only_ops_for(int isa) {
    static const qrt_weight_only_ops ops[] = {
        [QRT_SCALAR] = {.block = qrt_wo_block_1x16__scalar, .mr = 1},
        [QRT_AVX2] = {.block = qrt_wo_block_6x16__avx2, .mr = 6},
        [QRT_AVX512VNNI] = {.block = qrt_wo_block_10x16__avx512, .mr = 10},
        [QRT_AMX] = {.block = qrt_wo_block_10x16__avx512, .mr = 10},  /* no AMX float tiles here */
    };
    return &ops[isa >= QRT_SCALAR && isa <= QRT_AMX ? isa : QRT_SCALAR];
}

/* ---------------------------------------------------------------- driver */

/* Rows are the input's own pixels (FULLY_CONNECTED, a 1x1 stride-1 unpadded conv): no gather. */
static inline int qrt_wo_direct(const qrt_weight_only *g) {
    return g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->top == 0 && g->left == 0
        && g->OH == g->H && g->OW == g->W;
}

/* Rows [m0, m1) x panels [p0, p1) of group grp; returns 0 or -2 (no scratch memory). */
static int qrt_wo_tile(const qrt_weight_only *g, const float *x, float *y, int64_t grp,
                       int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
    const float *a;
    int64_t lda;
    if (qrt_wo_direct(g)) {
        a = x + m0 * g->C_in + grp * g->cin_g;
        lda = g->C_in;
    } else {
        float *rows = (float *)qrt_scratch((size_t)(m1 - m0) * (size_t)g->K * sizeof(float) + 64);
        if (rows == NULL)
            return -2;
        qrt_wo_gather(g, x, m0, m1, grp, rows);
        a = rows;
        lda = g->K;
    }
    g->ops->block(g, a, lda, m1 - m0, g->w + grp * g->panels * qrt_wo_panel_bytes(g),
                  g->scales + grp * g->panels * qrt_wo_panel_scales(g),
                  g->bias + grp * g->panels * QRT_WO_PANEL,
                  y + m0 * g->C_out + grp * g->cout_g, p0, p1);
    return 0;
}

/* The whole op. Work items are (group, row block, panel range), as in gemm.h qrt_gemm_run. */
static int qrt_weight_only_run(const qrt_weight_only *g, const float *x, float *y) {
    int64_t M = g->N * g->OH * g->OW, mr = g->ops->mr;
    if (M == 0 || g->cout_g == 0)
        return 0;
    int64_t mc = QRT_WO_BLOCK_BYTES / ((g->K > 0 ? g->K : 1) * (int64_t)sizeof(float));
    mc -= mc % mr;
    mc = mc < mr ? mr : mc;
    int64_t blocks = (M + mc - 1) / mc;
    int threads = g->threads < 1 ? 1 : g->threads;
    if (threads > 1 && M >= threads * mr) {
        /* a multiple of threads blocks of even size, so that every thread gets as many rows
         * (64 rows in blocks of 40 would leave one thread 24); a block need not be a multiple
         * of the micro-kernel's rows: its last rows take the small tiles */
        int64_t want = (blocks + threads - 1) / threads * threads;
        int64_t per = (M + want - 1) / want;
        mc = per < mc ? per : mc;
        blocks = (M + mc - 1) / mc;
    }
    /* Few blocks that do not divide among the threads (fewer rows than a tile per thread, a
     * GEMV): the panels are split. */
    int64_t splits = 1;
    if (threads > 1 && (g->groups * blocks) % threads && g->groups * blocks < 4 * threads)
        splits = g->panels < threads ? g->panels : threads;
    int64_t items = g->groups * blocks * splits;
    int rc = 0;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && items > 1) reduction(min : rc)
    for (int64_t it = 0; it < items; it++) {
        int64_t sp = it % splits, b = (it / splits) % blocks, grp = it / (splits * blocks);
        int64_t m0 = b * mc, m1 = m0 + mc < M ? m0 + mc : M;
        int64_t p0 = g->panels * sp / splits, p1 = g->panels * (sp + 1) / splits;
        int r = qrt_wo_tile(g, x, y, grp, m0, m1, p0, p1);
        if (r < rc)
            rc = r;
    }
    return rc;
}

#endif /* QRT_WEIGHT_ONLY_H */
