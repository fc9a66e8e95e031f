//! A restricted pickle reader for PyTorch checkpoints. It interprets every opcode of protocols 0–5
//! (except out-of-band buffers) and builds plain values in an arena; nothing is ever imported or
//! executed. The globals torch state dicts need (`_rebuild_tensor_v2`, storage classes,
//! `OrderedDict`, ...) are understood; any other global — a torchvision transform, an
//! `argparse.Namespace`, `os.system` — becomes an inert *placeholder*: calling, instantiating or
//! building it yields an opaque object that remembers the global's name and nothing else.
//!
//! Values live in one flat arena and refer to each other by index, so memo references, shared and
//! cyclic structures cost nothing to copy, and no clone, drop or debug print ever recurses.
//! [`Limits`] bound the nesting depth, object and memo counts and the bytes built.

use std::collections::{BTreeSet, HashMap};

/// What an unpickled stream may build; exceeding one is a [`PickleError::Limit`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Deepest nesting of containers and marks. Python's own pickler cannot write deeper than its
    /// recursion limit (1000 frames), so no genuine checkpoint comes close.
    pub max_depth: usize,
    /// Objects (strings, containers, tensors, placeholders...) in the arena, and values on the stack.
    pub max_objects: usize,
    /// Memo entries.
    pub max_memo: usize,
    /// Bytes the unpickler allocates: objects, container slots, string contents, stack and memo.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 1000, max_objects: 1 << 20, max_memo: 1 << 20, max_bytes: 128 << 20 }
    }
}

/// Index of an object in a [`Pickle`]'s arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjId(u32);

/// A value: a scalar, or a reference to an arena object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// An integer wider than 64 bits (kept only as a marker).
    BigInt,
    /// A float.
    Float(f64),
    /// An object in the arena.
    Obj(ObjId),
}

/// An object built by the unpickler.
#[derive(Debug)]
pub enum Object {
    /// A text string.
    Str(String),
    /// A byte string or bytearray.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list or set.
    List(Vec<Value>),
    /// A dict, OrderedDict or attribute dict, in insertion order (a repeated key: the last wins).
    Dict(Vec<(Value, Value)>),
    /// A global the stream referenced.
    Global(Global),
    /// Whatever calling, instantiating or building a placeholder would have produced, never made:
    /// only the placeholder's `module.name` is kept.
    Opaque(String),
    /// An understood object without meaning for the weights (e.g. `torch.device("cpu")`).
    Inert(String),
    /// A storage reference from a persistent id.
    Storage(StorageRef),
    /// A tensor as described by `_rebuild_tensor_v2`.
    Tensor(Box<TensorRef>),
    /// A tensor whose rebuild arguments are unusable; the reason. An error only if the weights use it.
    Invalid(String),
}

/// A global (`module.name`) referenced by the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Global {
    /// One of the globals torch state dicts need.
    Known(Known),
    /// Any other global: an inert placeholder, by `module.name`.
    Placeholder(String),
}

/// The globals the unpickler understands.
#[derive(Clone, Debug, PartialEq)]
pub enum Known {
    /// `collections.OrderedDict` and Lightning's attribute-dict classes: an empty dict.
    DictClass,
    /// `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor`.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter` (and `_with_state`): its tensor argument.
    RebuildParameter,
    /// A storage class such as `torch.FloatStorage`, by name.
    StorageClass(String),
    /// `torch.Size`: its tuple argument.
    Size,
    /// `builtins.set` / `frozenset`: a list of the items.
    Set,
    /// `_codecs.encode`, which protocol 2 uses for `bytes`.
    Encode,
    /// An understood global without meaning for the weights (`torch.device`), by name.
    Inert(String),
}

/// A storage as named by a persistent id `("storage", class, key, location, numel)`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    /// Storage class name, e.g. `FloatStorage`.
    pub dtype: String,
    /// Storage file key inside the archive's `data/` folder.
    pub key: String,
    /// Element count.
    pub numel: u64,
}

/// A tensor view of a storage, as described by `_rebuild_tensor_v2`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    /// The storage viewed.
    pub storage: StorageRef,
    /// Element offset into the storage.
    pub offset: u64,
    /// Shape.
    pub size: Vec<u64>,
    /// Strides in elements.
    pub stride: Vec<u64>,
}

/// Why a pickle was refused.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The stream is malformed or truncated.
    #[error("malformed pickle at byte {at}: {what}")]
    Malformed { at: usize, what: String },
    /// The stream exceeds one of the [`Limits`].
    #[error("pickle refused at byte {at}: {what}; genuine checkpoints stay far below this limit, so the file is damaged or was crafted: re-download it, or re-save the weights with `torch.save(model.state_dict(), path)`")]
    Limit { at: usize, what: String },
}

/// An unpickled stream: the arena, the top-level value and the placeholder globals referenced.
#[derive(Debug)]
pub struct Pickle {
    objects: Vec<Object>,
    /// The top-level value.
    pub root: Value,
    /// `module.name` of every global that became a placeholder, sorted.
    pub placeholders: BTreeSet<String>,
    /// Bytes the unpickler accounted for (see [`Limits::max_bytes`]).
    pub bytes_used: usize,
}

impl Pickle {
    /// The object `v` refers to, if it is one.
    pub fn object(&self, v: Value) -> Option<&Object> {
        match v {
            Value::Obj(id) => self.objects.get(id.0 as usize),
            _ => None,
        }
    }

    /// `v` as a text string.
    pub fn str(&self, v: Value) -> Option<&str> {
        match self.object(v) {
            Some(Object::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// `v` as a dict's entries.
    pub fn dict(&self, v: Value) -> Option<&[(Value, Value)]> {
        match self.object(v) {
            Some(Object::Dict(d)) => Some(d),
            _ => None,
        }
    }

    /// The value under the string key `key` of dict `v` (the last one, as Python keeps).
    pub fn get(&self, v: Value, key: &str) -> Option<Value> {
        self.dict(v)?.iter().rev().find(|(k, _)| self.str(*k) == Some(key)).map(|&(_, v)| v)
    }

    /// The placeholder global `v` is or came from, if any.
    pub fn placeholder_of(&self, v: Value) -> Option<&str> {
        match self.object(v) {
            Some(Object::Opaque(name)) | Some(Object::Global(Global::Placeholder(name))) => Some(name),
            _ => None,
        }
    }

    /// A short description of `v` for messages (never walks into containers).
    pub fn describe(&self, v: Value) -> String {
        describe_in(&self.objects, v)
    }
}

/// A short description of `v` for messages: its kind and size, never its contents.
fn describe_in(objects: &[Object], v: Value) -> String {
    let Value::Obj(id) = v else {
        return match v {
            Value::None => "None".into(),
            Value::Bool(b) => format!("{b}"),
            Value::Int(i) => format!("the integer {i}"),
            Value::BigInt => "an integer wider than 64 bits".into(),
            Value::Float(f) => format!("the float {f}"),
            Value::Obj(_) => unreachable!(),
        };
    };
    match &objects[id.0 as usize] {
        Object::Str(s) if s.len() <= 40 => format!("the string {s:?}"),
        Object::Str(s) => format!("a string of {} bytes", s.len()),
        Object::Bytes(b) => format!("a byte string of {} bytes", b.len()),
        Object::Tuple(t) => format!("a tuple of {} items", t.len()),
        Object::List(l) => format!("a list of {} items", l.len()),
        Object::Dict(d) => format!("a dict of {} entries", d.len()),
        Object::Global(Global::Known(k)) => format!("the global {k:?}"),
        Object::Global(Global::Placeholder(n)) => format!("the Python global `{n}`"),
        Object::Opaque(n) => format!("an object built by the Python global `{n}`"),
        Object::Inert(n) => format!("a `{n}` object"),
        Object::Storage(s) => format!("storage {} ({})", s.key, s.dtype),
        Object::Tensor(t) => format!("a tensor of shape {:?}", t.size),
        Object::Invalid(why) => format!("an unusable tensor ({why})"),
    }
}

fn known(module: &str, name: &str) -> Option<Known> {
    Some(match (module, name) {
        ("collections", "OrderedDict")
        | ("lightning_fabric.utilities.data", "AttributeDict")
        | ("pytorch_lightning.utilities.parsing", "AttributeDict")
        | ("lightning.fabric.utilities.data", "AttributeDict")
        | ("lightning.pytorch.utilities.parsing", "AttributeDict") => Known::DictClass,
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => Known::RebuildTensor,
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => Known::RebuildParameter,
        ("torch", s) if s.ends_with("Storage") => Known::StorageClass(s.to_string()),
        ("torch.storage", "UntypedStorage") => Known::StorageClass("UntypedStorage".into()),
        ("torch", "Size") => Known::Size,
        ("builtins" | "__builtin__", "set" | "frozenset") => Known::Set,
        ("_codecs", "encode") => Known::Encode,
        ("torch", "device") => Known::Inert("torch.device".into()),
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
    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PickleError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn len8(&mut self) -> Result<usize, PickleError> {
        let n = u64::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| self.err("length overflows"))
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

/// Little-endian two's-complement integer of `b` (LONG1 / LONG4 payload).
fn long_le(b: &[u8]) -> Value {
    if b.len() > 8 {
        return Value::BigInt;
    }
    let mut v: i64 = 0;
    for (i, &byte) in b.iter().enumerate() {
        v |= (byte as i64) << (8 * i);
    }
    if !b.is_empty() && b.len() < 8 && b[b.len() - 1] & 0x80 != 0 {
        v -= 1i64 << (8 * b.len());
    }
    Value::Int(v)
}

/// The arena under construction, with its accounting.
struct Builder<'l> {
    objects: Vec<Object>,
    depth: Vec<u32>,
    bytes: usize,
    limits: &'l Limits,
    placeholders: BTreeSet<String>,
}

const OBJECT_BYTES: usize = std::mem::size_of::<Object>() + std::mem::size_of::<u32>();
/// A container slot, counted twice for `Vec` growth.
const SLOT_BYTES: usize = 2 * std::mem::size_of::<Value>();

impl Builder<'_> {
    fn depth_of(&self, v: Value) -> u32 {
        match v {
            Value::Obj(id) => self.depth[id.0 as usize],
            _ => 0,
        }
    }

    fn charge(&mut self, bytes: usize, r: &Reader) -> Result<(), PickleError> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.max_bytes {
            return Err(PickleError::Limit { at: r.pos, what: format!("it builds more than {} MiB of objects", self.limits.max_bytes >> 20) });
        }
        Ok(())
    }

    /// Adds an object whose children are `children`, checking depth and the limits.
    fn add(&mut self, o: Object, r: &Reader) -> Result<Value, PickleError> {
        if self.objects.len() >= self.limits.max_objects {
            return Err(PickleError::Limit { at: r.pos, what: format!("it builds more than {} objects", self.limits.max_objects) });
        }
        let (depth, extra) = match &o {
            Object::Tuple(items) | Object::List(items) => {
                (items.iter().map(|&v| self.depth_of(v)).max().map_or(1, |d| d + 1), items.len() * SLOT_BYTES)
            }
            Object::Dict(items) => {
                (items.iter().map(|&(k, v)| self.depth_of(k).max(self.depth_of(v))).max().map_or(1, |d| d + 1), items.len() * 2 * SLOT_BYTES)
            }
            Object::Str(s) | Object::Opaque(s) | Object::Inert(s) | Object::Invalid(s) => (1, s.len()),
            Object::Bytes(b) => (1, b.len()),
            Object::Tensor(t) => (1, std::mem::size_of::<TensorRef>() + t.storage.key.len() + 16 * t.size.len()),
            Object::Storage(s) => (1, s.key.len() + s.dtype.len()),
            Object::Global(_) => (1, 0),
        };
        self.check_depth(depth as usize, r)?;
        self.charge(OBJECT_BYTES + extra, r)?;
        self.objects.push(o);
        self.depth.push(depth);
        Ok(Value::Obj(ObjId(self.objects.len() as u32 - 1)))
    }

    fn check_depth(&self, depth: usize, r: &Reader) -> Result<(), PickleError> {
        if depth > self.limits.max_depth {
            return Err(PickleError::Limit { at: r.pos, what: format!("it nests deeper than {} levels", self.limits.max_depth) });
        }
        Ok(())
    }

    fn obj_mut(&mut self, v: Value) -> Option<&mut Object> {
        match v {
            Value::Obj(id) => self.objects.get_mut(id.0 as usize),
            _ => None,
        }
    }

    fn obj(&self, v: Value) -> Option<&Object> {
        match v {
            Value::Obj(id) => self.objects.get(id.0 as usize),
            _ => None,
        }
    }

    /// Appends `items` to the list (or set) `target`; on an opaque object they are dropped.
    fn extend_list(&mut self, target: Value, items: Vec<Value>, r: &Reader) -> Result<(), PickleError> {
        let child_depth = items.iter().map(|&v| self.depth_of(v)).max().unwrap_or(0);
        self.charge(items.len() * SLOT_BYTES, r)?;
        match self.obj_mut(target) {
            Some(Object::List(l)) => l.extend(items),
            Some(Object::Opaque(_)) => return Ok(()),
            _ => return Err(r.err("APPEND(S) on something that is not a list")),
        }
        self.raise_depth(target, child_depth + 1, r)
    }

    /// Sets `items` (key, value pairs) on the dict `target`; on an opaque object they are dropped.
    fn extend_dict(&mut self, target: Value, items: Vec<(Value, Value)>, r: &Reader) -> Result<(), PickleError> {
        let child_depth = items.iter().map(|&(k, v)| self.depth_of(k).max(self.depth_of(v))).max().unwrap_or(0);
        self.charge(items.len() * 2 * SLOT_BYTES, r)?;
        match self.obj_mut(target) {
            Some(Object::Dict(d)) => d.extend(items),
            Some(Object::Opaque(_)) => return Ok(()),
            _ => return Err(r.err("SETITEM(S) on something that is not a dict")),
        }
        self.raise_depth(target, child_depth + 1, r)
    }

    /// Records that `target` now nests `depth` levels (a mutable container can gain depth; cycles
    /// only make the number grow, never loop).
    fn raise_depth(&mut self, target: Value, depth: u32, r: &Reader) -> Result<(), PickleError> {
        if let Value::Obj(id) = target {
            let d = &mut self.depth[id.0 as usize];
            *d = (*d).max(depth);
            let d = *d as usize;
            self.check_depth(d, r)?;
        }
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str, r: &Reader) -> Result<Value, PickleError> {
        let g = match known(module, name) {
            Some(k) => Global::Known(k),
            None => {
                let full = format!("{module}.{name}");
                self.placeholders.insert(full.clone());
                Global::Placeholder(full)
            }
        };
        self.add(Object::Global(g), r)
    }

    fn items(&self, v: Value) -> Option<&[Value]> {
        match self.obj(v)? {
            Object::Tuple(t) | Object::List(t) => Some(t),
            _ => None,
        }
    }

    fn u64_of(&self, v: Value) -> Result<u64, String> {
        match v {
            Value::Int(i) if i >= 0 => Ok(i as u64),
            Value::Int(i) => Err(format!("{i} is negative")),
            other => Err(format!("{} is not an integer", self.describe(other))),
        }
    }

    fn u64s_of(&self, v: Value, what: &str) -> Result<Vec<u64>, String> {
        const MAX_RANK: usize = 64;
        let items = self.items(v).ok_or_else(|| format!("its {what} is {}, not a tuple of integers", self.describe(v)))?;
        if items.len() > MAX_RANK {
            return Err(format!("its {what} has {} dimensions (more than {MAX_RANK})", items.len()));
        }
        items.iter().map(|&i| self.u64_of(i).map_err(|e| format!("its {what} {e}"))).collect()
    }

    fn describe(&self, v: Value) -> String {
        describe_in(&self.objects, v)
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`: a tensor, or why not.
    fn rebuild_tensor(&self, args: &[Value]) -> Object {
        let [storage, offset, size, stride, ..] = args else {
            return Object::Invalid(format!("_rebuild_tensor_v2 got {} arguments, expected (storage, offset, size, stride, ...)", args.len()));
        };
        let storage = match self.obj(*storage) {
            Some(Object::Storage(s)) => s.clone(),
            Some(Object::Invalid(why)) => return Object::Invalid(why.clone()),
            _ => return Object::Invalid(format!("its storage is {}", self.describe(*storage))),
        };
        let result = (|| {
            let offset = self.u64_of(*offset).map_err(|e| format!("its storage offset {e}"))?;
            let size = self.u64s_of(*size, "size")?;
            let stride = self.u64s_of(*stride, "stride")?;
            if size.len() != stride.len() {
                return Err(format!("its size has {} dimensions but its stride {}", size.len(), stride.len()));
            }
            Ok(TensorRef { storage, offset, size, stride })
        })();
        match result {
            Ok(t) => Object::Tensor(Box::new(t)),
            Err(why) => Object::Invalid(why),
        }
    }

    /// What calling `func(*args)` yields, without calling anything.
    fn call(&mut self, func: Value, args: Value, r: &Reader) -> Result<Value, PickleError> {
        let Some(arg_items) = (match self.obj(args) {
            Some(Object::Tuple(t)) => Some(t.clone()),
            _ => None,
        }) else {
            return Err(r.err("REDUCE arguments are not a tuple"));
        };
        let o = match self.obj(func) {
            Some(Object::Global(Global::Placeholder(name))) | Some(Object::Opaque(name)) => Object::Opaque(name.clone()),
            Some(Object::Global(Global::Known(k))) => match k.clone() {
                Known::DictClass => {
                    let mut entries = Vec::new();
                    if let Some(&first) = arg_items.first() {
                        for &pair in self.items(first).unwrap_or(&[]) {
                            if let Some(&[k, v]) = self.items(pair) {
                                entries.push((k, v));
                            }
                        }
                    }
                    Object::Dict(entries)
                }
                Known::RebuildTensor => self.rebuild_tensor(&arg_items),
                Known::RebuildParameter => match arg_items.first().and_then(|&v| self.obj(v)) {
                    Some(Object::Tensor(_)) | Some(Object::Invalid(_)) => return Ok(arg_items[0]),
                    _ => Object::Invalid("_rebuild_parameter of something that is not a tensor".into()),
                },
                Known::Size => match arg_items.first() {
                    Some(&t) if self.items(t).is_some() => return Ok(t),
                    _ => Object::Inert("torch.Size".into()),
                },
                Known::Set => Object::List(arg_items.first().and_then(|&v| self.items(v)).map(<[Value]>::to_vec).unwrap_or_default()),
                Known::Encode => match arg_items.first().and_then(|&v| self.obj(v)) {
                    // protocol 2 writes bytes as _codecs.encode(text, "latin1")
                    Some(Object::Str(s)) if s.chars().all(|c| (c as u32) < 256) => Object::Bytes(s.chars().map(|c| c as u8).collect()),
                    _ => Object::Inert("_codecs.encode".into()),
                },
                Known::StorageClass(n) => Object::Inert(format!("torch.{n}")),
                Known::Inert(n) => Object::Inert(n),
            },
            _ => return Err(r.err(format!("REDUCE on {}, which is not callable", self.describe(func)))),
        };
        self.add(o, r)
    }

    /// What `cls.__new__(cls, ...)` (NEWOBJ, INST, OBJ) yields.
    fn instantiate(&mut self, cls: Value, r: &Reader) -> Result<Value, PickleError> {
        let o = match self.obj(cls) {
            Some(Object::Global(Global::Placeholder(name))) | Some(Object::Opaque(name)) => Object::Opaque(name.clone()),
            Some(Object::Global(Global::Known(Known::DictClass))) => Object::Dict(Vec::new()),
            Some(Object::Global(Global::Known(Known::Set))) => Object::List(Vec::new()),
            Some(Object::Global(Global::Known(k))) => Object::Inert(format!("{k:?}")),
            _ => return Err(r.err(format!("instantiating {}, which is not a class", self.describe(cls)))),
        };
        self.add(o, r)
    }

    /// A persistent id: torch's `("storage", class, key, location, numel)`.
    fn persistent(&mut self, pid: Value, r: &Reader) -> Result<Value, PickleError> {
        let parsed = (|| {
            let items = self.items(pid).ok_or("the persistent id is not a tuple")?;
            let [kind, class, key, _location, numel] = items else {
                return Err(format!("the persistent id has {} fields, expected (\"storage\", class, key, location, numel)", items.len()));
            };
            if !matches!(self.obj(*kind), Some(Object::Str(s)) if s == "storage") {
                return Err("the persistent id is not a storage".into());
            }
            let dtype = match self.obj(*class) {
                Some(Object::Global(Global::Known(Known::StorageClass(n)))) => n.clone(),
                _ => return Err(format!("the storage class is {}", self.describe(*class))),
            };
            let key = match self.obj(*key) {
                Some(Object::Str(s)) => s.clone(),
                _ => return Err("the storage key is not a string".into()),
            };
            let numel = self.u64_of(*numel).map_err(|e| format!("the storage size {e}"))?;
            Ok(StorageRef { dtype, key, numel })
        })();
        let o = match parsed {
            Ok(s) => Object::Storage(s),
            Err(why) => Object::Invalid(why),
        };
        self.add(o, r)
    }
}

/// Interprets a pickle stream under the default [`Limits`].
pub fn load(data: &[u8]) -> Result<Pickle, PickleError> {
    load_with(data, &Limits::default())
}

/// Interprets a pickle stream; every step is bounded by `limits`, and nothing is executed.
pub fn load_with(data: &[u8], limits: &Limits) -> Result<Pickle, PickleError> {
    let mut r = Reader { data, pos: 0 };
    let mut b = Builder { objects: Vec::new(), depth: Vec::new(), bytes: 0, limits, placeholders: BTreeSet::new() };
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    const MEMO_BYTES: usize = 64;
    macro_rules! pop {
        () => {
            stack.pop().ok_or_else(|| r.err("stack underflow"))?
        };
    }
    macro_rules! top {
        () => {
            *stack.last().ok_or_else(|| r.err("stack underflow"))?
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
    macro_rules! push_obj {
        ($o:expr) => {{
            let v = b.add($o, &r)?;
            stack.push(v);
        }};
    }
    loop {
        if stack.len() > limits.max_objects {
            return Err(PickleError::Limit { at: r.pos, what: format!("it stacks more than {} values", limits.max_objects) });
        }
        if b.bytes + stack.capacity() * std::mem::size_of::<Value>() + memo.len() * MEMO_BYTES > limits.max_bytes {
            return Err(PickleError::Limit { at: r.pos, what: format!("it builds more than {} MiB of objects", limits.max_bytes >> 20) });
        }
        let op = r.u8()?;
        match op {
            // framing and protocol
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(r.err(format!("pickle protocol {proto} is not supported")));
                }
            }
            0x95 => {
                r.len8()?;
            }
            b'.' => {
                let root = stack.pop().ok_or_else(|| r.err("empty stack at STOP"))?;
                return Ok(Pickle { objects: b.objects, root, placeholders: b.placeholders, bytes_used: b.bytes });
            }
            // empty containers and marks
            b'}' => push_obj!(Object::Dict(Vec::new())),
            b']' | 0x8f => push_obj!(Object::List(Vec::new())),
            b')' => push_obj!(Object::Tuple(Vec::new())),
            b'(' => {
                if marks.len() >= limits.max_depth {
                    return Err(PickleError::Limit { at: r.pos, what: format!("it nests more than {} marks", limits.max_depth) });
                }
                marks.push(stack.len());
            }
            // scalars
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(r.u32()? as i32 as i64)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                stack.push(long_le(r.take(n)?));
            }
            0x8b => {
                let n = r.u32()? as usize;
                stack.push(long_le(r.take(n)?));
            }
            b'I' => {
                let l = r.line()?;
                stack.push(match l {
                    "01" => Value::Bool(true),
                    "00" => Value::Bool(false),
                    _ => Value::Int(l.trim().parse().map_err(|_| r.err("INT is not an integer"))?),
                });
            }
            b'L' => {
                let l = r.line()?.trim().trim_end_matches('L');
                let v = match l.parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) if !l.is_empty() && l.trim_start_matches('-').bytes().all(|c| c.is_ascii_digit()) => Value::BigInt,
                    Err(_) => return Err(r.err("LONG is not an integer")),
                };
                stack.push(v);
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(r.array()?))),
            b'F' => {
                let l = r.line()?;
                stack.push(Value::Float(l.trim().parse().map_err(|_| r.err("FLOAT is not a number"))?));
            }
            // strings and bytes
            b'X' => {
                let n = r.u32()? as usize;
                push_obj!(Object::Str(r.string(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                push_obj!(Object::Str(r.string(n)?));
            }
            0x8d => {
                let n = r.len8()?;
                push_obj!(Object::Str(r.string(n)?));
            }
            b'V' => {
                let l = r.line()?.to_string();
                push_obj!(Object::Str(l));
            }
            b'S' => {
                let l = r.line()?;
                let unquoted = l.strip_prefix(['\'', '"']).and_then(|s| s.strip_suffix(['\'', '"'])).ok_or_else(|| r.err("STRING is not quoted"))?;
                push_obj!(Object::Str(unquoted.to_string()));
            }
            b'T' | b'U' | b'C' | b'B' | 0x8e | 0x96 => {
                let n = match op {
                    b'U' | b'C' => r.u8()? as usize,
                    b'T' | b'B' => r.u32()? as usize,
                    _ => r.len8()?,
                };
                push_obj!(Object::Bytes(r.take(n)?.to_vec()));
            }
            0x97 => return Err(r.err("out-of-band buffers (NEXT_BUFFER) are not supported")),
            0x98 => {
                let _ = top!();
            }
            // containers
            b't' => {
                let items = pop_mark!();
                push_obj!(Object::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(r.err("stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                push_obj!(Object::Tuple(items));
            }
            b'l' | 0x91 => {
                let items = pop_mark!();
                push_obj!(Object::List(items));
            }
            b'd' => {
                let items = pop_mark!();
                if items.len() % 2 != 0 {
                    return Err(r.err("DICT with an odd number of items"));
                }
                push_obj!(Object::Dict(items.chunks_exact(2).map(|p| (p[0], p[1])).collect()));
            }
            b'a' => {
                let v = pop!();
                let target = top!();
                b.extend_list(target, vec![v], &r)?;
            }
            b'e' | 0x90 => {
                let items = pop_mark!();
                let target = top!();
                b.extend_list(target, items, &r)?;
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                let target = top!();
                b.extend_dict(target, vec![(k, v)], &r)?;
            }
            b'u' => {
                let items = pop_mark!();
                if items.len() % 2 != 0 {
                    return Err(r.err("SETITEMS with an odd number of items"));
                }
                let target = top!();
                b.extend_dict(target, items.chunks_exact(2).map(|p| (p[0], p[1])).collect(), &r)?;
            }
            // memo
            b'p' | b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'p' => r.line()?.trim().parse::<u32>().map_err(|_| r.err("PUT index is not an integer"))?,
                    b'q' => r.u8()? as u32,
                    b'r' => r.u32()?,
                    _ => u32::try_from(memo.len()).map_err(|_| r.err("memo overflows"))?,
                };
                if memo.len() >= limits.max_memo && !memo.contains_key(&idx) {
                    return Err(PickleError::Limit { at: r.pos, what: format!("it memoizes more than {} values", limits.max_memo) });
                }
                memo.insert(idx, top!());
            }
            b'g' | b'h' | b'j' => {
                let idx = match op {
                    b'g' => r.line()?.trim().parse::<u32>().map_err(|_| r.err("GET index is not an integer"))?,
                    b'h' => r.u8()? as u32,
                    _ => r.u32()?,
                };
                let v = *memo.get(&idx).ok_or_else(|| r.err(format!("memo {idx} is undefined")))?;
                stack.push(v);
            }
            // stack manipulation
            b'0' => {
                pop!();
            }
            b'1' => {
                let _ = pop_mark!();
            }
            b'2' => {
                let v = top!();
                stack.push(v);
            }
            // globals
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                let v = b.global(module, name, &r)?;
                stack.push(v);
            }
            0x93 => {
                let name = pop!();
                let module = pop!();
                let (Some(Object::Str(module)), Some(Object::Str(name))) = (b.obj(module), b.obj(name)) else {
                    return Err(r.err("STACK_GLOBAL needs two strings"));
                };
                let (module, name) = (module.clone(), name.clone());
                let v = b.global(&module, &name, &r)?;
                stack.push(v);
            }
            0x82..=0x84 => {
                let code = match op {
                    0x82 => r.u8()? as u32,
                    0x83 => r.u16()? as u32,
                    _ => r.u32()?,
                };
                let name = format!("copyreg extension {code}");
                b.placeholders.insert(name.clone());
                push_obj!(Object::Global(Global::Placeholder(name)));
            }
            // persistent ids
            b'Q' => {
                let pid = pop!();
                let v = b.persistent(pid, &r)?;
                stack.push(v);
            }
            b'P' => {
                r.line()?;
                push_obj!(Object::Invalid("a text persistent id (not torch's format)".into()));
            }
            // calls and instances: never executed
            b'R' => {
                let args = pop!();
                let func = pop!();
                let v = b.call(func, args, &r)?;
                stack.push(v);
            }
            0x81 => {
                let _args = pop!();
                let cls = pop!();
                let v = b.instantiate(cls, &r)?;
                stack.push(v);
            }
            0x92 => {
                let _kwargs = pop!();
                let _args = pop!();
                let cls = pop!();
                let v = b.instantiate(cls, &r)?;
                stack.push(v);
            }
            b'i' => {
                let module = r.line()?;
                let name = r.line()?;
                let _args = pop_mark!();
                let cls = b.global(module, name, &r)?;
                let v = b.instantiate(cls, &r)?;
                stack.push(v);
            }
            b'o' => {
                let items = pop_mark!();
                let Some(&cls) = items.first() else {
                    return Err(r.err("OBJ without a class"));
                };
                let v = b.instantiate(cls, &r)?;
                stack.push(v);
            }
            b'b' => {
                // BUILD sets state on an object; dicts, tensors and placeholders ignore it.
                let _state = pop!();
                let _ = top!();
            }
            other => return Err(r.err(format!("unsupported pickle opcode 0x{other:02x}"))),
        }
    }
}
