//! A parent that uses its child, whose code uses the parent back through super::.
mod q;
pub struct P(pub q::Q);
