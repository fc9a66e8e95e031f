//! Reading NumPy `.npy` files of float32 tensors (`numpy.save(f, x)`, `torch.save` users' `x.numpy()`),
//! so that exactly the input PyTorch saw can be fed to the model (`vitedge classify --tensor`).

use std::path::Path;

/// Errors reading an `.npy` file; each says what was found and what is expected.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct NpyError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// A float32 array: shape and C-order values.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values in C (row-major) order.
    pub data: Vec<f32>,
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    if let Some(r) = rest.strip_prefix('(') {
        return r.find(')').map(|e| &r[..e]);
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// Parses `.npy` bytes (format versions 1–3) holding a little-endian float32 C-order array.
pub fn parse_f32(bytes: &[u8], path: &str) -> Result<Array, NpyError> {
    let err = |reason: String| NpyError { path: path.into(), reason };
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.is_empty() || !bytes.iter().zip(MAGIC).all(|(a, b)| a == b) {
        return Err(err("not a NumPy .npy file (save the tensor with numpy.save(path, x.numpy()))".into()));
    }
    if bytes.len() < 8 {
        return Err(err(format!("truncated header ({} bytes in the file)", bytes.len())));
    }
    // Version 1 stores the header length in 2 bytes, versions 2 and 3 in 4.
    let (len_bytes, start): (usize, usize) = match bytes[6] {
        1 => (2, 10),
        2 | 3 => (4, 12),
        v => return Err(err(format!("unsupported .npy format version {v}.{} (versions 1 to 3 are read)", bytes[7]))),
    };
    let len_field = bytes.get(8..8 + len_bytes).ok_or_else(|| err("truncated header (file ends inside the header length)".into()))?;
    let header_len = len_field.iter().rev().fold(0usize, |a, &b| (a << 8) | b as usize);
    let header = bytes
        .get(start..start.saturating_add(header_len))
        .ok_or_else(|| err(format!("truncated header ({header_len} bytes declared, {} present)", bytes.len().saturating_sub(start))))?;
    let header = std::str::from_utf8(header).map_err(|_| err("header is not text".into()))?;
    let descr = header_value(header, "descr").ok_or_else(|| err("header has no 'descr'".into()))?.trim_matches(['\'', '"']);
    if descr != "<f4" && descr != "=f4" {
        return Err(err(format!(
            "dtype {descr}, expected little-endian float32 ('<f4'): save x.astype(numpy.float32) (or x.float().numpy() in PyTorch)"
        )));
    }
    match header_value(header, "fortran_order") {
        Some("False") => {}
        Some("True") => return Err(err("Fortran-order array: save numpy.ascontiguousarray(x)".into())),
        _ => return Err(err("header has no 'fortran_order'".into())),
    }
    let shape_text = header_value(header, "shape").ok_or_else(|| err("header has no 'shape'".into()))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| err(format!("bad shape ({shape_text})"))))
        .collect::<Result<_, _>>()?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| err("shape overflows".into()))?;
    let data = &bytes[start + header_len..];
    let need = count.saturating_mul(4);
    if data.len() < need {
        return Err(err(format!("truncated: {} data bytes for float32 shape {shape:?}, expected {need}; the file was cut short, save it again", data.len())));
    }
    if data.len() > need {
        return Err(err(format!("{} data bytes for float32 shape {shape:?}, expected {need}: the header does not describe the data", data.len())));
    }
    Ok(Array { shape, data: data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect() })
}

/// Reads a float32 `.npy` file.
pub fn read_f32(path: &Path) -> Result<Array, NpyError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| NpyError { path: shown.clone(), reason: e.to_string() })?;
    parse_f32(&bytes, &shown)
}

/// Reads one network input from a float32 `.npy` file: shape `[1, C, H, W]` or `[C, H, W]` equal to
/// `(channels, side, side)`; the values are used as they are (no preprocessing).
pub fn read_input(path: &Path, channels: usize, side: usize) -> Result<Vec<f32>, NpyError> {
    let a = read_f32(path)?;
    let ok = matches!(a.shape.as_slice(), [1, c, h, w] | [c, h, w] if (*c, *h, *w) == (channels, side, side));
    if !ok {
        return Err(NpyError {
            path: path.display().to_string(),
            reason: format!("shape {:?}, expected [1, {channels}, {side}, {side}] or [{channels}, {side}, {side}] (one preprocessed image, CHW)", a.shape),
        });
    }
    Ok(a.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `.npy` file as `numpy.save` writes it (format `version`, header padded to 64 bytes).
    fn npy_v(version: u8, descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({shape}), }}", if fortran { "True" } else { "False" });
        let prefix = if version == 1 { 10 } else { 12 };
        while (prefix + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut v = vec![0x93, b'N', b'U', b'M', b'P', b'Y', version, 0];
        if version == 1 {
            v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        } else {
            v.extend_from_slice(&(h.len() as u32).to_le_bytes());
        }
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(data);
        v
    }

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        npy_v(1, descr, fortran, shape, data)
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn error(bytes: &[u8]) -> String {
        parse_f32(bytes, "x.npy").unwrap_err().to_string()
    }

    #[test]
    fn reads_float32_in_every_format_version() {
        let vals = f32_bytes(&[1.5, -2.0, 0.25, 3.0, 4.0, f32::MIN_POSITIVE]);
        for version in [1, 2, 3] {
            let a = parse_f32(&npy_v(version, "<f4", false, "1, 2, 3", &vals), "x.npy").unwrap();
            assert_eq!(a.shape, [1, 2, 3], "version {version}");
            assert_eq!(a.data, [1.5, -2.0, 0.25, 3.0, 4.0, f32::MIN_POSITIVE], "version {version}");
        }
        // A 1-d shape is written `(6,)`.
        assert_eq!(parse_f32(&npy("<f4", false, "6,", &vals), "x").unwrap().shape, [6]);
    }

    #[test]
    fn other_dtypes_and_layouts_are_refused_with_the_fix() {
        let e = error(&npy("<f8", false, "3,", &[0; 24]));
        assert!(e.starts_with("x.npy: dtype <f8") && e.contains("astype(numpy.float32)"), "{e}");
        assert!(error(&npy(">f4", false, "3,", &[0; 12])).contains("little-endian float32 ('<f4')"));
        assert!(error(&npy("<f2", false, "3,", &[0; 6])).contains("dtype <f2"));
        assert!(error(&npy("|u1", false, "3,", &[0; 3])).contains("dtype |u1"));
        assert!(error(&npy("<f4", true, "2, 3", &[0; 24])).contains("numpy.ascontiguousarray"));
    }

    #[test]
    fn truncated_and_malformed_files_are_refused_not_misread() {
        let vals = f32_bytes(&[1.0; 6]);
        let good = npy("<f4", false, "2, 3", &vals);
        // Cut anywhere: inside the magic, the length field, the header or the data.
        for cut in [0, 5, 7, 9, 20, good.len() - 24, good.len() - 1] {
            let e = error(&good[..cut]);
            assert!(e.contains("not a NumPy") || e.contains("truncated"), "cut at {cut}: {e}");
        }
        assert!(error(&good[..good.len() - 4]).contains("truncated: 20 data bytes for float32 shape [2, 3], expected 24"));
        let mut long = good.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(error(&long).contains("28 data bytes for float32 shape [2, 3], expected 24: the header does not describe"));
        assert!(error(b"PK\x03\x04 a zip, e.g. torch.save").contains("not a NumPy .npy file"));
        let mut v9 = good.clone();
        v9[6] = 9;
        assert!(error(&v9).contains("unsupported .npy format version 9"));
        assert!(error(&npy("<f4", false, "2, x", &vals)).contains("bad shape"));
        // A shape whose element count overflows is refused before any allocation.
        assert!(error(&npy("<f4", false, "18446744073709551615, 2", &vals)).contains("overflows"));
        let mut no_shape = npy("<f4", false, "6,", &vals);
        let at = no_shape.windows(7).position(|w| w == b"'shape'").unwrap();
        no_shape[at + 3] = b'o';
        assert!(error(&no_shape).contains("no 'shape'"));
    }

    #[test]
    fn an_input_must_be_one_image_of_the_model_s_size() {
        let dir = tempfile::tempdir().unwrap();
        let vals = f32_bytes(&(0..3 * 4 * 4).map(|i| i as f32).collect::<Vec<_>>());
        for shape in ["1, 3, 4, 4", "3, 4, 4"] {
            let p = dir.path().join("x.npy");
            std::fs::write(&p, npy("<f4", false, shape, &vals)).unwrap();
            let x = read_input(&p, 3, 4).unwrap();
            assert_eq!(x.len(), 48);
            assert_eq!(x[47], 47.0);
        }
        for (shape, len) in [("2, 3, 4, 4", 96), ("1, 4, 4, 3", 48), ("1, 3, 2, 8", 48), ("48,", 48)] {
            let p = dir.path().join("bad.npy");
            std::fs::write(&p, npy("<f4", false, shape, &f32_bytes(&vec![0.0; len]))).unwrap();
            let e = read_input(&p, 3, 4).unwrap_err().to_string();
            assert!(e.contains("expected [1, 3, 4, 4] or [3, 4, 4] (one preprocessed image, CHW)"), "{shape}: {e}");
        }
        let e = read_input(&dir.path().join("missing.npy"), 3, 4).unwrap_err().to_string();
        assert!(e.contains("missing.npy") && e.contains("No such file"), "{e}");
    }
}
