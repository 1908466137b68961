/* CONV_2D and FULLY_CONNECTED as one int8 GEMM (SPEC.md 2.13.1, 2.13.3, section 4); the
 * references are qrt/ops/conv_2d.py and fully_connected.py, bit for bit, on every path.
 *
 * Data path of one call, per group:
 *   - output pixels are taken in blocks of at most QRT_BLOCK_BYTES of packed rows; each
 *     block's im2col rows are gathered into per-thread scratch as unsigned values (x ^ 0x80 =
 *     x + 128; the padding holds the input zero point, also flipped), K rounded up to a
 *     multiple of 4 with zeros: bytes, or uint16 on the AVX2 path (widened once here, not in
 *     the inner loop). Only one block is ever materialised, never the whole im2col matrix.
 *   - weights were packed once at load (gemm.pyx PackedGemm, layout.h qrt_gemm_pack_weights)
 *     into panels of QRT_PANEL = 16 output channels, [panel][K4/4][16][4] int8: one 64-byte
 *     vector holds 4 k of 16 channels, the operand layout of vpdpbusd; on the AVX2 path
 *     [panel][K4/2][16][2], the pairs vpmaddwd multiplies (layout.h defines both). Padding
 *     channels and k are zero.
 *   - a micro-kernel keeps up to QRT_MR rows x up to 4 panels of int32 sums in registers over
 *     the whole K (AVX2: 6 rows x 1 panel; AMX: 32 rows x 2 panels in four tiles, K padded to
 *     64), then adds the prepared bias (bias - (zp_x + 128) * sum_k w: the flip and the zero
 *     point cost nothing at run time), requantizes exactly as SPEC.md 4.2 (requant.h), clamps
 *     and stores int8. In the int32 mode (qrt_gemm.y32 set: the dynamic form, dynamic.h) it
 *     stores the int32 sums plus that bias instead, and rows may have a zero point, the
 *     padding's byte, per image (qrt_gemm.pad_n).
 *   - the int16 mode (the int16 form, SPEC.md 4.6: ops from qrt_gemm_int16_ops_for) is the same
 *     driver over int16 x and y: rows packed as int16 as they are (zero point 0: no flip, the
 *     padding 0, the bias just the bias), weights in the kg = 2 pair layout on every path,
 *     micro-kernels that multiply int16 pairs (AVX2 the same vpmaddwd loop; AVX-512 vpdpwssd,
 *     the weights widened in the register; AMX machines run that one) and epilogues that
 *     requantize the same way and store int16. The loader's per-channel bound keeps the int32
 *     sums exact.
 * Integer sums wrap modulo 2^32 exactly as the reference's int32 does, so the flip and the
 * compensation give identical results.
 * Threads split blocks of output pixels (or, when there are too few, panels of channels); each
 * output is computed whole by one thread, so results do not depend on the thread count. */
#ifndef QRT_GEMM_H
#define QRT_GEMM_H

#include <stdint.h>
#include <string.h>
#include <immintrin.h>
#include "isa.h"
#include "api.h"  /* the structs, the rule and the dispatch the Cython modules see */
#include "layout.h"
#include "requant.h"

#define QRT_MR 6          /* output pixels per micro-kernel call */
#define QRT_NP 4          /* panels of QRT_PANEL channels per micro-kernel call */
_Static_assert(QRT_PANEL == 16, "the vector micro-kernels hold one panel per 512 bits of int32");
#define QRT_BLOCK_BYTES (192 * 1024)  /* packed rows per block: stays in L2 */

/* What a micro-kernel's epilogue stores (a constant in each compiled copy): int8, the int32
 * mode's sums (qrt_gemm.y32), or the int16 mode's int16 (qrt_gemm_int16_ops_for). */
enum { QRT_GEMM_OUT_S8 = 0, QRT_GEMM_OUT_S32 = 1, QRT_GEMM_OUT_S16 = 2 };

/* dst = src ^ 0x80 (int8 -> uint8 + 128), and a fill: portable and AVX-512 forms, so the
 * packing below can be compiled for both (short spans: masked vectors, no calls). */
static inline __attribute__((always_inline)) void qrt_flip_u8__scalar(uint8_t *dst, const int8_t *src,
                                                                 int64_t n, const int8_t *end) {
    (void)end;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (uint8_t)src[i] ^ 0x80;
}

static inline __attribute__((always_inline)) void qrt_fill_u8__scalar(uint8_t *dst, uint8_t v, int64_t n) {
    memset(dst, v, n);
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl")
static inline __attribute__((always_inline)) void qrt_flip_u8__avx512(uint8_t *dst, const int8_t *src,
                                                                  int64_t n, const int8_t *end) {
    (void)end;
    const __m512i top = _mm512_set1_epi8((char)0x80);
    for (; n >= 64; n -= 64, src += 64, dst += 64)
        _mm512_storeu_si512((void *)dst, _mm512_xor_si512(_mm512_loadu_si512((const void *)src), top));
    if (n > 0) {
        __mmask64 k = (1ULL << n) - 1;  /* 0 < n < 64 */
        _mm512_mask_storeu_epi8(dst, k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, src), top));
    }
}

static inline __attribute__((always_inline)) void qrt_fill_u8__avx512(uint8_t *dst, uint8_t v, int64_t n) {
    const __m512i all = _mm512_set1_epi8((char)v);
    for (; n >= 64; n -= 64, dst += 64)
        _mm512_storeu_si512((void *)dst, all);
    if (n > 0)
        _mm512_mask_storeu_epi8(dst, (1ULL << n) - 1, all);
}
#pragma GCC pop_options

typedef void (*qrt_flip_fn)(uint8_t *, const int8_t *, int64_t, const int8_t *);
typedef void (*qrt_fill_fn)(uint8_t *, uint8_t, int64_t);

/* The im2col rows of output pixels [m0, m1), group grp, flipped to unsigned: K4 bytes each,
 * one after another at dst. Taps of one kernel row that lie inside the input with dilation 1
 * are contiguous in NHWC and copied as one span. xs: bytes per element of x (2: the int16
 * mode, whose `flip` copies int16 as they are and whose `fill` writes zeros, es = 2). */
static inline __attribute__((always_inline)) void
qrt_gemm_pack_rows_with(const qrt_gemm *g, const int8_t *x, int64_t m0, int64_t m1, int64_t grp,
                        uint8_t *dst, const int es, const qrt_flip_fn flip, const qrt_fill_fn fill,
                        const int xs) {
    const int64_t cin = g->cin_g, K = g->KH * g->KW * cin, row = g->K4 * es;
    const int8_t *end = x + g->N * g->H * g->W * g->C_in * xs;  /* flip may read up to here */
    if (g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->top == 0 && g->left == 0
        && g->OH == g->H && g->OW == g->W) {  /* 1x1 over every pixel: rows are pixels */
        for (int64_t m = m0; m < m1; m++, dst += row) {
            flip(dst, x + (m * g->C_in + grp * cin) * xs, cin, end);
            fill(dst + cin * es, 0, g->K4 - cin);
        }
        return;
    }
    int64_t per_image = g->OH * g->OW;
    int64_t n = m0 / per_image, r = m0 - n * per_image;
    int64_t oh = r / g->OW, ow = r - oh * g->OW;
    uint8_t pad = g->pad_n ? g->pad_n[n] : g->pad_u8;  /* per image in the dynamic form */
    for (int64_t m = m0; m < m1; m++, dst += row) {
        int64_t ih0 = oh * g->sh - g->top, iw0 = ow * g->sw - g->left, k = 0;
        int64_t iw_last = iw0 + (g->KW - 1) * g->dw;
        const int8_t *image = x + (n * g->H * g->W * g->C_in + grp * cin) * xs;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t ih = ih0 + kh * g->dh;
            if (ih < 0 || ih >= g->H) {
                fill(dst + k * es, pad, g->KW * cin);
                k += g->KW * cin;
            } else if (g->dw == 1 && iw0 >= 0 && iw_last < g->W && cin == g->C_in) {
                flip(dst + k * es, image + (ih * g->W + iw0) * g->C_in * xs, g->KW * cin, end);
                k += g->KW * cin;
            } else {
                for (int64_t kw = 0; kw < g->KW; kw++, k += cin) {
                    int64_t iw = iw0 + kw * g->dw;
                    if (iw < 0 || iw >= g->W)
                        fill(dst + k * es, pad, cin);
                    else
                        flip(dst + k * es, image + (ih * g->W + iw) * g->C_in * xs, cin, end);
                }
            }
        }
        fill(dst + K * es, 0, g->K4 - K);
        if (++ow == g->OW) {
            ow = 0;
            if (++oh == g->OH) {
                oh = 0;
                n++;
                if (g->pad_n && m + 1 < m1)
                    pad = g->pad_n[n];
            }
        }
    }
}

static void qrt_gemm_pack_rows_u8__scalar(const qrt_gemm *g, const int8_t *x, int64_t m0, int64_t m1,
                                     int64_t grp, uint8_t *dst) {
    qrt_gemm_pack_rows_with(g, x, m0, m1, grp, dst, 1, qrt_flip_u8__scalar, qrt_fill_u8__scalar, 1);
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl")
static void qrt_gemm_pack_rows_u8__avx512(const qrt_gemm *g, const int8_t *x, int64_t m0, int64_t m1,
                                      int64_t grp, uint8_t *dst) {
    qrt_gemm_pack_rows_with(g, x, m0, m1, grp, dst, 1, qrt_flip_u8__avx512, qrt_fill_u8__avx512, 1);
}
#pragma GCC pop_options

/* The int16 mode's rows (SPEC.md 4.6): x is int16 with zero point 0, copied as it is (the
 * micro-kernels multiply signed int16: no flip, no compensation), the padding and K's tail 0.
 * n counts int16; `v`, the padding byte, is 0 in this mode (pad_u8) and not read. */
static inline __attribute__((always_inline)) void qrt_copy_s16__scalar(uint8_t *dst, const int8_t *src,
                                                                  int64_t n, const int8_t *end) {
    (void)end;
    memcpy(dst, src, (size_t)n * sizeof(int16_t));
}

static inline __attribute__((always_inline)) void qrt_zero_s16__scalar(uint8_t *dst, uint8_t v, int64_t n) {
    (void)v;
    memset(dst, 0, (size_t)n * sizeof(int16_t));
}

static void qrt_gemm_pack_rows_s16__scalar(const qrt_gemm *g, const int8_t *x, int64_t m0, int64_t m1,
                                           int64_t grp, uint8_t *dst) {
    qrt_gemm_pack_rows_with(g, x, m0, m1, grp, dst, 2, qrt_copy_s16__scalar, qrt_zero_s16__scalar, 2);
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl")
static inline __attribute__((always_inline)) void qrt_copy_s16__avx512(uint8_t *dst, const int8_t *src,
                                                                  int64_t n, const int8_t *end) {
    (void)end;
    for (; n >= 32; n -= 32, src += 64, dst += 64)
        _mm512_storeu_si512((void *)dst, _mm512_loadu_si512((const void *)src));
    if (n > 0) {
        __mmask32 k = (1u << n) - 1;  /* 0 < n < 32 */
        _mm512_mask_storeu_epi16(dst, k, _mm512_maskz_loadu_epi16(k, src));
    }
}

static inline __attribute__((always_inline)) void qrt_zero_s16__avx512(uint8_t *dst, uint8_t v, int64_t n) {
    (void)v;
    const __m512i zero = _mm512_setzero_si512();
    for (; n >= 32; n -= 32, dst += 64)
        _mm512_storeu_si512((void *)dst, zero);
    if (n > 0)
        _mm512_mask_storeu_epi16(dst, (__mmask32)((1u << n) - 1), zero);
}

static void qrt_gemm_pack_rows_s16__avx512(const qrt_gemm *g, const int8_t *x, int64_t m0, int64_t m1,
                                           int64_t grp, uint8_t *dst) {
    qrt_gemm_pack_rows_with(g, x, m0, m1, grp, dst, 2, qrt_copy_s16__avx512, qrt_zero_s16__avx512, 2);
}
#pragma GCC pop_options

/* ---------------------------------------------------------------- scalar (portable C) */

/* int4 panels (layout.h qrt_gemm_pack_int4) back to int8: each 32 bytes give 64 weights, the
 * low nibbles first, then the high ones, each sign-extended. */
static void qrt_unpack_w4__scalar(int8_t *dst, const uint8_t *src, int64_t n) {
    for (int64_t c = 0; c < n; c += 64, src += 32, dst += 64)
        for (int j = 0; j < 32; j++) {
            dst[j] = (int8_t)((int8_t)(uint8_t)(src[j] << 4) >> 4);
            dst[j + 32] = (int8_t)((int8_t)src[j] >> 4);
        }
}

static void qrt_gemm_ukernel_6x64c4__scalar(const qrt_gemm *g, int64_t np, int64_t mr, const uint8_t *const *a,
                               const int8_t *w, const int32_t *bias, const int32_t *mult,
                               const int32_t *shift, int8_t *const *y, int64_t ncols) {
    for (int64_t i = 0; i < mr; i++) {
        for (int64_t p = 0; p < np && p * 16 < ncols; p++) {
            const int8_t *wp = w + p * qrt_gemm_panel_bytes(g->K4);
            uint32_t acc[16] = {0};  /* wraps modulo 2^32, as vpdpbusd does */
            for (int64_t k = 0; k < g->K4; k += 4, wp += 64)
                for (int c = 0; c < 16; c++)
                    acc[c] += (uint32_t)(a[i][k] * wp[4 * c] + a[i][k + 1] * wp[4 * c + 1]
                                         + a[i][k + 2] * wp[4 * c + 2] + a[i][k + 3] * wp[4 * c + 3]);
            if (g->y32) {  /* the int32 mode: the sums + bias */
                int32_t *yi = (int32_t *)(void *)y[i];
                for (int64_t c = p * 16; c < ncols && c < p * 16 + 16; c++)
                    yi[c] = (int32_t)(acc[c - p * 16] + (uint32_t)bias[c]);
                continue;
            }
            for (int64_t c = p * 16; c < ncols && c < p * 16 + 16; c++)
                y[i][c] = qrt_requant_scalar((int32_t)(acc[c - p * 16] + (uint32_t)bias[c]), mult[c],
                                             shift[c], g->rq.zp_y, g->rq.lo, g->rq.hi);
        }
    }
}

/* The int16 mode: int16 rows x panels [K4/2][16][2] int8 (kg = 2), requantized to int16. The
 * sums are exact in int32 under the loader's bound (SPEC.md 4.6); they are taken modulo 2^32
 * all the same, as the vector paths do. */
static void qrt_gemm_ukernel_6x64c2__scalar_s16(const qrt_gemm *g, int64_t np, int64_t mr,
                                                const uint8_t *const *a, const int8_t *w,
                                                const int32_t *bias, const int32_t *mult,
                                                const int32_t *shift, int8_t *const *y, int64_t ncols) {
    for (int64_t i = 0; i < mr; i++) {
        const int16_t *ai = (const int16_t *)(const void *)a[i];
        int16_t *yi = (int16_t *)(void *)y[i];
        for (int64_t p = 0; p < np && p * 16 < ncols; p++) {
            const int8_t *wp = w + p * qrt_gemm_panel_bytes(g->K4);
            uint32_t acc[16] = {0};
            for (int64_t k = 0; k < g->K4; k += 2, wp += 32)
                for (int c = 0; c < 16; c++)
                    acc[c] += (uint32_t)(ai[k] * wp[2 * c] + ai[k + 1] * wp[2 * c + 1]);
            for (int64_t c = p * 16; c < ncols && c < p * 16 + 16; c++)
                yi[c] = qrt_requant_select_s16((int32_t)(acc[c - p * 16] + (uint32_t)bias[c]), mult[c],
                                               shift[c], g->rq.zp_y, g->rq.lo, g->rq.hi);
        }
    }
}

/* ---------------------------------------------------------------- AVX2: vpmaddwd on int16 */

#pragma GCC push_options
#pragma GCC target("avx2,fma")

/* qrt_unpack_w4__scalar, 64 weights per step: each nibble looked up in a table of its
 * sign-extended value (vpshufb). The AVX-512 paths use it too. The expansion is paid once per
 * block of rows: free when a block has many rows, about the GEMM's own time for one row (FC at
 * batch 1: int4 about 2x int8 there; a micro-kernel that expands in registers would avoid it). */
static void qrt_unpack_w4__avx2(int8_t *dst, const uint8_t *src, int64_t n) {
    const __m256i values = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1,
                                            0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
    const __m256i low = _mm256_set1_epi8(0x0F);
    for (int64_t c = 0; c < n; c += 64, src += 32, dst += 64) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)src);
        __m256i lo = _mm256_shuffle_epi8(values, _mm256_and_si256(v, low));
        __m256i hi = _mm256_shuffle_epi8(values, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
        _mm256_storeu_si256((__m256i *)(void *)dst, lo);
        _mm256_storeu_si256((__m256i *)(void *)(dst + 32), hi);
    }
}

/* Rows are packed as uint16 (x + 128, widened once here rather than once per use in the
 * micro-kernel) and panels as [K4/2][16][2] int8 (layout.h, the AVX2 path's kg = 2). */
static inline __attribute__((always_inline)) void qrt_flip_u16__avx2(uint8_t *dst, const int8_t *src,
                                                                int64_t n, const int8_t *end) {
    const __m128i top = _mm_set1_epi8((char)0x80);
    uint16_t *d = (uint16_t *)dst;
    /* A short last piece is done as a whole vector too where 16 bytes can be read (the first
     * conv's spans are 9 bytes): the surplus values land past the span, where the next span,
     * the row's zero fill or the next row writes later (rows are packed in order, and the
     * scratch has room after the last one). */
    for (; n > 0 && src + 16 <= end; n -= 16, src += 16, d += 16)
        _mm256_storeu_si256((__m256i *)d, _mm256_cvtepu8_epi16(
            _mm_xor_si128(_mm_loadu_si128((const __m128i *)src), top)));
    for (int64_t i = 0; i < n; i++)
        d[i] = (uint8_t)src[i] ^ 0x80;
}

static inline __attribute__((always_inline)) void qrt_fill_u16__avx2(uint8_t *dst, uint8_t v, int64_t n) {
    uint16_t *d = (uint16_t *)dst;
    for (int64_t i = 0; i < n; i++)
        d[i] = v;
}

static void qrt_gemm_pack_rows_u16__avx2(const qrt_gemm *g, const int8_t *x, int64_t m0, int64_t m1,
                                    int64_t grp, uint8_t *dst) {
    qrt_gemm_pack_rows_with(g, x, m0, m1, grp, dst, 2, qrt_flip_u16__avx2, qrt_fill_u16__avx2, 1);
}

/* 16 int32 at y (two vectors): count of them (all 16 when count >= 16). The int32 mode. */
static inline __attribute__((always_inline)) void qrt_store16_i32_avx2(int32_t *y, __m256i v0, __m256i v1,
                                                                      int64_t count) {
    if (count >= 16) {
        _mm256_storeu_si256((__m256i *)y, v0);
        _mm256_storeu_si256((__m256i *)(y + 8), v1);
        return;
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_epi32(y, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), lane), v0);
    _mm256_maskstore_epi32(y + 8, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count - 8), lane), v1);
}

/* The k loop of 6 rows in assembly: the 12 sums, 2 weight vectors, the broadcast and the
 * product take all 16 ymm registers, and gcc, given the same loop in intrinsics, keeps some
 * sums on the stack (a load and a store per multiply-add). Sums: ymm0-11, from zero, stored to
 * acc at the end. Per step (2 k): 2 weight widenings, then per row a broadcast load, 2 vpmaddwd
 * and 2 vpaddd. k counts bytes of a uint16 row (4 per step); the panel advances 32 bytes per
 * step, 8 x k. */
#define QRT_AVX2_ROW(A, C0, C1)                                                               \
    "vpbroadcastd (%[" A "],%[k]), %%ymm14\n\t"                                              \
    "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"                                                 \
    "vpaddd %%ymm15, %%ymm" C0 ", %%ymm" C0 "\n\t"                                           \
    "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"                                                 \
    "vpaddd %%ymm15, %%ymm" C1 ", %%ymm" C1 "\n\t"
#define QRT_AVX2_ZERO(C) "vpxor %%xmm" C ", %%xmm" C ", %%xmm" C "\n\t"
#define QRT_AVX2_STORE(C, AT) "vmovdqu %%ymm" C ", " AT "(%[acc])\n\t"

static inline __attribute__((always_inline)) void
qrt_gemm_kloop_6x16c2__avx2_asm(const uint16_t *const *ap, const int8_t *w, int64_t K4, __m256i acc[6][2]) {
    int64_t k = 0;
    __asm__ volatile(
        QRT_AVX2_ZERO("0") QRT_AVX2_ZERO("1") QRT_AVX2_ZERO("2") QRT_AVX2_ZERO("3")
        QRT_AVX2_ZERO("4") QRT_AVX2_ZERO("5") QRT_AVX2_ZERO("6") QRT_AVX2_ZERO("7")
        QRT_AVX2_ZERO("8") QRT_AVX2_ZERO("9") QRT_AVX2_ZERO("10") QRT_AVX2_ZERO("11")
        ".p2align 4\n\t"
        "1:\n\t"
        "vpmovsxbw (%[w],%[k],8), %%ymm12\n\t"
        "vpmovsxbw 16(%[w],%[k],8), %%ymm13\n\t"
        QRT_AVX2_ROW("a0", "0", "1") QRT_AVX2_ROW("a1", "2", "3") QRT_AVX2_ROW("a2", "4", "5")
        QRT_AVX2_ROW("a3", "6", "7") QRT_AVX2_ROW("a4", "8", "9") QRT_AVX2_ROW("a5", "10", "11")
        "add $4, %[k]\n\t"
        "cmp %[n], %[k]\n\t"
        "jb 1b\n\t"
        QRT_AVX2_STORE("0", "0") QRT_AVX2_STORE("1", "32") QRT_AVX2_STORE("2", "64")
        QRT_AVX2_STORE("3", "96") QRT_AVX2_STORE("4", "128") QRT_AVX2_STORE("5", "160")
        QRT_AVX2_STORE("6", "192") QRT_AVX2_STORE("7", "224") QRT_AVX2_STORE("8", "256")
        QRT_AVX2_STORE("9", "288") QRT_AVX2_STORE("10", "320") QRT_AVX2_STORE("11", "352")
        : [k] "+r"(k)
        : [a0] "r"(ap[0]), [a1] "r"(ap[1]), [a2] "r"(ap[2]), [a3] "r"(ap[3]), [a4] "r"(ap[4]),
          [a5] "r"(ap[5]), [w] "r"(w), [n] "r"(K4 * 2) /* K4 >= 4: at least one step */,
          [acc] "r"(&acc[0][0])
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory");
}
#undef QRT_AVX2_ZERO
#undef QRT_AVX2_STORE
#undef QRT_AVX2_ROW

/* MR rows x 16 channels (one panel) over the whole K, 2 k per step: a row's pair of uint16
 * is broadcast to every 32-bit lane and vpmaddwd with the pairs of 8 channels leaves one sum
 * per channel, so the 12 sums need no reduction at the end. 12 sums + 2 weight vectors + a
 * broadcast fit the 16 ymm registers; the operations per step are 2 widenings of weights and
 * MR x 2 (vpmaddwd + vpaddd): with MR = 6 nearly all of them are the multiply-adds.
 * The int16 mode (out = QRT_GEMM_OUT_S16) runs the same loop on int16 rows: vpmaddwd is a
 * signed multiply, the uint16 rows of x + 128 are its special case; a pair's sum
 * (|.| <= 2 * 2^15 * 127) cannot saturate. */
static inline __attribute__((always_inline)) void
qrt_gemm_ukernel_mx16c2__avx2_u16s8(const qrt_gemm *g, const int MR, const uint8_t *const *a, const int8_t *w,
                      const int32_t *bias, const int32_t *mult, const int32_t *shift,
                      int8_t *const *y, int64_t col, int64_t ncols, const int out) {
    /* the 32-bit requantization tables at the same channel as mult */
    const int32_t *round32 = g->rq.round32 + (mult - g->rq.mult), *shift32 = g->rq.shift32 + (mult - g->rq.mult);
    __m256i acc[6][2];
    const uint16_t *ap[6];
    for (int i = 0; i < MR; i++) {
        ap[i] = (const uint16_t *)a[i];
        acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    }
    if (MR == 6) {
        qrt_gemm_kloop_6x16c2__avx2_asm(ap, w, g->K4, acc);
    } else for (int64_t k = 0; k < g->K4; k += 2) {
        __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + k * 16)));
        __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + k * 16 + 16)));
        for (int i = 0; i < MR; i++) {
            __m256i av = _mm256_set1_epi32(*(const int32_t *)(ap[i] + k));
            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(av, w0));
            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(av, w1));
        }
    }
    if (out == QRT_GEMM_OUT_S32) {  /* the int32 mode: the sums + bias */
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)bias);
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(bias + 8));
        for (int i = 0; i < MR; i++)
            qrt_store16_i32_avx2((int32_t *)(void *)y[i] + col, _mm256_add_epi32(acc[i][0], b0),
                                 _mm256_add_epi32(acc[i][1], b1), ncols);
        return;
    }
    if (g->rq.n33) {  /* the usual case: tables in registers for every row */
        qrt_n33_avx2 t0 = qrt_n33_avx2_load(bias, mult, round32, shift32, g->rq.zp_y, g->rq.lo, g->rq.hi);
        qrt_n33_avx2 t1 = qrt_n33_avx2_load(bias + 8, mult + 8, round32 + 8, shift32 + 8, g->rq.zp_y,
                                            g->rq.lo, g->rq.hi);
        for (int i = 0; i < MR; i++) {
            if (out == QRT_GEMM_OUT_S16)
                qrt_store16_s16_avx2((int16_t *)(void *)y[i] + col, qrt_requant8_avx2_n33_with(acc[i][0], &t0),
                                     qrt_requant8_avx2_n33_with(acc[i][1], &t1), ncols);
            else
                qrt_store16_avx2(y[i] + col, qrt_requant8_avx2_n33_with(acc[i][0], &t0),
                                 qrt_requant8_avx2_n33_with(acc[i][1], &t1), ncols);
        }
    } else {
        const int32_t zp = g->rq.zp_y, lo = g->rq.lo, hi = g->rq.hi;
        for (int i = 0; i < MR; i++) {  /* channels 0-7, 8-15 (tables padded to whole panels) */
            if (out == QRT_GEMM_OUT_S16)
                qrt_store16_s16_avx2((int16_t *)(void *)y[i] + col,
                                     qrt_requant8_avx2(acc[i][0], bias, mult, shift, zp, lo, hi),
                                     qrt_requant8_avx2(acc[i][1], bias + 8, mult + 8, shift + 8, zp, lo, hi),
                                     ncols);
            else
                qrt_store16_avx2(y[i] + col,
                                 qrt_requant8_avx2(acc[i][0], bias, mult, shift, zp, lo, hi),
                                 qrt_requant8_avx2(acc[i][1], bias + 8, mult + 8, shift + 8, zp, lo, hi),
                                 ncols);
        }
    }
}

static inline __attribute__((always_inline)) void
qrt_gemm_ukernel_6x16c2__avx2_with(const qrt_gemm *g, int64_t np, int64_t mr, const uint8_t *const *a,
                                   const int8_t *w, const int32_t *bias, const int32_t *mult,
                                   const int32_t *shift, int8_t *const *y, int64_t ncols, const int out) {
    for (int64_t p = 0; p < np && p * 16 < ncols; p++) {
        int64_t c0 = p * 16, n = ncols - c0;
        const int8_t *wp = w + p * qrt_gemm_panel_bytes(g->K4);
        switch (mr) {  /* the row count a constant in each copy: the sums stay in registers */
        case 1: qrt_gemm_ukernel_mx16c2__avx2_u16s8(g, 1, a, wp, bias + c0, mult + c0, shift + c0, y, c0, n, out); break;
        case 2: qrt_gemm_ukernel_mx16c2__avx2_u16s8(g, 2, a, wp, bias + c0, mult + c0, shift + c0, y, c0, n, out); break;
        case 3: qrt_gemm_ukernel_mx16c2__avx2_u16s8(g, 3, a, wp, bias + c0, mult + c0, shift + c0, y, c0, n, out); break;
        case 4: qrt_gemm_ukernel_mx16c2__avx2_u16s8(g, 4, a, wp, bias + c0, mult + c0, shift + c0, y, c0, n, out); break;
        case 5: qrt_gemm_ukernel_mx16c2__avx2_u16s8(g, 5, a, wp, bias + c0, mult + c0, shift + c0, y, c0, n, out); break;
        default: qrt_gemm_ukernel_mx16c2__avx2_u16s8(g, 6, a, wp, bias + c0, mult + c0, shift + c0, y, c0, n, out); break;
        }
    }
}

static void qrt_gemm_ukernel_6x16c2__avx2_u16s8(const qrt_gemm *g, int64_t np, int64_t mr, const uint8_t *const *a,
                             const int8_t *w, const int32_t *bias, const int32_t *mult,
                             const int32_t *shift, int8_t *const *y, int64_t ncols) {
    qrt_gemm_ukernel_6x16c2__avx2_with(g, np, mr, a, w, bias, mult, shift, y, ncols, QRT_GEMM_OUT_S8);
}

/* The int32 mode's copy (qrt_gemm_ops.ukernel32), compiled apart: one body with both epilogues
 * costs the 4-row copy its registers (sums spilled: 4 rows of K = N = 1024, 56 -> 104 us). */
static void qrt_gemm_ukernel_6x16c2__avx2_u16s8_i32(const qrt_gemm *g, int64_t np, int64_t mr, const uint8_t *const *a,
                                                    const int8_t *w, const int32_t *bias, const int32_t *mult,
                                                    const int32_t *shift, int8_t *const *y, int64_t ncols) {
    qrt_gemm_ukernel_6x16c2__avx2_with(g, np, mr, a, w, bias, mult, shift, y, ncols, QRT_GEMM_OUT_S32);
}

/* The int16 mode's copy (qrt_gemm_int16_ops_for): int16 rows, int16 outputs. */
static void qrt_gemm_ukernel_6x16c2__avx2_s16s8(const qrt_gemm *g, int64_t np, int64_t mr, const uint8_t *const *a,
                                                const int8_t *w, const int32_t *bias, const int32_t *mult,
                                                const int32_t *shift, int8_t *const *y, int64_t ncols) {
    qrt_gemm_ukernel_6x16c2__avx2_with(g, np, mr, a, w, bias, mult, shift, y, ncols, QRT_GEMM_OUT_S16);
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- AVX-512 VNNI: vpdpbusd */

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")

/* The k loops, in assembly: given them in intrinsics, gcc keeps a copy of every sum on the
 * stack (a store per multiply-add: the int8 conv ran at about 40 % of the vpdpbusd peak). One
 * copy per tile of MR rows x NP panels (QRT_AVX512_TILES), so that a short last row tile or
 * panel group computes nothing in vain (FC with one row: 1 row x 4 panels, not 6 x 4). One
 * generator for both forms:
 *   int8 (c4):  uint8 rows x panels [K4/4][16][4] int8 (layout.h), vpdpbusd; the weights are
 *               loaded as they are, 64 bytes per panel and step of 4 k;
 *   int16 (c2): int16 rows x panels [K4/2][16][2] int8, vpdpwssd; the weights are widened to
 *               int16 as they are loaded (vpmovsxbw), 32 bytes per panel and step of 2 k.
 * A step broadcasts 4 bytes of each row to every 32-bit lane (zmm28) and multiplies them with
 * each panel's weights (zmm24 + j, loaded once a step for all the rows). Sums: row i, panel j
 * in zmm(4i + j), from zero, stored to acc[i][j] at the end. k counts bytes of a row; panel j's
 * weights are at w + j * ws (ws3 = 3 * ws: an address has only one index), w advancing a step
 * at a time. n, bytes per row (K4 * es), is a multiple of 4 and at least 4: one step at least.
 * The tile, 6 x 4, takes 24 sums + 4 weights + the broadcast of the 32 registers. On Zen 4 a
 * test loop ran every tile from 4 x 4 to 8 x 3 (7 x 3, 5 x 5, 6 x 3, 4 x 6) at 98-101 % of the
 * vpdpbusd peak, rows and weights in L1 or L2: 6 x 4 is kept, the other paths' QRT_MR, and 4
 * panels divide the usual channel counts (64, 128, ...) where 3 leave a 1-panel call. */
#define QRT_AVX512_TILES(F)                                                                   \
    F(1, 1, 16) F(1, 2, 32) F(1, 3, 48) F(1, 4, 64) F(2, 1, 16) F(2, 2, 32) F(2, 3, 48)       \
    F(2, 4, 64) F(3, 1, 16) F(3, 2, 32) F(3, 3, 48) F(3, 4, 64) F(4, 1, 16) F(4, 2, 32)       \
    F(4, 3, 48) F(4, 4, 64) F(5, 1, 16) F(5, 2, 32) F(5, 3, 48) F(5, 4, 64) F(6, 1, 16)       \
    F(6, 2, 32) F(6, 3, 48) F(6, 4, 64)
/* Rows 0 .. MR-1: F(NP, DOT, the row's operand, its sums' registers for panels 0-3, the byte
 * offset of acc[i][0]) */
#define QRT_ZMM_ROWS_1(F, NP, DOT) F(NP, DOT, "a0", "0", "1", "2", "3", "0")
#define QRT_ZMM_ROWS_2(F, NP, DOT) QRT_ZMM_ROWS_1(F, NP, DOT) F(NP, DOT, "a1", "4", "5", "6", "7", "256")
#define QRT_ZMM_ROWS_3(F, NP, DOT) QRT_ZMM_ROWS_2(F, NP, DOT) F(NP, DOT, "a2", "8", "9", "10", "11", "512")
#define QRT_ZMM_ROWS_4(F, NP, DOT) QRT_ZMM_ROWS_3(F, NP, DOT) F(NP, DOT, "a3", "12", "13", "14", "15", "768")
#define QRT_ZMM_ROWS_5(F, NP, DOT) QRT_ZMM_ROWS_4(F, NP, DOT) F(NP, DOT, "a4", "16", "17", "18", "19", "1024")
#define QRT_ZMM_ROWS_6(F, NP, DOT) QRT_ZMM_ROWS_5(F, NP, DOT) F(NP, DOT, "a5", "20", "21", "22", "23", "1280")
/* Panels 0 .. NP-1 of a row: G(DOT, the sum's register, the weights' register, acc[i][j]'s offset) */
#define QRT_ZMM_PANELS_1(G, DOT, C0, C1, C2, C3, AT) G(DOT, C0, "24", AT "+0")
#define QRT_ZMM_PANELS_2(G, DOT, C0, C1, C2, C3, AT) QRT_ZMM_PANELS_1(G, DOT, C0, C1, C2, C3, AT) G(DOT, C1, "25", AT "+64")
#define QRT_ZMM_PANELS_3(G, DOT, C0, C1, C2, C3, AT) QRT_ZMM_PANELS_2(G, DOT, C0, C1, C2, C3, AT) G(DOT, C2, "26", AT "+128")
#define QRT_ZMM_PANELS_4(G, DOT, C0, C1, C2, C3, AT) QRT_ZMM_PANELS_3(G, DOT, C0, C1, C2, C3, AT) G(DOT, C3, "27", AT "+192")
/* What the loop does with a row: zero its sums; broadcast its 4 bytes and multiply-add; store */
#define QRT_ZMM_ZERO(DOT, C, W, AT) "vpxord %%zmm" C ", %%zmm" C ", %%zmm" C "\n\t"
#define QRT_ZMM_DOT(DOT, C, W, AT) DOT " %%zmm" W ", %%zmm28, %%zmm" C "\n\t"
#define QRT_ZMM_STORE(DOT, C, W, AT) "vmovdqu64 %%zmm" C ", " AT "(%[acc])\n\t"
#define QRT_ZMM_ZERO_ROW(NP, DOT, A, C0, C1, C2, C3, AT) QRT_ZMM_PANELS_##NP(QRT_ZMM_ZERO, DOT, C0, C1, C2, C3, AT)
#define QRT_ZMM_DOT_ROW(NP, DOT, A, C0, C1, C2, C3, AT) \
    "vpbroadcastd (%[" A "],%[k]), %%zmm28\n\t" QRT_ZMM_PANELS_##NP(QRT_ZMM_DOT, DOT, C0, C1, C2, C3, AT)
#define QRT_ZMM_STORE_ROW(NP, DOT, A, C0, C1, C2, C3, AT) QRT_ZMM_PANELS_##NP(QRT_ZMM_STORE, DOT, C0, C1, C2, C3, AT)
/* A step's weights of panels 0 .. NP-1 */
#define QRT_ZMM_WEIGHTS_1(LOAD) LOAD " (%[w]), %%zmm24\n\t"
#define QRT_ZMM_WEIGHTS_2(LOAD) QRT_ZMM_WEIGHTS_1(LOAD) LOAD " (%[w],%[ws],1), %%zmm25\n\t"
#define QRT_ZMM_WEIGHTS_3(LOAD) QRT_ZMM_WEIGHTS_2(LOAD) LOAD " (%[w],%[ws],2), %%zmm26\n\t"
#define QRT_ZMM_WEIGHTS_4(LOAD) QRT_ZMM_WEIGHTS_3(LOAD) LOAD " (%[w],%[ws3],1), %%zmm27\n\t"
/* NAME(a, w, ws, n, acc): the k loop of MR rows a[0 .. MR-1] x NP panels; LOAD the weights'
 * load, WSTEP their bytes per panel and step, DOT the multiply-add. */
#define QRT_ZMM_KLOOP(NAME, MR, NP, LOAD, WSTEP, DOT)                                         \
static inline __attribute__((always_inline)) void                                            \
NAME(const uint8_t *const *a, const int8_t *w, int64_t ws, int64_t n, __m512i acc[QRT_MR][QRT_NP]) { \
    int64_t k = 0;                                                                            \
    __asm__ volatile(                                                                         \
        QRT_ZMM_ROWS_##MR(QRT_ZMM_ZERO_ROW, NP, DOT)                                          \
        ".p2align 4\n\t"                                                                      \
        "1:\n\t"                                                                              \
        QRT_ZMM_WEIGHTS_##NP(LOAD)                                                            \
        QRT_ZMM_ROWS_##MR(QRT_ZMM_DOT_ROW, NP, DOT)                                           \
        "add $" WSTEP ", %[w]\n\t"                                                            \
        "add $4, %[k]\n\t"                                                                    \
        "cmp %[n], %[k]\n\t"                                                                  \
        "jb 1b\n\t"                                                                           \
        QRT_ZMM_ROWS_##MR(QRT_ZMM_STORE_ROW, NP, DOT)                                         \
        : [k] "+r"(k), [w] "+r"(w)                                                            \
        : [a0] "r"(a[0]), [a1] "r"(a[MR > 1 ? 1 : 0]), [a2] "r"(a[MR > 2 ? 2 : 0]),           \
          [a3] "r"(a[MR > 3 ? 3 : 0]), [a4] "r"(a[MR > 4 ? 4 : 0]), [a5] "r"(a[MR > 5 ? 5 : 0]), \
          [ws] "r"(ws), [ws3] "r"(3 * ws), [n] "r"(n), [acc] "r"(&acc[0][0])                 \
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",      \
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18",     \
          "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27",     \
          "xmm28", "cc", "memory");                                                           \
}
#define QRT_KLOOP_C4(MR, NP, COLS) \
    QRT_ZMM_KLOOP(qrt_gemm_kloop_##MR##x##COLS##c4__avx512vnni, MR, NP, "vmovdqu64", "64", "vpdpbusd")
#define QRT_KLOOP_C2(MR, NP, COLS) \
    QRT_ZMM_KLOOP(qrt_gemm_kloop_##MR##x##COLS##c2__avx512vnni_s16, MR, NP, "vpmovsxbw", "32", "vpdpwssd")
QRT_AVX512_TILES(QRT_KLOOP_C4)
QRT_AVX512_TILES(QRT_KLOOP_C2)
/* The driver's tile of mr x np (1 <= mr <= QRT_MR, 1 <= np <= QRT_NP): its copy of the loop. */
#define QRT_KLOOP_CASE_C4(MR, NP, COLS) \
    case MR * 8 + NP: qrt_gemm_kloop_##MR##x##COLS##c4__avx512vnni(a, w, ws, n, acc); break;
#define QRT_KLOOP_CASE_C2(MR, NP, COLS) \
    case MR * 8 + NP: qrt_gemm_kloop_##MR##x##COLS##c2__avx512vnni_s16(a, w, ws, n, acc); break;

/* mr rows x np panels: the tile's k loop above, then the epilogue (requant.h) over the sums
 * in acc, as stored there: int8, or in the int32 mode (g->y32) the sums + bias. */
static void qrt_gemm_ukernel_6x64c4__avx512vnni(const qrt_gemm *g, int64_t np, int64_t mr, const uint8_t *const *a,
                             const int8_t *w, const int32_t *bias, const int32_t *mult,
                             const int32_t *shift, int8_t *const *y, int64_t ncols) {
    /* the 32-bit requantization tables at the same channel as mult */
    const int32_t *round32 = g->rq.round32 + (mult - g->rq.mult), *shift32 = g->rq.shift32 + (mult - g->rq.mult);
    __m512i acc[QRT_MR][QRT_NP];
    const int64_t ws = qrt_gemm_panel_bytes(g->K4), n = g->K4;
    switch (mr * 8 + np) {
    QRT_AVX512_TILES(QRT_KLOOP_CASE_C4)
    default: __builtin_unreachable();
    }
    if (g->y32) {  /* the int32 mode: the sums + bias */
        for (int j = 0; j < np; j++) {
            int64_t c0 = j * 16;
            if (c0 >= ncols)
                break;
            __mmask16 keep = ncols - c0 >= 16 ? (__mmask16)0xFFFF
                                              : (__mmask16)((1u << (ncols - c0)) - 1);
            const __m512i b = _mm512_loadu_si512((const void *)(bias + c0));
            for (int i = 0; i < mr; i++)
                _mm512_mask_storeu_epi32((int32_t *)(void *)y[i] + c0, keep, _mm512_add_epi32(acc[i][j], b));
        }
        return;
    }
    /* in locals: read through g after every int8 store (which may alias them), the form's
     * test and the clamp's broadcasts would be redone for every 16 outputs */
    const int n33 = g->rq.n33;
    const int32_t zp = g->rq.zp_y, lo = g->rq.lo, hi = g->rq.hi;
    for (int j = 0; j < np; j++) {
        int64_t c0 = j * 16;
        if (c0 >= ncols)
            break;
        __mmask16 keep = ncols - c0 >= 16 ? (__mmask16)0xFFFF
                                          : (__mmask16)((1u << (ncols - c0)) - 1);
        for (int i = 0; i < mr; i++) {
            __m128i v = n33 ? qrt_requant16_avx512_n33(acc[i][j], bias + c0, mult + c0, round32 + c0,
                                                       shift32 + c0, zp, lo, hi)
                            : qrt_requant16_avx512(acc[i][j], bias + c0, mult + c0, shift + c0, zp, lo, hi);
            _mm_mask_storeu_epi8(y[i] + c0, keep, v);
        }
    }
}

/* The int16 mode: mr int16 rows x np panels [K4/2][16][2] int8 (kg = 2, the AVX2 layout),
 * vpdpwssd on a row's pair of int16 and the panels' pairs widened to int16 (the c2 loops
 * above), 2 k per step where vpdpbusd does 4, then requantized to int16. Exact: the sums fit
 * int32 (SPEC.md 4.6); vpdpwssd does not saturate. */
static void qrt_gemm_ukernel_6x64c2__avx512vnni_s16(const qrt_gemm *g, int64_t np, int64_t mr,
                                                    const uint8_t *const *a, const int8_t *w,
                                                    const int32_t *bias, const int32_t *mult,
                                                    const int32_t *shift, int8_t *const *y, int64_t ncols) {
    const int32_t *round32 = g->rq.round32 + (mult - g->rq.mult), *shift32 = g->rq.shift32 + (mult - g->rq.mult);
    __m512i acc[QRT_MR][QRT_NP];
    const int64_t ws = qrt_gemm_panel_bytes(g->K4), n = g->K4 * 2;
    switch (mr * 8 + np) {
    QRT_AVX512_TILES(QRT_KLOOP_CASE_C2)
    default: __builtin_unreachable();
    }
    const int n33 = g->rq.n33;  /* in locals, as the int8 epilogue's */
    const int32_t zp = g->rq.zp_y, lo = g->rq.lo, hi = g->rq.hi;
    for (int j = 0; j < np; j++) {
        int64_t c0 = j * 16;
        if (c0 >= ncols)
            break;
        __mmask16 keep = ncols - c0 >= 16 ? (__mmask16)0xFFFF
                                          : (__mmask16)((1u << (ncols - c0)) - 1);
        for (int i = 0; i < mr; i++) {
            __m256i v = n33 ? qrt_requant16_avx512_n33_s16(acc[i][j], bias + c0, mult + c0, round32 + c0,
                                                           shift32 + c0, zp, lo, hi)
                            : qrt_requant16_avx512_s16(acc[i][j], bias + c0, mult + c0, shift + c0, zp, lo, hi);
            _mm256_mask_storeu_epi16((int16_t *)(void *)y[i] + c0, keep, v);
        }
    }
}

#undef QRT_KLOOP_CASE_C2
#undef QRT_KLOOP_CASE_C4
#undef QRT_KLOOP_C2
#undef QRT_KLOOP_C4
#undef QRT_ZMM_KLOOP
#undef QRT_ZMM_WEIGHTS_4
#undef QRT_ZMM_WEIGHTS_3
#undef QRT_ZMM_WEIGHTS_2
#undef QRT_ZMM_WEIGHTS_1
#undef QRT_ZMM_STORE_ROW
#undef QRT_ZMM_DOT_ROW
#undef QRT_ZMM_ZERO_ROW
#undef QRT_ZMM_STORE
#undef QRT_ZMM_DOT
#undef QRT_ZMM_ZERO
#undef QRT_ZMM_PANELS_4
#undef QRT_ZMM_PANELS_3
#undef QRT_ZMM_PANELS_2
#undef QRT_ZMM_PANELS_1
#undef QRT_ZMM_ROWS_6
#undef QRT_ZMM_ROWS_5
#undef QRT_ZMM_ROWS_4
#undef QRT_ZMM_ROWS_3
#undef QRT_ZMM_ROWS_2
#undef QRT_ZMM_ROWS_1
#undef QRT_AVX512_TILES

#pragma GCC pop_options

/* ---------------------------------------------------------------- AMX: tdpbusd on tiles */

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,amx-tile,amx-int8")

/* Every tile 16 rows x 64 bytes: tiles 0-3 sums (2 x 2 blocks of 16 rows x 16 channels),
 * 4-5 rows (16 rows x 64 k), 6-7 weights (16 k/4 x 16 channels x 4, the panel layout). */
static inline void qrt_amx_configure(void) {
    /* The 64-byte configuration: palette 1, then bytes per row and rows of each tile. */
    uint8_t c[64] __attribute__((aligned(64)));
    memset(c, 0, sizeof c);
    c[0] = 1;
    for (int t = 0; t < 8; t++) {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
    }
    __asm__ volatile("" : : "r"(c) : "memory");  /* gcc 12 drops the stores otherwise */
    _tile_loadconfig(c);
}

/* Rows [0, nrows) of a packed block (stride K4, readable up to a multiple of 32 rows) x panels
 * [p0, p1); y points at the block's first output row, at the group's first channel. sums is
 * 32 x 32 int32 of scratch. K4 is a multiple of 64 (the AMX entry's .k_align). */
static void qrt_gemm_ukernel_32x32c4__amx(const qrt_gemm *g, const uint8_t *rows, int64_t nrows, const int8_t *wg,
                          const int32_t *bias, const int32_t *mult, const int32_t *shift,
                          int8_t *y, int64_t p0, int64_t p1, int32_t *sums) {
    /* the 32-bit requantization tables at the same channel as mult */
    const int32_t *round32 = g->rq.round32 + (mult - g->rq.mult), *shift32 = g->rq.shift32 + (mult - g->rq.mult);
    const int64_t K4 = g->K4;
    for (int64_t p = p0; p < p1; p += 2) {
        const int two_panels = p + 1 < p1;
        const int8_t *b0 = wg + p * qrt_gemm_panel_bytes(K4), *b1 = b0 + qrt_gemm_panel_bytes(K4);
        for (int64_t m = 0; m < nrows; m += 32) {
            const int two_rows = m + 16 < nrows;
            const uint8_t *a0 = rows + m * K4, *a1 = a0 + 16 * K4;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            if (two_panels && two_rows) {
                for (int64_t k = 0; k < K4; k += 64) {
                    _tile_loadd(4, a0 + k, K4);
                    _tile_loadd(5, a1 + k, K4);
                    _tile_loadd(6, b0 + k * 16, 64);
                    _tile_loadd(7, b1 + k * 16, 64);
                    _tile_dpbusd(0, 4, 6);
                    _tile_dpbusd(1, 4, 7);
                    _tile_dpbusd(2, 5, 6);
                    _tile_dpbusd(3, 5, 7);
                }
            } else {  /* an odd last panel or a last block of <= 16 rows */
                for (int64_t k = 0; k < K4; k += 64) {
                    _tile_loadd(4, a0 + k, K4);
                    _tile_loadd(6, b0 + k * 16, 64);
                    _tile_dpbusd(0, 4, 6);
                    if (two_panels) {
                        _tile_loadd(7, b1 + k * 16, 64);
                        _tile_dpbusd(1, 4, 7);
                    }
                    if (two_rows) {
                        _tile_loadd(5, a1 + k, K4);
                        _tile_dpbusd(2, 5, 6);
                    }
                }
            }
            _tile_stored(0, sums, 128);
            _tile_stored(1, sums + 16, 128);
            _tile_stored(2, sums + 16 * 32, 128);
            _tile_stored(3, sums + 16 * 32 + 16, 128);
            int64_t nr = nrows - m < 32 ? nrows - m : 32;
            for (int h = 0; h < 1 + two_panels; h++) {
                int64_t c0 = (p + h) * 16;
                if (c0 >= g->cout_g)
                    break;
                __mmask16 keep = g->cout_g - c0 >= 16 ? (__mmask16)0xFFFF
                                                      : (__mmask16)((1u << (g->cout_g - c0)) - 1);
                if (g->y32) {  /* the int32 mode: the sums + bias */
                    const __m512i b = _mm512_loadu_si512((const void *)(bias + c0));
                    for (int64_t r = 0; r < nr; r++)
                        _mm512_mask_storeu_epi32((int32_t *)(void *)y + (m + r) * g->C_out + c0, keep,
                                                 _mm512_add_epi32(_mm512_loadu_si512((const void *)(sums + r * 32 + h * 16)), b));
                    continue;
                }
                for (int64_t r = 0; r < nr; r++) {
                    __m512i acc = _mm512_loadu_si512((const void *)(sums + r * 32 + h * 16));
                    __m128i v = g->rq.n33 ? qrt_requant16_avx512_n33(acc, bias + c0, mult + c0,
                                                                  round32 + c0, shift32 + c0,
                                                                  g->rq.zp_y, g->rq.lo, g->rq.hi)
                                       : qrt_requant16_avx512(acc, bias + c0, mult + c0,
                                                              shift + c0, g->rq.zp_y, g->rq.lo, g->rq.hi);
                    _mm_mask_storeu_epi8(y + (m + r) * g->C_out + c0, keep, v);
                }
            }
        }
    }
}

static inline void qrt_amx_release(void) { _tile_release(); }

/* A block of rows x panels [p0, p1) on the tiles: configured, computed, released. */
static void qrt_gemm_block_32x32c4__amx(const qrt_gemm *g, const uint8_t *rows, int64_t nrows,
                                       const int8_t *wg, const int32_t *bias, const int32_t *mult,
                                       const int32_t *shift, int8_t *y, int64_t p0, int64_t p1,
                                       int32_t *sums) {
    qrt_amx_configure();
    qrt_gemm_ukernel_32x32c4__amx(g, rows, nrows, wg, bias, mult, shift, y, p0, p1, sums);
    qrt_amx_release();
}

#pragma GCC pop_options

/* ---------------------------------------------------------------- the path's functions */

/* The int16 mode (SPEC.md 4.6: int16 x with zero point 0, int8 weights, int16 y): the same
 * driver with int16 rows (es = 2, copied without a flip, padding 0), the weights in the kg = 2
 * pair layout on every path, and epilogues that store int16. AMX has no int16 tiles: its
 * machines run the AVX-512 VNNI kernel. There is no int32 mode here (y32 stays NULL). */
static inline const qrt_gemm_ops *qrt_gemm_int16_ops_for(int isa) {
    static const qrt_gemm_ops ops[] = {
        [QRT_SCALAR] = {.pack_rows = qrt_gemm_pack_rows_s16__scalar,
                        .ukernel = qrt_gemm_ukernel_6x64c2__scalar_s16, .mr = QRT_MR, .es = 2,
                        .kg = 2, .k_align = 2, .xs = 2, .unpack_w4 = qrt_unpack_w4__scalar},
        [QRT_AVX2] = {.pack_rows = qrt_gemm_pack_rows_s16__scalar,
                      .ukernel = qrt_gemm_ukernel_6x16c2__avx2_s16s8, .mr = QRT_MR, .es = 2,
                      .kg = 2, .k_align = 2, .xs = 2, .unpack_w4 = qrt_unpack_w4__avx2},
        [QRT_AVX512VNNI] = {.pack_rows = qrt_gemm_pack_rows_s16__avx512,
                            .ukernel = qrt_gemm_ukernel_6x64c2__avx512vnni_s16, .mr = QRT_MR,
                            .es = 2, .kg = 2, .k_align = 2, .xs = 2, .unpack_w4 = qrt_unpack_w4__avx2},
        [QRT_AMX] = {.pack_rows = qrt_gemm_pack_rows_s16__avx512,
                     .ukernel = qrt_gemm_ukernel_6x64c2__avx512vnni_s16, .mr = QRT_MR, .es = 2,
                     .kg = 2, .k_align = 2, .xs = 2, .unpack_w4 = qrt_unpack_w4__avx2},
    };
    return &ops[isa >= QRT_SCALAR && isa <= QRT_AMX ? isa : QRT_SCALAR];
}

/* The int8 form's (and its int32 mode's, dynamic.h). */
static inline const qrt_gemm_ops *qrt_gemm_ops_for(int isa) {
    static const qrt_gemm_ops ops[] = {
        [QRT_SCALAR] = {.pack_rows = qrt_gemm_pack_rows_u8__scalar,
                        .ukernel = qrt_gemm_ukernel_6x64c4__scalar, .mr = QRT_MR, .es = 1,
                        .kg = 4, .k_align = 4, .xs = 1, .unpack_w4 = qrt_unpack_w4__scalar},
        [QRT_AVX2] = {.pack_rows = qrt_gemm_pack_rows_u16__avx2,
                      .ukernel = qrt_gemm_ukernel_6x16c2__avx2_u16s8,
                      .ukernel32 = qrt_gemm_ukernel_6x16c2__avx2_u16s8_i32, .mr = QRT_MR, .es = 2,
                      .kg = 2, .k_align = 4, .xs = 1, .unpack_w4 = qrt_unpack_w4__avx2},
        [QRT_AVX512VNNI] = {.pack_rows = qrt_gemm_pack_rows_u8__avx512,
                            .ukernel = qrt_gemm_ukernel_6x64c4__avx512vnni, .mr = QRT_MR, .es = 1,
                            .kg = 4, .k_align = 4, .xs = 1, .unpack_w4 = qrt_unpack_w4__avx2},
        [QRT_AMX] = {.pack_rows = qrt_gemm_pack_rows_u8__avx512,
                     .block = qrt_gemm_block_32x32c4__amx, .mr = 32, .es = 1, .kg = 4,
                     .k_align = 64, .xs = 1,
                     /* int4 weights: expanded panels, the AVX-512 VNNI micro-kernel */
                     .ukernel = qrt_gemm_ukernel_6x64c4__avx512vnni, .unpack_w4 = qrt_unpack_w4__avx2},
    };
    return &ops[isa >= QRT_SCALAR && isa <= QRT_AMX ? isa : QRT_SCALAR];
}

/* ---------------------------------------------------------------- driver */

static inline int64_t qrt_gemm_rows(const qrt_gemm *g) { return g->N * g->OH * g->OW; }

/* Rows per block: a multiple of the micro-kernel's rows whose packed rows fit QRT_BLOCK_BYTES. */
static inline int64_t qrt_gemm_block(const qrt_gemm *g) {
    int64_t mr = g->ops->mr, mc = QRT_BLOCK_BYTES / (g->K4 * g->ops->es);
    mc -= mc % mr;
    return mc < mr ? mr : mc;
}

/* Rows [m0, m1) x panels [p0, p1) of group grp; returns 0 or -2 (no scratch memory). */
static int qrt_gemm_tile(const qrt_gemm *g, const int8_t *x, int8_t *y, int64_t grp, int64_t m0,
                         int64_t m1, int64_t p0, int64_t p1) {
    const qrt_gemm_ops *ops = g->ops;
    int64_t padded = (m1 - m0 + 31) / 32 * 32;  /* AMX loads whole 16-row tiles */
    int64_t row = g->K4 * ops->es, pb = qrt_gemm_panel_bytes(g->K4);
    /* after the rows: AMX's 32 x 32 sums (and the few values qrt_flip_u16__avx2 writes past),
     * then, for int4 weights, QRT_NP expanded panels */
    size_t at_w = ((size_t)padded * row + 32 * 32 * sizeof(int32_t) + 63) / 64 * 64;
    uint8_t *rows = qrt_scratch(at_w + (g->w4 ? (size_t)(QRT_NP * pb) : 0));
    if (rows == NULL)
        return -2;
    ops->pack_rows(g, x, m0, m1, grp, rows);
    int64_t nch = g->panels * 16;
    /* int4: byte offsets into the panels halve */
    const int8_t *wg = g->w + grp * g->panels * pb / (g->w4 ? 2 : 1);
    const int32_t *bias = g->rq.bias + grp * nch, *mult = g->rq.mult + grp * nch,
                  *shift = g->rq.shift + grp * nch;
    if (ops->block && !g->w4) {
        int64_t at = m0 * g->C_out + grp * g->cout_g;
        ops->block(g, rows, m1 - m0, wg, bias, mult, shift,
                   g->y32 ? (int8_t *)(void *)(g->y32 + at) : y + at * ops->xs, p0, p1,
                   (int32_t *)(rows + (size_t)padded * row));
        return 0;
    }
    const qrt_gemm_ukernel_fn uk = g->y32 && ops->ukernel32 ? ops->ukernel32 : ops->ukernel;
    for (int64_t p = p0; p < p1; p += QRT_NP) {
        int64_t np = p1 - p < QRT_NP ? p1 - p : QRT_NP;
        int64_t c0 = p * 16;
        int64_t ncols = g->cout_g - c0 < np * 16 ? g->cout_g - c0 : np * 16;
        const int8_t *wp = wg + p * pb;
        if (g->w4) {  /* these panels expanded once for all the block's rows */
            ops->unpack_w4((int8_t *)(rows + at_w), (const uint8_t *)(wg + p * pb / 2), np * pb);
            wp = (const int8_t *)(rows + at_w);
        }
        for (int64_t m = m0; m < m1; m += QRT_MR) {
            int64_t mr = m1 - m < QRT_MR ? m1 - m : QRT_MR;
            const uint8_t *a[QRT_MR];
            int8_t *yr[QRT_MR];
            for (int64_t i = 0; i < mr; i++) {
                int64_t at = (m + i) * g->C_out + grp * g->cout_g + c0;
                a[i] = rows + (m - m0 + i) * row;
                /* int32 mode: into y32; int16 mode: 2 bytes per output */
                yr[i] = g->y32 ? (int8_t *)(void *)(g->y32 + at) : y + at * ops->xs;
            }
            uk(g, np, mr, a, wp, bias + c0, mult + c0, shift + c0, yr, ncols);
        }
    }
    return 0;
}

/* The whole op. Work items are (group, row block, panel range). */
static int qrt_gemm_run(const qrt_gemm *g, const int8_t *x, int8_t *y) {
    int64_t M = qrt_gemm_rows(g), mc = qrt_gemm_block(g);
    if (M == 0 || g->cout_g == 0)
        return 0;
    int64_t blocks = (M + mc - 1) / mc;
    int threads = g->threads < 1 ? 1 : g->threads;
    if (threads > 1 && blocks % threads) {
        /* a multiple of threads blocks of even size, so that every thread gets as many rows
         * (3 blocks of 6144, 6144 and 256 rows on 2 threads would leave one nearly idle) */
        int64_t want = (blocks + threads - 1) / threads * threads, mr = g->ops->mr;
        int64_t per = (M + want - 1) / want;
        per += (mr - per % mr) % mr;
        mc = per < mc ? per : mc;
        blocks = (M + mc - 1) / mc;
    }
    /* Few blocks that do not divide among the threads (49 rows of a 7x7 layer are 3 blocks):
     * the panels are split too, each thread packing the rows it needs. */
    int64_t splits = 1;
    if (threads > 1 && (g->groups * blocks) % threads && g->groups * blocks < 4 * threads)
        splits = g->panels < threads ? g->panels : threads;
    int64_t items = g->groups * blocks * splits;
    int rc = 0;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && items > 1) reduction(min : rc)
    for (int64_t it = 0; it < items; it++) {
        int64_t s = it % splits, b = (it / splits) % blocks, grp = it / (splits * blocks);
        int64_t m0 = b * mc, m1 = m0 + mc < M ? m0 + mc : M;
        int64_t p0 = g->panels * s / splits, p1 = g->panels * (s + 1) / splits;
        int r = qrt_gemm_tile(g, x, y, grp, m0, m1, p0, p1);
        if (r < rc)
            rc = r;
    }
    return rc;
}

#endif
