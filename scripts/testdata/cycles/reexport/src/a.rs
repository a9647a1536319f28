//! Uses b.
use super::b::{self};
pub struct A(pub b::B);
