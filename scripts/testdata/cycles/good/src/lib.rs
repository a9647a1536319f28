//! No cycle: a parent and its child use each other (one unit), a test module uses anything, and comments and strings
//! that name `crate::b` are not code.
mod a;
mod b;
mod p;

pub use a::A;
