//! Uses outer (its parent file).
pub struct Top(pub crate::outer::Outer);
