//! A restricted pickle reader for PyTorch checkpoints. It interprets the opcodes `torch.save` emits
//! and builds plain values; globals are resolved only against a fixed allowlist of the names torch
//! state dicts use, and nothing is ever executed. Any other global is an error naming it.

use std::cell::RefCell;
use std::rc::Rc;

/// A value built by the unpickler.
#[derive(Clone, Debug)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list (shared, as pickle memo references are).
    List(Rc<RefCell<Vec<Value>>>),
    /// A dict, OrderedDict or attribute dict (shared), in insertion order.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// An allowlisted global (a callable or class, never called by Python code).
    Global(Allowed),
    /// A storage reference from a persistent id: `(dtype name, key, numel)`.
    Storage { dtype: String, key: String, numel: u64 },
    /// A rebuilt tensor referencing a storage.
    Tensor(TensorRef),
    /// A `torch.device` or other inert marker.
    Inert,
}

/// A tensor as described by `_rebuild_tensor_v2`.
#[derive(Clone, Debug)]
pub struct TensorRef {
    /// Storage dtype name, e.g. `FloatStorage`.
    pub dtype: String,
    /// Storage file key inside the archive's `data/` folder.
    pub key: String,
    /// Storage element count.
    pub storage_numel: u64,
    /// Element offset into the storage.
    pub offset: u64,
    /// Shape.
    pub size: Vec<u64>,
    /// Strides in elements.
    pub stride: Vec<u64>,
}

/// The globals the unpickler accepts.
#[derive(Clone, Debug, PartialEq)]
pub enum Allowed {
    /// `collections.OrderedDict` and attribute-dict classes: build an empty dict.
    DictClass,
    /// `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor`.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter` (returns its tensor argument).
    RebuildParameter,
    /// A storage class such as `torch.FloatStorage`.
    StorageClass(String),
    /// `torch.device`, `torch.Size`, `builtins.set`, `_codecs.encode`: inert or simple.
    Other(String),
}

/// Why a pickle was refused.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The stream references a global vitedge does not load.
    #[error("the checkpoint references the Python global `{module}.{name}`, which vitedge will not load (it never executes code from checkpoints); re-save the weights with `torch.save(model.state_dict(), path)` or export them to safetensors")]
    ForbiddenGlobal { module: String, name: String },
    /// The stream is malformed or truncated.
    #[error("malformed pickle at byte {at}: {what}")]
    Malformed { at: usize, what: String },
}

fn allowed(module: &str, name: &str) -> Option<Allowed> {
    Some(match (module, name) {
        ("collections", "OrderedDict")
        | ("lightning_fabric.utilities.data", "AttributeDict")
        | ("pytorch_lightning.utilities.parsing", "AttributeDict")
        | ("lightning.fabric.utilities.data", "AttributeDict") => Allowed::DictClass,
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => Allowed::RebuildTensor,
        ("torch._utils", "_rebuild_parameter") => Allowed::RebuildParameter,
        ("torch", s) if s.ends_with("Storage") => Allowed::StorageClass(s.to_string()),
        ("torch.storage", "UntypedStorage") => Allowed::StorageClass("UntypedStorage".into()),
        ("torch", "device") | ("torch", "Size") | ("builtins", "set") | ("builtins", "frozenset") | ("_codecs", "encode") => {
            Allowed::Other(format!("{module}.{name}"))
        }
        _ => return None,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: impl Into<String>) -> PickleError {
        PickleError::Malformed { at: self.pos, what: what.into() }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        if n > self.data.len() - self.pos {
            return Err(self.err(format!("needs {n} more bytes but the stream ends")));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PickleError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.err("unterminated line"))?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| self.err("line is not UTF-8"))?;
        self.pos += end + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, PickleError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) if *i >= 0 => Some(*i as u64),
        _ => None,
    }
}

fn as_u64_tuple(v: &Value) -> Option<Vec<u64>> {
    match v {
        Value::Tuple(items) => items.iter().map(as_u64).collect(),
        Value::List(l) => l.borrow().iter().map(as_u64).collect(),
        _ => None,
    }
}

/// Interprets a pickle stream and returns its top-level value.
pub fn load(data: &[u8]) -> Result<Value, PickleError> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: std::collections::HashMap<u64, Value> = std::collections::HashMap::new();
    const MAX_STACK: usize = 1 << 20;
    macro_rules! pop {
        () => {
            stack.pop().ok_or_else(|| r.err("stack underflow"))?
        };
    }
    macro_rules! pop_mark {
        () => {{
            let m = marks.pop().ok_or_else(|| r.err("no mark"))?;
            if m > stack.len() {
                return Err(r.err("mark beyond stack"));
            }
            stack.split_off(m)
        }};
    }
    loop {
        if stack.len() > MAX_STACK || memo.len() > MAX_STACK {
            return Err(r.err("too many objects"));
        }
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(r.err(format!("pickle protocol {proto} is not supported")));
                }
            }
            0x95 => {
                r.u64()?;
            }
            b'.' => return stack.pop().ok_or_else(|| r.err("empty stack at STOP")),
            b'}' => stack.push(Value::Dict(Rc::default())),
            b']' => stack.push(Value::List(Rc::default())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            0x8f => stack.push(Value::List(Rc::default())), // EMPTY_SET as a list
            b'(' => marks.push(stack.len()),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(r.u32()? as i32 as i64)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            0x8a | 0x8b => {
                let n = if op == 0x8a { r.u8()? as usize } else { r.u32()? as usize };
                let b = r.take(n)?;
                if n > 8 {
                    return Err(r.err("integer wider than 64 bits"));
                }
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= (byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes")))),
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(Value::Str(r.string(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(r.string(n)?));
            }
            0x8d => {
                let n = usize::try_from(r.u64()?).map_err(|_| r.err("length overflows"))?;
                stack.push(Value::Str(r.string(n)?));
            }
            b'T' | b'U' => {
                let n = if op == b'T' { r.u32()? as usize } else { r.u8()? as usize };
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'C' | b'B' | 0x8e => {
                let n = match op {
                    b'C' => r.u8()? as usize,
                    b'B' => r.u32()? as usize,
                    _ => usize::try_from(r.u64()?).map_err(|_| r.err("length overflows"))?,
                };
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b't' => {
                let items = pop_mark!();
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(r.err("stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            0x91 => {
                let items = pop_mark!();
                stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                match stack.last() {
                    Some(Value::Dict(d)) => d.borrow_mut().push((k, v)),
                    _ => return Err(r.err("SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let items = pop_mark!();
                if items.len() % 2 != 0 {
                    return Err(r.err("odd SETITEMS"));
                }
                match stack.last() {
                    Some(Value::Dict(d)) => {
                        let mut d = d.borrow_mut();
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err(r.err("SETITEMS on a non-dict")),
                }
            }
            b'a' => {
                let v = pop!();
                match stack.last() {
                    Some(Value::List(l)) => l.borrow_mut().push(v),
                    _ => return Err(r.err("APPEND on a non-list")),
                }
            }
            b'e' | 0x90 => {
                let items = pop_mark!();
                match stack.last() {
                    Some(Value::List(l)) => l.borrow_mut().extend(items),
                    _ => return Err(r.err("APPENDS on a non-list")),
                }
            }
            b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'q' => r.u8()? as u64,
                    b'r' => r.u32()? as u64,
                    _ => memo.len() as u64,
                };
                let top = stack.last().ok_or_else(|| r.err("PUT on an empty stack"))?.clone();
                memo.insert(idx, top);
            }
            b'h' | b'j' => {
                let idx = if op == b'h' { r.u8()? as u64 } else { r.u32()? as u64 };
                let v = memo.get(&idx).ok_or_else(|| r.err(format!("memo {idx} is undefined")))?.clone();
                stack.push(v);
            }
            b'0' => {
                pop!();
            }
            b'1' => {
                let _ = pop_mark!();
            }
            b'2' => {
                let v = stack.last().ok_or_else(|| r.err("DUP on an empty stack"))?.clone();
                stack.push(v);
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                let g = allowed(&module, &name).ok_or(PickleError::ForbiddenGlobal { module, name })?;
                stack.push(Value::Global(g));
            }
            0x93 => {
                let name = pop!();
                let module = pop!();
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return Err(r.err("STACK_GLOBAL needs two strings"));
                };
                let g = allowed(&module, &name).ok_or(PickleError::ForbiddenGlobal { module, name })?;
                stack.push(Value::Global(g));
            }
            b'Q' => {
                let pid = pop!();
                stack.push(persistent(&pid).ok_or_else(|| r.err(format!("unsupported persistent id {pid:?}")))?);
            }
            b'R' | 0x81 => {
                let args = pop!();
                let func = pop!();
                let Value::Global(g) = func else {
                    return Err(r.err("REDUCE on something that is not an allowed global"));
                };
                let Value::Tuple(args) = args else {
                    return Err(r.err("REDUCE arguments are not a tuple"));
                };
                stack.push(call(&g, args).map_err(|w| r.err(w))?);
            }
            b'b' => {
                // BUILD: set state on an object. Dicts ignore attribute state (e.g. `_metadata`).
                let _state = pop!();
                if stack.is_empty() {
                    return Err(r.err("BUILD on an empty stack"));
                }
            }
            other => return Err(r.err(format!("unsupported pickle opcode 0x{other:02x}"))),
        }
    }
}

fn persistent(pid: &Value) -> Option<Value> {
    let Value::Tuple(t) = pid else { return None };
    match t.as_slice() {
        [Value::Str(kind), Value::Global(Allowed::StorageClass(dtype)), Value::Str(key), _location, numel] if kind == "storage" => {
            Some(Value::Storage { dtype: dtype.clone(), key: key.clone(), numel: as_u64(numel)? })
        }
        _ => None,
    }
}

fn call(g: &Allowed, args: Vec<Value>) -> Result<Value, String> {
    match g {
        Allowed::DictClass => Ok(Value::Dict(Rc::default())),
        Allowed::RebuildParameter => args.into_iter().next().ok_or_else(|| "_rebuild_parameter without data".to_string()),
        Allowed::RebuildTensor => {
            let [Value::Storage { dtype, key, numel }, offset, size, stride, ..] = args.as_slice() else {
                return Err("_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...)".into());
            };
            let offset = as_u64(offset).ok_or("tensor offset is not a non-negative integer")?;
            let size = as_u64_tuple(size).ok_or("tensor size is not a tuple of integers")?;
            let stride = as_u64_tuple(stride).ok_or("tensor stride is not a tuple of integers")?;
            if size.len() != stride.len() {
                return Err("tensor size and stride have different ranks".into());
            }
            Ok(Value::Tensor(TensorRef { dtype: dtype.clone(), key: key.clone(), storage_numel: *numel, offset, size, stride }))
        }
        Allowed::StorageClass(_) | Allowed::Other(_) => Ok(Value::Inert),
    }
}
