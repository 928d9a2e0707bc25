//! The small part of Python's pickle format that the ModelScope SDK's cache index files use
//! (`.mdl`: a dict of str; `.msc`: a list of dicts of str), written byte for byte as
//! CPython's `pickle.dump` writes them (protocol 4, framed, with memo entries) and read back
//! from any protocol 2–5 pickle of those shapes.

use std::collections::HashMap;

/// A pickled value of the shapes the SDK's index files hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A `str`.
    Str(String),
    /// A `list`.
    List(Vec<Value>),
    /// A `dict`, in insertion order.
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value under the string key `key`, if this is a dict holding one.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

const PROTO: u8 = 0x80;
const FRAME: u8 = 0x95;
const STOP: u8 = b'.';
const MARK: u8 = b'(';
const EMPTY_LIST: u8 = b']';
const EMPTY_DICT: u8 = b'}';
const APPEND: u8 = b'a';
const APPENDS: u8 = b'e';
const SETITEM: u8 = b's';
const SETITEMS: u8 = b'u';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE: u8 = b'X';
const BINUNICODE8: u8 = 0x8d;
const MEMOIZE: u8 = 0x94;
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';

/// CPython's `_FRAME_SIZE_TARGET`: a frame is closed at an opcode boundary past this size.
const FRAME_SIZE_TARGET: usize = 64 * 1024;
/// CPython's `BATCHSIZE` for `APPENDS` / `SETITEMS`.
const BATCHSIZE: usize = 1000;

/// `pickle.dumps(value)` as CPython 3.8+ writes it (protocol 4). `shared` lists strings that
/// are one Python object wherever they appear (the interned literal keys of the SDK's dicts,
/// such as `"Path"`), so their repeats are memo references as in Python; every other string
/// is a fresh object each time.
pub fn dumps(value: &Value, shared: &[&str]) -> Vec<u8> {
    let mut pickler = Pickler {
        out: vec![PROTO, 4],
        frame: Vec::new(),
        memo: HashMap::new(),
        next_memo: 0,
        shared,
    };
    pickler.save(value);
    pickler.frame.push(STOP);
    pickler.commit_frame();
    pickler.out
}

struct Pickler<'a> {
    out: Vec<u8>,
    frame: Vec<u8>,
    memo: HashMap<String, u32>,
    next_memo: u32,
    shared: &'a [&'a str],
}

impl Pickler<'_> {
    fn commit_frame(&mut self) {
        if self.frame.len() >= 4 {
            self.out.push(FRAME);
            self.out
                .extend_from_slice(&(self.frame.len() as u64).to_le_bytes());
        }
        self.out.append(&mut self.frame);
    }

    fn memoize(&mut self) {
        self.frame.push(MEMOIZE);
        self.next_memo += 1;
    }

    fn save(&mut self, value: &Value) {
        if self.frame.len() >= FRAME_SIZE_TARGET {
            self.commit_frame();
        }
        match value {
            Value::Str(s) => {
                let shared = self.shared.contains(&s.as_str());
                if shared {
                    if let Some(&index) = self.memo.get(s) {
                        if index < 256 {
                            self.frame.extend_from_slice(&[BINGET, index as u8]);
                        } else {
                            self.frame.push(LONG_BINGET);
                            self.frame.extend_from_slice(&index.to_le_bytes());
                        }
                        return;
                    }
                }
                let bytes = s.as_bytes();
                if bytes.len() < 256 {
                    self.frame
                        .extend_from_slice(&[SHORT_BINUNICODE, bytes.len() as u8]);
                } else {
                    self.frame.push(BINUNICODE);
                    self.frame
                        .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                }
                self.frame.extend_from_slice(bytes);
                if shared {
                    self.memo.insert(s.clone(), self.next_memo);
                }
                self.memoize();
            }
            Value::List(items) => {
                self.frame.push(EMPTY_LIST);
                self.memoize();
                if items.len() == 1 {
                    self.save(&items[0]);
                    self.frame.push(APPEND);
                } else if !items.is_empty() {
                    for batch in items.chunks(BATCHSIZE) {
                        self.frame.push(MARK);
                        for item in batch {
                            self.save(item);
                        }
                        self.frame.push(APPENDS);
                    }
                }
            }
            Value::Dict(items) => {
                self.frame.push(EMPTY_DICT);
                self.memoize();
                if items.len() == 1 {
                    self.save(&items[0].0);
                    self.save(&items[0].1);
                    self.frame.push(SETITEM);
                } else if !items.is_empty() {
                    for batch in items.chunks(BATCHSIZE) {
                        self.frame.push(MARK);
                        for (k, v) in batch {
                            self.save(k);
                            self.save(v);
                        }
                        self.frame.push(SETITEMS);
                    }
                }
            }
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// It ends before its `STOP`.
    #[error("the pickle ends early")]
    Truncated,
    /// It uses an opcode outside the str / list / dict subset.
    #[error("unsupported pickle opcode 0x{0:02x}")]
    Unsupported(u8),
    /// Its opcodes do not build a value (a bad memo index, an unbalanced mark...).
    #[error("malformed pickle: {0}")]
    Malformed(&'static str),
}

enum Slot {
    Mark,
    Value(Value),
}

/// Read a pickle of strings, lists and dicts (any protocol from 2 on; frames are skipped).
pub fn loads(data: &[u8]) -> Result<Value, PickleError> {
    let mut pos = 0usize;
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], PickleError> {
        let end = pos.checked_add(n).ok_or(PickleError::Truncated)?;
        let bytes = data.get(*pos..end).ok_or(PickleError::Truncated)?;
        *pos = end;
        Ok(bytes)
    };
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64);
    let top = |stack: &Vec<Slot>| match stack.last() {
        Some(Slot::Value(v)) => Ok(v.clone()),
        _ => Err(PickleError::Malformed("memo of no value")),
    };
    let pop_value = |stack: &mut Vec<Slot>| match stack.pop() {
        Some(Slot::Value(v)) => Ok(v),
        _ => Err(PickleError::Malformed("a value was expected")),
    };
    let pop_mark = |stack: &mut Vec<Slot>| -> Result<Vec<Value>, PickleError> {
        let mark = stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or(PickleError::Malformed("no mark"))?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items
            .into_iter()
            .filter_map(|s| match s {
                Slot::Value(v) => Some(v),
                Slot::Mark => None,
            })
            .collect())
    };
    loop {
        let op = take(&mut pos, 1)?[0];
        match op {
            PROTO => {
                take(&mut pos, 1)?;
            }
            FRAME => {
                take(&mut pos, 8)?;
            }
            STOP => return pop_value(&mut stack),
            MARK => stack.push(Slot::Mark),
            EMPTY_LIST => stack.push(Slot::Value(Value::List(Vec::new()))),
            EMPTY_DICT => stack.push(Slot::Value(Value::Dict(Vec::new()))),
            SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 => {
                let width = match op {
                    SHORT_BINUNICODE => 1,
                    BINUNICODE => 4,
                    _ => 8,
                };
                let len = le(take(&mut pos, width)?) as usize;
                let bytes = take(&mut pos, len)?;
                let s = std::str::from_utf8(bytes)
                    .map_err(|_| PickleError::Malformed("a str that is not UTF-8"))?;
                stack.push(Slot::Value(Value::Str(s.to_string())));
            }
            MEMOIZE => {
                let index = memo.len() as u32;
                memo.insert(index, top(&stack)?);
            }
            BINPUT | LONG_BINPUT => {
                let index = le(take(&mut pos, if op == BINPUT { 1 } else { 4 })?) as u32;
                memo.insert(index, top(&stack)?);
            }
            BINGET | LONG_BINGET => {
                let index = le(take(&mut pos, if op == BINGET { 1 } else { 4 })?) as u32;
                let value = memo
                    .get(&index)
                    .cloned()
                    .ok_or(PickleError::Malformed("unknown memo index"))?;
                stack.push(Slot::Value(value));
            }
            APPEND | APPENDS => {
                let items = if op == APPEND {
                    vec![pop_value(&mut stack)?]
                } else {
                    pop_mark(&mut stack)?
                };
                match stack.last_mut() {
                    Some(Slot::Value(Value::List(list))) => list.extend(items),
                    _ => return Err(PickleError::Malformed("append to no list")),
                }
            }
            SETITEM | SETITEMS => {
                let items = if op == SETITEM {
                    let v = pop_value(&mut stack)?;
                    let k = pop_value(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack)?
                };
                if items.len() % 2 != 0 {
                    return Err(PickleError::Malformed("a key without a value"));
                }
                let Some(Slot::Value(Value::Dict(dict))) = stack.last_mut() else {
                    return Err(PickleError::Malformed("setitem on no dict"));
                };
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    match dict.iter_mut().find(|(old, _)| *old == k) {
                        Some(entry) => entry.1 = v,
                        None => dict.push((k, v)),
                    }
                }
            }
            other => return Err(PickleError::Unsupported(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    fn entry(path: &str, revision: &str) -> Value {
        Value::Dict(vec![(s("Path"), s(path)), (s("Revision"), s(revision))])
    }

    #[test]
    fn writes_what_cpython_writes() {
        // python3 -c "import pickle; print(pickle.dumps({'id': 'acme/tiny___v2'}))"
        let mdl = Value::Dict(vec![(s("id"), s("acme/tiny___v2"))]);
        assert_eq!(
            dumps(&mdl, &["id"]),
            b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x02id\x94\x8c\x0eacme/tiny___v2\x94s.".to_vec()
        );
        // pickle.dumps([{'Path': 'a.json', 'Revision': 'r1'}, {'Path': 'b/c.bin', 'Revision': 'r2'}])
        let msc = Value::List(vec![entry("a.json", "r1"), entry("b/c.bin", "r2")]);
        assert_eq!(
            dumps(&msc, &["Path", "Revision"]),
            b"\x80\x04\x95@\x00\x00\x00\x00\x00\x00\x00]\x94(}\x94(\x8c\x04Path\x94\x8c\x06a.json\x94\x8c\x08Revision\x94\x8c\x02r1\x94u}\x94(h\x02\x8c\x07b/c.bin\x94h\x04\x8c\x02r2\x94ue.".to_vec()
        );
        assert_eq!(dumps(&Value::List(vec![]), &[]), b"\x80\x04]\x94.".to_vec());
    }

    #[test]
    fn reads_back_large_and_older_pickles() {
        let entries: Vec<Value> = (0..2500)
            .map(|i| entry(&format!("dir/file-{i:05}.bin"), &format!("{i:040x}")))
            .collect();
        let list = Value::List(entries);
        let bytes = dumps(&list, &["Path", "Revision"]);
        assert!(bytes.len() > 2 * FRAME_SIZE_TARGET, "several frames");
        assert_eq!(loads(&bytes).unwrap(), list);
        // pickle.dumps([{'Path': 'a', 'Revision': 'r'}], protocol=2)
        let p2 = b"\x80\x02]q\x00}q\x01(X\x04\x00\x00\x00Pathq\x02X\x01\x00\x00\x00aq\x03X\x08\x00\x00\x00Revisionq\x04X\x01\x00\x00\x00rq\x05ua.";
        assert_eq!(loads(p2).unwrap(), Value::List(vec![entry("a", "r")]));
        assert!(matches!(
            loads(b"\x80\x04K\x01."),
            Err(PickleError::Unsupported(b'K'))
        ));
        assert!(matches!(loads(b"\x80\x04]"), Err(PickleError::Truncated)));
    }
}
