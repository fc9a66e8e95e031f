//! Edge cases of the aarch64 int8 kernels (neon widening multiplies, dotprod `sdot`, i8mm `usmmla`)
//! that random shapes reach only by chance: every row count of the micro-kernels' tails, every
//! k-group count up to 5 groups of 16 bytes (odd group counts pair with zeros in i8mm, 1–3 leftover
//! groups in dotprod), and the extreme operands (u8 0 / 255, i8 −128 / 127, zero points 0 / 255).
//! With the Store epilogue these kernels evaluate the reference's float expression in the same
//! order, so results must be bit-identical; `--kernels` names are checked too.
#![cfg(target_arch = "aarch64")]

use vitedge::blob::round_up;
use vitedge::kernels::{pack, Epilogue, GemmU8I8Args, Kernels};
use vitedge::model::synthetic::Rng;

fn check(m: usize, n: usize, k: usize, a_val: impl Fn(usize) -> u8, w_val: impl Fn(usize) -> i8, zero: i32) {
    let kp = round_up(k, 4);
    let lda = kp + 3;
    let a: Vec<u8> = (0..m * lda).map(&a_val).collect();
    let w: Vec<i8> = (0..n * k).map(&w_val).collect();
    let w_sum: Vec<i32> = w.chunks_exact(k).map(|r| r.iter().map(|&v| v as i32).sum()).collect();
    let wp = pack::panel16x4_from_rows(&w, n, k);
    let a_scale: Vec<f32> = (0..m).map(|i| 0.01 + i as f32 * 1e-3).collect();
    let a_zero = vec![zero; m];
    let w_scale: Vec<f32> = (0..n).map(|j| 0.002 + j as f32 * 1e-4).collect();
    let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
    let ldc = n + 1;
    let args = GemmU8I8Args { m, n, k, a: &a, lda, a_scale: &a_scale, a_zero: &a_zero, w: &wp, w_scale: &w_scale, w_sum: &w_sum, bias: Some(&bias), epilogue: Epilogue::Store };
    let mut want = vec![f32::NAN; m * ldc];
    Kernels::scalar().gemm_u8i8.gemm(&args, &mut want, ldc);
    for (name, kern) in Kernels::all_available() {
        let mut got = vec![f32::NAN; m * ldc];
        kern.gemm_u8i8.gemm(&args, &mut got, ldc);
        for i in 0..m {
            for j in 0..ldc {
                let (g, r) = (got[i * ldc + j], want[i * ldc + j]);
                // Columns ≥ n (the padding of each out row) must stay untouched (NaN).
                assert!(g.to_bits() == r.to_bits() || (g.is_nan() && r.is_nan()), "{name}: m={m} n={n} k={k} zero={zero} at ({i},{j}): {g} vs {r}");
            }
        }
    }
}

#[test]
fn int8_tails_and_extremes_are_bit_identical_to_scalar() {
    for m in 1..=9 {
        for k in (1..=20).chain([31, 32, 33, 64, 65, 77]) {
            for n in [1, 5, 16, 17, 33] {
                // Extremes: the largest products of both signs.
                check(m, n, k, |_| 255, |_| -128, 0);
                check(m, n, k, |_| 0, |_| -128, 255);
                check(m, n, k, |i| if i % 2 == 0 { 255 } else { 0 }, |i| if i % 3 == 0 { 127 } else { -128 }, 128);
            }
        }
    }
    let mut rng = Rng::new(7);
    for _ in 0..200 {
        let (m, n, k) = (1 + (rng.next_u64() % 12) as usize, 1 + (rng.next_u64() % 40) as usize, 1 + (rng.next_u64() % 100) as usize);
        let seed = rng.next_u64();
        let hash = move |i: usize| (seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 56;
        check(m, n, k, |i| hash(i) as u8, |i| hash(i + 1_000_003) as u8 as i8, (rng.next_u64() % 256) as i32);
    }
}

#[test]
fn every_detected_feature_has_its_kernel_set() {
    let names: Vec<&str> = Kernels::all_available().iter().map(|(n, _)| *n).collect();
    assert!(names.contains(&"neon"), "{names:?}");
    let has = |f: &str| Kernels::cpu_features().iter().any(|(n, on)| *n == f && *on);
    assert_eq!(names.contains(&"dotprod"), has("dotprod"), "{names:?}");
    assert_eq!(names.contains(&"i8mm"), has("i8mm"), "{names:?}");
    // `auto` is the first (fastest) set, and each name selects its own int8 kernel.
    assert_eq!(format!("{:?}", Kernels::auto()), format!("{:?}", Kernels::all_available()[1].1));
    for name in names.iter().filter(|n| **n != "scalar") {
        let k = Kernels::by_name(name).unwrap();
        assert_eq!(k.gemm_u8i8.name(), *name);
    }
    assert!(Kernels::by_name("sve2").unwrap_err().contains("available"));
}

mod kernel_checks;

#[test]
fn shared_checks_cover_every_leftover_group_count() {
    // k-group counts 1..=12 (every remainder of the dotprod 4-group step and of the i8mm pairs)
    // through the shared random check, each epilogue.
    for groups in 1..=12usize {
        for (ep, k) in [(0u8, 4 * groups), (1, 4 * groups - 1), (2, 4 * groups - 3)] {
            kernel_checks::gemm_u8i8(5, 20, k, 3, 1, true, ep, groups as u64).unwrap();
        }
    }
}
