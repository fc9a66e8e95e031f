#!/usr/bin/env python3
"""Coefficients of the AVX-512 GELU (`src/kernels/x86/avx512.rs`, `GELU_TABLE`): h(t) = t·(1 − Φ(t))
= t·erfc(t/√2)/2 on t ∈ [0, T] in 32 equal intervals, a degree-4 polynomial in the interval's local
coordinate u ∈ [0, 1) each, interpolated at Chebyshev nodes (near-minimax).
gelu(x) = x·Φ(x) = max(x, 0) − h(|x|) for either sign of x.

Pure Python (no numpy): `python3 scripts/fit_gelu.py` prints the Rust table and the largest error
of g and of gelu over a dense grid, with every coefficient rounded to f32 and the evaluation
rounded to f32 after every step, as the kernel runs it. `python3 scripts/fit_gelu.py 8 6` fits 8
intervals of degree 6 instead: the AVX2 set's `GELU8_TABLE` (`src/kernels/x86/avx2.rs`), whose 8
intervals are one `vpermps` table per coefficient.
"""
import math
import struct
import sys

T = 6.0
# Intervals and degree: 32 and 4 (AVX-512), or as given on the command line.
N = int(sys.argv[1]) if __name__ == "__main__" and len(sys.argv) > 1 else 32
DEG = int(sys.argv[2]) if __name__ == "__main__" and len(sys.argv) > 2 else 4


def f32(v):
    return struct.unpack("f", struct.pack("f", v))[0]


def g(t):
    return 0.5 * t * math.erfc(t / math.sqrt(2.0))


def solve(a, b):
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit():
    h = T / N
    table = []
    for i in range(N):
        nodes = [0.5 - 0.5 * math.cos((2 * j + 1) * math.pi / (2 * (DEG + 1))) for j in range(DEG + 1)]
        a = [[u ** p for p in range(DEG + 1)] for u in nodes]
        b = [g((i + u) * h) for u in nodes]
        table.append([f32(c) for c in solve(a, b)])
    return table


def eval_gelu(x, table):
    """The kernel's arithmetic: t = |x|, m = min(t·(N/T), N − 2^-18), idx = trunc(m), u = m − idx
    (exact), Horner with fused multiply-adds, then max(x, 0) − h."""
    s = f32(N / T)
    t = abs(x)
    m = min(f32(t * s), f32(N - 2.0 ** -18))
    i = int(m)
    u = f32(m - i)
    c = table[i]
    p = c[DEG]
    for k in range(DEG - 1, -1, -1):
        p = f32(p * u + c[k])
    return f32(max(x, 0.0) - p), p


def main():
    table = fit()
    worst_g = worst_gelu = 0.0
    at = None
    for k in range(-700000, 700001):
        x = f32(k * 1e-5)
        y, p = eval_gelu(x, table)
        want = 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))
        worst_g = max(worst_g, abs(p - g(abs(x))))
        err = abs(y - want) / (1.0 + abs(want))
        if err > worst_gelu:
            worst_gelu, at = err, x
    print(f"// T = {T}, {N} intervals, degree {DEG}: max |h error| {worst_g:.3e}, max |gelu error| / (1 + |gelu|) {worst_gelu:.3e} at x = {at}")
    name = "GELU_TABLE" if (N, DEG) == (32, 4) else "GELU8_TABLE" if N == 8 else f"GELU_TABLE_{N}_{DEG}"
    print(f"static {name}: [[f32; {N}]; {DEG + 1}] = [")
    for p in range(DEG + 1):
        print(f"    // u^{p}")
        print("    [" + ", ".join(repr(table[i][p]) for i in range(N)) + "],")
    print("];")


if __name__ == "__main__":
    main()
