/* Instruction-set paths of the compiled kernels. Every path computes the same integers (the
 * NumPy reference of qrt/ops/<op>.py); they differ only in speed. The path is chosen in
 * Python (qrt/kernels/isa.pyx: CPU features, or QRT_ISA) and passed to each kernel call. */
#ifndef QRT_ISA_H
#define QRT_ISA_H

#include <stdint.h>
#include <stdlib.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <unistd.h>
#include <sys/syscall.h>
#endif

/* Ordered: a kernel without code for a path runs the best lower one it has (AMX machines run
 * the AVX-512 VNNI code of every op but the GEMM). */
enum { QRT_SCALAR = 0, QRT_AVX2 = 1, QRT_AVX512VNNI = 2, QRT_AMX = 3 };

/* AMX tiles: the CPU has them (CPUID.7.0:EDX bits 24, 25) and Linux lets this process use the
 * 8 KiB of tile data (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; once per process). */
static inline int qrt_amx_usable(void) {
#if defined(__x86_64__) && defined(__linux__)
    static int state = -1;
    if (state < 0) {
        unsigned a, b, c, d;
        state = 0;
        if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) && (d & (1u << 25)))
            state = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18) == 0;
    }
    return state;
#else
    return 0;
#endif
}

/* Whether this CPU (and the OS, which must save the wider registers) can run a path. */
static inline int qrt_isa_supported(int isa) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    switch (isa) {
    case QRT_SCALAR: return 1;
    case QRT_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case QRT_AVX512VNNI:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vnni");
    case QRT_AMX: return qrt_isa_supported(QRT_AVX512VNNI) && qrt_amx_usable();
    }
    return 0;
#else
    return isa == QRT_SCALAR;
#endif
}

/* Per-thread scratch (packed activation rows): grown on demand, reused by every later call on
 * the same thread, so a run allocates nothing once warm. NULL when memory runs out. One per
 * thread for the whole runtime: the code that uses it (gemm.h, depthwise.h, eltwise.h) is
 * compiled only into qrt.kernels.isa (isa.pyx); the kernel modules include simd/api.h. */
static __thread uint8_t *qrt_scratch_ptr = NULL;
static __thread size_t qrt_scratch_size = 0;

static inline uint8_t *qrt_scratch(size_t bytes) {
    if (bytes > qrt_scratch_size) {
        void *p = NULL;
        size_t want = bytes + bytes / 4 + 4096;
        if (posix_memalign(&p, 64, want) != 0)
            return NULL;
        free(qrt_scratch_ptr);
        qrt_scratch_ptr = (uint8_t *)p;
        qrt_scratch_size = want;
    }
    return qrt_scratch_ptr;
}

#endif
