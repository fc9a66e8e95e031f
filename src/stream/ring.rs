//! The frame hand-off between the reader thread and inference: a fixed set of preallocated frame
//! buffers and a ready queue of at most two frames (`heapless`, no allocation after construction).
//!
//! With [`DropPolicy::Newest`] the queue holds one frame: a frame that arrives while another is still
//! waiting replaces it and the older one is counted as dropped, so inference always gets the newest
//! frame and the reader never blocks (a camera keeps its pace). With [`DropPolicy::Never`] the queue
//! holds two frames and the reader waits for space (every frame of a file is classified).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::StreamError;

/// Frame buffers in circulation: one being filled, up to two queued, one being classified.
const BUFFERS: usize = 4;
/// Ready-queue capacity.
const QUEUE: usize = 2;

/// What to do when frames arrive faster than they are classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DropPolicy {
    /// Keep only the newest frame, count the older ones as dropped (real time; default for pipes and cameras).
    Newest,
    /// Never drop: the reader waits for inference (default for regular files).
    Never,
}

/// Where a queued frame came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameMeta {
    /// Index of the frame in the source (counting every frame read, dropped ones included).
    pub index: u64,
    /// Capture time, Unix seconds.
    pub timestamp: f64,
    /// When the frame was complete in memory (for the capture → result latency).
    pub arrived: std::time::Instant,
}

/// Frame counts kept by the ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingCounts {
    /// Complete frames read from the source.
    pub read: u64,
    /// Frames replaced by a newer one before inference took them (or left queued at a stop).
    pub dropped: u64,
    /// Frames passed over by `--every`.
    pub subsampled: u64,
    /// Incomplete or unusable frames skipped (short final frame, corrupt camera buffer).
    pub skipped: u64,
}

/// What [`FrameRing::take`] returns.
pub enum Taken {
    /// A frame to classify; give the buffer back with [`FrameRing::release`].
    Frame(Vec<u8>, FrameMeta),
    /// Nothing arrived within the timeout.
    Timeout,
    /// The source ended (`None`) or failed; nothing more will come.
    Closed(Option<StreamError>),
}

struct State {
    free: heapless::Vec<Vec<u8>, BUFFERS>,
    ready: heapless::Deque<(Vec<u8>, FrameMeta), QUEUE>,
    counts: RingCounts,
    closed: bool,
    error: Option<StreamError>,
    stopped: bool,
}

/// The shared hand-off (wrap it in an `Arc`).
pub struct FrameRing {
    policy: DropPolicy,
    state: Mutex<State>,
    /// Signalled when a frame is queued or the source closes.
    ready_cv: Condvar,
    /// Signalled when a buffer is freed, queue space appears or the consumer stops.
    space_cv: Condvar,
}

impl FrameRing {
    /// A ring of [`BUFFERS`] preallocated buffers of `frame_len` bytes.
    pub fn new(frame_len: usize, policy: DropPolicy) -> Self {
        let mut free = heapless::Vec::new();
        for _ in 0..BUFFERS {
            let _ = free.push(vec![0u8; frame_len]);
        }
        let state = State { free, ready: heapless::Deque::new(), counts: RingCounts::default(), closed: false, error: None, stopped: false };
        FrameRing { policy, state: Mutex::new(state), ready_cv: Condvar::new(), space_cv: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the counters inconsistent enough to matter: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue_limit(&self) -> usize {
        match self.policy {
            DropPolicy::Newest => 1,
            DropPolicy::Never => QUEUE,
        }
    }

    /// Producer: a free buffer to fill, or `None` once the consumer has stopped.
    pub fn acquire(&self) -> Option<Vec<u8>> {
        let mut st = self.lock();
        loop {
            if st.stopped {
                return None;
            }
            if let Some(buf) = st.free.pop() {
                return Some(buf);
            }
            st = self.space_cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Producer: queues a filled buffer. With [`DropPolicy::Never`] waits for queue space; returns
    /// false (and takes the buffer back) once the consumer has stopped.
    pub fn publish(&self, buf: Vec<u8>, meta: FrameMeta) -> bool {
        let mut st = self.lock();
        st.counts.read += 1;
        loop {
            if st.stopped {
                st.counts.dropped += 1;
                let _ = st.free.push(buf);
                return false;
            }
            if st.ready.len() < self.queue_limit() {
                break;
            }
            match self.policy {
                DropPolicy::Newest => {
                    if let Some((old, _)) = st.ready.pop_front() {
                        st.counts.dropped += 1;
                        let _ = st.free.push(old);
                    }
                }
                DropPolicy::Never => st = self.space_cv.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        }
        let _ = st.ready.push_back((buf, meta));
        drop(st);
        self.ready_cv.notify_one();
        true
    }

    /// Producer: returns an unused buffer, counting why it was not queued.
    pub fn discard(&self, buf: Vec<u8>, reason: Discard) {
        let mut st = self.lock();
        match reason {
            Discard::Subsampled => {
                st.counts.read += 1;
                st.counts.subsampled += 1;
            }
            Discard::Skipped => st.counts.skipped += 1,
            Discard::Unused => {}
        }
        let _ = st.free.push(buf);
        drop(st);
        self.space_cv.notify_one();
    }

    /// Producer: no more frames; `error` says why if the source failed.
    pub fn close(&self, error: Option<StreamError>) {
        let mut st = self.lock();
        st.closed = true;
        st.error = error;
        drop(st);
        self.ready_cv.notify_all();
    }

    /// Consumer: the next frame (oldest first; with `Newest` there is only one), waiting up to `timeout`.
    pub fn take(&self, timeout: Duration) -> Taken {
        let mut st = self.lock();
        if st.ready.is_empty() && !st.closed {
            st = self.ready_cv.wait_timeout(st, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        if let Some((buf, meta)) = st.ready.pop_front() {
            drop(st);
            self.space_cv.notify_one();
            return Taken::Frame(buf, meta);
        }
        if st.closed {
            return Taken::Closed(st.error.take());
        }
        Taken::Timeout
    }

    /// Consumer: gives a classified frame's buffer back.
    pub fn release(&self, buf: Vec<u8>) {
        let mut st = self.lock();
        let _ = st.free.push(buf);
        drop(st);
        self.space_cv.notify_one();
    }

    /// Consumer: stop (signal or error). Queued frames count as dropped; the producer's waits end.
    pub fn stop(&self) {
        let mut st = self.lock();
        st.stopped = true;
        while let Some((buf, _)) = st.ready.pop_front() {
            st.counts.dropped += 1;
            let _ = st.free.push(buf);
        }
        drop(st);
        self.space_cv.notify_all();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Current counts.
    pub fn counts(&self) -> RingCounts {
        self.lock().counts
    }
}

/// Why the producer hands a buffer back without queueing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discard {
    /// A complete frame passed over by `--every` (counted as read and subsampled).
    Subsampled,
    /// An incomplete or corrupt frame (counted as skipped).
    Skipped,
    /// Nothing was read into it (end of input).
    Unused,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn meta(i: u64) -> FrameMeta {
        FrameMeta { index: i, timestamp: i as f64, arrived: Instant::now() }
    }

    #[test]
    fn newest_policy_keeps_the_latest_and_counts_drops() {
        let ring = FrameRing::new(8, DropPolicy::Newest);
        for i in 0..5 {
            let mut b = ring.acquire().unwrap();
            b[0] = i as u8;
            assert!(ring.publish(b, meta(i)));
        }
        match ring.take(Duration::from_millis(1)) {
            Taken::Frame(b, m) => {
                assert_eq!((b[0], m.index), (4, 4));
                ring.release(b);
            }
            _ => panic!("expected a frame"),
        }
        assert!(matches!(ring.take(Duration::from_millis(1)), Taken::Timeout));
        ring.close(None);
        assert!(matches!(ring.take(Duration::from_millis(1)), Taken::Closed(None)));
        let c = ring.counts();
        assert_eq!((c.read, c.dropped), (5, 4));
    }

    #[test]
    fn never_policy_blocks_the_producer_and_loses_nothing() {
        let ring = std::sync::Arc::new(FrameRing::new(4, DropPolicy::Never));
        let r = ring.clone();
        let producer = std::thread::spawn(move || {
            for i in 0..100u64 {
                let mut b = r.acquire().unwrap();
                b[..].copy_from_slice(&(i as u32).to_le_bytes());
                r.publish(b, meta(i));
            }
            r.close(None);
        });
        let mut next = 0u32;
        loop {
            match ring.take(Duration::from_millis(100)) {
                Taken::Frame(b, m) => {
                    assert_eq!(u32::from_le_bytes(b[..4].try_into().unwrap()), next);
                    assert_eq!(m.index, next as u64);
                    next += 1;
                    ring.release(b);
                }
                Taken::Timeout => {}
                Taken::Closed(e) => {
                    assert!(e.is_none());
                    break;
                }
            }
        }
        producer.join().unwrap();
        assert_eq!(next, 100);
        assert_eq!(ring.counts().dropped, 0);
    }

    #[test]
    fn stop_releases_a_waiting_producer_and_counts_queued_frames_as_dropped() {
        let ring = std::sync::Arc::new(FrameRing::new(4, DropPolicy::Never));
        for i in 0..2 {
            let b = ring.acquire().unwrap();
            ring.publish(b, meta(i));
        }
        let r = ring.clone();
        let b = ring.acquire().unwrap();
        // Blocks while the queue is full, until stop() (whether it runs before or after the wait).
        let producer = std::thread::spawn(move || r.publish(b, meta(2)));
        ring.stop();
        assert!(!producer.join().unwrap());
        assert!(ring.acquire().is_none());
        let c = ring.counts();
        assert_eq!((c.read, c.dropped), (3, 3));
    }
}
