//! `vitedge._vitedge`: the extension module behind the `vitedge` Python package
//! (`python/vitedge/__init__.py` is the documented API). A thin layer over
//! [`vitedge::session::Session`] and `vitedge_quant`'s converter: numpy arrays are read in place
//! (`__array_struct__` / `__array_interface__`, no copy), and the GIL is released while images are decoded, preprocessed and
//! classified and while checkpoints are converted.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::basic::CompareOp;
use pyo3::types::{PyCapsule, PyDict, PyString, PyTuple, PyType};
use vitedge::engine::{Backend, EngineOptions};
use vitedge::preprocess::PreprocessError;
use vitedge::session::{FrameLayout, Ranked, Session, SessionError};
use vitedge::stream::{row_bytes, ColorMatrix, ColorRange, ColorSpec, PixelFormat};
use vitedge_quant::convert::{self, ConvertOptions, Labels, Precision};

pyo3::create_exception!(
    vitedge,
    Error,
    PyRuntimeError,
    "Raised when vitedge fails: a blob that cannot be opened or is corrupt, an image that cannot be decoded, an engine or conversion failure. The message is the one the CLI prints."
);

/// `vitedge.InputError(Error, ValueError)`, made at import (a class with two bases).
static INPUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn input_error_type(py: Python<'_>) -> PyResult<&Py<PyType>> {
    INPUT_ERROR.get_or_try_init(py, || {
        let bases = PyTuple::new(py, [py.get_type::<Error>(), py.get_type::<PyValueError>()])?;
        let attrs = PyDict::new(py);
        attrs.set_item("__module__", "vitedge")?;
        attrs.set_item(
            "__doc__",
            "Raised when an argument does not fit: a frame whose size, stride or pixel format disagree, a wrong dtype or shape, an unknown name. A vitedge.Error and a ValueError.",
        )?;
        let t = py.get_type::<PyType>().call1(("InputError", bases, attrs))?;
        Ok(t.cast_into::<PyType>()?.unbind())
    })
}

/// A `vitedge.InputError` with `msg`.
fn input_error(msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match input_error_type(py) {
        Ok(t) => PyErr::from_type(t.bind(py).clone(), msg),
        Err(e) => e,
    })
}

fn session_error(e: SessionError) -> PyErr {
    match e {
        SessionError::Frame(_) | SessionError::Image(PreprocessError::BadImage(_)) => input_error(e.to_string()),
        other => Error::new_err(other.to_string()),
    }
}

/// A numpy `__array_interface__` type string (`|u1`, `<f4`, …) in numpy's words.
fn dtype_name(typestr: &str) -> String {
    let name = match typestr.trim_start_matches(['<', '>', '|', '=']) {
        "u1" => "uint8",
        "i1" => "int8",
        "u2" => "uint16",
        "i2" => "int16",
        "u4" => "uint32",
        "i4" => "int32",
        "u8" => "uint64",
        "i8" => "int64",
        "f2" => "float16",
        "f4" => "float32",
        "f8" => "float64",
        "b1" => "bool",
        _ => return format!("type `{typestr}`"),
    };
    name.to_string()
}

/// A C-contiguous numpy array (any object with numpy's `__array_struct__` or
/// `__array_interface__`), read in place. The buffer protocol is not in the Python 3.9 stable ABI;
/// other buffers are turned into numpy views first (`vitedge._array`, no copy).
struct View<'py> {
    /// Keeps the array alive (and, being a reference, unresizable) while the view is used.
    _array: Bound<'py, PyAny>,
    ptr: usize,
    len_bytes: usize,
    shape: Vec<usize>,
    readonly: bool,
}

/// numpy's `PyArrayInterface`, what the capsule of `__array_struct__` points to (the array
/// interface protocol, version 3).
#[repr(C)]
struct ArrayInterface {
    /// Always 2.
    two: std::ffi::c_int,
    nd: std::ffi::c_int,
    typekind: std::ffi::c_char,
    itemsize: std::ffi::c_int,
    flags: std::ffi::c_int,
    shape: *const isize,
    strides: *const isize,
    data: *mut std::ffi::c_void,
    descr: *mut pyo3::ffi::PyObject,
}

/// `ArrayInterface::flags` bits.
const C_CONTIGUOUS: std::ffi::c_int = 0x1;
const ALIGNED: std::ffi::c_int = 0x100;
const NOTSWAPPED: std::ffi::c_int = 0x200;
const WRITEABLE: std::ffi::c_int = 0x400;

impl<'py> View<'py> {
    /// `obj` through numpy's `__array_struct__` (a C struct in a capsule), if it has one and is a
    /// C-contiguous, aligned, native-order array of `typestr`; else `None` ([`Self::get`] then
    /// reads `__array_interface__`, which says what is wrong). Building and taking apart the
    /// interface's dict costs ~10 µs right after an inference, when Python is out of the caches.
    fn from_struct(obj: &Bound<'py, PyAny>, typestr: &str) -> Option<View<'py>> {
        let capsule = obj.getattr("__array_struct__").ok()?;
        let capsule = capsule.cast::<PyCapsule>().ok()?;
        let ptr = capsule.pointer_checked(None).ok()?.cast::<ArrayInterface>();
        // SAFETY: by the array interface protocol the capsule holds a `PyArrayInterface`, alive as
        // long as the capsule (to the end of this function); its first field is checked to be 2.
        let a = unsafe { ptr.as_ref() };
        let (kind, size) = (*typestr.as_bytes().first()?, typestr[1..].parse::<std::ffi::c_int>().ok()?);
        let need = C_CONTIGUOUS | ALIGNED | NOTSWAPPED;
        if a.two != 2 || a.typekind as u8 != kind || a.itemsize != size || a.flags & need != need || a.nd < 0 || (a.nd > 0 && a.shape.is_null()) {
            return None;
        }
        // SAFETY: `shape` holds `nd` items (the protocol; not null where nd > 0, checked above).
        let shape: Vec<usize> = (0..a.nd as usize).map(|i| unsafe { *a.shape.add(i) }.max(0) as usize).collect();
        let len_bytes = shape.iter().product::<usize>() * size as usize;
        Some(View { _array: obj.clone(), ptr: a.data as usize, len_bytes, shape, readonly: a.flags & WRITEABLE == 0 })
    }

    /// `typestr` is the accepted element type without byte order (`u1`, `f4`), `want` its name.
    fn get(obj: &Bound<'py, PyAny>, what: &str, typestr: &str, want: &str) -> PyResult<View<'py>> {
        if let Some(view) = Self::from_struct(obj, typestr) {
            return Ok(view);
        }
        let not_an_array = || {
            let t = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
            input_error(format!("{what} must be a numpy array (or a bytes-like object), not {t}"))
        };
        let interface = obj.getattr("__array_interface__").map_err(|_| not_an_array())?;
        let interface = interface.cast_into::<PyDict>().map_err(|_| not_an_array())?;
        let item = |key: &str| -> PyResult<Bound<'py, PyAny>> { interface.get_item(key)?.ok_or_else(not_an_array) };
        let ts: String = item("typestr")?.extract()?;
        let code = ts.trim_start_matches(['<', '|', '=']);
        if code != typestr || (cfg!(target_endian = "big") && ts.starts_with('<')) || (cfg!(target_endian = "little") && ts.starts_with('>')) {
            return Err(input_error(format!("{what} has dtype {}; vitedge needs {want} (e.g. numpy's .astype(numpy.{want}))", dtype_name(&ts))));
        }
        let shape: Vec<usize> = item("shape")?.extract()?;
        let item_size: usize = typestr[1..].parse().unwrap_or(1);
        if let Some(strides) = interface.get_item("strides")?.filter(|s| !s.is_none()) {
            let strides: Vec<isize> = strides.extract()?;
            let mut want_stride = item_size as isize;
            for (&st, &n) in strides.iter().zip(&shape).rev() {
                if n > 1 && st != want_stride {
                    return Err(input_error(format!("{what} is not C-contiguous: pass numpy.ascontiguousarray({what})")));
                }
                want_stride *= n as isize;
            }
        }
        let (ptr, readonly): (usize, bool) = item("data")?.extract().map_err(|_| not_an_array())?;
        let len_bytes = shape.iter().product::<usize>() * item_size;
        if len_bytes > 0 && ptr % item_size != 0 {
            return Err(input_error(format!("{what} is not aligned to its {want} items: pass numpy.require({what}, requirements=\"CA\")")));
        }
        Ok(View { _array: obj.clone(), ptr, len_bytes, shape, readonly })
    }

    /// [`Self::get`] on `obj`, else on `vitedge._array(obj)`: a numpy view of a bytes-like object,
    /// a C-contiguous copy of a strided or unaligned array. (The copy is made only where the
    /// object cannot be read in place; the frame path takes numpy arrays without calling Python.)
    fn get_array(obj: &Bound<'py, PyAny>, what: &str, typestr: &str, want: &str) -> PyResult<View<'py>> {
        View::get(obj, what, typestr, want).or_else(|_| {
            let array = obj.py().import("vitedge")?.getattr("_array")?.call1((obj,))?;
            View::get(&array, what, typestr, want)
        })
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The items as a slice (`T` must be the element type `get` checked).
    fn slice<T>(&self) -> &[T] {
        let n = self.len_bytes / std::mem::size_of::<T>();
        if n == 0 {
            return &[];
        }
        // SAFETY: `ptr` is the start of a C-contiguous, aligned array of `n` items of `T` (typestr,
        // strides and alignment checked in `get`), kept alive and unresizable by `_array` while
        // `self` lives. Python code in other threads could still write to it while the GIL is
        // released; the docstrings say not to.
        unsafe { std::slice::from_raw_parts(self.ptr as *const T, n) }
    }
}

fn parse_backend(name: &str) -> PyResult<Backend> {
    match name {
        "native" => Ok(Backend::Native),
        "tract" => Ok(Backend::Tract),
        _ => Err(input_error(format!("backend `{name}` is not one of native, tract"))),
    }
}

/// libcamera's names of the pixel formats (`vitedge.LIBCAMERA_FORMATS`). libcamera names packed
/// RGB by the order of a little-endian word, so its `RGB888` is B, G, R in memory.
const LIBCAMERA_FORMATS: [(&str, PixelFormat); 6] = [
    ("RGB888", PixelFormat::Bgr24),
    ("BGR888", PixelFormat::Rgb24),
    ("YUV420", PixelFormat::I420),
    ("YUYV", PixelFormat::Yuyv),
    ("UYVY", PixelFormat::Uyvy),
    ("NV12", PixelFormat::Nv12),
];

/// A pixel format by vitedge's name or libcamera's.
fn parse_pixel_format(name: &str) -> PyResult<PixelFormat> {
    let libcamera = LIBCAMERA_FORMATS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f);
    libcamera.or_else(|| PixelFormat::ALL.into_iter().find(|f| f.name() == name)).ok_or_else(|| {
        let names = PixelFormat::ALL.map(PixelFormat::name).join(", ");
        let libcamera = LIBCAMERA_FORMATS.map(|(n, _)| n).join(", ");
        input_error(format!("pixel format `{name}` is not one of {names} (or libcamera's {libcamera})"))
    })
}

/// The row stride of a frame array whose first axis is its rows (as Picamera2 returns YUV420 as
/// `(height * 3 // 2, stride)` and YUYV as `(height, stride // 2, 2)`), where its rows are longer
/// than packed rows; else `None` (a packed frame).
fn array_stride(shape: &[usize], format: PixelFormat, width: usize, height: usize) -> Option<usize> {
    let rows = if matches!(format, PixelFormat::Nv12 | PixelFormat::I420) { height + height.div_ceil(2) } else { height };
    if shape.len() < 2 || shape[0] != rows {
        return None;
    }
    let row: usize = shape[1..].iter().product();
    (row > row_bytes(format, width)).then_some(row)
}

fn parse_color(matrix: &str, range: &str) -> PyResult<ColorSpec> {
    let m = match matrix {
        "bt601" => ColorMatrix::Bt601,
        "bt709" => ColorMatrix::Bt709,
        _ => return Err(input_error(format!("color_matrix `{matrix}` is not one of bt601, bt709"))),
    };
    let r = match range {
        "limited" => ColorRange::Limited,
        "full" => ColorRange::Full,
        _ => return Err(input_error(format!("color_range `{range}` is not one of limited, full"))),
    };
    Ok(ColorSpec::new(m, r))
}

fn check_top(top: usize) -> PyResult<()> {
    if top == 0 {
        return Err(input_error("top must be at least 1"));
    }
    Ok(())
}

/// `(index, score)` of the ranked classes.
fn ranked(r: Ranked<'_>) -> Vec<(usize, f32)> {
    r.top.iter().map(|&i| (i, r.probs[i])).collect()
}

/// One ranked class: its index, label (the index as text when the blob has none) and softmax
/// probability. Made by the extension, so that a result costs no Python code (after an inference
/// has pushed the interpreter out of the CPU's caches, each line of Python costs microseconds).
#[pyclass(module = "vitedge", name = "Prediction", frozen)]
struct Prediction {
    /// Class index (logit order).
    #[pyo3(get)]
    index: usize,
    /// Class label.
    #[pyo3(get)]
    label: Py<PyString>,
    /// Softmax probability.
    #[pyo3(get)]
    score: f64,
}

#[pymethods]
impl Prediction {
    #[new]
    fn new(index: usize, label: Py<PyString>, score: f64) -> Self {
        Prediction { index, label, score }
    }

    /// The field names, for `match` statements (as a dataclass has them).
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str) {
        ("index", "label", "score")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let (label, score) = (self.label.bind(py).repr()?, self.score.into_pyobject(py)?.repr()?);
        Ok(format!("Prediction(index={}, label={label}, score={score})", self.index))
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<Prediction>() else { return Ok(py.NotImplemented()) };
        let other = other.get();
        let same = self.index == other.index && self.score == other.score && self.label.bind(py).as_any().eq(other.label.bind(py))?;
        match op {
            CompareOp::Eq => Ok(same.into_pyobject(py)?.to_owned().into_any().unbind()),
            CompareOp::Ne => Ok((!same).into_pyobject(py)?.to_owned().into_any().unbind()),
            _ => Ok(py.NotImplemented()),
        }
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        (self.index, self.label.clone_ref(py), self.score).into_pyobject(py)?.hash()
    }

    /// The three fields as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("index", self.index)?;
        d.set_item("label", self.label.bind(py))?;
        d.set_item("score", self.score)?;
        Ok(d)
    }

    /// Pickling: the constructor's arguments.
    fn __getnewargs__(&self, py: Python<'_>) -> (usize, Py<PyString>, f64) {
        (self.index, self.label.clone_ref(py), self.score)
    }
}

/// An opened model and its engine (use `vitedge.Model`, which documents the API).
#[pyclass(module = "vitedge._vitedge", name = "Model", frozen)]
struct Model {
    session: Mutex<Session>,
    /// The blob header as JSON.
    #[pyo3(get)]
    header_json: String,
    /// Every class label (the index as text when the blob has none), as Python strings shared by
    /// every [`Prediction`].
    labels: Vec<Py<PyString>>,
    /// The engine's kernel description.
    #[pyo3(get)]
    kernels: String,
    /// `native` or `tract`.
    #[pyo3(get)]
    backend: &'static str,
    /// Worker threads of the engine.
    #[pyo3(get)]
    threads: usize,
    input_size: usize,
}

impl Model {
    /// The session; taken only with the GIL released (a thread holding it may be waiting for
    /// the GIL). A panic in an earlier call leaves only scratch buffers, so a poisoned lock is
    /// taken over.
    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ranked classes as [`Prediction`]s.
    fn predictions(&self, py: Python<'_>, ranked: Vec<(usize, f32)>) -> Vec<Prediction> {
        ranked.into_iter().map(|(index, score)| Prediction { index, label: self.labels[index].clone_ref(py), score: score as f64 }).collect()
    }
}

#[pymethods]
impl Model {
    /// Every class label (the index as text when the blob has none).
    #[getter]
    fn labels(&self, py: Python<'_>) -> Vec<Py<PyString>> {
        self.labels.iter().map(|l| l.clone_ref(py)).collect()
    }

    #[new]
    #[pyo3(signature = (path, threads=0, kernels="auto", backend="native"))]
    fn new(py: Python<'_>, path: PathBuf, threads: usize, kernels: &str, backend: &str) -> PyResult<Self> {
        let backend = parse_backend(backend)?;
        let options = EngineOptions { kernels: kernels.to_string(), threads, ..Default::default() };
        let mut session = py.detach(|| Session::open(&path, backend, &options)).map_err(session_error)?;
        let m = session.model();
        let header_json = serde_json::to_string(m.header()).map_err(|e| Error::new_err(e.to_string()))?;
        let labels = (0..m.config().num_classes).map(|i| PyString::new(py, &m.label(i)).unbind()).collect();
        let input_size = m.config().image_size;
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        Ok(Model { kernels: session.describe(), backend: session.backend(), header_json, labels, threads, input_size, session: Mutex::new(session) })
    }

    /// Decodes and classifies an image file like `vitedge classify`.
    fn classify_path(&self, py: Python<'_>, path: PathBuf, top: usize) -> PyResult<Vec<Prediction>> {
        check_top(top)?;
        let ranked = py.detach(|| self.session().classify_file(&path, top).map(ranked)).map_err(session_error)?;
        Ok(self.predictions(py, ranked))
    }

    /// Classifies an `H × W × 3` uint8 RGB buffer with the model's preprocessing.
    fn classify_rgb(&self, py: Python<'_>, image: &Bound<'_, PyAny>, top: usize) -> PyResult<Vec<Prediction>> {
        check_top(top)?;
        let view = View::get_array(image, "image", "u1", "uint8")?;
        let (h, w) = match *view.shape() {
            [h, w, 3] => (h, w),
            ref s => return Err(input_error(format!("image has shape {s:?}; vitedge needs (height, width, 3) RGB (convert other layouts first, e.g. PIL's .convert(\"RGB\"))"))),
        };
        let rgb = view.slice::<u8>();
        let ranked = py.detach(|| self.session().classify_rgb8(rgb, w, h, top).map(ranked)).map_err(session_error)?;
        Ok(self.predictions(py, ranked))
    }

    /// Classifies one raw frame with `vitedge stream`'s preprocessing. `pixel_format` is vitedge's
    /// name or libcamera's; without a `stride`, a frame array whose first axis is its rows gives it.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (frame, pixel_format, width, height, stride, color_matrix, color_range, top))]
    fn classify_frame(
        &self,
        py: Python<'_>,
        frame: &Bound<'_, PyAny>,
        pixel_format: &str,
        width: usize,
        height: usize,
        stride: Option<usize>,
        color_matrix: &str,
        color_range: &str,
        top: usize,
    ) -> PyResult<Vec<Prediction>> {
        check_top(top)?;
        let format = parse_pixel_format(pixel_format)?;
        let view = View::get_array(frame, "frame", "u1", "uint8")?;
        let stride = stride.or_else(|| array_stride(view.shape(), format, width, height));
        let layout = FrameLayout { format, width, height, stride, color: parse_color(color_matrix, color_range)? };
        let data = view.slice::<u8>();
        let ranked = py.detach(|| self.session().classify_frame(data, &layout, top).map(ranked)).map_err(session_error)?;
        Ok(self.predictions(py, ranked))
    }

    /// Runs the network on a float32 `[1, 3, S, S]` or `[3, S, S]` tensor and writes the logits
    /// into `out` (a writable float32 buffer of `num_classes` values).
    fn logits(&self, py: Python<'_>, tensor: &Bound<'_, PyAny>, out: &Bound<'_, PyAny>) -> PyResult<()> {
        let view = View::get_array(tensor, "tensor", "f4", "float32")?;
        let s = self.input_size;
        if !matches!(*view.shape(), [1, 3, a, b] | [3, a, b] if a == s && b == s) {
            return Err(input_error(format!("tensor has shape {:?}; the model takes (1, 3, {s}, {s}) or (3, {s}, {s}) float32", view.shape())));
        }
        let out_view = View::get(out, "out", "f4", "float32")?;
        if out_view.readonly || out_view.len_bytes != self.labels.len() * 4 {
            return Err(input_error(format!("out must be a writable float32 buffer of {} values", self.labels.len())));
        }
        let input = view.slice::<f32>();
        let out_ptr = out_view.ptr;
        py.detach(|| {
            let mut s = self.session();
            let logits = s.logits(input)?;
            // SAFETY: `out` is a writable, C-contiguous, aligned float32 array of exactly
            // `logits.len()` values (checked above), kept alive by `out_view` until this function
            // returns; `logits` is the session's own buffer, so the two do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(logits.as_ptr(), out_ptr as *mut f32, logits.len()) };
            Ok::<(), SessionError>(())
        })
        .map_err(session_error)
    }
}

/// Converts a float checkpoint into a blob (`vitedge-quant convert`); returns a JSON summary.
#[pyfunction(name = "convert")]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (checkpoint, output, precision, calibrate, calib_count, labels, arch, heads, preprocess_json))]
fn convert_checkpoint(
    py: Python<'_>,
    checkpoint: PathBuf,
    output: PathBuf,
    precision: &str,
    calibrate: Option<PathBuf>,
    calib_count: usize,
    labels: Option<PathBuf>,
    arch: Option<String>,
    heads: Option<usize>,
    preprocess_json: Option<String>,
) -> PyResult<String> {
    let precision = match precision {
        "f32" => Precision::F32,
        "f16" => Precision::F16,
        "bf16" => Precision::Bf16,
        "int8" => Precision::Int8,
        _ => return Err(input_error(format!("precision `{precision}` is not one of f32, f16, bf16, int8"))),
    };
    let overrides: Option<serde_json::Map<String, serde_json::Value>> = match &preprocess_json {
        Some(j) => Some(serde_json::from_str(j).map_err(|e| input_error(format!("preprocess: {e}")))?),
        None => None,
    };
    py.detach(|| {
        let labels = labels.as_deref().map(Labels::read).transpose()?;
        let opts = ConvertOptions { arch, heads, preprocess: None, labels, ..Default::default() };
        let mut prepared = convert::prepare_file(&checkpoint, &opts)?;
        if let Some(o) = &overrides {
            prepared.override_preprocess(o)?;
        }
        let (writer, report) = convert::build_blob(&prepared, precision, calibrate.as_deref(), calib_count)?;
        convert::write_blob(&writer, &output)?;
        let bytes = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
        let summary = serde_json::json!({
            "output": output.display().to_string(),
            "bytes": bytes,
            "precision": precision.as_str(),
            "architecture": prepared.config.arch,
            "report": report,
        });
        Ok::<String, convert::ConvertError>(summary.to_string())
    })
    .map_err(|e| Error::new_err(e.to_string()))
}

/// The extension module of the `vitedge` package.
#[pymodule]
fn _vitedge(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).try_init();
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("InputError", input_error_type(py)?.bind(py))?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Model>()?;
    m.add_class::<Prediction>()?;
    let libcamera = PyDict::new(py);
    for (name, format) in LIBCAMERA_FORMATS {
        libcamera.set_item(name, format.name())?;
    }
    m.add("LIBCAMERA_FORMATS", libcamera)?;
    m.add_function(wrap_pyfunction!(convert_checkpoint, m)?)?;
    Ok(())
}
