//! AMX int8 GEMM (Intel Advanced Matrix Extensions: AMX-TILE + AMX-INT8, Sapphire Rapids and later).
//!
//! `tdpbusd` multiplies a 16 × 64-byte u8 tile of activations by a 16-row × 64-byte i8 tile laid
//! out as 16 groups of (4 k-bytes × 16 columns) — which is exactly one 1 KiB slice of a
//! `Panel16x4` panel, so the blob's weights are loaded as AMX tiles with a 64-byte stride, no
//! repacking. A block of 32 rows × 32 columns keeps four i32 accumulator tiles; the k loop runs in
//! assembly (the tile instructions have no stable Rust intrinsics). Sums leave the tiles through a
//! 4 KiB stack buffer and are finished with the AVX-512 epilogue; ragged k (a tail of fewer than 64
//! bytes) is added with AVX-512 VNNI, so results are exact integers like the scalar reference. The
//! last `m % 16` rows are copied into one zero-padded tile (`RaggedRows`) and run on AMX too.
//!
//! With AMX-BF16, `tdpbf16ps` runs the bf16 GEMM (linear layers of bf16 blobs, attention) the same
//! way: a B tile of 16 pair rows × 16 columns × 2 bf16 is one 1 KiB slice of a `Panel16x2` panel;
//! ragged rows as above, the k tail through the AVX512-BF16 kernel.
//!
//! The other kinds of this set (f32 / f16 GEMM, element-wise) are the AVX-512 kernels.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::avx512::{finish16, finish_u8i8, gelu16, gemm_u8i8_rows, tail_mask, Avx512, PanelQuant};
use super::avx512bf16::{self, gemm_bf16_rows, Avx512Bf16};
use half::bf16;
use crate::blob::round_up;
use crate::kernels::{Epilogue, GemmBf16, GemmBf16Args, GemmU8I8, GemmU8I8Args, VectorOps};

/// AMX int8 GEMM. Construct only through [`Amx::detect`].
pub struct Amx(());

/// `arch_prctl` request for permission to use an extended state component (Linux ≥ 5.16).
const ARCH_REQ_XCOMP_PERM: libc::c_int = 0x1023;
/// The AMX tile data state component.
const XFEATURE_XTILEDATA: libc::c_ulong = 18;

impl Amx {
    /// The kernel if the CPU has AMX-TILE, AMX-INT8 and the AVX-512 set, and the kernel grants this
    /// process the AMX state (asked once).
    pub fn detect() -> Option<&'static Amx> {
        static OK: OnceLock<bool> = OnceLock::new();
        static K: Amx = Amx(());
        let ok = *OK.get_or_init(|| {
            // CPUID leaf 7 exists on every x86-64 CPU with AVX-512 (checked first).
            let cpu = Avx512::detect().is_some() && {
                let r = __cpuid_count(7, 0);
                r.edx & (1 << 24) != 0 && r.edx & (1 << 25) != 0
            };
            if !cpu {
                return false;
            }
            // SAFETY: a plain system call with integer arguments; it only changes which extended
            // state the kernel lets this process use.
            let granted = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) } == 0;
            if !granted {
                log::info!("CPU has AMX but the kernel did not grant the tile state; using AVX-512 VNNI");
            }
            granted
        });
        ok.then_some(&K)
    }
}

/// Tile configuration (palette 1): every tile used is 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    /// tmm0–3: i32 accumulators (16 × 16), tmm4–5: activations (16 × 64 u8), tmm6–7: weights.
    fn full() -> TileConfig {
        let mut c = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        for t in 0..8 {
            c.colsb[t] = 64;
            c.rows[t] = 16;
        }
        c
    }
}

/// Four 16 × 16 accumulator tiles (i32 or f32) stored for the epilogue.
#[repr(C, align(64))]
struct Sums<T>([[T; 256]; 4]);

/// Runs the k loop of one block with `$rows` 16-row tiles × `$cols` panels of the tile multiply
/// `$op` (`tdpbusd` or `tdpbf16ps`; both take 64-byte rows) and stores the sums.
macro_rules! amx_block {
    ($op:literal, 2, 2, $a0:expr, $a1:expr, $b0:expr, $b1:expr, $lda:expr, $steps:expr, $sums:expr) => {
        asm!(
            "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {s64}*1]",
            "tileloadd tmm5, [{a1} + {lda}*1]",
            "tileloadd tmm7, [{b1} + {s64}*1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            concat!($op, " tmm1, tmm4, tmm7"),
            concat!($op, " tmm2, tmm5, tmm6"),
            concat!($op, " tmm3, tmm5, tmm7"),
            "add {a0}, 64", "add {a1}, 64", "add {b0}, 1024", "add {b1}, 1024",
            "dec {n}", "jnz 2b",
            "tilestored [{c} + {s64}*1], tmm0",
            "add {c}, 1024", "tilestored [{c} + {s64}*1], tmm1",
            "add {c}, 1024", "tilestored [{c} + {s64}*1], tmm2",
            "add {c}, 1024", "tilestored [{c} + {s64}*1], tmm3",
            a0 = inout(reg) $a0 => _, a1 = inout(reg) $a1 => _, b0 = inout(reg) $b0 => _, b1 = inout(reg) $b1 => _,
            n = inout(reg) $steps => _, c = inout(reg) $sums => _, lda = in(reg) $lda, s64 = in(reg) 64usize,
            options(nostack),
        )
    };
    ($op:literal, 2, 1, $a0:expr, $a1:expr, $b0:expr, $lda:expr, $steps:expr, $sums:expr) => {
        asm!(
            "tilezero tmm0", "tilezero tmm2",
            "2:",
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {s64}*1]",
            "tileloadd tmm5, [{a1} + {lda}*1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            concat!($op, " tmm2, tmm5, tmm6"),
            "add {a0}, 64", "add {a1}, 64", "add {b0}, 1024",
            "dec {n}", "jnz 2b",
            "tilestored [{c} + {s64}*1], tmm0",
            "add {c}, 2048", "tilestored [{c} + {s64}*1], tmm2",
            a0 = inout(reg) $a0 => _, a1 = inout(reg) $a1 => _, b0 = inout(reg) $b0 => _,
            n = inout(reg) $steps => _, c = inout(reg) $sums => _, lda = in(reg) $lda, s64 = in(reg) 64usize,
            options(nostack),
        )
    };
    ($op:literal, 1, 2, $a0:expr, $b0:expr, $b1:expr, $lda:expr, $steps:expr, $sums:expr) => {
        asm!(
            "tilezero tmm0", "tilezero tmm1",
            "2:",
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {s64}*1]",
            "tileloadd tmm7, [{b1} + {s64}*1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            concat!($op, " tmm1, tmm4, tmm7"),
            "add {a0}, 64", "add {b0}, 1024", "add {b1}, 1024",
            "dec {n}", "jnz 2b",
            "tilestored [{c} + {s64}*1], tmm0",
            "add {c}, 1024", "tilestored [{c} + {s64}*1], tmm1",
            a0 = inout(reg) $a0 => _, b0 = inout(reg) $b0 => _, b1 = inout(reg) $b1 => _,
            n = inout(reg) $steps => _, c = inout(reg) $sums => _, lda = in(reg) $lda, s64 = in(reg) 64usize,
            options(nostack),
        )
    };
    ($op:literal, 1, 1, $a0:expr, $b0:expr, $lda:expr, $steps:expr, $sums:expr) => {
        asm!(
            "tilezero tmm0",
            "2:",
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {s64}*1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            "add {a0}, 64", "add {b0}, 1024",
            "dec {n}", "jnz 2b",
            "tilestored [{c} + {s64}*1], tmm0",
            a0 = inout(reg) $a0 => _, b0 = inout(reg) $b0 => _,
            n = inout(reg) $steps => _, c = inout(reg) $sums => _, lda = in(reg) $lda, s64 = in(reg) 64usize,
            options(nostack),
        )
    };
}

/// The tile multiply a GEMM runs: `tdpbusd` (u8 × i8 → i32) or `tdpbf16ps` (bf16 pairs → f32).
#[derive(Clone, Copy)]
enum TileOp {
    U8I8,
    Bf16,
}

/// Walks `row_tiles` 16-row tiles × `panels` 16-column panels in blocks of up to 2 × 2 tiles: per
/// block, `steps` tile multiplies `op` (64 bytes of each A row and 1 KiB of each panel per step) into
/// the four accumulator tiles, which are stored and handed to `finish(sums, first row, row tiles,
/// first panel, panels)`. Configures the tiles before and releases them after.
///
/// # Safety
/// AMX (with `op`'s extension) must be available with the tile state granted; `a` must be valid for
/// `16·row_tiles` rows of `64·steps` bytes `lda` bytes apart and `w` for `panels` panels of
/// `steps` KiB, `panel_bytes` apart; `finish` must be sound for every block.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn walk_blocks<T: Copy + Default>(
    op: TileOp,
    row_tiles: usize,
    panels: usize,
    a: *const u8,
    lda: usize,
    w: *const u8,
    panel_bytes: usize,
    steps: usize,
    mut finish: impl FnMut(&Sums<T>, usize, usize, usize, usize),
) {
    let cfg = TileConfig::full();
    let mut sums = Sums([[T::default(); 256]; 4]);
    // SAFETY (whole body): the caller's contract; the configuration is a valid palette-1 layout and
    // the stores write tiles·panels KiB of the 4 KiB `sums`.
    unsafe {
        asm!("ldtilecfg [{0}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly));
        // Row tiles outside, panels inside: the two A tiles' rows (strided, 16 rows lda apart) stay
        // in L1 while the panels (contiguous, prefetched) stream past them.
        let mut rt = 0;
        while rt < row_tiles {
            let tiles = (row_tiles - rt).min(2);
            // The second tile's pointers are only formed (wrapping) and used when that tile exists.
            let (a0, a1) = (a.add(rt * 16 * lda), a.wrapping_add((rt + 1) * 16 * lda));
            let mut p0 = 0;
            while p0 < panels {
                let cols = (panels - p0).min(2);
                let (b0, b1) = (w.add(p0 * panel_bytes), w.wrapping_add((p0 + 1) * panel_bytes));
                let c = sums.0.as_mut_ptr();
                match (op, tiles, cols) {
                    (TileOp::U8I8, 2, 2) => amx_block!("tdpbusd", 2, 2, a0, a1, b0, b1, lda, steps, c),
                    (TileOp::U8I8, 2, _) => amx_block!("tdpbusd", 2, 1, a0, a1, b0, lda, steps, c),
                    (TileOp::U8I8, _, 2) => amx_block!("tdpbusd", 1, 2, a0, b0, b1, lda, steps, c),
                    (TileOp::U8I8, _, _) => amx_block!("tdpbusd", 1, 1, a0, b0, lda, steps, c),
                    (TileOp::Bf16, 2, 2) => amx_block!("tdpbf16ps", 2, 2, a0, a1, b0, b1, lda, steps, c),
                    (TileOp::Bf16, 2, _) => amx_block!("tdpbf16ps", 2, 1, a0, a1, b0, lda, steps, c),
                    (TileOp::Bf16, _, 2) => amx_block!("tdpbf16ps", 1, 2, a0, b0, b1, lda, steps, c),
                    (TileOp::Bf16, _, _) => amx_block!("tdpbf16ps", 1, 1, a0, b0, lda, steps, c),
                }
                finish(&sums, rt * 16, tiles, p0, cols);
                p0 += cols;
            }
            rt += tiles;
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}

/// Longest A row (bytes of the tile steps) whose ragged rows [`RaggedRows`] can hold: k ≤ 4096 for
/// int8, ≤ 2048 for bf16; longer rows leave their ragged rows to the AVX-512 kernels.
const RAGGED_ROW_BYTES: usize = 4096;

/// The last `m % 16` rows of an A operand copied into one zero-padded 16-row tile, so the tile
/// multiplies cover them too (the AVX-512 kernels, which ran them before, took as long for 5 rows
/// as AMX takes for 208).
/// Only the `16 · row_bytes` bytes a fill writes are ever read.
#[repr(C, align(64))]
struct RaggedRows(std::mem::MaybeUninit<[u8; 16 * RAGGED_ROW_BYTES]>);

impl RaggedRows {
    fn new() -> Self {
        RaggedRows(std::mem::MaybeUninit::uninit())
    }

    /// Copies rows `first..first + rows` (`row_bytes` each, `lda` bytes apart) of `a` into the
    /// tile's first rows and zeroes the rest of its 16 rows; returns the tile (row stride
    /// `row_bytes`), or `None` when the rows are longer than the buffer.
    ///
    /// # Safety
    /// `a` must be valid for those rows.
    unsafe fn fill(&mut self, a: *const u8, lda: usize, first: usize, rows: usize, row_bytes: usize) -> Option<*const u8> {
        if row_bytes > RAGGED_ROW_BYTES || rows >= 16 {
            return None;
        }
        let t = self.0.as_mut_ptr() as *mut u8;
        // SAFETY: the caller's contract for the source; 16 rows of `row_bytes` ≤ the buffer.
        unsafe {
            for r in 0..rows {
                std::ptr::copy_nonoverlapping(a.add((first + r) * lda), t.add(r * row_bytes), row_bytes);
            }
            std::ptr::write_bytes(t.add(rows * row_bytes), 0, (16 - rows) * row_bytes);
        }
        Some(t)
    }
}

/// Finishes a block: adds the k tail with VNNI, dequantizes, applies the epilogue, stores.
///
/// # Safety
/// Rows `row0 .. row0 + 16·row_tiles` and panels `p0 .. p0 + panels` are inside the operands
/// (checked by [`GemmU8I8Args::check`](crate::kernels::GemmU8I8Args::check)); sums of row tile `rt` and panel `p` are in `sums.0[rt·2 + p]`.
/// Rows from `row_end` on (the padding of a ragged tile) are not stored.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_block(args: &GemmU8I8Args<'_>, sums: &Sums<i32>, row0: usize, row_tiles: usize, row_end: usize, p0: usize, panels: usize, out: *mut f32, ldc: usize) {
    let groups = round_up(args.k, 4) / 4;
    let first_tail = groups / 16 * 16;
    let q = PanelQuant::load(args, p0, panels);
    if first_tail == groups {
        let rows = row_end.min(row0 + 16 * row_tiles) - row0;
        let exact = 4 * groups <= EXACT_F32_K;
        // SAFETY: the caller's contract, for rows row0..row0 + rows and the block's panels.
        unsafe {
            match (args.epilogue, exact) {
                (Epilogue::Store, true) => finish_tiles::<STORE, true>(args, sums, &q, row0, rows, p0, panels, out, ldc),
                (Epilogue::Store, false) => finish_tiles::<STORE, false>(args, sums, &q, row0, rows, p0, panels, out, ldc),
                (Epilogue::Accumulate, true) => finish_tiles::<ACCUMULATE, true>(args, sums, &q, row0, rows, p0, panels, out, ldc),
                (Epilogue::Accumulate, false) => finish_tiles::<ACCUMULATE, false>(args, sums, &q, row0, rows, p0, panels, out, ldc),
                (Epilogue::Gelu, true) => finish_tiles::<GELU, true>(args, sums, &q, row0, rows, p0, panels, out, ldc),
                (Epilogue::Gelu, false) => finish_tiles::<GELU, false>(args, sums, &q, row0, rows, p0, panels, out, ldc),
            }
        }
        return;
    }
    for rt in 0..row_tiles {
        for r in 0..16 {
            let row = row0 + rt * 16 + r;
            if row >= row_end {
                break;
            }
            for p in 0..panels {
                // SAFETY: row < m and panel p0 + p < ceil(n/16) (the caller's contract); the sums
                // buffer holds 16 rows of 16 i32 per tile.
                unsafe {
                    let mut acc = _mm512_load_si512(sums.0[rt * 2 + p].as_ptr().add(r * 16) as *const __m512i);
                    let arow = args.a.as_ptr().add(row * args.lda);
                    let panel = args.w.as_ptr().add((p0 + p) * 64 * groups);
                    for g in first_tail..groups {
                        let a4 = _mm512_set1_epi32(std::ptr::read_unaligned(arow.add(g * 4) as *const i32));
                        acc = _mm512_dpbusd_epi32(acc, a4, _mm512_loadu_si512(panel.add(g * 64) as *const __m512i));
                    }
                    finish_u8i8(acc, args.a_scale[row], args.a_zero[row], &q, p, out.add(row * ldc + (p0 + p) * 16), args.epilogue);
                }
            }
        }
    }
}

/// Largest padded k for which every int8 sum of a tile, its zero-point correction `zero · Σw` and
/// the corrected sum are integers below 2^24 in magnitude (each is at most 255 · 128 · k, with
/// u8 zero points in 0..=255), so that f32 arithmetic on them is exact and equals the i32
/// arithmetic of the reference.
const EXACT_F32_K: usize = (1 << 24) / (255 * 128);

/// The epilogues as const parameters of [`finish_tiles`] and [`store_tiles`] (one compiled loop
/// each).
const STORE: u8 = 0;
const ACCUMULATE: u8 = 1;
const GELU: u8 = 2;

/// The epilogue of const parameter `e`.
const fn epilogue_of(e: u8) -> Epilogue {
    match e {
        STORE => Epilogue::Store,
        ACCUMULATE => Epilogue::Accumulate,
        _ => Epilogue::Gelu,
    }
}

/// [`finish_block`] without a k tail: panel by panel, row by row, with the panel's data in
/// registers and the epilogue fixed at compile time. With `EXACT` (k ≤ [`EXACT_F32_K`]) the zero
/// point is subtracted in f32 (one fused multiply-add instead of the i32 multiply and subtract of
/// [`finish_u8i8`], which runs otherwise); the results are the same bits either way.
///
/// # Safety
/// As [`finish_block`], for rows `row0..row0 + rows` (at most `16 · 2`, two tiles).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_tiles<const E: u8, const EXACT: bool>(args: &GemmU8I8Args<'_>, sums: &Sums<i32>, q: &PanelQuant, row0: usize, rows: usize, p0: usize, panels: usize, out: *mut f32, ldc: usize) {
    let epilogue = epilogue_of(E);
    let (a_scale, a_zero) = (&args.a_scale[row0..row0 + rows], &args.a_zero[row0..row0 + rows]);
    debug_assert!(!EXACT || a_zero.iter().all(|z| (0..=255).contains(z)), "u8 zero points lie in 0..=255");
    for p in 0..panels {
        let (w_scale, bias, mask) = (q.scale[p], q.bias[p], q.masks[p]);
        let w_sum_f = _mm512_cvtepi32_ps(q.sum[p]);
        let dst = out.wrapping_add(row0 * ldc + (p0 + p) * 16);
        for (r, (&sc, &z)) in a_scale.iter().zip(a_zero).enumerate() {
            // SAFETY: the sums buffer holds two tiles of 16 rows of 16 i32 per panel; `dst` rows
            // are the caller's.
            unsafe {
                let acc = _mm512_load_si512(sums.0[(r / 16) * 2 + p].as_ptr().add((r % 16) * 16) as *const __m512i);
                if EXACT {
                    let corrected = _mm512_fnmadd_ps(_mm512_set1_ps(z as f32), w_sum_f, _mm512_cvtepi32_ps(acc));
                    let v = _mm512_fmadd_ps(corrected, _mm512_mul_ps(_mm512_set1_ps(sc), w_scale), bias);
                    finish16(v, dst.add(r * ldc), mask, epilogue);
                } else {
                    finish_u8i8(acc, sc, z, q, p, dst.add(r * ldc), epilogue);
                }
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
fn gemm_amx(args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
    args.check(out, ldc);
    let GemmU8I8Args { m, n, k, a, lda, w, .. } = *args;
    let groups = round_up(k, 4) / 4;
    let steps = groups / 16;
    let row_tiles = m / 16;
    if steps == 0 || row_tiles == 0 {
        gemm_u8i8_rows(args, 0..m, out, ldc);
        return;
    }
    let op = out.as_mut_ptr();
    // SAFETY: the A tiles cover rows below row_tiles·16 ≤ m and 64·steps ≤ kp bytes of each (lda
    // apart), the B tiles 1 KiB × steps of panels below ceil(n/16) (lengths checked); `finish_block`
    // writes rows below m and columns below n of `out`.
    unsafe {
        walk_blocks::<i32>(TileOp::U8I8, row_tiles, n.div_ceil(16), a.as_ptr(), lda, w.as_ptr() as *const u8, 64 * groups, steps, |sums, row0, tiles, p0, panels| {
            finish_block(args, sums, row0, tiles, m, p0, panels, op, ldc)
        })
    };
    let first = row_tiles * 16;
    if first < m {
        let mut tile = RaggedRows::new();
        // SAFETY: rows first..m of `a` hold ≥ 64·steps bytes (checked); the padded tile is 16 rows
        // of 64·steps bytes; `finish_block` stores rows below m only.
        match unsafe { tile.fill(a.as_ptr(), lda, first, m - first, 64 * steps) } {
            Some(t) => unsafe {
                walk_blocks::<i32>(TileOp::U8I8, 1, n.div_ceil(16), t, 64 * steps, w.as_ptr() as *const u8, 64 * groups, steps, |sums, _, _, p0, panels| {
                    finish_block(args, sums, first, 1, m, p0, panels, op, ldc)
                })
            },
            None => gemm_u8i8_rows(args, first..m, out, ldc),
        }
    }
}

impl GemmU8I8 for Amx {
    fn name(&self) -> &'static str {
        "amx"
    }
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `Amx` value exists only when `detect` found AMX and the AVX-512 set and the
        // kernel granted the tile state.
        unsafe { gemm_amx(args, out, ldc) }
    }
}

/// AMX bf16 GEMM (attention of int8 models). Construct only through [`AmxBf16::detect`].
pub struct AmxBf16(());

impl AmxBf16 {
    /// The kernel if [`Amx::detect`] succeeds and the CPU also has AMX-BF16 and AVX512-BF16.
    pub fn detect() -> Option<&'static AmxBf16> {
        static K: AmxBf16 = AmxBf16(());
        // CPUID leaf 7 exists: `Amx::detect` read it.
        let ok = Amx::detect().is_some() && Avx512Bf16::detect().is_some() && __cpuid_count(7, 0).edx & (1 << 22) != 0;
        ok.then_some(&K)
    }
}

/// Finishes the f32 sums of a `tiles` × `panels` block into rows `row0..` of `out` (columns masked
/// below n): adds `bias` and applies `epilogue`.
///
/// # Safety
/// The block's rows and columns below n are inside `out` (row stride `ldc`); `bias`, when given,
/// holds ≥ n values. Only the first `rows` rows of the block are stored (fewer than `16·tiles` for
/// a ragged tile).
#[target_feature(enable = "avx512f,avx512dq")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_block(sums: &Sums<f32>, row0: usize, tiles: usize, rows: usize, col0: usize, panels: usize, n: usize, bias: Option<&[f32]>, epilogue: Epilogue, out: *mut f32, ldc: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        match epilogue {
            Epilogue::Store => store_tiles::<STORE>(sums, row0, tiles, rows, col0, panels, n, bias, out, ldc),
            Epilogue::Accumulate => store_tiles::<ACCUMULATE>(sums, row0, tiles, rows, col0, panels, n, bias, out, ldc),
            Epilogue::Gelu => store_tiles::<GELU>(sums, row0, tiles, rows, col0, panels, n, bias, out, ldc),
        }
    }
}

/// [`store_block`] with the epilogue fixed at compile time (one compiled loop each).
///
/// # Safety
/// As [`store_block`].
#[target_feature(enable = "avx512f,avx512dq")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_tiles<const E: u8>(sums: &Sums<f32>, row0: usize, tiles: usize, rows: usize, col0: usize, panels: usize, n: usize, bias: Option<&[f32]>, out: *mut f32, ldc: usize) {
    let epilogue = epilogue_of(E);
    for p in 0..panels {
        let mask = tail_mask(n - col0 - p * 16);
        // SAFETY: the masked load reads bias lanes below n.
        let bv = bias.map_or(_mm512_setzero_ps(), |b| unsafe { _mm512_maskz_loadu_ps(mask, b.as_ptr().add(col0 + p * 16)) });
        for rt in 0..tiles {
            for r in 0..16.min(rows.saturating_sub(rt * 16)) {
                // SAFETY: the sums tile holds 16 rows of 16 f32; the destination is the caller's.
                unsafe {
                    let v = _mm512_add_ps(_mm512_load_ps(sums.0[rt * 2 + p].as_ptr().add(r * 16)), bv);
                    finish16(v, out.add((row0 + rt * 16 + r) * ldc + col0 + p * 16), mask, epilogue);
                }
            }
        }
    }
}

/// [`store_block`] into bf16 rows for [`gemm_amx_bf16_to_bf16`] (`Store` or `Gelu`).
///
/// # Safety
/// As [`store_block`], with `out` a bf16 buffer.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_block_bf16(sums: &Sums<f32>, row0: usize, tiles: usize, rows: usize, col0: usize, panels: usize, n: usize, bias: Option<&[f32]>, epilogue: Epilogue, out: *mut bf16, ldc: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        match epilogue {
            Epilogue::Gelu => store_tiles_bf16::<GELU>(sums, row0, tiles, rows, col0, panels, n, bias, out, ldc),
            _ => store_tiles_bf16::<STORE>(sums, row0, tiles, rows, col0, panels, n, bias, out, ldc),
        }
    }
}

/// [`store_tiles`] rounding each finished value to bf16 (nearest even, as `convert_rows`); a row's
/// two panels are rounded by one `vcvtne2ps2bf16` and stored together.
///
/// # Safety
/// As [`store_block`], with `out` a bf16 buffer.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_tiles_bf16<const E: u8>(sums: &Sums<f32>, row0: usize, tiles: usize, rows: usize, col0: usize, panels: usize, n: usize, bias: Option<&[f32]>, out: *mut bf16, ldc: usize) {
    debug_assert!((1..=2).contains(&panels), "a block has one or two panels");
    let masks: [__mmask16; 2] = std::array::from_fn(|p| if p < panels { tail_mask(n - col0 - p * 16) } else { 0 });
    // SAFETY: the masked loads read bias lanes below n.
    let bv: [__m512; 2] = std::array::from_fn(|p| bias.map_or(_mm512_setzero_ps(), |b| unsafe { _mm512_maskz_loadu_ps(masks[p], b.as_ptr().add(col0 + p * 16)) }));
    let mask = masks[0] as u32 | (masks[1] as u32) << 16;
    let finish = |v: __m512| if E == GELU { gelu16(v) } else { v };
    for rt in 0..tiles {
        for r in 0..16.min(rows.saturating_sub(rt * 16)) {
            // SAFETY: the sums tiles hold 16 rows of 16 f32 per panel (the second is only read when
            // there are two); the masked store writes columns below n of a destination row the
            // caller owns; `__m512bh` and `__m512i` have the same size.
            unsafe {
                let v0 = finish(_mm512_add_ps(_mm512_load_ps(sums.0[rt * 2].as_ptr().add(r * 16)), bv[0]));
                let v1 = if panels == 2 { finish(_mm512_add_ps(_mm512_load_ps(sums.0[rt * 2 + 1].as_ptr().add(r * 16)), bv[1])) } else { _mm512_setzero_ps() };
                let h = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(v1, v0));
                _mm512_mask_storeu_epi16(out.add((row0 + rt * 16 + r) * ldc + col0) as *mut i16, mask, h);
            }
        }
    }
}

/// [`GemmBf16::gemm_to_bf16`] on the tiles: only where every row goes through them (k a whole
/// number of tile steps, at least one full row tile, ragged rows that fit [`RaggedRows`]) and the
/// epilogue is not `Accumulate`; `false` otherwise.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
fn gemm_amx_bf16_to_bf16(args: &GemmBf16Args<'_>, out: &mut [bf16], ldc: usize) -> bool {
    let kp = args.check_len(out.len(), ldc);
    let GemmBf16Args { m, n, a, lda, w, bias, epilogue, .. } = *args;
    let (pairs, row_tiles) = (kp / 2, m / 16);
    let steps = pairs / 16;
    if epilogue == Epilogue::Accumulate || steps == 0 || row_tiles == 0 || steps * 16 < pairs || 64 * steps > RAGGED_ROW_BYTES {
        return false;
    }
    let op = out.as_mut_ptr();
    let (a, w) = (a.as_ptr() as *const u8, w.as_ptr() as *const u8);
    // SAFETY: as in `gemm_amx_bf16` (the same operands, checked by `check_len`); `store_block_bf16`
    // writes rows below m and columns below n of `out`.
    unsafe {
        walk_blocks::<f32>(TileOp::Bf16, row_tiles, n.div_ceil(16), a, 2 * lda, w, 32 * kp, steps, |sums, row0, tiles, p0, panels| {
            store_block_bf16(sums, row0, tiles, 16 * tiles, p0 * 16, panels, n, bias, epilogue, op, ldc)
        });
        let first = row_tiles * 16;
        if first < m {
            let mut tile = RaggedRows::new();
            let t = tile.fill(a, 2 * lda, first, m - first, 64 * steps).expect("fewer than 16 rows of at most RAGGED_ROW_BYTES (checked above)");
            walk_blocks::<f32>(TileOp::Bf16, 1, n.div_ceil(16), t, 64 * steps, w, 32 * kp, steps, |sums, _, _, p0, panels| {
                store_block_bf16(sums, first, 1, m - first, p0 * 16, panels, n, bias, epilogue, op, ldc)
            });
        }
    }
    true
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
fn gemm_amx_bf16(args: &GemmBf16Args<'_>, out: &mut [f32], ldc: usize) {
    let kp = args.check(out, ldc);
    let GemmBf16Args { m, n, a, lda, w, bias, epilogue, .. } = *args;
    let pairs = kp / 2;
    let steps = pairs / 16;
    let row_tiles = m / 16;
    let k_tail = steps * 16 < pairs;
    // A k tail is added after the tiles are stored, so only a plain store can take one (every
    // ViT width is a multiple of 32: linear layers never have a tail).
    let plain = bias.is_none() && epilogue == Epilogue::Store;
    if steps == 0 || row_tiles == 0 || (k_tail && !plain) {
        // SAFETY: checked above; `detect` found AVX512-BF16.
        unsafe { gemm_bf16_rows(args, 0..m, 0..pairs, out, ldc, false) };
        return;
    }
    let op = out.as_mut_ptr();
    // SAFETY: the A tiles cover rows below row_tiles·16 ≤ m and 32·steps ≤ kp values of each (lda
    // apart), the B tiles 1 KiB × steps of panels below ceil(n/16) (lengths checked); `store_block`
    // writes rows below m and columns below n of `out`.
    unsafe {
        let (a, w) = (a.as_ptr() as *const u8, w.as_ptr() as *const u8);
        walk_blocks::<f32>(TileOp::Bf16, row_tiles, n.div_ceil(16), a, 2 * lda, w, 32 * kp, steps, |sums, row0, tiles, p0, panels| {
            store_block(sums, row0, tiles, 16 * tiles, p0 * 16, panels, n, bias, epilogue, op, ldc)
        })
    };
    let first = row_tiles * 16;
    // SAFETY: rows first..m of `a` hold ≥ 32·steps values (checked); the padded tile is 16 rows of
    // 64·steps bytes; `store_block` stores rows below m only.
    let mut tile = RaggedRows::new();
    let ragged = if first < m { unsafe { tile.fill(a.as_ptr() as *const u8, 2 * lda, first, m - first, 64 * steps) } } else { None };
    if let Some(t) = ragged {
        // SAFETY: as above.
        unsafe {
            walk_blocks::<f32>(TileOp::Bf16, 1, n.div_ceil(16), t, 64 * steps, w.as_ptr() as *const u8, 32 * kp, steps, |sums, _, _, p0, panels| {
                store_block(sums, first, 1, m - first, p0 * 16, panels, n, bias, epilogue, op, ldc)
            })
        };
    }
    // SAFETY: checked above; rows and pairs are in range.
    unsafe {
        let tiled = if ragged.is_some() { m } else { first };
        if k_tail {
            gemm_bf16_rows(args, 0..tiled, steps * 16..pairs, out, ldc, true);
        }
        if tiled < m {
            gemm_bf16_rows(args, tiled..m, 0..pairs, out, ldc, false);
        }
    }
}

impl GemmBf16 for AmxBf16 {
    fn name(&self) -> &'static str {
        "amx-bf16"
    }
    fn gemm(&self, args: &GemmBf16Args<'_>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `AmxBf16` value exists only when `detect` found AMX-BF16, AVX512-BF16 and the
        // AVX-512 set and the kernel granted the tile state.
        unsafe { gemm_amx_bf16(args, out, ldc) }
    }
    fn gemm_to_bf16(&self, args: &GemmBf16Args<'_>, out: &mut [bf16], ldc: usize) -> bool {
        // SAFETY: as above.
        unsafe { gemm_amx_bf16_to_bf16(args, out, ldc) }
    }
    fn convert_rows(&self, src: &[f32], rows: usize, k: usize, src_stride: usize, dst: &mut [bf16], dst_stride: usize) {
        // SAFETY: `detect` found AVX512-BF16 and BW.
        unsafe { avx512bf16::convert_rows(src, rows, k, src_stride, dst, dst_stride) }
    }
    fn pack_rows(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [bf16]) {
        // SAFETY: as above.
        unsafe { avx512bf16::pack_rows(src, n, k, row_stride, dst) }
    }
    fn layer_norm_to_bf16(&self, _vector: &dyn VectorOps, x: &[f32], rows: usize, d: usize, stride: usize, norm: (&[f32], &[f32], f32), _h: &mut [f32], out: &mut [bf16], out_stride: usize) {
        // SAFETY: as above.
        unsafe { avx512bf16::layer_norm_rows_bf16(x, rows, d, stride, norm.0, norm.1, norm.2, out, out_stride) }
    }
    fn pack_cols(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [bf16]) {
        // SAFETY: as above.
        unsafe { avx512bf16::pack_cols(src, n, k, row_stride, dst) }
    }
    fn softmax_to_bf16(&self, x: &[f32], scale: f32, out: &mut [bf16]) -> f32 {
        // SAFETY: `detect` found AVX512-BF16 and the AVX-512 set (F, BW, VL among them).
        unsafe { avx512bf16::softmax_to_bf16(x, scale, out) }
    }
    fn softmax_rows_to_bf16(&self, x: &[f32], rows: usize, n: usize, x_stride: usize, scale: f32, out: &mut [bf16], out_stride: usize, sums: &mut [f32]) {
        // SAFETY: as above.
        unsafe { avx512bf16::softmax_rows_to_bf16(x, rows, n, x_stride, scale, out, out_stride, sums) }
    }
}
