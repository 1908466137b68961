/* The C side as the Cython kernel modules see it: the rounding rule, the ops' structs and the
 * paths' tables, and the small inline code that runs per element or dispatches a row through a
 * path's table. No path's code is here: the other headers are compiled once, into
 * qrt.kernels.isa (isa.pyx), which hands the entry points (qrt_*_ops_for, qrt_*_run) to the
 * kernel modules (isa.pxd); so there is one copy of each kernel, and one per-thread scratch
 * (isa.h), for the whole runtime. */
#ifndef QRT_API_H
#define QRT_API_H

#include <stdint.h>

/* ---------------------------------------------------------------- the rule (SPEC.md 4.2) */

/* The rounding rule itself, once for all the C and Cython code (numerics.pxd declares it for
 * Cython): v * m / 2^n rounded to nearest, ties toward +infinity, exactly in 64 bits, for a
 * multiplier of either sign; callers keep 1 <= n <= 62 and |v * m| + 2^(n-1) < 2^63.
 * Reference: qrt/numerics.py rounding_shift. Every vector form in requant.h is a sibling of it. */
static inline int64_t qrt_rounding_shift(int64_t v, int64_t m, int64_t n) {
    return (v * m + ((int64_t)1 << (n - 1))) >> n;
}

static inline int8_t qrt_requant_scalar(int32_t acc, int32_t m, int32_t n, int32_t zp, int32_t lo,
                                        int32_t hi) {
    int64_t v = qrt_rounding_shift(acc, m, n) + zp;
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* The same, the clamp written as two selects so that it compiles without branches: with a
 * fused ReLU about half the outputs clamp, and a branch there mispredicts on every other
 * element. */
static inline int8_t qrt_requant_select(int32_t acc, int32_t m, int32_t n, int32_t zp, int32_t lo,
                                        int32_t hi) {
    int64_t v = qrt_rounding_shift(acc, m, n) + zp;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int8_t)v;
}

/* The tables of the 32-bit form (qrt_requant8_avx2_n33, requant.h) for one channel's shift n:
 * round32 = 2^(n-33) (0 where n < 33, where the form does not apply), shift32 = n - 32. */
static inline int32_t qrt_round32(int32_t n) { return n >= 33 ? (int32_t)1 << (n - 33) : 0; }
static inline int32_t qrt_shift32(int32_t n) { return n - 32; }

/* Whether the 32-bit form applies: every shift >= 33, and a zero point whose clamp bounds
 * lo - zp, hi - zp fit int32 comfortably (|zp| <= 2^16). */
static inline int qrt_n33_zp_ok(int32_t zp) { return zp >= -65536 && zp <= 65536; }

/* A layer's tables for count channels (padding channels given shift 33 by the caller); returns
 * whether the 32-bit form applies to it. The one place they are made: the kernels' packing
 * (requantize.pyx tables32) and the one-multiplier rows of eltwise.h. */
static inline int qrt_requant_tables32(const int32_t *n, int64_t count, int32_t zp,
                                       int32_t *round32, int32_t *shift32) {
    int ok = qrt_n33_zp_ok(zp);
    for (int64_t c = 0; c < count; c++) {
        round32[c] = qrt_round32(n[c]);
        shift32[c] = qrt_shift32(n[c]);
        ok &= n[c] >= 33;
    }
    return ok;
}

/* What differs between the paths, chosen once per bound op (qrt_requant_ops_for). */
typedef struct {
    /* per-channel m, n; n33: every shift >= 33 (the 32-bit form) */
    void (*row)(const int32_t *acc, const int32_t *m, const int32_t *n, int64_t count, int32_t zp,
                int32_t lo, int32_t hi, int8_t *y, int n33);
    /* one m, n for the row: returns how many it did */
    int64_t (*row1)(const int32_t *acc, int64_t count, int32_t m, int32_t n, int32_t zp,
                    int32_t lo, int32_t hi, int8_t *y);
} qrt_requant_ops;

static inline void qrt_requant_row(const qrt_requant_ops *ops, const int32_t *acc, const int32_t *m,
                                   const int32_t *n, int64_t count, int32_t zp, int32_t lo,
                                   int32_t hi, int8_t *y) {
    int n33 = 1;
    for (int64_t c = 0; c < count; c++)
        n33 &= n[c] >= 33;
    ops->row(acc, m, n, count, zp, lo, hi, y, n33);
}

static inline void qrt_requant1_row(const qrt_requant_ops *ops, const int32_t *acc, int64_t count,
                                    int32_t m, int32_t n, int32_t zp, int32_t lo, int32_t hi,
                                    int8_t *y) {
    int64_t i = ops->row1(acc, count, m, n, zp, lo, hi, y);
    for (; i < count; i++)
        y[i] = qrt_requant_select(acc[i], m, n, zp, lo, hi);
}

/* ------------------------------------------- per-channel requantization (gemm.h, depthwise.h) */

/* What a conv-like op needs to turn each output channel's int32 sum into int8 (SPEC.md 4.2),
 * laid out per channel by its packer (padding channels included). */
typedef struct {
    const int32_t *bias;               /* the bias with the input zero point's share folded in */
    const int32_t *mult, *shift;       /* m, n */
    const int32_t *round32, *shift32;  /* the 32-bit form's tables: 2^(n-33), n-32 (requant.h) */
    int n33;                           /* every shift >= 33: the 32-bit form applies */
    int32_t zp_y, lo, hi;
} qrt_channel_requant;

/* ---------------------------------------------------------------- GEMM (gemm.h) */

typedef struct qrt_gemm_ops qrt_gemm_ops;

typedef struct {
    int64_t N, H, W, C_in;          /* input, NHWC */
    int64_t OH, OW, C_out;          /* output, NHWC */
    int64_t KH, KW, sh, sw, dh, dw, top, left;
    int64_t groups, cin_g, cout_g;  /* per group: cin_g inputs, cout_g outputs */
    int64_t K4;                     /* KH*KW*cin_g rounded up to a multiple of 4 */
    int64_t panels;                 /* ceil(cout_g / 16) */
    uint8_t pad_u8;                 /* the input zero point, flipped (int16 mode: 0) */
    const uint8_t *pad_n;           /* NULL, or one flipped zero point per image instead of
                                     * pad_u8 (the dynamic form's, dynamic.h) */
    const int8_t *w;                /* [groups][panels][K4/4][16][4] */
    int w4;                         /* w holds those panels as int4 (layout.h qrt_gemm_pack_int4),
                                     * expanded a few panels at a time by ops->unpack_w4 */
    qrt_channel_requant rq;         /* [groups][panels*16]; bias - (zp_x + 128) * sum_k w */
    int32_t *y32;                   /* NULL: requantize to int8 into y; else the int32 mode:
                                     * each micro-kernel stores its sums + rq.bias (wrapping)
                                     * here, [N*OH*OW][C_out], y unused, rq's tables unread */
    int isa, threads;
    const qrt_gemm_ops *ops;        /* the path's functions: qrt_gemm_ops_for(isa), at bind */
} qrt_gemm;

/* In the int32 mode (y32 set) the y row pointers a micro-kernel or block gets point into y32,
 * cast to int8_t *: the kernel casts them back (int32_t *)(void *). The int16 mode (ops from
 * qrt_gemm_int16_ops_for: int16 x and y, zero point 0, SPEC.md 4.6) does the same with x, the
 * rows (packed as int16) and y, which are int16_t; its rq.bias is the bias, its pad_u8 0. */
typedef void (*qrt_gemm_pack_rows_fn)(const qrt_gemm *g, const int8_t *x, int64_t m0, int64_t m1,
                                      int64_t grp, uint8_t *dst);
/* np panels (<= QRT_NP) x mr rows (<= QRT_MR) of sums, requantized into y[i] + 0 .. ncols. */
typedef void (*qrt_gemm_ukernel_fn)(const qrt_gemm *g, int64_t np, int64_t mr,
                                    const uint8_t *const *a, const int8_t *w, const int32_t *bias,
                                    const int32_t *mult, const int32_t *shift, int8_t *const *y,
                                    int64_t ncols);
/* A whole block: nrows packed rows x panels [p0, p1), y at the block's first row. */
typedef void (*qrt_gemm_block_fn)(const qrt_gemm *g, const uint8_t *rows, int64_t nrows,
                                  const int8_t *wg, const int32_t *bias, const int32_t *mult,
                                  const int32_t *shift, int8_t *y, int64_t p0, int64_t p1,
                                  int32_t *sums);

/* What differs between the paths, chosen once per bound op (qrt_gemm_ops_for). */
struct qrt_gemm_ops {
    qrt_gemm_pack_rows_fn pack_rows;  /* im2col rows, flipped to unsigned */
    qrt_gemm_ukernel_fn ukernel;      /* QRT_MR x QRT_NP panels per call; NULL: block */
    qrt_gemm_ukernel_fn ukernel32;    /* the int32 mode's (y32), where compiled apart; NULL: ukernel */
    qrt_gemm_block_fn block;          /* or a whole block per call (AMX) */
    int64_t mr;                       /* rows per micro-kernel call */
    int es;                           /* bytes per packed k of a row */
    int kg;                           /* k per channel in the packed weights (layout.h) */
    int k_align;                      /* K4: K rounded up to a multiple of this */
    int xs;                           /* bytes per element of x and y: 1 (int8), 2 (the int16
                                       * mode: qrt_gemm_int16_ops_for's tables, gemm.h) */
    /* int4 panels -> int8 panels: n bytes (a multiple of 64) at dst, n / 2 read from src */
    void (*unpack_w4)(int8_t *dst, const uint8_t *src, int64_t n);
};

/* ------------------------------ CONV_2D, FULLY_CONNECTED with dynamic inputs (dynamic.h) */

typedef struct qrt_dynamic_ops qrt_dynamic_ops;

/* Float32 x and y, int8 weights: each row quantized from its own range, the int8 GEMM's int32
 * mode for the sums, a float epilogue (qrt/ops/hybrid.py, the dynamic form). */
typedef struct {
    qrt_gemm g;                /* int32 mode (g.y32: y's memory), weights packed with bias 0 and
                                * zp_x = -128; g.pad_n = pads (CONV_2D) */
    int64_t rows;              /* rows quantized on their own: FC's rows, CONV_2D's images */
    int64_t row_len;           /* floats per row: K, or H * W * C_in */
    int64_t out_rows;          /* GEMM output rows per row: 1, or OH * OW */
    int64_t C_out;
    int64_t chunk, chunks;     /* a row's range is found in chunks of `chunk` floats */
    const int32_t *wsum;       /* [C_out] sum_k w[c, k] */
    const float *s_w, *bias;   /* [C_out] */
    float lo, hi;              /* the fused activation's clamp */
    int8_t *q;                 /* [rows][row_len]: the rows quantized (buffers made at bind) */
    float *s;                  /* [rows] */
    int32_t *zp;               /* [rows] */
    uint8_t *pads;             /* [rows] zp + 128; 0 for a non-finite row (see dynamic.h) */
    float *range;              /* [rows * chunks][2] min, max per chunk (min NaN: a NaN seen) */
    int isa, threads;
    const qrt_dynamic_ops *ops;  /* the path's functions: qrt_dynamic_ops_for(isa), at bind */
} qrt_dynamic;

/* What differs between the paths, chosen once per bound op (qrt_dynamic_ops_for). */
struct qrt_dynamic_ops {
    /* min and max of x[0, n) without its NaNs (+inf, -inf if none); nonzero if it has one */
    int (*range)(const float *x, int64_t n, float *mn, float *mx);
    /* q[i] = fmin(fmax(rint(x[i] / s) + zp, -128), 127) */
    void (*quantize)(const float *x, int64_t n, float s, float zp, int8_t *q);
    /* In place: y[c] holds the int32 sum S; y[c] = clamp(float32(S - zc * wsum[c]) *
     * (s_x * s_w[c]) + bias[c], lo, hi), int32 wrapping, each float step rounded */
    void (*dequantize)(float *y, int64_t n, float s_x, int32_t zc, const int32_t *wsum,
                       const float *s_w, const float *bias, float lo, float hi);
};

/* ------------------------------------------------------- DEPTHWISE_CONV_2D (depthwise.h) */

typedef struct qrt_dw_ops qrt_dw_ops;

typedef struct {
    int64_t N, H, W, C, M, C_out;    /* x [N, H, W, C]; y [N, OH, OW, C_out], C_out = C * M */
    int64_t OH, OW, KH, KW, sh, sw, dh, dw, top, left;
    int64_t taps, pairs, blocks;     /* KH * KW; ceil(taps / 2); ceil(C_out / 32) */
    const int8_t *w;                 /* [taps][C_out] in tap order (scalar path) */
    const int16_t *wp;               /* int16 tap pairs (vector paths): layout.h qrt_dw_packed_at */
    qrt_channel_requant rq;          /* [blocks * 32]; bias - zp_x * sum_taps w, wrapped */
    const int8_t *zrow;              /* (OW + 1) * sw * C_out + blocks * 32 elements of zp_x */
    int8_t *tail;                    /* M = 1: x's elements from tail_at on, then zeros */
    int64_t tail_at;                 /* first input pixel (in elements) a block read could overrun */
    int isa, threads;
    const qrt_dw_ops *ops;           /* the path's functions: qrt_dw_ops_for(isa), at bind, or
                                      * qrt_dw_int16_ops_for(isa) (the int16 mode: x, y, zrow
                                      * and tail int16, zp_x 0; the pointers cast to int8_t *) */
} qrt_dw;

/* ---------------------------------------------------------------- elementwise (eltwise.h) */

typedef struct qrt_eltwise_ops qrt_eltwise_ops;
typedef struct qrt_quant qrt_quant;

typedef struct {
    int32_t ta[256], tb[256];  /* a', b' by the byte of the operand (tb negated for SUB) */
    int32_t za, zb, ma, mb, ka, kb, sign;  /* the same in closed form: k = n_operand - 20 */
    int32_t m, n, zp, lo, hi;  /* output requantization */
    int isa, threads;
    const qrt_eltwise_ops *ops;  /* the path's functions: qrt_eltwise_ops_for(isa), at bind */
} qrt_add;

typedef struct {
    int32_t za, zb, m, n, zp, lo, hi;
    int isa, threads;
    const qrt_eltwise_ops *ops;
} qrt_mul;

/* What differs between the paths, chosen once per bound op (qrt_eltwise_ops_for). */
struct qrt_eltwise_ops {
    /* ADD/SUB and MUL of a contiguous row: as many elements as the path does at a time;
     * returns how many (qrt_add_row, qrt_mul_row do the rest with the scalar rule) */
    int64_t (*add)(const qrt_add *p, const int8_t *a, const int8_t *b, int8_t *y, int64_t count);
    int64_t (*mul)(const qrt_mul *p, const int8_t *a, const int8_t *b, int8_t *y, int64_t count);
    /* QUANTIZE, DEQUANTIZE: pixels [p0, p1) of image n, a multiple of 8; NULL: scalar only.
     * quantize returns nonzero if it met a NaN or an infinity (quantized all the same). */
    int (*quantize)(const qrt_quant *q, const float *x, void *y, int64_t n, int64_t p0,
                    int64_t p1, int32_t *tile);
    void (*dequantize)(const qrt_quant *q, const void *x, float *y, int64_t n, int64_t p0,
                       int64_t p1, int32_t *tile);
};

/* The parameters are copied to locals first: y is int8, which may alias anything, so reading
 * them through p would reload every one after each store. */
static inline int64_t qrt_add_row_c1__scalar(const qrt_add *p, const int8_t *a, const int8_t *b,
                                             int8_t *y, int64_t count) {
    const int32_t *ta = p->ta, *tb = p->tb;
    const int32_t m = p->m, n = p->n, zp = p->zp, lo = p->lo, hi = p->hi;
    for (int64_t i = 0; i < count; i++)
        y[i] = qrt_requant_select(ta[(uint8_t)a[i]] + tb[(uint8_t)b[i]], m, n, zp, lo, hi);
    return count;
}

static inline int64_t qrt_mul_row_c1__scalar(const qrt_mul *p, const int8_t *a, const int8_t *b,
                                             int8_t *y, int64_t count) {
    const int32_t za = p->za, zb = p->zb, m = p->m, n = p->n, zp = p->zp, lo = p->lo, hi = p->hi;
    for (int64_t i = 0; i < count; i++)
        y[i] = qrt_requant_select((a[i] - za) * (b[i] - zb), m, n, zp, lo, hi);
    return count;
}

/* One contiguous row: the vector path where it applies (avx512vnni, and amx, which has it;
 * avx2), the scalar rule for the rest. */
static inline void qrt_add_row(const qrt_add *p, const int8_t *a, const int8_t *b, int8_t *y,
                               int64_t count) {
    int64_t i = p->ops->add(p, a, b, y, count);
    qrt_add_row_c1__scalar(p, a + i, b + i, y + i, count - i);
}

static inline void qrt_mul_row(const qrt_mul *p, const int8_t *a, const int8_t *b, int8_t *y,
                               int64_t count) {
    int64_t i = p->ops->mul(p, a, b, y, count);
    qrt_mul_row_c1__scalar(p, a + i, b + i, y + i, count - i);
}

enum { QRT_Q_INT8 = 0, QRT_Q_UINT8 = 1, QRT_Q_INT16 = 2 };

struct qrt_quant {
    int64_t N, C, P;        /* float side [N][C][P], integer side [N][P][C] */
    double scale, qlo, qhi; /* quantize: bounds before the zero point is added */
    float s;                /* dequantize */
    int32_t zp;
    int kind;               /* QRT_Q_*: the integer side's type */
    int isa, threads;
    const qrt_eltwise_ops *ops;
};

#endif
