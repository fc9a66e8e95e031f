//! Frame sources: raw frames from a file or pipe, and the [`FrameSource`] trait the reader thread
//! drives (cameras implement it in [`super::v4l2`]).

use std::io::{ErrorKind, Read};

use super::StreamError;

/// Result of one [`FrameSource::read_frame`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadOutcome {
    /// A complete frame is in the buffer, captured at `timestamp` (Unix seconds).
    Frame {
        /// Capture time, Unix seconds.
        timestamp: f64,
    },
    /// A frame was incomplete or unusable and was skipped (already logged); more may follow.
    Skipped,
    /// The source has ended.
    End,
}

/// Something that yields frames of one fixed byte length.
pub trait FrameSource: Send {
    /// Reads the next frame into `buf` (exactly the frame length).
    fn read_frame(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, StreamError>;
    /// Short description for logs (`stdin`, a path, a device and its format).
    fn describe(&self) -> String;
}

/// The current time as Unix seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Raw frames back to back from any reader (a file, a FIFO, stdin).
pub struct RawReader<R> {
    reader: R,
    name: String,
    ended: bool,
}

impl<R: Read + Send> RawReader<R> {
    /// Frames from `reader`, called `name` in messages.
    pub fn new(reader: R, name: impl Into<String>) -> Self {
        RawReader { reader, name: name.into(), ended: false }
    }
}

impl<R: Read + Send> FrameSource for RawReader<R> {
    fn read_frame(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, StreamError> {
        if self.ended {
            return Ok(ReadOutcome::End);
        }
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(StreamError::Io { what: format!("reading {}", self.name), source: e }),
            }
        }
        if filled == buf.len() {
            return Ok(ReadOutcome::Frame { timestamp: unix_now() });
        }
        self.ended = true;
        if filled == 0 {
            return Ok(ReadOutcome::End);
        }
        log::warn!(
            "{}: the last frame is short ({filled} of {} bytes) and was skipped; if every frame is off, check --size and --pixel-format",
            self.name,
            buf.len()
        );
        Ok(ReadOutcome::Skipped)
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frames_then_a_short_one_then_end() {
        let data: Vec<u8> = (0..25u8).collect();
        let mut src = RawReader::new(&data[..], "mem");
        let mut buf = [0u8; 10];
        assert!(matches!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Frame { .. }));
        assert_eq!(buf[9], 9);
        assert!(matches!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Frame { .. }));
        assert_eq!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Skipped);
        assert_eq!(src.read_frame(&mut buf).unwrap(), ReadOutcome::End);
        assert_eq!(src.read_frame(&mut buf).unwrap(), ReadOutcome::End);
    }

    #[test]
    fn exact_multiple_ends_cleanly() {
        let data = [7u8; 20];
        let mut src = RawReader::new(&data[..], "mem");
        let mut buf = [0u8; 10];
        for _ in 0..2 {
            assert!(matches!(src.read_frame(&mut buf).unwrap(), ReadOutcome::Frame { .. }));
        }
        assert_eq!(src.read_frame(&mut buf).unwrap(), ReadOutcome::End);
    }

    #[test]
    fn read_errors_are_reported_with_the_source_name() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("cable unplugged"))
            }
        }
        let err = RawReader::new(Broken, "cam.raw").read_frame(&mut [0u8; 4]).unwrap_err();
        assert!(err.to_string().contains("cam.raw") && err.to_string().contains("cable unplugged"), "{err}");
    }
}
