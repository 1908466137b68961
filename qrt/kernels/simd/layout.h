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
 * the AVX2 path's vpmaddwd (gemm.h qrt_gemm_ops .kg); K4 is K rounded up to the path's
 * .k_align (4, AMX 64). Byte offset of weight (channel c, k) in the group's panels: */
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

#endif
