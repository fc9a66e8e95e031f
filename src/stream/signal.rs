//! SIGINT / SIGTERM → a flag the stream loop polls, so a stop prints the summary and exits 0.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use super::StreamError;

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work: two atomic stores.
    SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM and returns the flag they set. The handlers are
/// one-shot (`SA_RESETHAND`): a second Ctrl-C ends the process at once, as users expect.
pub fn install() -> Result<&'static AtomicBool, StreamError> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed `sigaction` is a valid starting value; we then set a handler of the right
        // `extern "C" fn(c_int)` type (no SA_SIGINFO), an empty mask and plain flags, and pass valid
        // pointers (old action not wanted). The handler only touches atomics (async-signal-safe).
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(StreamError::Usage(format!("cannot install the handler for signal {sig}: {}", std::io::Error::last_os_error())));
        }
    }
    Ok(&STOP)
}

/// Name of the signal that set the flag (`SIGINT`, `SIGTERM`), if any.
pub fn received() -> Option<&'static str> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        _ => Some("signal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_sets_the_flag() {
        let flag = install().unwrap();
        // SAFETY: raise(2) delivers SIGTERM to this thread synchronously; our handler is installed,
        // so the process is not terminated (SA_RESETHAND restores the default only afterwards).
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        assert!(flag.load(Ordering::SeqCst));
        assert_eq!(received(), Some("SIGTERM"));
    }
}
