//! Uses nothing outside its own tests. "crate::a::A" in a string, and crate::a::A in a comment, are not edges.
pub struct B;
const _: &str = "crate::a::A";
const _: &str = r#"use crate::a;"#;

#[cfg(test)]
mod tests {
    use crate::a::A;
    #[test]
    fn anything() {
        let _ = crate::A(super::B);
        let _: Option<A> = None;
    }
}

#[cfg(test)]
fn helper() -> crate::a::A { todo!() }
