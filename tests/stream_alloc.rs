//! The stream loop allocates nothing per frame: a run over 220 frames makes exactly as many heap
//! allocations as a run over 20 (set-up only), counted by a global allocator across all threads,
//! with 1 thread and with 2 (where the preprocessing's row blocks run on the engine's pool).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use vitedge::engine::{self, Backend, EngineOptions};
use vitedge::model::synthetic::{random_blob, tiny_config};
use vitedge::model::Model;
use vitedge::stream::source::RawReader;
use vitedge::stream::{frame_size, run, ColorSpec, DropPolicy, PixelFormat, StreamSettings};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn allocations_do_not_grow_with_the_number_of_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.vitb");
    random_blob(&tiny_config(10), 3).write(&path).unwrap();
    let model = Model::open(&path).unwrap();
    let (w, h) = (64, 48);
    let len = frame_size(PixelFormat::Nv12, w, h);
    let stop = AtomicBool::new(false);
    let mut counts = Vec::new();
    for (threads, format, color) in [1, 2].into_iter().flat_map(|t| [(t, PixelFormat::Nv12, ColorSpec::default()), (t, PixelFormat::Rgb24, ColorSpec::default())]) {
        let mut engine = engine::create(&model, Backend::Native, &EngineOptions { kernels: "auto".into(), threads, ..Default::default() }).unwrap();
        let len = if format == PixelFormat::Rgb24 { w * h * 3 } else { len };
        // A first, uncounted run of 20 frames takes what happens once per engine (with 2 threads
        // the first run makes one allocation more than later ones); the two counted runs after it
        // must then make the same number of allocations.
        for (run_index, frames) in [20usize, 20, 220].into_iter().enumerate() {
            let data: Vec<u8> = (0..frames * len).map(|i| (i / 7) as u8).collect();
            let settings = StreamSettings { top: 3, output: vitedge::stream::OutputFormat::Json, drop: DropPolicy::Never, every: 1, color };
            let mut sink = std::io::sink();
            let before = ALLOCS.load(Ordering::SeqCst);
            let source = Box::new(RawReader::new(std::io::Cursor::new(data), "memory"));
            let outcome = run(&model, engine.as_mut(), None, source, format, w, h, &settings, &mut sink, &stop);
            let n = ALLOCS.load(Ordering::SeqCst) - before;
            assert!(outcome.error.is_none());
            assert_eq!(outcome.summary.classified as usize, frames);
            if run_index > 0 {
                counts.push((format, threads, frames, n));
            }
        }
    }
    println!("{counts:?}");
    for pair in counts.chunks(2) {
        let ((format, threads, f0, n0), (_, _, f1, n1)) = (pair[0], pair[1]);
        assert_eq!(n0, n1, "{format}, {threads} threads: {n0} allocations for {f0} frames vs {n1} for {f1}: the loop allocates per frame");
    }
}
