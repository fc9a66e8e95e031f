/*
 * Throughput of the vector instructions vitedge's x86 kernels are built on, for one core: twelve
 * independent chains of each instruction (so latency does not limit them), timed over 20 M loop
 * iterations, best of 5 runs. A chain of dependent scalar `add`s (one per cycle on every x86 core)
 * gives the clock, so each line also prints instructions per cycle. Instructions the CPU lacks
 * (CPUID) are skipped. Use it to state a kernel's roofline: e.g. vpdpbusd zmm = 64 int8 multiply-adds,
 * vdpbf16ps zmm = 32 bf16, vfmadd231ps zmm = 16 f32.
 *
 *   gcc -O2 scripts/port_microbench.c -o target/port_microbench && target/port_microbench
 *
 * (scripts/amx_microbench.c times the AMX tile instructions; it needs AMX.)
 */
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define N 20000000L
/* Best of 5 runs of N iterations of `body` (which holds `per` timed instructions), in ns per instruction. */
#define TIME(body, per)                                                                       \
    ({                                                                                        \
        double best = 1e9;                                                                    \
        for (int run = 0; run < 5; run++) {                                                   \
            long i = N;                                                                       \
            double t0 = now();                                                                \
            __asm__ volatile("1:\n" body "dec %0\n jnz 1b\n" : "+r"(i) : : "r8", "memory");   \
            double t = (now() - t0) / N / (per);                                              \
            if (t < best) best = t;                                                           \
        }                                                                                     \
        best * 1e9;                                                                           \
    })

#define R12(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)
#define FMA_Z(i) "vfmadd231ps %%zmm30,%%zmm31,%%zmm" #i "\n"
#define FMA_Y(i) "vfmadd231ps %%ymm14,%%ymm15,%%ymm" #i "\n"
#define DPBUSD_Z(i) "vpdpbusd %%zmm30,%%zmm31,%%zmm" #i "\n"
#define DPBUSD_Y(i) "%{vex%} vpdpbusd %%ymm14,%%ymm15,%%ymm" #i "\n"
#define DPBUSD_YE(i) "vpdpbusd %%ymm30,%%ymm31,%%ymm" #i "\n"
#define DPBF16_Z(i) "vdpbf16ps %%zmm30,%%zmm31,%%zmm" #i "\n"
#define PERMT2PS_Z(i) "vpermt2ps %%zmm30,%%zmm31,%%zmm" #i "\n"
#define PERMB_Z(i) "vpermb %%zmm30,%%zmm31,%%zmm" #i "\n"
#define PERMT2B_Z(i) "vpermt2b %%zmm30,%%zmm31,%%zmm" #i "\n"
#define PACKUSWB_Z(i) "vpackuswb %%zmm30,%%zmm31,%%zmm" #i "\n"

static double cycle_ns;

static void line(const char *name, const char *what, double ns) {
    printf("%-22s %6.3f ns  %5.2f per cycle  %s\n", name, ns, cycle_ns / ns, what);
}

__attribute__((target("avx512f"))) static void avx512f(void) {
    line("vfmadd231ps zmm", "16 f32 multiply-adds", TIME(R12(FMA_Z), 12));
    line("vpermt2ps zmm", "GELU / exp tables", TIME(R12(PERMT2PS_Z), 12));
}
__attribute__((target("avx2,fma"))) static void avx2(void) { line("vfmadd231ps ymm", "8 f32 multiply-adds", TIME(R12(FMA_Y), 12)); }
__attribute__((target("avx512bw"))) static void avx512bw(void) { line("vpackuswb zmm", "u8 packing", TIME(R12(PACKUSWB_Z), 12)); }
__attribute__((target("avx512vnni"))) static void avx512vnni(void) {
    line("vpdpbusd zmm", "64 u8 x i8 multiply-adds", TIME(R12(DPBUSD_Z), 12));
    line("vpdpbusd ymm (EVEX)", "32 u8 x i8 multiply-adds", TIME(R12(DPBUSD_YE), 12));
}
__attribute__((target("avxvnni"))) static void avxvnni(void) { line("vpdpbusd ymm (VEX)", "32 u8 x i8 multiply-adds", TIME(R12(DPBUSD_Y), 12)); }
__attribute__((target("avx512bf16"))) static void avx512bf16(void) { line("vdpbf16ps zmm", "32 bf16 multiply-adds", TIME(R12(DPBF16_Z), 12)); }
__attribute__((target("avx512vbmi"))) static void avx512vbmi(void) {
    line("vpermb zmm", "byte gathers (preprocessing)", TIME(R12(PERMB_Z), 12));
    line("vpermt2b zmm", "byte gathers (preprocessing)", TIME(R12(PERMT2B_Z), 12));
}

int main(void) {
    __builtin_cpu_init();
    cycle_ns = TIME("add $1,%%r8\n add $1,%%r8\n add $1,%%r8\n add $1,%%r8\n", 4);
    printf("dependent add: %.3f ns per cycle (%.2f GHz)\n", cycle_ns, 1.0 / cycle_ns);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) avx2();
    if (__builtin_cpu_supports("avx512f")) avx512f();
    if (__builtin_cpu_supports("avx512bw")) avx512bw();
    if (__builtin_cpu_supports("avx512vnni")) avx512vnni();
    if (__builtin_cpu_supports("avxvnni")) avxvnni();
    if (__builtin_cpu_supports("avx512bf16")) avx512bf16();
    if (__builtin_cpu_supports("avx512vbmi")) avx512vbmi();
    return 0;
}
