//! The raw-frame converters (`frame_convert`): every pixel format, odd sizes, both colour
//! matrices and ranges, any crop and filter.

use vitedge::preprocess::{Interpolation, PreprocessConfig, Preprocessor, Serial};
use vitedge::stream::{frame_size, ColorMatrix, ColorRange, ColorSpec, FramePreprocessor, PixelFormat};
use vitedge::stream::pixel::frame_to_rgb8;

/// Six bytes choose format, size (1..=80 × 1..=64), colour, network input size, crop and filter;
/// the rest, cycled, is the frame. Oracles: conversion of a whole frame succeeds, a frame of the
/// wrong length is refused, and the fused one-pass preprocessing gives exactly the pixels of
/// "convert to RGB, then the timm/Pillow preprocessing".
pub fn frame_convert(data: &[u8]) {
    let Some((b, frame)) = data.split_first_chunk::<6>() else { return };
    let format = PixelFormat::ALL[b[0] as usize % PixelFormat::ALL.len()];
    let (width, height) = (1 + b[1] as usize % 80, 1 + b[2] as usize % 64);
    let matrix = if b[3] & 1 == 1 { ColorMatrix::Bt709 } else { ColorMatrix::Bt601 };
    let range = if b[3] & 2 == 2 { ColorRange::Full } else { ColorRange::Limited };
    let color = ColorSpec::new(matrix, range);
    let input_size = [4, 8, 16, 24][(b[3] >> 2) as usize % 4];
    let crop_pct = 0.1 + 0.9 * (b[4] as f32 / 255.0);
    let interpolation = [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Nearest][b[5] as usize % 3];
    let cfg = PreprocessConfig { crop_pct, interpolation, ..PreprocessConfig::augreg(input_size) };

    let need = frame_size(format, width, height);
    if frame.len() != need {
        assert!(frame_to_rgb8(frame, format, width, height, &color).is_err(), "a {}-byte frame accepted, {need} needed", frame.len());
    }
    let full: Vec<u8> = if frame.is_empty() { vec![0; need] } else { (0..need).map(|i| frame[i % frame.len()]).collect() };
    let rgb = frame_to_rgb8(&full, format, width, height, &color).expect("a whole frame converts");
    assert_eq!(rgb.len(), width * height * 3);
    let Ok(mut fused) = FramePreprocessor::new(&cfg, format, width, height, color) else { return };
    let mut out = vec![0f32; 3 * input_size * input_size];
    if frame.len() != need {
        assert!(fused.run(frame, &mut out).is_err(), "a short or long frame is refused");
    }
    fused.run(&full, &mut out).expect("a whole frame preprocesses");
    assert!(out.iter().all(|v| v.is_finite()));
    let mut reference = Preprocessor::new(cfg);
    let want = reference.resize_crop(&rgb, width, height).expect("the reference preprocesses what the fused path does");
    assert_eq!(fused.resize_crop(&full, &Serial).expect("a whole frame resizes"), want, "{format} {width}x{height}: fused path differs from convert + preprocess");
    let mut want_out = vec![0f32; out.len()];
    reference.run(&rgb, width, height, &mut want_out).expect("the reference normalizes");
    assert!(out.iter().zip(&want_out).all(|(a, b)| a.to_bits() == b.to_bits()), "{format} {width}x{height}: fused tensor differs from convert + preprocess");
}
