/* Checks the rounding of the AVX2 quantizers (src/kernels/x86/avx2.rs, `half_away8`): for every
 * finite f32 q, truncating q + copysign(0.49999997f, q) (the largest f32 below one half) gives
 * roundf(q), ties away from zero. All 2^32 bit patterns, about 20 s:
 *
 *     gcc -O2 scripts/check_half_away.c -o target/check_half_away -lm && target/check_half_away
 *
 * (x86-64 evaluates f32 arithmetic in SSE registers, each step rounded to f32, as the kernel does.)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    const float below_half = 0.49999997f;
    uint64_t checked = 0, mismatches = 0;
    for (uint64_t u = 0; u <= 0xffffffffull; u++) {
        uint32_t bits = (uint32_t)u;
        float q;
        memcpy(&q, &bits, sizeof q);
        if (!isfinite(q)) continue;
        checked++;
        float want = roundf(q), got = truncf(q + copysignf(below_half, q));
        if (want != got) {
            if (mismatches < 5) printf("q = %.9g: roundf %.9g, trick %.9g\n", q, want, got);
            mismatches++;
        }
    }
    printf("%llu finite values checked, %llu mismatches (%.9g is the largest f32 below 0.5: %s)\n",
           (unsigned long long)checked, (unsigned long long)mismatches, below_half,
           below_half == nextafterf(0.5f, 0.0f) ? "yes" : "NO");
    return mismatches != 0 || below_half != nextafterf(0.5f, 0.0f);
}
