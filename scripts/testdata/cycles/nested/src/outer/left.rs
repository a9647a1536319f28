//! Uses right and top.
use super::right::Right;
pub struct Left(pub Right, pub crate::top::Top);
