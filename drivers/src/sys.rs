//! System-call wrappers (smoltcp's two-layer split: `tap.rs` is safe, `sys/tap.rs` holds the
//! FFI).

pub(crate) mod tap;
