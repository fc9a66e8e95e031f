//! The evaluation transform in the user's own words: torchvision's `repr()` of a `transforms.Compose`
//! (v1 and v2, and the timm transforms `create_transform` builds), and timm's pretrained-config
//! fields, turned into the [`PreprocessConfig`] stored in the blob.
//!
//! Accepted steps, in this order: an optional resize (`Resize`, timm's `ResizeKeepRatio`), an
//! optional center crop (`CenterCrop`, timm's `CenterCropOrPad`), the conversion to a float tensor
//! (`ToTensor`, timm's `MaybeToTensor`, or `PILToTensor`/`ToImage` followed by
//! `ConvertImageDtype`/`ToDtype(scale=True)`) and `Normalize`. Anything else (random augmentation,
//! `Lambda`, colour changes) is refused with the reason, never skipped.

use vitedge::preprocess::{CenterCrop, Interpolation, PreprocessConfig, Resize, Scaling, Transform};

/// A preprocessing stated by the user, and remarks about how it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Stated {
    /// What the blob will store.
    pub config: PreprocessConfig,
    /// Things the user should know (ignored arguments, completed steps); logged as warnings.
    pub notes: Vec<String>,
}

/// A value in a repr: numbers keep their text (to tell `224` from `224.0` and see rounding).
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Num(f64, String),
    Ident(String),
    Seq(Vec<Value>),
    Call(String, Vec<Arg>),
}

#[derive(Clone, Debug, PartialEq)]
struct Arg {
    key: Option<String>,
    value: Value,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, what: &str) -> String {
        let start = self.i.saturating_sub(20);
        let end = (self.i + 20).min(self.s.len());
        format!("cannot read the transform near `{}`: {what}", String::from_utf8_lossy(&self.s[start..end]).replace('\n', " "))
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && (self.s[self.i].is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || b"_.-".contains(&self.s[self.i])) {
            self.i += 1;
        }
        (self.i > start && !self.s[start].is_ascii_digit() && self.s[start] != b'-' && self.s[start] != b'.')
            .then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
            .or_else(|| {
                self.i = start;
                None
            })
    }

    fn number(&mut self) -> Option<Value> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_digit() || b"+-.eE".contains(&self.s[self.i])) {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?.to_string();
        match text.parse::<f64>() {
            Ok(v) => Some(Value::Num(v, text)),
            Err(_) => {
                self.i = start;
                None
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(b'(') | Some(b'[') => {
                let close = if self.s[self.i] == b'(' { b')' } else { b']' };
                self.i += 1;
                let mut items = Vec::new();
                while !self.eat(close) {
                    items.push(self.value()?);
                    if !self.eat(b',') && self.peek() != Some(close) {
                        return Err(self.err("expected `,` or a closing bracket"));
                    }
                }
                Ok(Value::Seq(items))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'.' => self.number().ok_or_else(|| self.err("bad number")),
            Some(b'\'') | Some(b'"') => {
                let q = self.s[self.i];
                let start = self.i + 1;
                let end = self.s[start..].iter().position(|&c| c == q).ok_or_else(|| self.err("unterminated string"))? + start;
                self.i = end + 1;
                Ok(Value::Ident(String::from_utf8_lossy(&self.s[start..end]).into_owned()))
            }
            _ => {
                let name = self.ident().ok_or_else(|| self.err("expected a value"))?;
                if self.peek() == Some(b'(') {
                    Ok(Value::Call(name, self.args()?))
                } else {
                    Ok(Value::Ident(name))
                }
            }
        }
    }

    /// `( [key=]value, ... )`
    fn args(&mut self) -> Result<Vec<Arg>, String> {
        if !self.eat(b'(') {
            return Err(self.err("expected `(`"));
        }
        let mut args = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(args);
            }
            let save = self.i;
            let key = match self.ident() {
                Some(k) if self.peek() == Some(b'=') => {
                    self.i += 1;
                    Some(k)
                }
                _ => {
                    self.i = save;
                    None
                }
            };
            let value = self.value()?;
            args.push(Arg { key, value });
            // torchvision prints Compose steps one per line with no commas; arguments have commas.
            self.eat(b',');
        }
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Num(x, _) => Some(*x),
        _ => None,
    }
}

fn as_usize(v: &Value) -> Option<usize> {
    match v {
        Value::Num(x, t) if x.fract() == 0.0 && *x >= 0.0 && !t.contains('.') => Some(*x as usize),
        _ => None,
    }
}

/// `224`, `[224]`, `(224, 224)`, `[h, w]` → `(h, w)` with `single` telling an int from a pair.
fn size_arg(v: &Value) -> Option<(usize, usize, bool)> {
    match v {
        Value::Seq(items) => match items.as_slice() {
            [a] => as_usize(a).map(|a| (a, a, true)),
            [h, w] => Some((as_usize(h)?, as_usize(w)?, false)),
            _ => None,
        },
        _ => as_usize(v).map(|a| (a, a, true)),
    }
}

fn is_none(v: &Value) -> bool {
    matches!(v, Value::Ident(s) if s == "None")
}

/// Three numbers from `(a, b, c)`, `[a, b, c]` or `tensor([a, b, c])`; `true` when printed as a tensor
/// (torch prints 4 decimals).
fn triple(v: &Value) -> Option<([f32; 3], bool)> {
    let (items, tensor) = match v {
        Value::Seq(items) => (items.as_slice(), false),
        Value::Call(name, args) if name == "tensor" || name == "torch.tensor" => match args.first().map(|a| &a.value) {
            Some(Value::Seq(items)) => (items.as_slice(), true),
            _ => return None,
        },
        _ => return None,
    };
    let vals: Vec<f32> = items.iter().map(as_f64).collect::<Option<Vec<f64>>>()?.into_iter().map(|x| x as f32).collect();
    match vals.as_slice() {
        [a, b, c] => Some(([*a, *b, *c], tensor)),
        [a] => Some(([*a; 3], tensor)),
        _ => None,
    }
}

/// Arguments of one step by name or position.
struct Args<'a> {
    step: &'a str,
    args: &'a [Arg],
}

impl<'a> Args<'a> {
    fn get(&self, key: &str, position: usize) -> Option<&'a Value> {
        self.args.iter().find(|a| a.key.as_deref() == Some(key)).map(|a| &a.value).or_else(|| {
            let positional: Vec<&Arg> = self.args.iter().filter(|a| a.key.is_none()).collect();
            positional.get(position).map(|a| &a.value)
        })
    }

    fn interpolation(&self) -> Result<Interpolation, String> {
        match self.get("interpolation", 1) {
            None => Ok(Interpolation::Bilinear), // torchvision's default
            Some(Value::Ident(s)) => Interpolation::parse(s).ok_or_else(|| format!("{}: unknown interpolation `{s}`", self.step)),
            Some(Value::Num(_, t)) => Interpolation::parse(t).ok_or_else(|| format!("{}: unknown interpolation `{t}`", self.step)),
            Some(v) => Err(format!("{}: interpolation {v:?} is not one filter (random interpolation is a training augmentation)", self.step)),
        }
    }
}

/// What the tensor conversion did so far.
#[derive(PartialEq, Clone, Copy)]
enum Tensor {
    /// Still a PIL image.
    Pil,
    /// uint8 tensor (`PILToTensor`, `ToImage`): not yet scaled.
    Uint8,
    /// float tensor on the 0..1 scale.
    Float,
}

/// Parses a transform as Python prints it (`print(transform)` / `repr(transform)`), e.g.
///
/// ```text
/// Compose(
///     Resize(size=248, interpolation=bicubic, max_size=None, antialias=True)
///     CenterCrop(size=(224, 224))
///     ToTensor()
///     Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
/// )
/// ```
///
/// A `Compose(...)` wrapper is optional; steps may be separated by newlines or commas, inside
/// brackets or not. A resize with no crop that keeps the aspect ratio (`Resize(224)` alone, as for
/// square training images) gets a center crop of the resize size, with a note.
pub fn parse_repr(text: &str) -> Result<Stated, String> {
    let mut p = Parser { s: text.trim().as_bytes(), i: 0 };
    let mut steps: Vec<(String, Vec<Arg>)> = Vec::new();
    let mut push = |v: Value, p: &Parser| match v {
        Value::Call(name, args) => {
            steps.push((name, args));
            Ok(())
        }
        other => Err(p.err(&format!("expected a transform step, found {other:?}"))),
    };
    let top = p.value()?;
    match top {
        Value::Call(name, args) if name.ends_with("Compose") => {
            for a in args {
                push(a.value, &p)?;
            }
        }
        Value::Seq(items) => {
            for v in items {
                push(v, &p)?;
            }
        }
        other => {
            push(other, &p)?;
            while p.peek().is_some() {
                p.eat(b',');
                if p.peek().is_none() {
                    break;
                }
                let v = p.value()?;
                push(v, &p)?;
            }
        }
    }
    if p.peek().is_some() {
        return Err(p.err("unexpected text after the transform"));
    }
    interpret(&steps)
}

fn short_name(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn interpret(steps: &[(String, Vec<Arg>)]) -> Result<Stated, String> {
    let mut notes = Vec::new();
    let mut resize: Option<Resize> = None;
    let mut crop: Option<(usize, usize, bool)> = None; // (h, w, pads with the mean colour)
    let mut interpolation = Interpolation::Bilinear;
    let mut tensor = Tensor::Pil;
    let mut normalize: Option<([f32; 3], [f32; 3])> = None;
    let mut resized_as_tensor = false;
    let mut scaling = Scaling::Divide;
    for (full_name, args) in steps {
        let name = short_name(full_name);
        let a = Args { step: name, args };
        if normalize.is_some() && name != "Normalize" {
            return Err(format!("{name} after Normalize is not supported: vitedge feeds the normalized crop to the network"));
        }
        match name {
            "Resize" | "ResizeKeepRatio" => {
                if resize.is_some() {
                    return Err("more than one resize step: vitedge applies one resize, then a crop".into());
                }
                if crop.is_some() {
                    return Err(format!("{name} after CenterCrop is not supported: give the resize first, then the crop"));
                }
                if tensor != Tensor::Pil {
                    resized_as_tensor = true;
                }
                interpolation = a.interpolation()?;
                if name == "ResizeKeepRatio" {
                    for key in ["random_scale_prob", "random_aspect_prob"] {
                        if a.get(key, usize::MAX).and_then(as_f64).is_some_and(|v| v != 0.0) {
                            return Err(format!("ResizeKeepRatio with {key} > 0 is a training augmentation; give the eval transform"));
                        }
                    }
                    let (h, w, _) = a.get("size", 0).and_then(size_arg).ok_or("ResizeKeepRatio: cannot read size")?;
                    let longest = a.get("longest", 1).map_or(Some(0.0), as_f64).ok_or("ResizeKeepRatio: cannot read longest")?;
                    resize = Some(Resize::KeepRatio { height: h, width: w, longest });
                } else {
                    let max_size = match a.get("max_size", 2) {
                        None => None,
                        Some(v) if is_none(v) => None,
                        Some(v) => Some(as_usize(v).ok_or(format!("Resize: cannot read max_size {v:?}"))?),
                    };
                    if a.get("antialias", 3).is_some_and(|v| matches!(v, Value::Ident(s) if s == "False")) && !resized_as_tensor {
                        notes.push("Resize(antialias=False) has no effect on PIL images: torchvision always antialiases them, and so does vitedge".into());
                    }
                    resize = Some(match a.get("size", 0) {
                        None => match max_size {
                            Some(m) => Resize::LongerSide { size: m },
                            None => return Err("Resize without size or max_size".into()),
                        },
                        Some(v) if is_none(v) => match max_size {
                            Some(m) => Resize::LongerSide { size: m },
                            None => return Err("Resize(size=None) needs max_size".into()),
                        },
                        Some(v) => match size_arg(v) {
                            Some((s, _, true)) => Resize::ShorterSide { size: s, max_size },
                            Some((h, w, false)) => Resize::Exact { height: h, width: w },
                            None => return Err(format!("Resize: cannot read size {v:?}")),
                        },
                    });
                }
            }
            "CenterCrop" | "CenterCropOrPad" => {
                if crop.is_some() {
                    return Err("more than one CenterCrop".into());
                }
                let (h, w, _) = a.get("size", 0).and_then(size_arg).ok_or(format!("{name}: cannot read size"))?;
                crop = Some((h, w, name == "CenterCropOrPad"));
            }
            "ToTensor" | "MaybeToTensor" => {
                if tensor != Tensor::Pil {
                    return Err(format!("{name} on something that is already a tensor"));
                }
                tensor = Tensor::Float;
            }
            "PILToTensor" | "MaybePILToTensor" | "ToImage" | "ToImageTensor" => tensor = Tensor::Uint8,
            "ConvertImageDtype" | "ToDtype" => {
                if tensor != Tensor::Uint8 {
                    return Err(format!("{name} where no uint8 tensor is (expected after PILToTensor / ToImage)"));
                }
                if name == "ToDtype" && !a.get("scale", 1).is_some_and(|v| matches!(v, Value::Ident(s) if s == "True")) {
                    return Err("ToDtype without scale=True keeps values 0..255; the network expects ToDtype(torch.float32, scale=True)".into());
                }
                if let Some(Value::Ident(d)) = a.get("dtype", 0) {
                    if !matches!(d.as_str(), "torch.float32" | "torch.float" | "float32") {
                        return Err(format!("{name}({d}): vitedge computes in float32"));
                    }
                }
                if name == "ToDtype" {
                    scaling = Scaling::Reciprocal;
                }
                tensor = Tensor::Float;
            }
            "Normalize" => {
                if tensor != Tensor::Float {
                    return Err("Normalize before the image is a float tensor on 0..1 (ToTensor)".into());
                }
                let (mean, mt) = a.get("mean", 0).and_then(triple).ok_or("Normalize: cannot read mean (three numbers)")?;
                let (std, st) = a.get("std", 1).and_then(triple).ok_or("Normalize: cannot read std (three numbers)")?;
                if (mt || st) && mean.iter().chain(&std).any(|v| ((v * 1e4).round() as i64) % 10 != 0) {
                    notes.push(format!(
                        "Normalize's mean/std were printed as torch tensors (4 decimals): {mean:?} / {std:?}; if the real values have more digits, pass them with --mean/--std or --config"
                    ));
                }
                normalize = Some((mean, std));
            }
            "Identity" => {}
            n if n.starts_with("Random") || n.contains("Augment") || n == "ColorJitter" || n == "RandAugment" || n == "TrivialAugmentWide" => {
                return Err(format!("{n} is a training augmentation: give the evaluation transform (e.g. `print(val_dataset.transform)`)"))
            }
            n => {
                return Err(format!(
                    "{n} is not supported: vitedge reproduces Resize, CenterCrop, ToTensor and Normalize (torchvision v1/v2, timm's ResizeKeepRatio/CenterCropOrPad/MaybeToTensor)"
                ))
            }
        }
    }
    if tensor != Tensor::Float {
        return Err("the transform never makes a float tensor on 0..1 (ToTensor, or PILToTensor + ConvertImageDtype)".into());
    }
    if resized_as_tensor {
        notes.push(
            "the resize runs on a tensor (after ToImage/PILToTensor/ToTensor): torch's tensor resize is not Pillow's, vitedge resizes like Pillow; results may differ by a level per pixel. For exactness resize before converting to a tensor".into(),
        );
    }
    let (mean, std) = normalize.unwrap_or_else(|| {
        notes.push("no Normalize: the network gets pixels on 0..1 (mean 0, std 1)".into());
        ([0.0; 3], [1.0; 3])
    });
    let center_crop = match (crop, &resize) {
        (Some((h, w, pads_with_mean)), _) => {
            let fill = if pads_with_mean {
                let fill = mean.map(|m| (255.0 * m as f64).round_ties_even().clamp(0.0, 255.0) as u8);
                notes.push(format!(
                    "CenterCropOrPad's repr does not show its fill colour; assumed timm's crop_mode='border' fill round(255·mean) = {fill:?} (state it exactly with --config)"
                ));
                fill
            } else {
                [0; 3]
            };
            Some(CenterCrop { height: h, width: w, fill })
        }
        (None, Some(Resize::ShorterSide { size, .. })) => {
            notes.push(format!(
                "the transform has no crop: Resize({size}) gives {size}x{size} only for square images; for other images vitedge center-crops {size}x{size} (add CenterCrop({size}), or use Resize(({size}, {size})) to squash instead)"
            ));
            Some(CenterCrop { height: *size, width: *size, fill: [0; 3] })
        }
        (None, _) => None,
    };
    let input_size = match (&center_crop, &resize) {
        (Some(c), _) if c.height == c.width => c.height,
        (Some(c), _) => return Err(format!("CenterCrop({}, {}) is not square; vitedge's models take square inputs", c.height, c.width)),
        (None, Some(Resize::Exact { height, width })) if height == width => *height,
        _ => return Err("the transform does not end in a fixed square size: add CenterCrop(N) or Resize((N, N))".into()),
    };
    let crop_pct = match &resize {
        Some(Resize::ShorterSide { size, .. }) => (input_size as f32 / *size as f32).min(1.0),
        Some(Resize::Exact { height, .. }) => (input_size as f32 / *height as f32).min(1.0),
        _ => 1.0,
    };
    let config = PreprocessConfig {
        input_size,
        crop_pct,
        interpolation,
        mean,
        std,
        transform: Some(Transform { resize, center_crop }),
        scaling,
    };
    config.validate()?;
    Ok(Stated { config, notes })
}

/// timm's evaluation transform (`transforms_imagenet_eval`) for a pretrained config's fields:
/// `scale = floor(size / crop_pct)`; crop_mode `center`: shorter side to `scale`, center crop;
/// `squash`: `Resize((scale, scale))`, center crop; `border`: `ResizeKeepRatio((scale, scale), longest=1)`,
/// `CenterCropOrPad` filled with `round(255 · mean)`.
pub fn timm_eval(
    input_size: &[usize],
    crop_pct: Option<f64>,
    crop_mode: Option<&str>,
    interpolation: Option<&str>,
    mean: [f64; 3],
    std: [f64; 3],
) -> Result<PreprocessConfig, String> {
    let (h, w) = match input_size {
        [3, h, w] | [h, w] => (*h, *w),
        other => return Err(format!("input_size {other:?} is not [3, H, W]")),
    };
    if h != w {
        return Err(format!("input_size {h}x{w} is not square; vitedge's models take square inputs"));
    }
    let crop_pct = crop_pct.unwrap_or(0.875); // timm's DEFAULT_CROP_PCT
    if !(crop_pct > 0.0 && crop_pct <= 1.0) {
        return Err(format!("crop_pct {crop_pct} must be in (0, 1]"));
    }
    let interp_name = interpolation.unwrap_or("bilinear");
    let interpolation = Interpolation::parse(interp_name).ok_or(format!("unknown interpolation `{interp_name}` (random interpolation is a training setting)"))?;
    let scale = (h as f64 / crop_pct).floor() as usize;
    let fill = mean.map(|m| (255.0 * m).round_ties_even().clamp(0.0, 255.0) as u8);
    let (resize, fill) = match crop_mode.unwrap_or("center") {
        "center" => (Resize::ShorterSide { size: scale, max_size: None }, [0; 3]),
        "squash" => (Resize::Exact { height: scale, width: scale }, [0; 3]),
        "border" => (Resize::KeepRatio { height: scale, width: scale, longest: 1.0 }, fill),
        other => return Err(format!("crop_mode `{other}` is not one of center, squash, border")),
    };
    let config = PreprocessConfig {
        input_size: h,
        crop_pct: crop_pct as f32,
        interpolation,
        mean: mean.map(|v| v as f32),
        std: std.map(|v| v as f32),
        transform: Some(Transform { resize: Some(resize), center_crop: Some(CenterCrop { height: h, width: w, fill }) }),
        scaling: Scaling::Divide,
    };
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_v1_compose() {
        let s = parse_repr(
            "Compose(\n    Resize(size=248, interpolation=bicubic, max_size=None, antialias=True)\n    CenterCrop(size=(224, 224))\n    ToTensor()\n    Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))\n)",
        )
        .unwrap();
        assert_eq!(s.config.input_size, 224);
        assert_eq!(s.config.interpolation, Interpolation::Bicubic);
        assert_eq!(s.config.steps().resize, Some(Resize::ShorterSide { size: 248, max_size: None }));
        assert!(s.notes.is_empty(), "{:?}", s.notes);
    }

    #[test]
    fn refuses_augmentation_and_unknown_steps() {
        assert!(parse_repr("Compose(RandomResizedCrop(size=(224, 224)), ToTensor())").unwrap_err().contains("augmentation"));
        assert!(parse_repr("Compose(Resize(224), Lambda(), ToTensor())").unwrap_err().contains("Lambda"));
        assert!(parse_repr("Compose(Resize(224), CenterCrop(224))").unwrap_err().contains("float tensor"));
        assert!(parse_repr("Compose(Resize(300), CenterCrop(224), ToTensor(), Normalize(mean=(0.5,), std=0.5))").unwrap_err().contains("std"));
        assert!(parse_repr("Compose(Resize(size=(224, 256)), ToTensor())").unwrap_err().contains("square"));
        assert!(parse_repr("Compose(Resize(224").is_err());
    }

    #[test]
    fn a_resize_without_crop_gets_a_center_crop_and_a_note() {
        let s = parse_repr("Compose(Resize(size=224, interpolation=bilinear, max_size=None, antialias=True), ToTensor())").unwrap();
        assert_eq!(s.config.steps().center_crop, Some(CenterCrop { height: 224, width: 224, fill: [0; 3] }));
        assert!(s.notes.iter().any(|n| n.contains("no crop")));
        assert_eq!(s.config.mean, [0.0; 3]);
    }

    #[test]
    fn timm_modes() {
        let c = timm_eval(&[3, 224, 224], Some(0.9), Some("center"), Some("bicubic"), [0.5; 3], [0.5; 3]).unwrap();
        assert_eq!(c.steps().resize, Some(Resize::ShorterSide { size: 248, max_size: None }));
        let c = timm_eval(&[3, 224, 224], Some(0.875), Some("squash"), Some("bilinear"), [0.5; 3], [0.5; 3]).unwrap();
        assert_eq!(c.steps().resize, Some(Resize::Exact { height: 256, width: 256 }));
        let c = timm_eval(&[3, 32, 32], Some(0.95), Some("border"), Some("bicubic"), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).unwrap();
        assert_eq!(c.steps().center_crop.unwrap().fill, [124, 116, 104]);
        assert!(timm_eval(&[3, 224, 224], Some(0.9), Some("center"), Some("random"), [0.5; 3], [0.5; 3]).is_err());
    }
}
