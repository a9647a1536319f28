//! [`Code`]: a metric's code, interned, so that the hot path copies, compares and hashes a pointer rather than
//! allocating, copying and comparing `String`s (a report's two dozen codes used to be copied a hundred and more
//! times between its arrival and its event).
//!
//! Codes are interned once for the life of the process and never freed, so only codes a deployment knows become
//! `Code`s: its catalogue's metrics and derived metrics (validation takes a report's codes from the catalogue,
//! `Catalogue::lookup`) and the codes its store's dictionary names. Text from a request is never made into one: it
//! is looked up by `&str` (a `BTreeMap<Code, _>` takes one) or compared as text. `From<&str>` and `Deserialize`
//! intern, for configuration and tests; no request path uses them.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{LazyLock, Mutex};

use rustc_hash::FxHashSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A metric's code (`beds.cc_adult.open`). Equal codes are the same pointer; ordered and hashed as their text,
/// so a `BTreeMap<Code, _>` is in code order and can be looked up by `&str`.
#[derive(Clone, Copy)]
pub struct Code(&'static str);

static INTERNED: LazyLock<Mutex<FxHashSet<&'static str>>> = LazyLock::new(Default::default);

impl Code {
    /// The code for `text`, interning it if it is new. For codes from configuration or the store's dictionary,
    /// never for text from a request (see the module doc).
    pub fn new(text: &str) -> Code {
        let mut set = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        match set.get(text) {
            Some(s) => Code(s),
            None => {
                let s: &'static str = Box::leak(text.to_owned().into_boxed_str());
                set.insert(s);
                Code(s)
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The pointer that identifies this code: equal for equal codes, for keys of pointer-hashed maps.
    pub fn id(self) -> usize {
        self.0.as_ptr() as usize
    }
}

impl PartialEq for Code {
    fn eq(&self, other: &Code) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Code {}

impl PartialOrd for Code {
    fn partial_cmp(&self, other: &Code) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Code {
    fn cmp(&self, other: &Code) -> std::cmp::Ordering {
        if self == other { std::cmp::Ordering::Equal } else { self.0.cmp(other.0) }
    }
}

impl Hash for Code {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<Code> for &str {
    fn eq(&self, other: &Code) -> bool {
        *self == other.0
    }
}

impl Deref for Code {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl Borrow<str> for Code {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl From<&str> for Code {
    fn from(text: &str) -> Code {
        Code::new(text)
    }
}

impl From<&String> for Code {
    fn from(text: &String) -> Code {
        Code::new(text)
    }
}

impl From<Code> for String {
    fn from(code: Code) -> String {
        code.0.to_owned()
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Code, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Code::new(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn equal_codes_are_one_pointer_and_order_as_text() {
        let a = Code::new("beds.cc_adult.open");
        let b = Code::new(&String::from("beds.cc_adult.open"));
        assert_eq!(a, b);
        assert_eq!(a.id(), b.id());
        let c = Code::new("beds.cc_adult.occupied");
        assert!(c < a && "beds.cc_adult.occupied" < "beds.cc_adult.open");
        let map = BTreeMap::from([(a, 1), (c, 2)]);
        assert_eq!(map.get("beds.cc_adult.open"), Some(&1), "looked up by text");
        assert_eq!(
            map.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["beds.cc_adult.occupied", "beds.cc_adult.open"]
        );
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"beds.cc_adult.open\"");
        assert_eq!(serde_json::from_str::<Code>("\"beds.cc_adult.open\"").unwrap(), a);
    }
}
