//! Uses a by a path in code.
pub struct B;
pub fn make() -> Option<crate::a::A> { None }
