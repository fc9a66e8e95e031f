//! SIGINT / SIGTERM → a flag the stream loop polls, so a stop prints the summary and exits 0;
//! SIGHUP → a flag that makes it reload the model between two frames.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use super::StreamError;

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop(sig: libc::c_int) {
    // Only async-signal-safe work: two atomic stores.
    SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_reload(_sig: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// The flags the handlers set.
pub struct Flags {
    /// SIGINT or SIGTERM arrived.
    pub stop: &'static AtomicBool,
    /// SIGHUP arrived (the loop clears it when it reloads).
    pub reload: &'static AtomicBool,
}

fn handle(sig: libc::c_int, handler: extern "C" fn(libc::c_int), flags: libc::c_int) -> Result<(), StreamError> {
    // SAFETY: a zeroed `sigaction` is a valid starting value; we then set a handler of the right
    // `extern "C" fn(c_int)` type (no SA_SIGINFO), an empty mask and plain flags, and pass valid
    // pointers (old action not wanted). The handlers only touch atomics (async-signal-safe).
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as libc::sighandler_t;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(StreamError::Usage(format!("cannot install the handler for signal {sig}: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP and returns the flags they set. The stop
/// handlers are one-shot (`SA_RESETHAND`): a second Ctrl-C ends the process at once, as users
/// expect; SIGHUP can come any number of times.
pub fn install() -> Result<Flags, StreamError> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        handle(sig, on_stop, libc::SA_RESTART | libc::SA_RESETHAND)?;
    }
    handle(libc::SIGHUP, on_reload, libc::SA_RESTART)?;
    Ok(Flags { stop: &STOP, reload: &RELOAD })
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
    fn signals_set_the_flags() {
        let flags = install().unwrap();
        for _ in 0..2 {
            // SAFETY: raise(2) delivers SIGHUP to this thread synchronously; our handler is
            // installed (and stays installed: no SA_RESETHAND), so the process is not terminated.
            assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
            assert!(flags.reload.swap(false, Ordering::SeqCst));
        }
        assert!(!flags.stop.load(Ordering::SeqCst), "SIGHUP does not stop");
        // SAFETY: as above for SIGTERM (SA_RESETHAND restores the default only afterwards).
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        assert!(flags.stop.load(Ordering::SeqCst));
        assert_eq!(received(), Some("SIGTERM"));
    }
}
