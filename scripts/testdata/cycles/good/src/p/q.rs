//! The child.
pub struct Q;
pub fn parent() -> Option<super::P> { None }
