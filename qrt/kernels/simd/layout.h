/* The packed-weight layouts, defined once: the packers here (called at load by gemm.pyx
 * PackedGemm and depthwise.pyx PackedDepthwise) and the kernels (gemm.h, depthwise.h) use
 * these constants and index functions. */
#ifndef QRT_LAYOUT_H
#define QRT_LAYOUT_H

#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------- GEMM (gemm.h) */

/* Output channels per panel. The vector kernels hold one panel's sums in one 512-bit (or two
 * 256-bit) vectors of int32: they are written for 16. */
#define QRT_PANEL 16

/* A group's weights [cout_g][K] packed as [panel][K4 / kg][QRT_PANEL][kg] int8: kg consecutive
 * k of the panel's channels per QRT_PANEL * kg bytes, zeros where a channel or k is padding.
 * kg is 4 for vpdpbusd and AMX's tdpbusd (a 64-byte vector holds 4 k of 16 channels) and 2 for
 * the AVX2 path's vpmaddwd and for the int16 mode on every path (pairs of int16 x, vpmaddwd or
 * vpdpwssd; gemm.h qrt_gemm_ops .kg); K4 is K rounded up to the path's .k_align (4, AMX 64, the
 * int16 mode 2). Byte offset of weight (channel c, k) in the group's panels: */
static inline int64_t qrt_gemm_packed_at(int64_t K4, int64_t kg, int64_t c, int64_t k) {
    return ((c / QRT_PANEL) * K4 + (k - k % kg)) * QRT_PANEL + (c % QRT_PANEL) * kg + k % kg;
}

/* Bytes of one panel: the stride from panel p to p + 1. */
static inline int64_t qrt_gemm_panel_bytes(int64_t K4) { return K4 * QRT_PANEL; }

/* w [groups * cout_g][K] -> out [groups][panels][K4 / kg][QRT_PANEL][kg] (out zeroed by the
 * caller), and sums [groups][panels * QRT_PANEL] the per-channel weight sums. Panel by panel,
 * kg k at a time for its channels: the output is written in order, the rows read along. */
static inline void qrt_gemm_pack_weights(const int8_t *w, int64_t rows, int64_t K, int64_t cout_g,
                                         int64_t K4, int64_t panels, int64_t kg, int8_t *out,
                                         int64_t *sums) {
    if (K == 0 || cout_g == 0)
        return;
    for (int64_t row = 0; row < rows; row++) {
        int64_t s = 0, grp = row / cout_g;
        for (int64_t k = 0; k < K; k++)
            s += w[row * K + k];
        sums[grp * panels * QRT_PANEL + row - grp * cout_g] = s;
    }
    for (int64_t grp = 0; grp < rows / cout_g; grp++) {
        int8_t *group = out + grp * panels * qrt_gemm_panel_bytes(K4);
        for (int64_t c = 0; c < cout_g; c += QRT_PANEL) {
            int64_t n = cout_g - c < QRT_PANEL ? cout_g - c : QRT_PANEL, k = 0;
            const int8_t *src[QRT_PANEL];
            for (int64_t j = 0; j < n; j++)
                src[j] = w + (grp * cout_g + c + j) * K;
            if (kg == 2) {  /* constant sizes: the copies are moves */
                for (; k + 2 <= K; k += 2) {
                    int8_t *dst = group + qrt_gemm_packed_at(K4, 2, c, k);
                    for (int64_t j = 0; j < n; j++)
                        memcpy(dst + 2 * j, src[j] + k, 2);
                }
            } else {
                for (; k + 4 <= K; k += 4) {
                    int8_t *dst = group + qrt_gemm_packed_at(K4, 4, c, k);
                    for (int64_t j = 0; j < n; j++)
                        memcpy(dst + 4 * j, src[j] + k, 4);
                }
            }
            if (k < K) {
                int8_t *dst = group + qrt_gemm_packed_at(K4, kg, c, k);
                for (int64_t j = 0; j < n; j++)
                    memcpy(dst + kg * j, src[j] + k, (size_t)(K - k));
            }
        }
    }
}

/* int4 weights (values in [-7, 7]) keep the packed panels above at half their size: every 64
 * bytes of panels become 32, byte j holding byte j in its low nibble and byte j + 32 in its
 * high one. A panel is K4 * 16 bytes, a multiple of 64, so the chunks never straddle panels;
 * the GEMM expands the QRT_NP panels a micro-kernel call is about to use (gemm.h
 * qrt_unpack_w4; 64 x K4 bytes of per-thread scratch, reused by every row of the block), and
 * no int8 copy is resident. n: bytes of panels, a multiple of 64. */
static inline void qrt_gemm_pack_int4(const int8_t *panels, int64_t n, uint8_t *out) {
    for (int64_t c = 0; c < n; c += 64, panels += 64, out += 32)
        for (int j = 0; j < 32; j++)
            out[j] = (uint8_t)((panels[j] & 0x0F) | ((uint8_t)panels[j + 32] << 4));
}

/* ---------------------------------------------------------------- DEPTHWISE_CONV_2D (depthwise.h) */

/* Channels per block: the vector paths take 32 channels at a time (x as int16, widened from
 * int8 or, in the int16 mode, loaded as it is: one 512-bit vector, or two 256-bit ones; the same
 * packed weights serve both). Per-channel tables and tap reads cover whole blocks. */
#define QRT_DW_BLOCK 32

/* The weights [taps][C_out] int8 (taps in the kernels' order, depthwise.h qrt_dw_taps; a dummy
 * tap of weight 0 makes the count even) packed as int16 tap pairs in the order the vector
 * paths interleave x, [block][pair][lo/hi][lane][4 channels][2 taps]: unpacklo/hi_epi16 of two
 * taps' widened x put block channel j in 128-bit lane j / 8, half (j % 8) / 4 (lo: 0-3, hi:
 * 4-7), position j % 4, next to its other tap. So a pair of a block is 2 * QRT_DW_BLOCK int16:
 * the lo vector's (channels 0-3 of each lane), then the hi vector's. Zeros where a channel or
 * tap is padding. Element offset of weight (channel c, tap t) for `pairs` tap pairs: */
static inline int64_t qrt_dw_packed_at(int64_t pairs, int64_t c, int64_t t) {
    uint64_t u = (uint64_t)c, v = (uint64_t)t;  /* >= 0: the divisions are shifts */
    return (int64_t)(((((u / QRT_DW_BLOCK * (uint64_t)pairs + v / 2) * 2 + (u % 8) / 4) * 4
                       + (u % QRT_DW_BLOCK) / 8) * 4 + u % 4) * 2 + v % 2);
}

/* Strides in int16 elements, as the kernels step through one block (differences of
 * qrt_dw_packed_at): from pair p to p + 1 (t to t + 2), from a pair's lo vector to its hi one
 * (channel c to c + 4, c % 8 < 4), and from block b to b + 1 (c to c + QRT_DW_BLOCK). */
#define QRT_DW_PAIR_ELEMS (2 * QRT_DW_BLOCK)
#define QRT_DW_HI_ELEMS (QRT_DW_BLOCK / 2 * 2)  /* half the block's channels, 2 taps each */
static inline int64_t qrt_dw_block_elems(int64_t pairs) { return pairs * QRT_DW_PAIR_ELEMS; }

/* w [taps][C_out] -> out [blocks][pairs][2][4][4][2] int16 (out zeroed by the caller, with
 * blocks * qrt_dw_block_elems(pairs) elements; taps <= 2 * pairs, C_out <= blocks * QRT_DW_BLOCK). */
static inline void qrt_dw_pack_weights(const int8_t *w, int64_t taps, int64_t C_out, int64_t pairs,
                                       int16_t *out) {
    for (int64_t t = 0; t < taps; t++)
        for (int64_t c = 0; c < C_out; c++)
            out[qrt_dw_packed_at(pairs, c, t)] = w[t * C_out + c];
}

#endif
