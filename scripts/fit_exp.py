#!/usr/bin/env python3
"""Coefficients of the AVX-512 softmax exponential (`src/kernels/x86/avx512.rs`, `exp16_nonpositive`):
exp(x) for x ≤ 0 as 2^n · p(r), n = round(x·log2 e), r = x − n·ln 2 (one f32 FMA, ln 2 rounded to
f32), p a degree-DEG polynomial interpolated at Chebyshev nodes of [−ln2/2, ln2/2] (near-minimax).

Pure Python: `python3 scripts/fit_exp.py [DEG]` prints the Rust coefficients and the largest relative
error over a dense grid of x in [−87, 0], every coefficient rounded to f32 and every step of the
evaluation rounded to f32 as the kernel runs it (FMAs rounded once).
"""
import math
import sys

from fit_gelu import f32, solve  # the same f32 rounding and linear solver (this directory)

DEG = int(sys.argv[1]) if len(sys.argv) > 1 else 5
LN2 = math.log(2.0)


def fit():
    h = LN2 / 2
    nodes = [h * math.cos(math.pi * (2 * i + 1) / (2 * (DEG + 1))) for i in range(DEG + 1)]
    a = [[r ** j for j in range(DEG + 1)] for r in nodes]
    return [f32(c) for c in solve(a, [math.exp(r) for r in nodes])]


def kernel(x, c):
    log2e, ln2 = f32(1.0 / LN2), f32(LN2)
    n = float(round(f32(x * log2e)))  # roundscale: nearest even, ties are measure-zero here
    r = f32(x - n * ln2)  # one FMA
    p = c[DEG]
    for j in range(DEG - 1, -1, -1):
        p = f32(p * r + c[j])  # FMA
    return p * 2.0 ** n  # scalef is exact


def main():
    c = fit()
    worst, at = 0.0, 0.0
    steps = 400_000
    for i in range(steps + 1):
        x = f32(-87.0 * i / steps)
        want = math.exp(x)
        err = abs(kernel(x, c) - want) / want
        if err > worst:
            worst, at = err, x
    print(f"// degree {DEG}: largest relative error {worst:.3g} (at x = {at})")
    print("const EXP_COEFFS: [f32; %d] = [%s];" % (DEG + 1, ", ".join(repr(v) for v in c)))


if __name__ == "__main__":
    main()
