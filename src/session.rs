//! The embedding API: one opened model with its engine and reusable buffers, running exactly what
//! the CLI runs — `vitedge classify`'s decode + preprocessing for images, `vitedge stream`'s fused
//! frame preprocessing for raw frames, then the engine, softmax and top-K. The Python package and
//! the C library (`python/`, `capi/`) are thin layers over [`Session`].
//!
//! After the first frame of a geometry, [`Session::classify_frame`] and [`Session::logits`]
//! allocate nothing (the frame preprocessor and the buffers are kept); images
//! ([`Session::classify_rgb8`], [`Session::classify_file`]) allocate their decode and resize scratch
//! like the CLI does.

use std::path::Path;

use self_cell::self_cell;

use crate::engine::{self, Backend, Engine, EngineError, EngineOptions};
use crate::model::{Model, ModelError};
use crate::preprocess::PreprocessError;
use crate::stream::pixel::{check_geometry, row_bytes};
use crate::stream::{ColorSpec, FramePreprocessor, PixelFormat, StreamError};

/// Errors of a [`Session`]; the messages are the CLI's.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The blob cannot be opened or is not a model vitedge can run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The engine cannot be built or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An image cannot be decoded or preprocessed.
    #[error(transparent)]
    Image(#[from] PreprocessError),
    /// A raw frame does not match its declared geometry.
    #[error(transparent)]
    Frame(#[from] StreamError),
}

type BoxedEngine<'m> = Box<dyn Engine + 'm>;

self_cell!(
    /// A model and the engine that borrows its weights.
    struct Loaded {
        owner: Model,
        #[not_covariant]
        dependent: BoxedEngine,
    }
);

/// How a raw frame is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameLayout {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes from the start of one row of the first plane to the next (V4L2 `bytesperline`,
    /// libcamera/Picamera2 `stride`); `None` = tightly packed (ffmpeg `rawvideo`). 4:2:0 chroma
    /// rows follow the V4L2 convention: NV12's interleaved plane has the same stride, I420's U and
    /// V planes half of it.
    pub stride: Option<usize>,
    /// YCbCr → RGB conversion of YUV formats.
    pub color: ColorSpec,
}

impl FrameLayout {
    /// A tightly packed frame with the default colour conversion (BT.601, limited range).
    pub fn packed(format: PixelFormat, width: usize, height: usize) -> Self {
        FrameLayout { format, width, height, stride: None, color: ColorSpec::default() }
    }

    /// The stride when it differs from a packed row (`None` when the frame is packed).
    fn padded_stride(&self) -> Option<usize> {
        self.stride.filter(|&s| s != row_bytes(self.format, self.width))
    }

    /// Bytes a frame with this stride spans: every row of every plane at its stride, except that
    /// the last row needs no padding after it.
    fn strided_len(&self, stride: usize) -> (usize, usize) {
        let (w, h) = (self.width, self.height);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        // (rows, stride, packed row bytes) of the last plane, and bytes of the planes before it.
        let (before, (rows, s, r)) = match self.format {
            PixelFormat::Rgb24 | PixelFormat::Bgr24 | PixelFormat::Yuyv | PixelFormat::Uyvy => (0, (h, stride, row_bytes(self.format, w))),
            PixelFormat::Nv12 => (h * stride, (ch, stride, cw * 2)),
            PixelFormat::I420 => (h * stride + ch * (stride / 2), (ch, stride / 2, cw)),
        };
        let full = before + rows * s;
        (full - (s - r), full)
    }
}

/// The frame preprocessor of the last frame geometry, and the packed copy of strided frames.
struct FrameState {
    layout: FrameLayout,
    pre: FramePreprocessor,
    packed: Vec<u8>,
}

/// Softmax probabilities of the last classification and the indices of the best `k`, best first.
#[derive(Clone, Copy, Debug)]
pub struct Ranked<'s> {
    /// Probabilities of every class.
    pub probs: &'s [f32],
    /// Class indices of the top `k`, highest probability first (ties: lower index first).
    pub top: &'s [usize],
}

/// An opened model, its engine, and the buffers reused from call to call. Not shareable between
/// threads while in use (`&mut self`); wrap it in a mutex or open one per thread.
pub struct Session {
    loaded: Loaded,
    input: Vec<f32>,
    output: Vec<f32>,
    top: Vec<usize>,
    frame: Option<FrameState>,
}

impl Session {
    /// Opens the blob at `path` ([`Model::open`]) and builds the `backend` engine over it.
    pub fn open(path: impl AsRef<Path>, backend: Backend, options: &EngineOptions) -> Result<Session, SessionError> {
        let model = Model::open(path)?;
        Self::new(model, backend, options)
    }

    /// Builds the `backend` engine over an opened model.
    pub fn new(model: Model, backend: Backend, options: &EngineOptions) -> Result<Session, SessionError> {
        let (input_len, classes) = (model.config().input_len(), model.config().num_classes);
        let loaded = Loaded::try_new(model, |m| engine::create(m, backend, options))?;
        Ok(Session { loaded, input: vec![0.0; input_len], output: vec![0.0; classes], top: Vec::with_capacity(classes + 1), frame: None })
    }

    /// The model.
    pub fn model(&self) -> &Model {
        self.loaded.borrow_owner()
    }

    /// The engine's backend name (`native` or `tract`).
    pub fn backend(&mut self) -> &'static str {
        self.loaded.with_dependent_mut(|_, e| e.backend())
    }

    /// The engine's kernel description (as `vitedge bench` prints it).
    pub fn describe(&mut self) -> String {
        self.loaded.with_dependent_mut(|_, e| e.describe())
    }

    /// Runs the network on a preprocessed `3 × size × size` CHW tensor and returns the logits.
    pub fn logits(&mut self, tensor: &[f32]) -> Result<&[f32], SessionError> {
        let out = &mut self.output;
        self.loaded.with_dependent_mut(|_, e| e.infer(tensor, out))?;
        Ok(&self.output)
    }

    /// Classifies an interleaved RGB8 image of any size (`width × height × 3` bytes) with the
    /// model's preprocessing, as `vitedge classify` does after decoding.
    pub fn classify_rgb8(&mut self, rgb: &[u8], width: usize, height: usize, k: usize) -> Result<Ranked<'_>, SessionError> {
        crate::preprocess::preprocess_rgb8(rgb, width, height, self.loaded.borrow_owner().preprocess(), &mut self.input)?;
        self.run_input(k)
    }

    /// Decodes and classifies a JPEG or PNG file, as `vitedge classify` does.
    pub fn classify_file(&mut self, path: &Path, k: usize) -> Result<Ranked<'_>, SessionError> {
        crate::preprocess::preprocess_file(path, self.loaded.borrow_owner().preprocess(), &mut self.input)?;
        self.run_input(k)
    }

    /// Classifies one raw frame with `vitedge stream`'s fused preprocessing. Frames with a
    /// [`FrameLayout::stride`] wider than a packed row are first copied into a packed buffer (kept
    /// between calls). Nothing is allocated while the layout stays the same.
    pub fn classify_frame(&mut self, frame: &[u8], layout: &FrameLayout, k: usize) -> Result<Ranked<'_>, SessionError> {
        if self.frame.as_ref().is_none_or(|f| f.layout != *layout) {
            self.frame = None;
            self.frame = Some(self.frame_state(layout)?);
        }
        let state = self.frame.as_mut().expect("set above");
        let packed: &[u8] = match layout.padded_stride() {
            None => frame,
            Some(stride) => {
                let (min, full) = layout.strided_len(stride);
                if frame.len() < min || frame.len() > full {
                    return Err(StreamError::Usage(format!(
                        "frame has {} bytes, but a {}x{} {} frame with a stride of {stride} bytes has {full}: check the size, the stride and the pixel format",
                        frame.len(),
                        layout.width,
                        layout.height,
                        layout.format
                    ))
                    .into());
                }
                crate::stream::v4l2::compact(frame, layout.format, layout.width, layout.height, stride, &mut state.packed)
                    .ok_or_else(|| StreamError::Usage(format!("frame of {} bytes is too short for its stride {stride}", frame.len())))?;
                &state.packed
            }
        };
        // The row blocks of the preprocessing run on the engine's threads.
        let input = &mut self.input;
        self.loaded.with_dependent(|_, e| state.pre.run_on(packed, input, e.workers()))?;
        self.run_input(k)
    }

    /// Builds the preprocessor and packed buffer for a new frame layout, checking the stride.
    fn frame_state(&self, layout: &FrameLayout) -> Result<FrameState, SessionError> {
        let packed_len = check_geometry(layout.format, layout.width, layout.height)?;
        if let Some(stride) = layout.stride {
            let row = row_bytes(layout.format, layout.width);
            if stride < row {
                return Err(StreamError::Usage(format!("stride {stride} is less than one {}-pixel {} row ({row} bytes)", layout.width, layout.format)).into());
            }
            if layout.format == PixelFormat::I420 && stride != row && (stride % 2 != 0 || stride / 2 < layout.width.div_ceil(2)) {
                return Err(StreamError::Usage(format!("i420 stride {stride} must be even, with half of it holding a chroma row ({} bytes)", layout.width.div_ceil(2))).into());
            }
        }
        let pre = FramePreprocessor::new(self.model().preprocess(), layout.format, layout.width, layout.height, layout.color)?;
        let packed = if layout.padded_stride().is_some() { vec![0; packed_len] } else { Vec::new() };
        Ok(FrameState { layout: *layout, pre, packed })
    }

    /// Runs the engine on `self.input`, then softmax and top-`k` (as `vitedge stream`).
    fn run_input(&mut self, k: usize) -> Result<Ranked<'_>, SessionError> {
        let (input, out) = (&self.input, &mut self.output);
        self.loaded.with_dependent_mut(|_, e| e.infer(input, out))?;
        crate::classify::softmax(&mut self.output);
        let k = k.clamp(1, self.output.len());
        crate::stream::top_k_into(&self.output, k, &mut self.top);
        Ok(Ranked { probs: &self.output, top: &self.top })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::predictions;
    use crate::model::synthetic::{random_blob, tiny_config, Rng};
    use crate::stream::pixel::{frame_size, frame_to_rgb8};

    #[test]
    fn sessions_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<Session>();
    }

    fn session(dir: &Path) -> Session {
        let path = dir.join("tiny.vitb");
        random_blob(&tiny_config(10), 3).write(&path).unwrap();
        Session::open(&path, Backend::Native, &EngineOptions { kernels: "auto".into(), threads: 1, ..Default::default() }).unwrap()
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| (rng.next_u64() >> 56) as u8).collect()
    }

    #[test]
    fn images_rank_like_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = session(dir.path());
        let (w, h) = (57, 41);
        let rgb = noise(w * h * 3, 1);
        let model = Model::open(dir.path().join("tiny.vitb")).unwrap();
        let mut e = engine::create(&model, Backend::Native, &EngineOptions { kernels: "auto".into(), threads: 1, ..Default::default() }).unwrap();
        let mut input = vec![0f32; model.config().input_len()];
        crate::preprocess::preprocess_rgb8(&rgb, w, h, model.preprocess(), &mut input).unwrap();
        let mut logits = vec![0f32; 10];
        e.infer(&input, &mut logits).unwrap();
        let want = predictions(&logits, 5, |i| model.label(i));
        let got = s.classify_rgb8(&rgb, w, h, 5).unwrap();
        let got: Vec<(usize, f32)> = got.top.iter().map(|&i| (i, got.probs[i])).collect();
        assert_eq!(got, want.iter().map(|p| (p.index, p.score)).collect::<Vec<_>>());
        assert_eq!(s.logits(&input).unwrap(), &logits[..]);
    }

    #[test]
    fn strided_frames_equal_packed_frames_and_bad_strides_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = session(dir.path());
        for format in PixelFormat::ALL {
            let (w, h) = (45, 37);
            let packed = noise(frame_size(format, w, h), w as u64);
            let layout = FrameLayout::packed(format, w, h);
            let want = s.classify_frame(&packed, &layout, 3).unwrap().top.to_vec();
            // The same frame through the RGB path.
            let rgb = frame_to_rgb8(&packed, format, w, h, &ColorSpec::default()).unwrap();
            assert_eq!(s.classify_rgb8(&rgb, w, h, 3).unwrap().top, &want[..], "{format}");
            let row = row_bytes(format, w);
            let stride = (row + 23) & !1; // even, so I420's half-stride chroma rows are padded too
            let mut padded = Vec::new();
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let planes: Vec<(usize, usize, usize)> = match format {
                PixelFormat::Nv12 => vec![(h, w, stride), (ch, cw * 2, stride)],
                PixelFormat::I420 => vec![(h, w, stride), (ch, cw, stride / 2), (ch, cw, stride / 2)],
                _ => vec![(h, row, stride)],
            };
            let mut src = 0;
            for (rows, r, st) in planes {
                for _ in 0..rows {
                    padded.extend_from_slice(&packed[src..src + r]);
                    padded.resize(padded.len() + st - r, 0xA5);
                    src += r;
                }
            }
            let strided = FrameLayout { stride: Some(stride), ..layout };
            let got = s.classify_frame(&padded, &strided, 3).unwrap().top.to_vec();
            assert_eq!(got, want, "{format} with stride {stride}");
            // The last row's padding may be missing (a buffer that ends at the last pixel).
            let trimmed = &padded[..strided.strided_len(stride).0];
            assert_eq!(s.classify_frame(trimmed, &strided, 3).unwrap().top, &want[..], "{format}");
            let err = s.classify_frame(&padded[..padded.len() - 40], &strided, 3).unwrap_err().to_string();
            assert!(err.contains("stride of"), "{err}");
            let err = s.classify_frame(&packed, &FrameLayout { stride: Some(row - 1), ..layout }, 3).unwrap_err().to_string();
            assert!(err.contains("less than one"), "{err}");
            let err = s.classify_frame(&packed[1..], &layout, 3).unwrap_err().to_string();
            assert!(err.contains("check --size and --pixel-format"), "{err}");
        }
    }
}
