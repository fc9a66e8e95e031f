//! Tests of the C entry points, called from Rust as C calls them: results equal the session's,
//! errors are statuses with messages, panics stay inside, no allocation per frame (a counting
//! global allocator that counts the calling thread: the engines here run on 1 thread, so every
//! instruction of a call runs there), and include/vitedge.h is what cbindgen generates.

use super::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr::{null, null_mut};

use vitedge_core::model::synthetic::{random_blob_in, tiny_config, Rng};
use vitedge_core::stream::pixel::frame_size;

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    if TRACKING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls made on tracking threads.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations made on this thread while `f` runs.
fn allocations_during(f: impl FnOnce()) -> usize {
    ALLOCATIONS.set(0);
    TRACKING.set(true);
    f();
    TRACKING.set(false);
    ALLOCATIONS.get()
}

fn last_error() -> String {
    // SAFETY: vitedge_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(vitedge_last_error()) }.to_string_lossy().into_owned()
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (rng.next_u64() >> 56) as u8).collect()
}

/// A random-weight tiny model (10 classes, 32×32 input) in `dir`.
fn tiny_blob(dir: &Path, precision: &str) -> CString {
    let path = dir.join(format!("tiny-{precision}.vitb"));
    random_blob_in(&tiny_config(10), 5, precision).write(&path).unwrap();
    CString::new(path.to_str().unwrap()).unwrap()
}

fn open(path: &CStr, threads: u32) -> *mut VitedgeModel {
    let opts = VitedgeOptions { threads, kernels: c"auto".as_ptr() };
    let mut m = null_mut();
    // SAFETY: valid strings, options and output pointer.
    let status = unsafe { vitedge_open(path.as_ptr(), &opts, &mut m) };
    assert_eq!(status, VitedgeStatus::Ok, "{}", last_error());
    m
}

fn frame(data: &[u8], format: VitedgePixelFormat, w: usize, h: usize, stride: usize) -> VitedgeFrame {
    VitedgeFrame { data: data.as_ptr(), len: data.len(), width: w as u32, height: h as u32, stride, pixel_format: format as u32, color_matrix: 0, color_range: 0 }
}

fn classify(m: *mut VitedgeModel, f: &VitedgeFrame, k: usize) -> Result<Vec<VitedgePrediction>, (VitedgeStatus, String)> {
    let mut top = vec![VitedgePrediction { index: 0, score: 0.0, label: null() }; k];
    let mut count = 0usize;
    // SAFETY: a live handle, a valid frame, room for k predictions.
    let status = unsafe { vitedge_classify_frame(m, f, top.as_mut_ptr(), k, &mut count) };
    if status != VitedgeStatus::Ok {
        return Err((status, last_error()));
    }
    top.truncate(count);
    Ok(top)
}

#[test]
fn pixel_format_values_follow_the_library_order() {
    let c = [VitedgePixelFormat::Rgb24, VitedgePixelFormat::Bgr24, VitedgePixelFormat::Yuyv, VitedgePixelFormat::Uyvy, VitedgePixelFormat::Nv12, VitedgePixelFormat::I420];
    for (i, f) in c.into_iter().enumerate() {
        assert_eq!(f as usize, i);
        assert_eq!(format!("{:?}", PixelFormat::ALL[i]).to_lowercase(), format!("{f:?}").to_lowercase());
    }
    assert_eq!(vitedge_frame_size(VitedgePixelFormat::Nv12 as u32, 5, 3), 27);
    assert_eq!(vitedge_frame_size(VitedgePixelFormat::Yuyv as u32, 640, 480), 614_400);
    assert_eq!((vitedge_frame_size(6, 10, 10), vitedge_frame_size(0, 0, 10)), (0, 0));
}

#[test]
fn frames_give_the_sessions_results_with_labels_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_blob(dir.path(), "f32");
    let m = open(&path, 1);
    let mut session = Session::open(path.to_str().unwrap(), Backend::Native, &EngineOptions { kernels: "auto".into(), threads: 1, ..Default::default() }).unwrap();
    // SAFETY: a live handle.
    unsafe {
        assert_eq!((vitedge_num_classes(m), vitedge_input_size(m)), (10, 32));
        assert_eq!(CStr::from_ptr(vitedge_precision(m)), c"f32");
        assert_eq!(CStr::from_ptr(vitedge_label(m, 7)), c"7");
        assert!(vitedge_label(m, 10).is_null());
    }
    let (w, h) = (61, 47);
    for (format, f) in [(VitedgePixelFormat::Nv12, PixelFormat::Nv12), (VitedgePixelFormat::Yuyv, PixelFormat::Yuyv), (VitedgePixelFormat::Rgb24, PixelFormat::Rgb24)] {
        let data = noise(frame_size(f, w, h), 11);
        let got = classify(m, &frame(&data, format, w, h, 0), 3).unwrap();
        let want = session.classify_frame(&data, &FrameLayout::packed(f, w, h), 3).unwrap();
        let want: Vec<(u32, f32)> = want.top.iter().map(|&i| (i as u32, want.probs[i])).collect();
        assert_eq!(got.iter().map(|p| (p.index, p.score)).collect::<Vec<_>>(), want, "{f}");
        for p in &got {
            // SAFETY: labels live as long as the handle.
            assert_eq!(unsafe { CStr::from_ptr(p.label) }.to_str().unwrap(), p.index.to_string());
        }
    }
    // k larger than the class count: all 10, best first.
    let data = noise(frame_size(PixelFormat::Nv12, w, h), 12);
    let all = classify(m, &frame(&data, VitedgePixelFormat::Nv12, w, h, 0), 50).unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|p| p[0].score >= p[1].score));
    // SAFETY: the handle is not used afterwards.
    unsafe { vitedge_close(m) };
}

#[test]
fn no_allocation_per_frame_after_the_first() {
    let dir = tempfile::tempdir().unwrap();
    for precision in ["f32", "int8"] {
        let m = open(&tiny_blob(dir.path(), precision), 1);
        let (w, h) = (64, 48);
        let nv12 = noise(frame_size(PixelFormat::Nv12, w, h), 1);
        let rgb = noise(frame_size(PixelFormat::Rgb24, w, h), 2);
        // NV12 with 16 bytes of padding per row.
        let stride = w + 16;
        let mut padded = vec![0u8; (h + h / 2) * stride];
        for (dst, src) in padded.chunks_exact_mut(stride).zip(nv12.chunks_exact(w)) {
            dst[..w].copy_from_slice(src);
        }
        let frames = [frame(&nv12, VitedgePixelFormat::Nv12, w, h, 0), frame(&rgb, VitedgePixelFormat::Rgb24, w, h, 0), frame(&padded, VitedgePixelFormat::Nv12, w, h, stride)];
        let mut top = [VitedgePrediction { index: 0, score: 0.0, label: null() }; 5];
        let mut count = 0usize;
        for f in &frames {
            let run = |top: &mut [VitedgePrediction; 5], count: &mut usize| {
                // SAFETY: a live handle, a valid frame, room for 5 predictions.
                let s = unsafe { vitedge_classify_frame(m, f, top.as_mut_ptr(), 5, count) };
                assert_eq!(s, VitedgeStatus::Ok);
            };
            run(&mut top, &mut count); // first frame of this layout: builds the preprocessor
            let n = allocations_during(|| {
                for _ in 0..20 {
                    run(&mut top, &mut count);
                }
            });
            assert_eq!(n, 0, "{precision}, pixel format {}, stride {}: {n} allocations in 20 frames", f.pixel_format, f.stride);
            assert_eq!(count, 5);
        }
        // The strided frame gives the packed frame's result.
        let a = classify(m, &frames[0], 5).unwrap();
        assert_eq!(classify(m, &frames[2], 5).unwrap(), a);
        let input = vec![0.25f32; 3 * 32 * 32];
        let mut logits = [0f32; 10];
        // SAFETY: valid buffers of the stated lengths.
        let logits_call = |logits: &mut [f32; 10]| unsafe { vitedge_logits(m, input.as_ptr(), input.len(), logits.as_mut_ptr(), 10) };
        assert_eq!(logits_call(&mut logits), VitedgeStatus::Ok);
        let n = allocations_during(|| {
            for _ in 0..20 {
                assert_eq!(logits_call(&mut logits), VitedgeStatus::Ok);
            }
        });
        assert_eq!(n, 0, "{precision}: vitedge_logits allocated {n} times in 20 calls");
        // SAFETY: the handle is not used afterwards.
        unsafe { vitedge_close(m) };
    }
    // The counter does see allocations.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 100]))) >= 1);
}

#[test]
fn one_handle_used_from_two_threads_gives_the_single_thread_results() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&tiny_blob(dir.path(), "int8"), 2);
    let (w, h) = (40, 40);
    let frames: Vec<Vec<u8>> = (0..6).map(|i| noise(frame_size(PixelFormat::I420, w, h), 100 + i)).collect();
    // (index, score, label) of each frame's top 3.
    let run = |m: *mut VitedgeModel, d: &[u8]| -> Vec<(u32, f32, String)> {
        let top = classify(m, &frame(d, VitedgePixelFormat::I420, w, h, 0), 3).unwrap();
        // SAFETY: labels live as long as the handle.
        top.iter().map(|p| (p.index, p.score, unsafe { CStr::from_ptr(p.label) }.to_string_lossy().into_owned())).collect()
    };
    let alone: Vec<_> = frames.iter().map(|d| run(m, d)).collect();
    let handle = m as usize;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let m = handle as *mut VitedgeModel;
                    (0..5).flat_map(|_| frames.iter().map(|d| run(m, d))).collect::<Vec<_>>()
                })
            })
            .collect();
        for wk in workers {
            let got = wk.join().unwrap();
            for (i, g) in got.iter().enumerate() {
                assert_eq!(g, &alone[i % frames.len()]);
            }
        }
    });
    // SAFETY: the handle is not used afterwards.
    unsafe { vitedge_close(m) };
}

#[test]
fn errors_are_statuses_with_the_cli_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = null_mut();
    // SAFETY: each call passes valid pointers or NULL where the test says so.
    unsafe {
        assert_eq!(vitedge_open(null(), null(), &mut m), VitedgeStatus::InvalidArgument);
        assert!(last_error().contains("path is NULL"));
        let missing = CString::new(dir.path().join("missing.vitb").to_str().unwrap()).unwrap();
        assert_eq!(vitedge_open(missing.as_ptr(), null(), &mut m), VitedgeStatus::BadModel);
        assert!(last_error().contains("missing.vitb"), "{}", last_error());
        let corrupt = dir.path().join("corrupt.vitb");
        std::fs::write(&corrupt, b"VITB not really a blob, just some bytes that are long enough to be read").unwrap();
        let corrupt = CString::new(corrupt.to_str().unwrap()).unwrap();
        assert_eq!(vitedge_open(corrupt.as_ptr(), null(), &mut m), VitedgeStatus::BadModel);
        assert!(!last_error().is_empty());
        assert!(m.is_null());
        let good = tiny_blob(dir.path(), "f32");
        let opts = VitedgeOptions { threads: 1, kernels: c"no-such-kernels".as_ptr() };
        assert_eq!(vitedge_open(good.as_ptr(), &opts, &mut m), VitedgeStatus::EngineFailed);
        assert!(last_error().contains("no-such-kernels"), "{}", last_error());
        assert_eq!(vitedge_open(good.as_ptr(), null(), null_mut()), VitedgeStatus::InvalidArgument);
    }
    let m = open(&tiny_blob(dir.path(), "f32"), 1);
    let data = vec![0u8; 100];
    let (status, msg) = classify(m, &frame(&data, VitedgePixelFormat::Nv12, 64, 48, 0), 5).unwrap_err();
    assert_eq!(status, VitedgeStatus::BadFrame);
    assert!(msg.contains("frame has 100 bytes") && msg.contains("4608"), "{msg}");
    let (status, msg) = classify(m, &VitedgeFrame { pixel_format: 9, ..frame(&data, VitedgePixelFormat::Nv12, 10, 10, 0) }, 5).unwrap_err();
    assert_eq!(status, VitedgeStatus::InvalidArgument);
    assert!(msg.contains("pixel_format 9"), "{msg}");
    let (status, msg) = classify(m, &frame(&data, VitedgePixelFormat::Rgb24, 6, 5, 8), 5).unwrap_err();
    assert_eq!(status, VitedgeStatus::BadFrame);
    assert!(msg.contains("stride 8 is less than one 6-pixel rgb24 row (18 bytes)"), "{msg}");
    let (status, msg) = classify(m, &frame(&data, VitedgePixelFormat::Yuyv, 0, 5, 0), 5).unwrap_err();
    assert_eq!(status, VitedgeStatus::BadFrame);
    assert!(msg.contains("out of range"), "{msg}");
    let (status, _) = classify(m, &frame(&data, VitedgePixelFormat::Nv12, 10, 10, 0), 0).unwrap_err();
    assert_eq!(status, VitedgeStatus::InvalidArgument);
    let not_an_image = dir.path().join("x.jpg");
    std::fs::write(&not_an_image, b"no jpeg").unwrap();
    let not_an_image = CString::new(not_an_image.to_str().unwrap()).unwrap();
    let mut top = [VitedgePrediction { index: 0, score: 0.0, label: null() }; 2];
    // SAFETY: valid handle, string and buffers.
    unsafe {
        assert_eq!(vitedge_classify_file(m, not_an_image.as_ptr(), top.as_mut_ptr(), 2, null_mut()), VitedgeStatus::BadImage);
        assert!(last_error().contains("cannot decode image"), "{}", last_error());
        let mut logits = [0f32; 3];
        assert_eq!(vitedge_logits(m, [0f32; 4].as_ptr(), 4, logits.as_mut_ptr(), 3), VitedgeStatus::InvalidArgument);
        let mut logits = [0f32; 10];
        assert_eq!(vitedge_logits(m, [0f32; 4].as_ptr(), 4, logits.as_mut_ptr(), 10), VitedgeStatus::EngineFailed);
        assert!(last_error().contains("4 values"), "{}", last_error());
        assert_eq!(vitedge_classify_frame(null_mut(), null(), top.as_mut_ptr(), 2, null_mut()), VitedgeStatus::InvalidArgument);
        assert_eq!(CStr::from_ptr(vitedge_status_name(VitedgeStatus::BadFrame as u32)), c"bad frame");
        assert_eq!(CStr::from_ptr(vitedge_status_name(99)), c"unknown status");
        vitedge_close(m);
        vitedge_close(null_mut());
        assert_eq!(vitedge_num_classes(null()), 0);
    }
}

#[test]
fn panics_become_internal_errors() {
    let status = guard(|| panic!("boom {}", 42));
    assert_eq!(status, VitedgeStatus::Internal);
    assert!(last_error().contains("internal error in vitedge") && last_error().contains("boom 42"), "{}", last_error());
    assert_eq!(guard(|| Ok(())), VitedgeStatus::Ok);
}

#[test]
fn the_header_is_what_cbindgen_generates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new().with_config(config).with_src(dir.join("src/lib.rs")).generate().expect("cbindgen").write(&mut generated);
    let header = dir.join("include/vitedge.h");
    if std::env::var_os("VITEDGE_BLESS").is_some() {
        std::fs::write(&header, &generated).unwrap();
    }
    let checked_in = std::fs::read(&header).unwrap_or_default();
    assert!(
        checked_in == generated,
        "capi/include/vitedge.h differs from what cbindgen generates from capi/src/lib.rs; regenerate it with \
         VITEDGE_BLESS=1 cargo test -p vitedge-capi the_header"
    );
}
