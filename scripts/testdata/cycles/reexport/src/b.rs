//! Uses a through crate::A.
use crate::A;
pub struct B;
pub fn make() -> Option<A> { None }
