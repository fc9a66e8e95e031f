//! The C ABI of vitedge (`libvitedge.so` / `libvitedge.a`, header `include/vitedge.h`, generated
//! from this file by cbindgen): opaque model handles over [`vitedge_core::session::Session`], so a C
//! program runs exactly what `vitedge classify` and `vitedge stream` run.
//!
//! Every entry point catches panics ([`guard`]) and turns errors into a [`VitedgeStatus`] plus a
//! per-thread message ([`vitedge_last_error`]); no Rust panic crosses the FFI boundary.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use vitedge_core::engine::{Backend, EngineOptions};
use vitedge_core::session::{FrameLayout, Session, SessionError};
use vitedge_core::stream::pixel::check_geometry;
use vitedge_core::stream::{ColorMatrix, ColorRange, ColorSpec, PixelFormat};

/// Result of a call. On anything but `VITEDGE_STATUS_OK`, `vitedge_last_error()` says what went
/// wrong and what to check.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VitedgeStatus {
    /// Success.
    Ok = 0,
    /// A NULL pointer, a string that is not UTF-8, an unknown enum value or a zero count.
    InvalidArgument = 1,
    /// The blob cannot be opened or is not a valid model (missing file, corrupt or truncated blob).
    BadModel = 2,
    /// The engine cannot be built (unknown kernel set) or failed.
    EngineFailed = 3,
    /// An image file cannot be decoded or is unusable.
    BadImage = 4,
    /// A frame does not match its declared size, stride or pixel format.
    BadFrame = 5,
    /// An internal error (a bug in vitedge): the handle is still usable.
    Internal = 6,
}

/// Raw pixel formats, as `vitedge stream --pixel-format` (ffmpeg rawvideo layouts).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VitedgePixelFormat {
    /// Packed 8-bit R, G, B.
    Rgb24 = 0,
    /// Packed 8-bit B, G, R.
    Bgr24 = 1,
    /// Packed 4:2:2, bytes Y0 U Y1 V.
    Yuyv = 2,
    /// Packed 4:2:2, bytes U Y0 V Y1.
    Uyvy = 3,
    /// Y plane, then an interleaved U V plane (4:2:0).
    Nv12 = 4,
    /// Y, U and V planes (4:2:0, "YU12", ffmpeg yuv420p).
    I420 = 5,
}

/// YCbCr matrix of YUV frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VitedgeColorMatrix {
    /// ITU-R BT.601 (the default: SD video, most webcams, JPEG).
    Bt601 = 0,
    /// ITU-R BT.709 (HD video).
    Bt709 = 1,
}

/// YCbCr range of YUV frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VitedgeColorRange {
    /// Y in 16..235, Cb/Cr in 16..240 (the default: most cameras and video).
    Limited = 0,
    /// 0..255 (JPEG-derived frames, sYCC).
    Full = 1,
}

/// Options of `vitedge_open`; `vitedge_default_options()` gives the defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VitedgeOptions {
    /// Worker threads of the engine (0 = all cores).
    pub threads: u32,
    /// Kernel set: NULL or "auto" (the CPU's best), "scalar", or a name `vitedge info` lists.
    pub kernels: *const c_char,
}

/// One raw frame.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VitedgeFrame {
    /// The pixels.
    pub data: *const u8,
    /// Bytes at `data`.
    pub len: usize,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from one row of the first plane to the next (V4L2 bytesperline, libcamera stride);
    /// 0 = tightly packed. NV12's chroma plane has the same stride, I420's U and V planes half.
    pub stride: usize,
    /// A `VitedgePixelFormat` value.
    pub pixel_format: u32,
    /// A `VitedgeColorMatrix` value (YUV formats only).
    pub color_matrix: u32,
    /// A `VitedgeColorRange` value (YUV formats only).
    pub color_range: u32,
}

/// One ranked class.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VitedgePrediction {
    /// Class index.
    pub index: u32,
    /// Softmax probability.
    pub score: f32,
    /// Class label (the index as text when the blob has no labels); owned by the model handle,
    /// valid until `vitedge_close`.
    pub label: *const c_char,
}

/// An opened model (opaque to C).
pub struct VitedgeModel {
    session: Mutex<Session>,
    labels: Vec<CString>,
    architecture: CString,
    precision: CString,
    input_size: u32,
    num_classes: u32,
}

impl VitedgeModel {
    /// The session; a panic during an earlier call leaves only scratch buffers behind, so a
    /// poisoned lock is taken over.
    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A failed call: its status and message.
struct Failure(VitedgeStatus, String);

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        let status = match &e {
            SessionError::Model(_) => VitedgeStatus::BadModel,
            SessionError::Engine(_) => VitedgeStatus::EngineFailed,
            SessionError::Image(_) => VitedgeStatus::BadImage,
            SessionError::Frame(_) => VitedgeStatus::BadFrame,
        };
        Failure(status, e.to_string())
    }
}

fn invalid(msg: impl Into<String>) -> Failure {
    Failure(VitedgeStatus::InvalidArgument, msg.into())
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// Runs `f`, turning its failure or panic into a status and the thread's last error.
fn guard(f: impl FnOnce() -> Result<(), Failure>) -> VitedgeStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => VitedgeStatus::Ok,
        Ok(Err(Failure(status, msg))) => {
            set_last_error(&msg);
            status
        }
        Err(panic) => {
            let what = panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("unknown panic");
            set_last_error(&format!("internal error in vitedge (please report it): {what}"));
            VitedgeStatus::Internal
        }
    }
}

/// A C string argument as a `&str`.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that lives as long as the result.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| invalid(format!("{what} is not UTF-8")))
}

/// The model handle behind `p`.
///
/// # Safety
/// `p` must be NULL or a handle from `vitedge_open` that was not closed.
unsafe fn model_arg<'a>(p: *const VitedgeModel) -> Result<&'a VitedgeModel, Failure> {
    // SAFETY: a live handle by the caller's contract (NULL is checked).
    unsafe { p.as_ref() }.ok_or_else(|| invalid("model is NULL"))
}

/// The `VitedgePixelFormat` value `v` (the two enums list the formats in the same order).
fn pixel_format_arg(v: u32) -> Result<PixelFormat, Failure> {
    PixelFormat::ALL.get(v as usize).copied().ok_or_else(|| invalid(format!("pixel_format {v} is not a VitedgePixelFormat (0..=5)")))
}

fn color(matrix: u32, range: u32) -> Result<ColorSpec, Failure> {
    let m = match matrix {
        0 => ColorMatrix::Bt601,
        1 => ColorMatrix::Bt709,
        v => return Err(invalid(format!("color_matrix {v} is not a VitedgeColorMatrix (0 or 1)"))),
    };
    let r = match range {
        0 => ColorRange::Limited,
        1 => ColorRange::Full,
        v => return Err(invalid(format!("color_range {v} is not a VitedgeColorRange (0 or 1)"))),
    };
    Ok(ColorSpec::new(m, r))
}

/// The caller's prediction buffer.
///
/// # Safety
/// `top` must be NULL or point to `k` writable `VitedgePrediction`s.
unsafe fn top_arg<'a>(top: *mut VitedgePrediction, k: usize) -> Result<&'a mut [VitedgePrediction], Failure> {
    if k == 0 {
        return Err(invalid("k is 0: ask for at least one class"));
    }
    if top.is_null() {
        return Err(invalid("top is NULL"));
    }
    // SAFETY: `k` writable elements by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(top, k) })
}

/// Copies the ranked classes into the caller's buffer and their count into `count`.
fn write_top(model: &VitedgeModel, probs: &[f32], ranked: &[usize], top: &mut [VitedgePrediction], count: *mut usize) {
    for (slot, &i) in top.iter_mut().zip(ranked) {
        *slot = VitedgePrediction { index: i as u32, score: probs[i], label: model.labels[i].as_ptr() };
    }
    if !count.is_null() {
        // SAFETY: a writable `size_t` by the caller's contract (NULL is checked).
        unsafe { *count = ranked.len().min(top.len()) };
    }
}

/// The library version (e.g. "0.1.0"), a static string.
#[no_mangle]
pub extern "C" fn vitedge_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The defaults of `VitedgeOptions`: all cores, the CPU's best kernels.
#[no_mangle]
pub extern "C" fn vitedge_default_options() -> VitedgeOptions {
    VitedgeOptions { threads: 0, kernels: std::ptr::null() }
}

/// Message of the last failed call on this thread ("" before any failure); owned by the library,
/// valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn vitedge_last_error() -> *const c_char {
    LAST_ERROR.try_with(|e| e.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

/// A short name of a `VitedgeStatus` value ("ok", "invalid argument", …; "unknown status" for other
/// values), a static string.
#[no_mangle]
pub extern "C" fn vitedge_status_name(status: u32) -> *const c_char {
    const NAMES: [(VitedgeStatus, &CStr); 7] = [
        (VitedgeStatus::Ok, c"ok"),
        (VitedgeStatus::InvalidArgument, c"invalid argument"),
        (VitedgeStatus::BadModel, c"bad model"),
        (VitedgeStatus::EngineFailed, c"engine failed"),
        (VitedgeStatus::BadImage, c"bad image"),
        (VitedgeStatus::BadFrame, c"bad frame"),
        (VitedgeStatus::Internal, c"internal error"),
    ];
    NAMES.iter().find(|(s, _)| *s as u32 == status).map_or(c"unknown status", |(_, n)| n).as_ptr()
}

/// Bytes of one tightly packed `width × height` frame in `pixel_format` (ffmpeg rawvideo layout,
/// chroma rounded up for odd sizes, as `vitedge stream` reads them); 0 for an unknown format or a
/// size out of range.
#[no_mangle]
pub extern "C" fn vitedge_frame_size(pixel_format: u32, width: u32, height: u32) -> usize {
    match pixel_format_arg(pixel_format) {
        Ok(f) => check_geometry(f, width as usize, height as usize).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Opens the blob at `path` (maps it, validates it) and builds the engine. `options` may be NULL
/// (defaults). On success `*model` receives a handle to free with `vitedge_close`.
///
/// # Safety
/// `path` is a NUL-terminated string, `options` NULL or valid, `model` a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn vitedge_open(path: *const c_char, options: *const VitedgeOptions, model: *mut *mut VitedgeModel) -> VitedgeStatus {
    guard(|| {
        if model.is_null() {
            return Err(invalid("model (the output pointer) is NULL"));
        }
        // SAFETY: see the function's contract.
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: NULL or a valid struct by the function's contract.
        let o = unsafe { options.as_ref() }.copied().unwrap_or_else(|| vitedge_default_options());
        let kernels = if o.kernels.is_null() {
            "auto"
        } else {
            // SAFETY: a NUL-terminated string by the function's contract.
            unsafe { str_arg(o.kernels, "options.kernels") }?
        };
        let session = Session::open(Path::new(path), Backend::Native, &EngineOptions { kernels: kernels.into(), threads: o.threads as usize, ..Default::default() })?;
        let m = session.model();
        let c = m.config();
        let cstring = |s: String| CString::new(s.replace('\0', " ")).unwrap_or_default();
        let handle = VitedgeModel {
            labels: (0..c.num_classes).map(|i| cstring(m.label(i))).collect(),
            architecture: cstring(c.arch.clone()),
            precision: cstring(m.header().precision.clone()),
            input_size: c.image_size as u32,
            num_classes: c.num_classes as u32,
            session: Mutex::new(session),
        };
        // SAFETY: checked non-NULL above; writable by the function's contract.
        unsafe { *model = Box::into_raw(Box::new(handle)) };
        Ok(())
    })
}

/// Frees a handle from `vitedge_open` (NULL is ignored). No call on it may be running.
///
/// # Safety
/// `model` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn vitedge_close(model: *mut VitedgeModel) {
    if !model.is_null() {
        // SAFETY: a handle made by Box::into_raw in vitedge_open, freed once by the contract.
        let handle = unsafe { Box::from_raw(model) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(handle)));
    }
}

/// Number of classes (0 for a NULL handle).
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitedge_num_classes(model: *const VitedgeModel) -> u32 {
    // SAFETY: see the function's contract.
    unsafe { model.as_ref() }.map_or(0, |m| m.num_classes)
}

/// Side of the square network input in pixels (e.g. 224; 0 for a NULL handle). Frames and images
/// of any size are resized and cropped to it by the model's preprocessing.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitedge_input_size(model: *const VitedgeModel) -> u32 {
    // SAFETY: see the function's contract.
    unsafe { model.as_ref() }.map_or(0, |m| m.input_size)
}

/// Label of class `index` (the index as text when the blob has no labels); NULL when `index` is
/// out of range. Owned by the handle.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitedge_label(model: *const VitedgeModel, index: u32) -> *const c_char {
    // SAFETY: see the function's contract.
    unsafe { model.as_ref() }.and_then(|m| m.labels.get(index as usize)).map_or(std::ptr::null(), |l| l.as_ptr())
}

/// Architecture name from the blob header (e.g. "vit_tiny_patch16_224"). Owned by the handle.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitedge_architecture(model: *const VitedgeModel) -> *const c_char {
    // SAFETY: see the function's contract.
    unsafe { model.as_ref() }.map_or(std::ptr::null(), |m| m.architecture.as_ptr())
}

/// Weight precision from the blob header ("f32", "f16", "bf16" or "int8"). Owned by the handle.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vitedge_precision(model: *const VitedgeModel) -> *const c_char {
    // SAFETY: see the function's contract.
    unsafe { model.as_ref() }.map_or(std::ptr::null(), |m| m.precision.as_ptr())
}

/// Classifies one raw frame with `vitedge stream`'s preprocessing and writes the best
/// `min(k, classes)` classes, best first, to `top`; `*count` (if not NULL) receives how many.
///
/// # Safety
/// `model` is a live handle, `frame` a valid frame whose `data` holds `len` readable bytes, `top`
/// room for `k` predictions, `count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn vitedge_classify_frame(model: *mut VitedgeModel, frame: *const VitedgeFrame, top: *mut VitedgePrediction, k: usize, count: *mut usize) -> VitedgeStatus {
    guard(|| {
        // SAFETY: see the function's contract.
        let m = unsafe { model_arg(model) }?;
        // SAFETY: NULL or a valid frame by the contract.
        let f = unsafe { frame.as_ref() }.ok_or_else(|| invalid("frame is NULL"))?;
        // SAFETY: see the function's contract.
        let top = unsafe { top_arg(top, k) }?;
        if f.data.is_null() {
            return Err(invalid("frame.data is NULL"));
        }
        // SAFETY: `len` readable bytes at `data` by the contract.
        let data = unsafe { std::slice::from_raw_parts(f.data, f.len) };
        let layout = FrameLayout {
            format: pixel_format_arg(f.pixel_format)?,
            width: f.width as usize,
            height: f.height as usize,
            stride: (f.stride != 0).then_some(f.stride),
            color: color(f.color_matrix, f.color_range)?,
        };
        let mut s = m.session();
        let r = s.classify_frame(data, &layout, k)?;
        write_top(m, r.probs, r.top, top, count);
        Ok(())
    })
}

/// Decodes a JPEG or PNG file and classifies it as `vitedge classify` does; writes the best
/// `min(k, classes)` classes to `top` and their number to `*count` (if not NULL).
///
/// # Safety
/// `model` is a live handle, `path` a NUL-terminated string, `top` room for `k` predictions,
/// `count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn vitedge_classify_file(model: *mut VitedgeModel, path: *const c_char, top: *mut VitedgePrediction, k: usize, count: *mut usize) -> VitedgeStatus {
    guard(|| {
        // SAFETY: see the function's contract.
        let m = unsafe { model_arg(model) }?;
        // SAFETY: see the function's contract.
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: see the function's contract.
        let top = unsafe { top_arg(top, k) }?;
        let mut s = m.session();
        let r = s.classify_file(Path::new(path), k)?;
        write_top(m, r.probs, r.top, top, count);
        Ok(())
    })
}

/// Runs the network on a preprocessed input (`3 × size × size` floats, CHW, normalized with the
/// model's mean and std) and writes the raw logits (`num_classes` floats).
///
/// # Safety
/// `model` is a live handle, `input` holds `input_len` floats, `logits` room for `logits_len`.
#[no_mangle]
pub unsafe extern "C" fn vitedge_logits(model: *mut VitedgeModel, input: *const f32, input_len: usize, logits: *mut f32, logits_len: usize) -> VitedgeStatus {
    guard(|| {
        // SAFETY: see the function's contract.
        let m = unsafe { model_arg(model) }?;
        if input.is_null() || logits.is_null() {
            return Err(invalid("input or logits is NULL"));
        }
        if logits_len != m.num_classes as usize {
            return Err(invalid(format!("logits has room for {logits_len} values, the model has {} classes", m.num_classes)));
        }
        // SAFETY: `input_len` readable floats and `logits_len` writable ones by the contract.
        let (input, logits) = unsafe { (std::slice::from_raw_parts(input, input_len), std::slice::from_raw_parts_mut(logits, logits_len)) };
        let mut s = m.session();
        logits.copy_from_slice(s.logits(input)?);
        Ok(())
    })
}

#[cfg(test)]
mod tests;
