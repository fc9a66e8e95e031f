/* What one core's AMX tile unit sustains on this machine, per tile instruction (ns), for the
 * k-loop shapes of src/kernels/x86/amx.rs: tdpbusd alone, tile loads alone, and the 2 x 2 block
 * (2 A + 2 B tile loads and 4 tdpbusd per k step) with B from L1 or streamed through 110 KiB, and
 * the AVX-512 FMA rate (the f32 GEMMs' roofline).
 * Linux, AMX-INT8 CPU (Sapphire Rapids or later):
 *   gcc -O2 scripts/amx_microbench.c -o target/amx_microbench && target/amx_microbench
 * Each line is the median of 7 runs. The README's AMX notes quote it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct __attribute__((aligned(64))) tilecfg { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; };
static uint8_t A[64 * 1024] __attribute__((aligned(64)));
static uint8_t B[1 << 20] __attribute__((aligned(64)));

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

#define LOOP(body) do { long k = n; __asm__ volatile(body : "+r"(k) : "r"(a), "r"(b), "r"(lda), "r"(s64) : "memory"); } while (0)

static double run(int which, long n) {
    const uint8_t *a = A, *b = B; long lda = 192, s64 = 64;
    double t0 = now();
    switch (which) {
    case 0: LOOP("1: tdpbusd %%tmm6,%%tmm4,%%tmm0\n tdpbusd %%tmm7,%%tmm4,%%tmm1\n tdpbusd %%tmm6,%%tmm5,%%tmm2\n tdpbusd %%tmm7,%%tmm5,%%tmm3\n dec %0\n jnz 1b"); break;
    case 1: LOOP("1: tileloadd (%1,%3,1),%%tmm4\n tileloadd (%2,%4,1),%%tmm6\n tileloadd 64(%1,%3,1),%%tmm5\n tileloadd 1024(%2,%4,1),%%tmm7\n dec %0\n jnz 1b"); break;
    case 2: LOOP("1: tileloadd (%1,%3,1),%%tmm4\n tileloadd (%2,%4,1),%%tmm6\n tileloadd 64(%1,%3,1),%%tmm5\n tileloadd 1024(%2,%4,1),%%tmm7\n"
                 " tdpbusd %%tmm6,%%tmm4,%%tmm0\n tdpbusd %%tmm7,%%tmm4,%%tmm1\n tdpbusd %%tmm6,%%tmm5,%%tmm2\n tdpbusd %%tmm7,%%tmm5,%%tmm3\n dec %0\n jnz 1b"); break;
    case 3: { /* B streamed: each step reads the next 2 KiB of a 110 KiB buffer */
        long k = n; const uint8_t *bb = B; long off = 0;
        while (k--) {
            __asm__ volatile("tileloadd (%0,%2,1),%%tmm4\n tileloadd (%1,%3,1),%%tmm6\n tileloadd 64(%0,%2,1),%%tmm5\n tileloadd 1024(%1,%3,1),%%tmm7\n"
                             " tdpbusd %%tmm6,%%tmm4,%%tmm0\n tdpbusd %%tmm7,%%tmm4,%%tmm1\n tdpbusd %%tmm6,%%tmm5,%%tmm2\n tdpbusd %%tmm7,%%tmm5,%%tmm3"
                             :: "r"(a), "r"(bb + off), "r"(lda), "r"(s64) : "memory");
            off += 2048; if (off >= 110 * 1024) off = 0;
        }
        break; }
    case 4: { /* the f32 roofline: 12 independent AVX-512 FMA chains (32 FLOP each) */
        long k = n;
        __asm__ volatile("vxorps %%xmm12,%%xmm12,%%xmm12\n vxorps %%xmm13,%%xmm13,%%xmm13\n"
                         "1: vfmadd231ps %%zmm12,%%zmm13,%%zmm0\n vfmadd231ps %%zmm12,%%zmm13,%%zmm1\n vfmadd231ps %%zmm12,%%zmm13,%%zmm2\n"
                         " vfmadd231ps %%zmm12,%%zmm13,%%zmm3\n vfmadd231ps %%zmm12,%%zmm13,%%zmm4\n vfmadd231ps %%zmm12,%%zmm13,%%zmm5\n"
                         " vfmadd231ps %%zmm12,%%zmm13,%%zmm6\n vfmadd231ps %%zmm12,%%zmm13,%%zmm7\n vfmadd231ps %%zmm12,%%zmm13,%%zmm8\n"
                         " vfmadd231ps %%zmm12,%%zmm13,%%zmm9\n vfmadd231ps %%zmm12,%%zmm13,%%zmm10\n vfmadd231ps %%zmm12,%%zmm13,%%zmm11\n dec %0\n jnz 1b"
                         : "+r"(k) :: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13");
        return (now() - t0) / (n * 12.0) * 1e9; }
    }
    return (now() - t0) / n * 1e9 / 4;
}

int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) { fprintf(stderr, "the kernel did not grant the AMX tile state\n"); return 1; }
    struct tilecfg c; memset(&c, 0, sizeof c); c.palette = 1;
    for (int t = 0; t < 8; t++) { c.colsb[t] = 64; c.rows[t] = 16; }
    __asm__ volatile("ldtilecfg %0" :: "m"(c));
    memset(B, 1, sizeof B);
    const char *name[] = { "4 tdpbusd, no loads (ns per tdpbusd)", "4 tileloadd, no tdpbusd (ns per load)",
                           "2x2 step, B in L1 (ns per tdpbusd)", "2x2 step, B streamed (ns per tdpbusd)",
                           "AVX-512 FMA, 12 chains (ns per vfmadd)" };
    for (int w = 0; w < 5; w++) {
        double t[7];
        for (int r = 0; r < 7; r++) t[r] = run(w, 1000000);
        qsort(t, 7, sizeof t[0], cmp);
        printf("%-40s %6.3f", name[w], t[3]);
        if (w == 4) printf("   (f32 peak %.0f GFLOP/s)", 32.0 / t[3]);
        printf("\n");
    }
    __asm__ volatile("tilerelease");
    return 0;
}
