//! Uses left.
pub struct Right;
pub fn make() -> Option<super::left::Left> { None }
