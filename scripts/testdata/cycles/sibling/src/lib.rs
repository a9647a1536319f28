//! a -> b -> a through a use and a path in code.
mod a;
mod b;
