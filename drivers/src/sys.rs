//! System-call wrappers (smoltcp's two-layer split: `tap.rs` and `xdp.rs` are safe, `sys/*`
//! holds the FFI).

#[cfg(feature = "xdp")]
pub(crate) mod bpf;
#[cfg(any(feature = "tap", feature = "xdp"))]
pub(crate) mod fd;
#[cfg(feature = "tap")]
pub(crate) mod tap;
#[cfg(feature = "xdp")]
pub(crate) mod xdp;
