//! Two siblings inside outer depend on each other; and outer (through its child left) and top do.
mod outer;
mod top;
