//! The parent of left and right.
mod left;
mod right;
pub struct Outer;
