//! Cameras: a small [`CaptureDevice`] trait, the real V4L2 implementation (memory-mapped streaming
//! I/O through `libc::ioctl`), a [`FakeDevice`] for tests, format negotiation and [`DeviceSource`],
//! which turns dequeued buffers into tightly packed frames (row padding removed, MJPEG decoded to RGB).
//!
//! Works with single-planar capture devices: USB UVC webcams, and Raspberry Pi cameras through
//! libcamera's V4L2 compatibility layer (`libcamerify vitedge stream …`). Multi-planar-only drivers
//! (`V4L2_CAP_VIDEO_CAPTURE_MPLANE`) are refused with a message pointing there.
//! Struct layouts match `<linux/videodev2.h>` (sizes checked by tests on 64-bit Linux); the ioctl
//! numbers use the generic Linux encoding (x86, Arm, RISC-V).

use std::time::Duration;

use super::pixel::{frame_size, row_bytes, PixelFormat};
use super::source::{unix_now, FrameSource, ReadOutcome};
use super::StreamError;

/// A V4L2 pixel format code (`v4l2_fourcc(a, b, c, d)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FourCC(pub u32);

impl FourCC {
    /// The code for four ASCII characters.
    pub const fn new(code: &[u8; 4]) -> Self {
        FourCC(code[0] as u32 | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24)
    }
    /// Motion JPEG (UVC webcams).
    pub const MJPEG: FourCC = FourCC::new(b"MJPG");
    /// Plain JPEG (some webcams report this instead of MJPG).
    pub const JPEG: FourCC = FourCC::new(b"JPEG");

    /// The V4L2 code of a raw pixel format.
    pub fn of(format: PixelFormat) -> FourCC {
        FourCC::new(match format {
            PixelFormat::Rgb24 => b"RGB3",
            PixelFormat::Bgr24 => b"BGR3",
            PixelFormat::Yuyv => b"YUYV",
            PixelFormat::Uyvy => b"UYVY",
            PixelFormat::Nv12 => b"NV12",
            PixelFormat::I420 => b"YU12",
        })
    }

    /// The raw pixel format of this code, if vitedge reads it.
    pub fn pixel_format(self) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|&f| FourCC::of(f) == self)
    }
}

impl std::fmt::Display for FourCC {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0.to_le_bytes() {
            let c = if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The format a device agreed to (after the driver adjusted the request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceFormat {
    /// Pixel format code.
    pub fourcc: FourCC,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes per row of the first plane (may include padding).
    pub bytes_per_line: usize,
    /// Bytes of one buffer the driver needs.
    pub size_image: usize,
}

/// One buffer handed out by [`CaptureDevice::dequeue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dequeued {
    /// Buffer index (give it back with [`CaptureDevice::requeue`]).
    pub index: usize,
    /// Valid bytes in the buffer.
    pub bytes_used: usize,
    /// Capture time on `CLOCK_MONOTONIC`, when the driver gives one.
    pub monotonic: Option<Duration>,
    /// The driver flagged the data as corrupt.
    pub corrupt: bool,
}

/// A camera with streaming I/O: negotiate a format, start, then dequeue / requeue buffers.
pub trait CaptureDevice: Send {
    /// Pixel formats the device offers.
    fn formats(&mut self) -> Result<Vec<FourCC>, StreamError>;
    /// Asks for `fourcc` at `width × height`; the driver may adjust the size.
    fn set_format(&mut self, fourcc: FourCC, width: usize, height: usize) -> Result<DeviceFormat, StreamError>;
    /// Allocates `buffers` buffers, queues them all and starts streaming.
    fn start(&mut self, buffers: usize) -> Result<(), StreamError>;
    /// Waits for the next filled buffer; `None` when the device has no more frames (fakes only).
    fn dequeue(&mut self) -> Result<Option<Dequeued>, StreamError>;
    /// The memory of buffer `index`.
    fn data(&self, index: usize) -> &[u8];
    /// Gives buffer `index` back to the driver.
    fn requeue(&mut self, index: usize) -> Result<(), StreamError>;
    /// Stops streaming (also done on drop).
    fn stop(&mut self);
    /// Name for messages.
    fn name(&self) -> String;
}

/// How frames arrive from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureKind {
    /// Raw pixels in this format.
    Raw(PixelFormat),
    /// Motion JPEG, decoded to RGB24.
    Mjpeg,
}

/// The result of [`negotiate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// How frames arrive.
    pub kind: CaptureKind,
    /// What the driver agreed to.
    pub format: DeviceFormat,
}

impl Negotiated {
    /// The pixel format of the frames [`DeviceSource`] delivers.
    pub fn frame_format(&self) -> PixelFormat {
        match self.kind {
            CaptureKind::Raw(f) => f,
            CaptureKind::Mjpeg => PixelFormat::Rgb24,
        }
    }
    /// Bytes of one delivered frame.
    pub fn frame_len(&self) -> usize {
        frame_size(self.frame_format(), self.format.width, self.format.height)
    }
}

/// Format preference when `--pixel-format` is not given: raw formats first (no decoding), MJPEG last.
const PREFERENCE: [PixelFormat; 6] =
    [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::I420, PixelFormat::Uyvy, PixelFormat::Rgb24, PixelFormat::Bgr24];

/// Picks a format the device offers (the requested one, or the first of [`PREFERENCE`], or MJPEG)
/// and sets it at `width × height`. A size the driver adjusts is accepted with a warning.
pub fn negotiate(dev: &mut dyn CaptureDevice, requested: Option<PixelFormat>, width: usize, height: usize) -> Result<Negotiated, StreamError> {
    let offered = dev.formats()?;
    let list = || offered.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ");
    let mjpeg = offered.iter().copied().find(|&f| f == FourCC::MJPEG || f == FourCC::JPEG);
    let (fourcc, kind) = match requested {
        Some(f) if offered.contains(&FourCC::of(f)) => (FourCC::of(f), CaptureKind::Raw(f)),
        Some(f) => {
            return Err(StreamError::Device(format!(
                "{} does not offer {f} ({}); it offers {}. Omit --pixel-format to let vitedge choose",
                dev.name(),
                FourCC::of(f),
                list()
            )))
        }
        None => match PREFERENCE.iter().find(|&&f| offered.contains(&FourCC::of(f))) {
            Some(&f) => (FourCC::of(f), CaptureKind::Raw(f)),
            None => match mjpeg {
                Some(m) => (m, CaptureKind::Mjpeg),
                None => return Err(StreamError::Device(format!("{} offers no format vitedge reads ({}); supported: YUYV, NV12, YU12, UYVY, RGB3, BGR3, MJPG", dev.name(), list()))),
            },
        },
    };
    let format = dev.set_format(fourcc, width, height)?;
    if format.fourcc != fourcc {
        return Err(StreamError::Device(format!("{} was asked for {fourcc} but switched to {}", dev.name(), format.fourcc)));
    }
    if (format.width, format.height) != (width, height) {
        log::warn!("{} adjusted the frame size from {width}x{height} to {}x{}", dev.name(), format.width, format.height);
    }
    if let CaptureKind::Raw(f) = kind {
        if format.bytes_per_line < row_bytes(f, format.width) {
            return Err(StreamError::Device(format!("{} reports {} bytes per line, less than a {}-pixel {f} row", dev.name(), format.bytes_per_line, format.width)));
        }
    }
    log::info!("{}: {} {}x{} ({} bytes per line)", dev.name(), format.fourcc, format.width, format.height, format.bytes_per_line);
    Ok(Negotiated { kind, format })
}

/// Copies a (possibly row-padded) single-planar V4L2 buffer into a tight frame. `None` if `data`
/// is too short for the geometry.
pub(crate) fn compact(data: &[u8], format: PixelFormat, width: usize, height: usize, stride: usize, out: &mut [u8]) -> Option<()> {
    let row = row_bytes(format, width);
    // (rows, source stride, packed row bytes) of each plane, in memory order.
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let planes: [(usize, usize, usize); 3] = match format {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 | PixelFormat::Yuyv | PixelFormat::Uyvy => [(height, stride, row), (0, 0, 0), (0, 0, 0)],
        PixelFormat::Nv12 => [(height, stride, width), (ch, stride, cw * 2), (0, 0, 0)],
        PixelFormat::I420 => [(height, stride, width), (ch, stride / 2, cw), (ch, stride / 2, cw)],
    };
    if planes.iter().all(|&(rows, s, r)| rows == 0 || s == r) && data.len() >= out.len() {
        out.copy_from_slice(&data[..out.len()]);
        return Some(());
    }
    if planes.iter().any(|&(rows, s, r)| rows > 0 && s < r) {
        return None;
    }
    let (mut src, mut dst) = (0, 0);
    for (rows, s, r) in planes {
        for _ in 0..rows {
            out[dst..dst + r].copy_from_slice(data.get(src..src + r)?);
            src += s;
            dst += r;
        }
    }
    Some(())
}

/// Frames from a started [`CaptureDevice`], as tight frames of [`Negotiated::frame_format`].
pub struct DeviceSource<D: CaptureDevice> {
    dev: D,
    negotiated: Negotiated,
}

impl<D: CaptureDevice> DeviceSource<D> {
    /// Negotiates a format on `dev`, maps `buffers` buffers and starts streaming.
    pub fn start(mut dev: D, requested: Option<PixelFormat>, width: usize, height: usize, buffers: usize) -> Result<Self, StreamError> {
        let negotiated = negotiate(&mut dev, requested, width, height)?;
        dev.start(buffers)?;
        Ok(DeviceSource { dev, negotiated })
    }

    /// What was negotiated.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    fn fill(&self, d: &Dequeued, buf: &mut [u8]) -> Result<(), String> {
        let f = self.negotiated.format;
        let data = self.dev.data(d.index);
        let data = &data[..d.bytes_used.min(data.len())];
        match self.negotiated.kind {
            CaptureKind::Raw(pf) => compact(data, pf, f.width, f.height, f.bytes_per_line, buf)
                .ok_or_else(|| format!("{} of {} bytes", data.len(), frame_size(pf, f.width, f.height))),
            CaptureKind::Mjpeg => {
                // The decoder `classify` uses (libjpeg, like Pillow), limited to the negotiated size:
                // a frame whose header claims more pixels is refused before decoding.
                let limits = crate::preprocess::DecodeLimits { max_pixels: (f.width * f.height) as u64 };
                let (rgb, w, h) = crate::preprocess::decode_rgb8(data, "MJPEG frame", &limits).map_err(|e| format!("MJPEG decode: {e}"))?;
                if (w, h) != (f.width, f.height) {
                    return Err(format!("MJPEG frame is {w}x{h}, expected {}x{}", f.width, f.height));
                }
                buf.copy_from_slice(&rgb);
                Ok(())
            }
        }
    }
}

/// `CLOCK_MONOTONIC` now.
fn monotonic_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

impl<D: CaptureDevice> FrameSource for DeviceSource<D> {
    fn read_frame(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, StreamError> {
        let Some(d) = self.dev.dequeue()? else { return Ok(ReadOutcome::End) };
        let filled = if d.corrupt { Err("the driver flagged the buffer as corrupt".to_string()) } else { self.fill(&d, buf) };
        self.dev.requeue(d.index)?;
        match filled {
            Ok(()) => {
                let timestamp = match d.monotonic {
                    Some(t) if t > Duration::ZERO => unix_now() - monotonic_now().saturating_sub(t).as_secs_f64(),
                    _ => unix_now(),
                };
                Ok(ReadOutcome::Frame { timestamp })
            }
            Err(why) => {
                log::warn!("{}: skipped a frame: {why}", self.dev.name());
                Ok(ReadOutcome::Skipped)
            }
        }
    }

    fn describe(&self) -> String {
        let f = self.negotiated.format;
        format!("{} ({} {}x{})", self.dev.name(), f.fourcc, f.width, f.height)
    }
}

/// An in-memory camera for tests: serves `frames` (each `size_image` bytes, row padding included)
/// through `buffers` rotating buffers, then ends, or "disappears" (`ENODEV`) if told to.
pub struct FakeDevice {
    /// Formats offered.
    pub offered: Vec<FourCC>,
    /// Size the fake "driver" forces, if any (like a camera with one mode).
    pub forced_size: Option<(usize, usize)>,
    /// Extra bytes of padding per row.
    pub row_padding: usize,
    /// Frames to serve, in order.
    pub frames: Vec<Vec<u8>>,
    /// After the frames: fail with "device disappeared" instead of ending.
    pub disappear: bool,
    format: Option<DeviceFormat>,
    buffers: Vec<Vec<u8>>,
    queued: Vec<bool>,
    next: usize,
    streaming: bool,
}

impl FakeDevice {
    /// A fake offering `offered` and serving `frames`.
    pub fn new(offered: Vec<FourCC>, frames: Vec<Vec<u8>>) -> Self {
        FakeDevice { offered, forced_size: None, row_padding: 0, frames, disappear: false, format: None, buffers: Vec::new(), queued: Vec::new(), next: 0, streaming: false }
    }
    /// Buffers currently owned by the driver (queued).
    pub fn queued(&self) -> usize {
        self.queued.iter().filter(|q| **q).count()
    }
}

impl CaptureDevice for FakeDevice {
    fn formats(&mut self) -> Result<Vec<FourCC>, StreamError> {
        Ok(self.offered.clone())
    }

    fn set_format(&mut self, fourcc: FourCC, width: usize, height: usize) -> Result<DeviceFormat, StreamError> {
        let (w, h) = self.forced_size.unwrap_or((width, height));
        let (bpl, size) = match fourcc.pixel_format() {
            Some(pf) => {
                let bpl = row_bytes(pf, w) + self.row_padding;
                let size = match pf {
                    PixelFormat::Nv12 => bpl * (h + h.div_ceil(2)),
                    PixelFormat::I420 => bpl * h + 2 * (bpl / 2) * h.div_ceil(2),
                    _ => bpl * h,
                };
                (bpl, size)
            }
            None => (0, w * h * 3),
        };
        let f = DeviceFormat { fourcc, width: w, height: h, bytes_per_line: bpl, size_image: size };
        self.format = Some(f);
        Ok(f)
    }

    fn start(&mut self, buffers: usize) -> Result<(), StreamError> {
        let f = self.format.ok_or_else(|| StreamError::Device("fake: start before set_format".into()))?;
        let largest = self.frames.iter().map(Vec::len).max().unwrap_or(0).max(f.size_image);
        self.buffers = vec![vec![0; largest]; buffers];
        self.queued = vec![true; buffers];
        self.streaming = true;
        Ok(())
    }

    fn dequeue(&mut self) -> Result<Option<Dequeued>, StreamError> {
        if !self.streaming {
            return Err(StreamError::Device("fake: dequeue while not streaming".into()));
        }
        if self.next == self.frames.len() {
            return if self.disappear { Err(StreamError::DeviceGone(self.name())) } else { Ok(None) };
        }
        let index = self.queued.iter().position(|q| *q).ok_or_else(|| StreamError::Device("fake: dequeue with no buffer queued (a buffer was not requeued)".into()))?;
        let frame = &self.frames[self.next];
        self.buffers[index][..frame.len()].copy_from_slice(frame);
        self.queued[index] = false;
        self.next += 1;
        Ok(Some(Dequeued { index, bytes_used: frame.len(), monotonic: Some(monotonic_now()), corrupt: false }))
    }

    fn data(&self, index: usize) -> &[u8] {
        &self.buffers[index]
    }

    fn requeue(&mut self, index: usize) -> Result<(), StreamError> {
        match self.queued.get_mut(index) {
            Some(q) if !*q => {
                *q = true;
                Ok(())
            }
            _ => Err(StreamError::Device(format!("fake: requeue of buffer {index} that is not dequeued"))),
        }
    }

    fn stop(&mut self) {
        self.streaming = false;
    }

    fn name(&self) -> String {
        "fake camera".into()
    }
}

pub use real::V4l2Device;

/// The real device: `<linux/videodev2.h>` structs and ioctls.
mod real {
    use std::ffi::CString;

    use super::*;

    pub(super) const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
    const MEMORY_MMAP: u32 = 1;
    const FIELD_ANY: u32 = 0;
    const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
    const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
    const CAP_STREAMING: u32 = 0x0400_0000;
    const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
    const BUF_FLAG_ERROR: u32 = 0x0000_0040;
    const BUF_FLAG_TIMESTAMP_MASK: u32 = 0x0000_e000;
    const BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;

    /// `struct v4l2_capability` (104 bytes).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct Capability {
        pub driver: [u8; 16],
        pub card: [u8; 32],
        pub bus_info: [u8; 32],
        pub version: u32,
        pub capabilities: u32,
        pub device_caps: u32,
        pub reserved: [u32; 3],
    }

    /// `struct v4l2_fmtdesc` (64 bytes).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct FmtDesc {
        pub index: u32,
        pub type_: u32,
        pub flags: u32,
        pub description: [u8; 32],
        pub pixelformat: u32,
        pub mbus_code: u32,
        pub reserved: [u32; 3],
    }

    /// `struct v4l2_pix_format` (48 bytes).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct PixFormat {
        pub width: u32,
        pub height: u32,
        pub pixelformat: u32,
        pub field: u32,
        pub bytesperline: u32,
        pub sizeimage: u32,
        pub colorspace: u32,
        pub priv_: u32,
        pub flags: u32,
        pub ycbcr_enc: u32,
        pub quantization: u32,
        pub xfer_func: u32,
    }

    /// The 200-byte `fmt` union of `struct v4l2_format`; pointer-aligned because `v4l2_window` holds pointers.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) union FormatUnion {
        pub pix: PixFormat,
        pub raw_data: [u8; 200],
        pub _align: [usize; 200 / std::mem::size_of::<usize>()],
    }

    /// `struct v4l2_format` (208 bytes on 64-bit, 204 on 32-bit).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct Format {
        pub type_: u32,
        pub fmt: FormatUnion,
    }

    /// `struct v4l2_requestbuffers` (20 bytes).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct RequestBuffers {
        pub count: u32,
        pub type_: u32,
        pub memory: u32,
        pub capabilities: u32,
        pub flags: u8,
        pub reserved: [u8; 3],
    }

    /// `struct v4l2_timecode` (16 bytes).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct Timecode {
        pub type_: u32,
        pub flags: u32,
        pub frames: u8,
        pub seconds: u8,
        pub minutes: u8,
        pub hours: u8,
        pub userbits: [u8; 4],
    }

    /// The `m` union of `struct v4l2_buffer`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) union BufferM {
        pub offset: u32,
        pub userptr: libc::c_ulong,
        pub fd: i32,
    }

    /// `struct v4l2_buffer` (88 bytes on 64-bit).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct Buffer {
        pub index: u32,
        pub type_: u32,
        pub bytesused: u32,
        pub flags: u32,
        pub field: u32,
        pub timestamp: libc::timeval,
        pub timecode: Timecode,
        pub sequence: u32,
        pub memory: u32,
        pub m: BufferM,
        pub length: u32,
        pub reserved2: u32,
        pub request_fd: i32,
    }

    /// Linux's generic `_IOC(dir, 'V', nr, size)`.
    const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
        (dir << 30) | ((size as u32) << 16) | ((b'V' as u32) << 8) | nr
    }
    const READ: u32 = 2;
    const WRITE: u32 = 1;
    pub(super) const VIDIOC_QUERYCAP: u32 = ioc(READ, 0, std::mem::size_of::<Capability>());
    pub(super) const VIDIOC_ENUM_FMT: u32 = ioc(READ | WRITE, 2, std::mem::size_of::<FmtDesc>());
    pub(super) const VIDIOC_S_FMT: u32 = ioc(READ | WRITE, 5, std::mem::size_of::<Format>());
    pub(super) const VIDIOC_REQBUFS: u32 = ioc(READ | WRITE, 8, std::mem::size_of::<RequestBuffers>());
    pub(super) const VIDIOC_QUERYBUF: u32 = ioc(READ | WRITE, 9, std::mem::size_of::<Buffer>());
    pub(super) const VIDIOC_QBUF: u32 = ioc(READ | WRITE, 15, std::mem::size_of::<Buffer>());
    pub(super) const VIDIOC_DQBUF: u32 = ioc(READ | WRITE, 17, std::mem::size_of::<Buffer>());
    pub(super) const VIDIOC_STREAMON: u32 = ioc(WRITE, 18, std::mem::size_of::<libc::c_int>());
    pub(super) const VIDIOC_STREAMOFF: u32 = ioc(WRITE, 19, std::mem::size_of::<libc::c_int>());

    fn cstr(bytes: &[u8]) -> String {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }

    /// A V4L2 capture device opened for memory-mapped streaming.
    pub struct V4l2Device {
        fd: libc::c_int,
        path: String,
        card: String,
        /// `(address, length)` of each mapped buffer.
        maps: Vec<(*mut libc::c_void, usize)>,
        streaming: bool,
    }

    // SAFETY: the device owns its file descriptor and mappings exclusively; they are only used through
    // `&self` / `&mut self`, so moving the owner to the reader thread is sound.
    unsafe impl Send for V4l2Device {}

    impl V4l2Device {
        /// Opens `path` and checks it is a single-planar capture device with streaming I/O.
        pub fn open(path: &str) -> Result<Self, StreamError> {
            let c = CString::new(path).map_err(|_| StreamError::Usage(format!("device path {path:?} contains a NUL byte")))?;
            // SAFETY: `c` is a valid NUL-terminated string; the flags are plain open(2) flags.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied { " (add the user to the `video` group)" } else { "" };
                return Err(StreamError::Device(format!("cannot open {path}: {e}{hint}")));
            }
            let mut dev = V4l2Device { fd, path: path.to_string(), card: String::new(), maps: Vec::new(), streaming: false };
            // SAFETY: all-zero is a valid `Capability` (integers and byte arrays).
            let mut cap: Capability = unsafe { std::mem::zeroed() };
            dev.ioctl(VIDIOC_QUERYCAP, &mut cap, "VIDIOC_QUERYCAP")
                .map_err(|e| StreamError::Device(format!("{path} is not a V4L2 device ({e})")))?;
            let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 { cap.device_caps } else { cap.capabilities };
            dev.card = format!("{} [{}]", cstr(&cap.card), cstr(&cap.driver));
            if caps & CAP_VIDEO_CAPTURE == 0 {
                let why = if caps & CAP_VIDEO_CAPTURE_MPLANE != 0 {
                    "it only has the multi-planar API; on a Raspberry Pi camera run through libcamera's V4L2 compatibility layer (`libcamerify vitedge stream …`)"
                } else {
                    "it is not a video capture device (try another /dev/videoN; `v4l2-ctl --list-devices` lists them)"
                };
                return Err(StreamError::Device(format!("{path} ({}): {why}", dev.card)));
            }
            if caps & CAP_STREAMING == 0 {
                return Err(StreamError::Device(format!("{path} ({}) does not support streaming I/O", dev.card)));
            }
            Ok(dev)
        }

        /// One ioctl on the device; retries on `EINTR`.
        fn ioctl<T>(&self, request: u32, arg: &mut T, what: &str) -> Result<(), std::io::Error> {
            loop {
                // SAFETY: `arg` is a live, exclusively borrowed `#[repr(C)]` value whose size is encoded
                // in `request` (the constants above are built from `size_of::<T>()` of the same types).
                let r = unsafe { libc::ioctl(self.fd, request as _, arg as *mut T) };
                if r >= 0 {
                    return Ok(());
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(std::io::Error::new(e.kind(), format!("{what}: {e}")));
                }
            }
        }

        fn gone_or(&self, e: std::io::Error) -> StreamError {
            match e.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) | Some(libc::EIO) => StreamError::DeviceGone(format!("{} ({e})", self.path)),
                _ => StreamError::Device(format!("{}: {e}", self.path)),
            }
        }

        fn unmap(&mut self) {
            for (addr, len) in self.maps.drain(..) {
                // SAFETY: `addr`/`len` come from a successful mmap in `start` and are unmapped once.
                unsafe { libc::munmap(addr, len) };
            }
        }
    }

    impl CaptureDevice for V4l2Device {
        fn formats(&mut self) -> Result<Vec<FourCC>, StreamError> {
            let mut out = Vec::new();
            for index in 0..64 {
                // SAFETY: all-zero is a valid `FmtDesc`.
                let mut d: FmtDesc = unsafe { std::mem::zeroed() };
                d.index = index;
                d.type_ = BUF_TYPE_VIDEO_CAPTURE;
                match self.ioctl(VIDIOC_ENUM_FMT, &mut d, "VIDIOC_ENUM_FMT") {
                    Ok(()) => out.push(FourCC(d.pixelformat)),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                    Err(e) => return Err(self.gone_or(e)),
                }
            }
            Ok(out)
        }

        fn set_format(&mut self, fourcc: FourCC, width: usize, height: usize) -> Result<DeviceFormat, StreamError> {
            // SAFETY: all-zero is a valid `Format` (the union's every variant is plain data).
            let mut f: Format = unsafe { std::mem::zeroed() };
            f.type_ = BUF_TYPE_VIDEO_CAPTURE;
            f.fmt.pix = PixFormat { width: width as u32, height: height as u32, pixelformat: fourcc.0, field: FIELD_ANY, ..zero_pix() };
            self.ioctl(VIDIOC_S_FMT, &mut f, "VIDIOC_S_FMT").map_err(|e| self.gone_or(e))?;
            // SAFETY: for the capture buffer type the driver fills the `pix` variant.
            let pix = unsafe { f.fmt.pix };
            Ok(DeviceFormat {
                fourcc: FourCC(pix.pixelformat),
                width: pix.width as usize,
                height: pix.height as usize,
                bytes_per_line: pix.bytesperline as usize,
                size_image: pix.sizeimage as usize,
            })
        }

        fn start(&mut self, buffers: usize) -> Result<(), StreamError> {
            let mut req = RequestBuffers { count: buffers as u32, type_: BUF_TYPE_VIDEO_CAPTURE, memory: MEMORY_MMAP, capabilities: 0, flags: 0, reserved: [0; 3] };
            self.ioctl(VIDIOC_REQBUFS, &mut req, "VIDIOC_REQBUFS").map_err(|e| self.gone_or(e))?;
            if req.count < 2 {
                return Err(StreamError::Device(format!("{}: the driver granted only {} buffers", self.path, req.count)));
            }
            for index in 0..req.count {
                let mut b = zero_buffer(index);
                self.ioctl(VIDIOC_QUERYBUF, &mut b, "VIDIOC_QUERYBUF").map_err(|e| self.gone_or(e))?;
                // SAFETY: for MMAP buffers QUERYBUF fills `m.offset`.
                let offset = unsafe { b.m.offset };
                // SAFETY: maps `length` bytes of the device at the driver-given offset, shared and
                // read/write as V4L2 requires; the result is checked against MAP_FAILED.
                let addr = unsafe {
                    libc::mmap(std::ptr::null_mut(), b.length as usize, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, self.fd, offset as libc::off_t)
                };
                if addr == libc::MAP_FAILED {
                    return Err(StreamError::Device(format!("{}: mmap of buffer {index}: {}", self.path, std::io::Error::last_os_error())));
                }
                self.maps.push((addr, b.length as usize));
            }
            for index in 0..req.count {
                self.requeue(index as usize)?;
            }
            let mut t = BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
            self.ioctl(VIDIOC_STREAMON, &mut t, "VIDIOC_STREAMON").map_err(|e| self.gone_or(e))?;
            self.streaming = true;
            Ok(())
        }

        fn dequeue(&mut self) -> Result<Option<Dequeued>, StreamError> {
            let mut b = zero_buffer(0);
            self.ioctl(VIDIOC_DQBUF, &mut b, "VIDIOC_DQBUF").map_err(|e| self.gone_or(e))?;
            let index = b.index as usize;
            let len = self.maps.get(index).map(|m| m.1).ok_or_else(|| StreamError::Device(format!("{}: the driver returned unknown buffer {index}", self.path)))?;
            let monotonic = (b.flags & BUF_FLAG_TIMESTAMP_MASK == BUF_FLAG_TIMESTAMP_MONOTONIC)
                .then(|| Duration::new(b.timestamp.tv_sec.max(0) as u64, (b.timestamp.tv_usec.clamp(0, 999_999) as u32) * 1000));
            Ok(Some(Dequeued { index, bytes_used: (b.bytesused as usize).min(len), monotonic, corrupt: b.flags & BUF_FLAG_ERROR != 0 }))
        }

        fn data(&self, index: usize) -> &[u8] {
            match self.maps.get(index) {
                // SAFETY: the mapping is live until `unmap` (which needs `&mut self`) and `len` bytes long.
                Some(&(addr, len)) => unsafe { std::slice::from_raw_parts(addr as *const u8, len) },
                None => &[],
            }
        }

        fn requeue(&mut self, index: usize) -> Result<(), StreamError> {
            let mut b = zero_buffer(index as u32);
            self.ioctl(VIDIOC_QBUF, &mut b, "VIDIOC_QBUF").map_err(|e| self.gone_or(e))
        }

        fn stop(&mut self) {
            if self.streaming {
                let mut t = BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
                let _ = self.ioctl(VIDIOC_STREAMOFF, &mut t, "VIDIOC_STREAMOFF");
                self.streaming = false;
            }
        }

        fn name(&self) -> String {
            if self.card.is_empty() {
                self.path.clone()
            } else {
                format!("{} {}", self.path, self.card)
            }
        }
    }

    impl Drop for V4l2Device {
        fn drop(&mut self) {
            self.stop();
            self.unmap();
            // SAFETY: `fd` was opened by `open` and is closed exactly once, here.
            unsafe { libc::close(self.fd) };
        }
    }

    fn zero_pix() -> PixFormat {
        PixFormat { width: 0, height: 0, pixelformat: 0, field: 0, bytesperline: 0, sizeimage: 0, colorspace: 0, priv_: 0, flags: 0, ycbcr_enc: 0, quantization: 0, xfer_func: 0 }
    }

    fn zero_buffer(index: u32) -> Buffer {
        Buffer {
            index,
            type_: BUF_TYPE_VIDEO_CAPTURE,
            bytesused: 0,
            flags: 0,
            field: 0,
            timestamp: libc::timeval { tv_sec: 0, tv_usec: 0 },
            timecode: Timecode { type_: 0, flags: 0, frames: 0, seconds: 0, minutes: 0, hours: 0, userbits: [0; 4] },
            sequence: 0,
            memory: MEMORY_MMAP,
            m: BufferM { userptr: 0 },
            length: 0,
            reserved2: 0,
            request_fd: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::real::*;
    use super::*;

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn struct_layouts_and_ioctl_numbers_match_videodev2_h() {
        use std::mem::{offset_of, size_of};
        // Values printed by a C program including <linux/videodev2.h> on x86-64 Linux.
        assert_eq!(size_of::<Capability>(), 104);
        assert_eq!(offset_of!(Capability, device_caps), 88);
        assert_eq!(size_of::<FmtDesc>(), 64);
        assert_eq!(offset_of!(FmtDesc, pixelformat), 44);
        assert_eq!(size_of::<PixFormat>(), 48);
        assert_eq!(size_of::<Format>(), 208);
        assert_eq!(offset_of!(Format, fmt), 8);
        assert_eq!(size_of::<RequestBuffers>(), 20);
        assert_eq!(size_of::<Timecode>(), 16);
        assert_eq!(size_of::<Buffer>(), 88);
        assert_eq!(offset_of!(Buffer, timestamp), 24);
        assert_eq!(offset_of!(Buffer, m), 64);
        assert_eq!(offset_of!(Buffer, length), 72);
        assert_eq!(VIDIOC_QUERYCAP, 0x8068_5600);
        assert_eq!(VIDIOC_ENUM_FMT, 0xc040_5602);
        assert_eq!(VIDIOC_S_FMT, 0xc0d0_5605);
        assert_eq!(VIDIOC_REQBUFS, 0xc014_5608);
        assert_eq!(VIDIOC_QUERYBUF, 0xc058_5609);
        assert_eq!(VIDIOC_QBUF, 0xc058_560f);
        assert_eq!(VIDIOC_DQBUF, 0xc058_5611);
        assert_eq!(VIDIOC_STREAMON, 0x4004_5612);
        assert_eq!(VIDIOC_STREAMOFF, 0x4004_5613);
        assert_eq!(FourCC::of(PixelFormat::Yuyv).0, 0x5659_5559);
        assert_eq!(FourCC::of(PixelFormat::Nv12).0, 0x3231_564e);
        assert_eq!(FourCC::of(PixelFormat::I420).0, 0x3231_5559);
        assert_eq!(FourCC::MJPEG.0, 0x4750_4a4d);
        assert_eq!(FourCC::MJPEG.to_string(), "MJPG");
    }

    #[test]
    fn opening_something_that_is_not_a_camera_is_a_clear_error() {
        // /dev/null opens fine but rejects VIDIOC_QUERYCAP (exercises open + ioctl + close).
        let err = V4l2Device::open("/dev/null").err().expect("not a camera");
        assert!(err.to_string().contains("is not a V4L2 device"), "{err}");
        let err = V4l2Device::open("/dev/video-does-not-exist").err().expect("missing");
        assert!(err.to_string().contains("cannot open"), "{err}");
    }

    fn pattern(format: PixelFormat, w: usize, h: usize, seed: u8) -> Vec<u8> {
        (0..frame_size(format, w, h)).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Lays a tight frame out with `pad` bytes after every row, like a driver with a stride.
    fn padded(tight: &[u8], format: PixelFormat, w: usize, h: usize, pad: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let bpl = row_bytes(format, w) + pad;
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let planes: Vec<(usize, usize, usize)> = match format {
            PixelFormat::Nv12 => vec![(h, w, bpl), (ch, cw * 2, bpl)],
            PixelFormat::I420 => vec![(h, w, bpl), (ch, cw, bpl / 2), (ch, cw, bpl / 2)],
            _ => vec![(h, row_bytes(format, w), bpl)],
        };
        let mut src = 0;
        for (rows, r, stride) in planes {
            for _ in 0..rows {
                out.extend_from_slice(&tight[src..src + r]);
                out.resize(out.len() + stride - r, 0xEE);
                src += r;
            }
        }
        out
    }

    #[test]
    fn negotiation_prefers_raw_formats_and_honours_requests() {
        let mut dev = FakeDevice::new(vec![FourCC::MJPEG, FourCC::of(PixelFormat::Yuyv)], vec![]);
        let n = negotiate(&mut dev, None, 640, 480).unwrap();
        assert_eq!(n.kind, CaptureKind::Raw(PixelFormat::Yuyv));
        let n = negotiate(&mut dev, Some(PixelFormat::Yuyv), 320, 240).unwrap();
        assert_eq!((n.format.width, n.frame_len()), (320, 320 * 240 * 2));
        let err = negotiate(&mut dev, Some(PixelFormat::Nv12), 320, 240).unwrap_err().to_string();
        assert!(err.contains("does not offer nv12") && err.contains("MJPG, YUYV"), "{err}");
        let mut mjpeg_only = FakeDevice::new(vec![FourCC::MJPEG], vec![]);
        let n = negotiate(&mut mjpeg_only, None, 64, 48).unwrap();
        assert_eq!((n.kind, n.frame_format()), (CaptureKind::Mjpeg, PixelFormat::Rgb24));
        let mut nothing = FakeDevice::new(vec![FourCC::new(b"GREY")], vec![]);
        assert!(negotiate(&mut nothing, None, 64, 48).unwrap_err().to_string().contains("no format vitedge reads"));
        let mut fixed = FakeDevice::new(vec![FourCC::of(PixelFormat::Nv12)], vec![]);
        fixed.forced_size = Some((1280, 720));
        let n = negotiate(&mut fixed, None, 640, 480).unwrap();
        assert_eq!((n.format.width, n.format.height), (1280, 720));
    }

    #[test]
    fn padded_rows_are_compacted_for_every_format() {
        for format in PixelFormat::ALL {
            for (w, h, pad) in [(8, 6, 0), (7, 5, 16), (64, 48, 64)] {
                let tight: Vec<Vec<u8>> = (0..3).map(|i| pattern(format, w, h, i)).collect();
                let mut dev = FakeDevice::new(vec![FourCC::of(format)], tight.iter().map(|t| padded(t, format, w, h, pad)).collect());
                dev.row_padding = pad;
                let mut src = DeviceSource::start(dev, Some(format), w, h, 2).unwrap();
                let mut buf = vec![0u8; src.negotiated().frame_len()];
                for t in &tight {
                    assert!(matches!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Frame { .. }), "{format} {w}x{h}+{pad}");
                    assert_eq!(&buf, t, "{format} {w}x{h}+{pad}");
                }
                assert_eq!(src.read_frame(&mut buf).unwrap(), ReadOutcome::End);
                assert_eq!(src.dev.queued(), 2, "every dequeued buffer goes back to the driver");
            }
        }
    }

    #[test]
    fn truncated_buffers_are_skipped_and_a_vanished_device_is_an_error() {
        let (w, h) = (16, 8);
        let good = pattern(PixelFormat::Nv12, w, h, 1);
        let mut dev = FakeDevice::new(vec![FourCC::of(PixelFormat::Nv12)], vec![good.clone(), good[..50].to_vec(), good.clone()]);
        dev.disappear = true;
        let mut src = DeviceSource::start(dev, None, w, h, 3).unwrap();
        let mut buf = vec![0u8; good.len()];
        assert!(matches!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Frame { .. }));
        assert_eq!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Skipped);
        assert!(matches!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Frame { .. }));
        let err = src.read_frame(&mut buf).unwrap_err();
        assert!(matches!(err, StreamError::DeviceGone(_)), "{err}");
    }

    #[test]
    fn mjpeg_frames_are_decoded_to_rgb() {
        let (w, h) = (32u32, 24u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| [(i % w * 8) as u8, (i / w * 10) as u8, 128]).collect();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode(&rgb, w, h, image::ExtendedColorType::Rgb8).unwrap();
        let wrong_size = {
            let mut j = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut j, 95).encode(&rgb[..(w * 8 * 3) as usize], w, 8, image::ExtendedColorType::Rgb8).unwrap();
            j
        };
        let dev = FakeDevice::new(vec![FourCC::MJPEG], vec![jpeg, b"not a jpeg".to_vec(), wrong_size]);
        let mut src = DeviceSource::start(dev, None, w as usize, h as usize, 2).unwrap();
        let mut buf = vec![0u8; (w * h * 3) as usize];
        assert!(matches!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Frame { .. }));
        let worst = buf.iter().zip(&rgb).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(worst < 24, "decoded MJPEG is {worst} levels off");
        assert_eq!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Skipped);
        assert_eq!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Skipped);
        assert_eq!(src.read_frame(&mut buf).unwrap(), ReadOutcome::End);
    }
}
