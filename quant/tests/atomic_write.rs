//! `vitedge-quant convert` replaces a blob atomically: when writing fails half-way (here: the disk
//! is "full", through RLIMIT_FSIZE), the old blob at the destination is untouched and no partial or
//! temporary file is left behind.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn convert(out: &Path, file_size_limit: Option<u64>) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vitedge-quant"));
    c.arg("convert").arg(fixture("lightning_tiny.safetensors")).args(["--heads", "2", "-o"]).arg(out);
    if let Some(limit) = file_size_limit {
        // SAFETY: runs in the forked child before exec; setrlimit(2) and signal(2) are
        // async-signal-safe and touch only the child. SIGXFSZ is ignored so that a write past the
        // limit fails with EFBIG (what a full disk looks like to the writer) instead of killing it.
        unsafe {
            c.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    c.output().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn a_failed_write_leaves_the_old_blob_and_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.vitb");
    let first = convert(&out, None);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let good = std::fs::read(&out).unwrap();
    // An old blob that differs from what the converter writes, so a partial overwrite would show.
    let mut old = good.clone();
    let n = old.len();
    old[n - 1] ^= 0xff;
    std::fs::write(&out, &old).unwrap();

    let failed = convert(&out, Some(good.len() as u64 / 2));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write") && err.contains("model.vitb"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), old, "the old blob is untouched");
    assert_eq!(names(dir.path()), ["model.vitb"], "no partial or temporary file");

    let again = convert(&out, None);
    assert!(again.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), good);
    assert_eq!(names(dir.path()), ["model.vitb"]);
}
