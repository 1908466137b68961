/* The CPU's int8 peak: chains of vpdpbusd (u8 x s8 products summed into s32 lanes, 4 MACs per
 * lane) with no dependences between chains, so the instruction's latency is hidden and only
 * its throughput counts. Without VNNI, chains of vpmaddwd (s16 x s16 pairs summed into s32
 * lanes, 2 MACs per lane): the fastest exact int8 product there (vpmaddubsw has twice the
 * lanes but saturates its int16 pair sums and needs a vpmaddwd after it to widen them, so it
 * reaches the same MACs per multiply instruction). Built at run time by bench/peak.py (gcc,
 * ctypes); not part of qrt.
 *
 * The chains are written in assembly: from intrinsics gcc merges chains that compute the same
 * values, or rotates them through extra register moves that take issue slots. */
#include <immintrin.h>
#include <stdint.h>

/* 12 independent accumulators: latency (about 5 cycles) times issue rate (up to 2 per cycle),
 * with room to spare; 12 + 2 sources also fit in the 16 registers the VEX (ymm) form can use. */
#define CHAINS 12

/* 0: none of these; 1: AVX-VNNI (ymm, 32 MACs per instruction); 2: AVX-512 VNNI (zmm, 64);
 * 3: AVX2 without VNNI (vpmaddwd ymm, 16). */
int peak_path(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni")) return 2;
    if (__builtin_cpu_supports("avxvnni")) return 1;
    if (__builtin_cpu_supports("avx2")) return 3;
    return 0;
}

int peak_chains(void) { return CHAINS; }

#define TWELVE(op)                                                                       \
    op " %[b], %[a], %[c0]\n\t" op " %[b], %[a], %[c1]\n\t" op " %[b], %[a], %[c2]\n\t"     \
    op " %[b], %[a], %[c3]\n\t" op " %[b], %[a], %[c4]\n\t" op " %[b], %[a], %[c5]\n\t"     \
    op " %[b], %[a], %[c6]\n\t" op " %[b], %[a], %[c7]\n\t" op " %[b], %[a], %[c8]\n\t"     \
    op " %[b], %[a], %[c9]\n\t" op " %[b], %[a], %[c10]\n\t" op " %[b], %[a], %[c11]"
#define OUTPUTS(r)                                                                       \
    [c0] r(c0), [c1] r(c1), [c2] r(c2), [c3] r(c3), [c4] r(c4), [c5] r(c5),                \
    [c6] r(c6), [c7] r(c7), [c8] r(c8), [c9] r(c9), [c10] r(c10), [c11] r(c11)

/* The sum of every lane of CHAINS ymm accumulators. */
__attribute__((target("avx")))
static int64_t sum_ymm(const __m256i *c) {
    int32_t lanes[8];
    int64_t sum = 0;
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_si256((__m256i *)lanes, c[i]);
        for (int j = 0; j < 8; j++) sum += lanes[j];
    }
    return sum;
}

/* Runs CHAINS x iterations instructions; returns the sum of every lane so that the work is
 * observable. The accumulators are separate variables, not an array: an array is kept in
 * memory and stored back every iteration. */
__attribute__((target("avx512f,avx512vnni")))
int64_t peak_zmm(int64_t iterations, int32_t seed) {
    const __m512i a = _mm512_set1_epi32(seed), b = _mm512_set1_epi32(seed + 1);
    __m512i c0 = a, c1 = a, c2 = a, c3 = a, c4 = a, c5 = a, c6 = a, c7 = a, c8 = a, c9 = a, c10 = a, c11 = a;
    for (int64_t i = 0; i < iterations; i++)
        __asm__ volatile(TWELVE("vpdpbusd") : OUTPUTS("+v") : [a] "v"(a), [b] "v"(b));
    const __m512i c[CHAINS] = {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11};
    int64_t sum = 0;
    for (int i = 0; i < CHAINS; i++) sum += _mm512_reduce_add_epi32(c[i]);
    return sum;
}

/* {vex} (written %{vex%} in gcc asm): the AVX-VNNI encoding, which needs no AVX-512 (registers 0-15: constraint "x"). */
__attribute__((target("avx2,avxvnni")))
int64_t peak_ymm(int64_t iterations, int32_t seed) {
    const __m256i a = _mm256_set1_epi32(seed), b = _mm256_set1_epi32(seed + 1);
    __m256i c0 = a, c1 = a, c2 = a, c3 = a, c4 = a, c5 = a, c6 = a, c7 = a, c8 = a, c9 = a, c10 = a, c11 = a;
    for (int64_t i = 0; i < iterations; i++)
        __asm__ volatile(TWELVE("%{vex%} vpdpbusd") : OUTPUTS("+x") : [a] "x"(a), [b] "x"(b));
    const __m256i c[CHAINS] = {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11};
    return sum_ymm(c);
}

/* AVX2 without VNNI: vpmaddwd into a separate register, then vpaddd into the chain, as an
 * int8 GEMM must (vpmaddwd does not accumulate): both instructions count, as in a kernel.
 * 8 chains, not CHAINS: 8 sums + 4 products + 2 sources are 14 of the 16 ymm registers; with
 * 12 chains gcc keeps some sums on the stack and the loop measures loads and stores (half the
 * rate on Zen 3). */
__attribute__((target("avx2")))
int64_t peak_avx2(int64_t iterations, int32_t seed) {
    const __m256i a = _mm256_set1_epi32(seed), b = _mm256_set1_epi32(seed + 1);
    __m256i c[CHAINS], c0 = a, c1 = a, c2 = a, c3 = a, c4 = a, c5 = a, c6 = a, c7 = a;
    __m256i t0, t1, t2, t3;
#define MADD4(p, q, r, s)                                                                   \
    __asm__ volatile("vpmaddwd %[b], %[a], %[t0]\n\tvpmaddwd %[b], %[a], %[t1]\n\t"           \
                     "vpmaddwd %[b], %[a], %[t2]\n\tvpmaddwd %[b], %[a], %[t3]\n\t"           \
                     "vpaddd %[t0], %[x], %[x]\n\tvpaddd %[t1], %[y], %[y]\n\t"               \
                     "vpaddd %[t2], %[z], %[z]\n\tvpaddd %[t3], %[w], %[w]"                    \
                     : [x] "+x"(p), [y] "+x"(q), [z] "+x"(r), [w] "+x"(s), [t0] "=&x"(t0),   \
                       [t1] "=&x"(t1), [t2] "=&x"(t2), [t3] "=&x"(t3)                         \
                     : [a] "x"(a), [b] "x"(b))
    for (int64_t i = 0; i < iterations; i++) {
        /* 12 vpmaddwd per iteration, as peak.py counts (CHAINS x 16 MACs) */
        MADD4(c0, c1, c2, c3);
        MADD4(c4, c5, c6, c7);
        MADD4(c0, c1, c2, c3);
    }
#undef MADD4
    for (int i = 0; i < CHAINS; i++)
        c[i] = _mm256_setzero_si256();
    c[0] = c0, c[1] = c1, c[2] = c2, c[3] = c3, c[4] = c4, c[5] = c5, c[6] = c6, c[7] = c7;
    return sum_ymm(c);
}
