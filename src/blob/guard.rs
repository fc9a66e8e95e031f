//! A clear message and exit code instead of a bare SIGBUS when a mapped blob is truncated in place
//! while in use (e.g. `cp new.vitb model.vitb` or `truncate` over a running `vitedge stream`: the
//! kernel unmaps the pages past the new end, and the next read of one raises SIGBUS).
//!
//! Every mapped [`super::Blob`] registers its address range here (a few atomic stores, no
//! allocation). [`install_truncation_guard`], called once by the `vitedge` binary, installs a
//! SIGBUS handler: for a fault inside a registered range it writes which file it was and how to
//! update models safely to stderr, then exits with [`TRUNCATED_EXIT_CODE`]; any other SIGBUS goes
//! to the handler that was installed before (Rust's own, or the default action).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Exit code of a process whose mapped blob was truncated under it (74, sysexits' `EX_IOERR`).
pub const TRUNCATED_EXIT_CODE: i32 = 74;

/// How many blobs can be guarded at once (a stream holds at most two: the model and a reload).
const SLOTS: usize = 8;
/// Path bytes kept per slot for the message (longer paths are cut).
const PATH_BYTES: usize = 512;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const READY: u8 = 2;

/// One registered mapping. Plain atomics, so the signal handler can read them.
struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    path_len: AtomicUsize,
    path: [AtomicU8; PATH_BYTES],
}

impl Slot {
    const fn new() -> Self {
        Slot {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            path_len: AtomicUsize::new(0),
            path: [const { AtomicU8::new(0) }; PATH_BYTES],
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// A mapped blob's address range, registered while this value lives.
pub(super) struct MappedRange {
    slot: Option<usize>,
}

impl MappedRange {
    /// Registers `len` bytes at `start`, mapped from `path`. With every slot taken the range is
    /// simply not guarded (a fault in it then ends the process with a plain SIGBUS).
    pub(super) fn register(start: *const u8, len: usize, path: &Path) -> MappedRange {
        for (i, s) in TABLE.iter().enumerate() {
            if s.state.compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                let bytes = path.as_os_str().as_bytes();
                let n = bytes.len().min(PATH_BYTES);
                for (dst, &b) in s.path.iter().zip(&bytes[..n]) {
                    dst.store(b, Ordering::Relaxed);
                }
                s.path_len.store(n, Ordering::Relaxed);
                s.start.store(start as usize, Ordering::Relaxed);
                s.len.store(len, Ordering::Relaxed);
                s.state.store(READY, Ordering::Release);
                return MappedRange { slot: Some(i) };
            }
        }
        log::debug!("{}: not guarded against truncation (all {SLOTS} slots in use)", path.display());
        MappedRange { slot: None }
    }
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            TABLE[i].state.store(FREE, Ordering::Release);
        }
    }
}

/// The registered slot whose range holds `addr`, and the offset of `addr` in it.
fn find(addr: usize) -> Option<(usize, usize)> {
    TABLE.iter().enumerate().find_map(|(i, s)| {
        if s.state.load(Ordering::Acquire) != READY {
            return None;
        }
        let (start, len) = (s.start.load(Ordering::Relaxed), s.len.load(Ordering::Relaxed));
        (addr >= start && addr - start < len).then(|| (i, addr - start))
    })
}

/// A message assembled without allocating (the handler may run inside `malloc`).
struct Message {
    buf: [u8; 1024],
    len: usize,
}

impl Message {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, mut v: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The text written when slot `slot` faulted at `offset`.
fn message(slot: usize, offset: usize) -> Message {
    let s = &TABLE[slot];
    let mut m = Message { buf: [0; 1024], len: 0 };
    m.push(b"\nerror: the model blob ");
    let n = s.path_len.load(Ordering::Relaxed).min(PATH_BYTES);
    for b in &s.path[..n] {
        m.push(&[b.load(Ordering::Relaxed)]);
    }
    m.push(b" was truncated or rewritten in place while in use (SIGBUS reading byte ");
    m.push_number(offset);
    m.push(
        b" of it). Update models by writing the new file in the same folder and renaming it over the \
old one (vitedge-quant convert -o does this; cp does not), then send SIGHUP to `vitedge stream` \
(systemctl reload). Exiting with code ",
    );
    m.push_number(TRUNCATED_EXIT_CODE as usize);
    m.push(b".\n");
    m
}

/// The SIGBUS action that was installed before ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an SA_SIGINFO handler; for SIGBUS its
    // `si_addr` is the faulting address (meaningless, but readable, for a SIGBUS sent by kill).
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    if code > 0 {
        if let Some((slot, offset)) = find(addr) {
            let m = message(slot, offset);
            // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is a live local
            // array of at least `m.len` bytes.
            unsafe {
                libc::write(libc::STDERR_FILENO, m.buf.as_ptr().cast(), m.len);
                libc::_exit(TRUNCATED_EXIT_CODE);
            }
        }
    }
    // Not ours. A fault: put the previous action back (Rust's own handler, which reports stack
    // overflows, or the default); the faulting access runs again and raises SIGBUS under it. A
    // SIGBUS sent with kill: the default action, raised again (pending until we return).
    // SAFETY: sigaction(2), signal(2) and raise(3) are async-signal-safe; `previous` points to a
    // valid sigaction saved by `install_truncation_guard` before this handler was installed.
    unsafe {
        match PREVIOUS.get() {
            Some(previous) if code > 0 => {
                libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut());
            }
            _ => {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
            }
        }
        if code <= 0 {
            libc::raise(libc::SIGBUS);
        }
    }
}

/// Installs the SIGBUS handler that reports a blob truncated under this process (see the module
/// documentation). Idempotent; process-wide, so it is the binary's choice, not the library's.
pub fn install_truncation_guard() -> std::io::Result<()> {
    static RESULT: OnceLock<Result<(), i32>> = OnceLock::new();
    let r = RESULT.get_or_init(|| {
        // SAFETY: sigaction(2) with a null new action only reads the current one into `old`, a
        // valid zeroed `sigaction`.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        let _ = PREVIOUS.set(old);
        // SAFETY: a zeroed `sigaction` is a valid start; we set a handler of the SA_SIGINFO
        // signature, an empty mask and plain flags, and pass valid pointers. The handler only reads
        // atomics and calls async-signal-safe functions.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as libc::sighandler_t;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(())
    });
    r.map_err(std::io::Error::from_raw_os_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_ranges_are_found_until_dropped() {
        let data = vec![0u8; 4096];
        let r = MappedRange::register(data.as_ptr(), data.len(), Path::new("/models/a.vitb"));
        let base = data.as_ptr() as usize;
        let (slot, offset) = find(base + 100).expect("inside the range");
        assert_eq!(offset, 100);
        assert!(find(base + 4096).is_none_or(|(s, _)| s != slot), "one past the end is outside");
        let m = message(slot, offset);
        let text = String::from_utf8_lossy(&m.buf[..m.len]).into_owned();
        assert!(text.contains("/models/a.vitb") && text.contains("byte 100 ") && text.contains("SIGHUP") && text.contains("code 74"), "{text}");
        drop(r);
        assert!(find(base + 100).is_none_or(|(s, _)| s != slot), "released on drop");
    }

    #[test]
    fn more_blobs_than_slots_are_simply_not_guarded() {
        let data = [0u8; 64];
        let ranges: Vec<MappedRange> = (0..SLOTS + 3).map(|_| MappedRange::register(data.as_ptr(), data.len(), Path::new("x"))).collect();
        assert!(ranges.iter().filter(|r| r.slot.is_none()).count() >= 3);
    }

    #[test]
    fn installing_twice_is_fine() {
        install_truncation_guard().unwrap();
        install_truncation_guard().unwrap();
    }
}
