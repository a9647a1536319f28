//! b reaches a only through the root's re-export: still a cycle.
mod a;
mod b;
pub use a::A;
