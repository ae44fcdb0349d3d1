//! The XDP redirect program, loaded and attached with raw `bpf(2)` calls (feature `xdp`).
//!
//! The program is five instructions, the equivalent of
//!
//! ```c
//! int redirect(struct xdp_md *ctx) {
//!     return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
//! }
//! ```
//!
//! so a frame arriving on a queue whose slot in the XSKMAP holds a socket goes to that socket,
//! and every other frame goes on to the kernel's stack (the `XDP_PASS` in the flags' low bits).
//! No libbpf, no ELF: the map descriptor is patched into the one 64-bit load.
#![allow(unsafe_code)]

use std::borrow::ToOwned;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::string::String;

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_LINK_CREATE: libc::c_int = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s `BPF_XDP`.
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_SKB_MODE`: the generic (driver-independent) XDP hook.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `bpf_redirect_map`'s helper number.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `XDP_PASS`: what the program returns for a queue with no socket.
const XDP_PASS: i32 = 2;
/// `BPF_PSEUDO_MAP_FD`: the 64-bit load's immediate is a map descriptor.
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `offsetof(struct xdp_md, rx_queue_index)`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// One `struct bpf_insn`, packed as the kernel reads it on a little- or big-endian machine.
#[derive(Clone, Copy)]
#[repr(C)]
struct Insn {
    code: u8,
    /// `dst_reg:4, src_reg:4` (the bitfield order of the target's ABI).
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    #[cfg(target_endian = "little")]
    let regs = dst | (src << 4);
    #[cfg(target_endian = "big")]
    let regs = (dst << 4) | src;
    Insn {
        code,
        regs,
        off,
        imm,
    }
}

/// The redirect program with `map_fd` patched in.
fn redirect_program(map_fd: i32) -> [Insn; 6] {
    [
        // r2 = *(u32 *)(r1 + 16): ctx->rx_queue_index (BPF_LDX | BPF_MEM | BPF_W)
        insn(0x61, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        // r1 = map (BPF_LD | BPF_DW | BPF_IMM, two slots)
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // r3 = XDP_PASS (BPF_ALU64 | BPF_MOV | BPF_K)
        insn(0xb7, 3, 0, 0, XDP_PASS),
        // call bpf_redirect_map (BPF_JMP | BPF_CALL)
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // exit (BPF_JMP | BPF_EXIT)
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// `bpf(cmd, attr, sizeof attr)`: the kernel zero-fills the part of `union bpf_attr` past
/// `attr`.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live `T` whose exact size is passed with it; each `T` here mirrors
    // the leading fields of the `union bpf_attr` member for `cmd`, without padding, and any
    // pointer inside it points to memory that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the `bpf(2)` command returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (d, s) in out.iter_mut().take(15).zip(name.bytes()) {
        *d = s;
    }
    out
}

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// An XSKMAP of `entries` slots (one per RX queue).
pub(crate) fn create_xsk_map(entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreate {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_flags: 0,
        inner_map_fd: 0,
        numa_node: 0,
        map_name: name16("netpoll_xsks"),
    };
    owned(bpf(BPF_MAP_CREATE, &mut attr)?)
}

#[repr(C)]
struct MapUpdate {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Puts AF_XDP socket `xsk` into slot `queue` of XSKMAP `map`.
pub(crate) fn map_insert(map: BorrowedFd<'_>, queue: u32, xsk: BorrowedFd<'_>) -> io::Result<()> {
    let key = queue;
    let value = xsk.as_raw_fd() as u32;
    let mut attr = MapUpdate {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Loads the redirect program over XSKMAP `map`. On failure, the error and the verifier's
/// log (empty if it said nothing).
pub(crate) fn load_redirect(map: BorrowedFd<'_>) -> Result<OwnedFd, (io::Error, String)> {
    let program = redirect_program(map.as_raw_fd());
    let license = c"Dual MIT/GPL";
    let mut log = std::vec![0u8; 16 * 1024];
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name16("netpoll_xsk"),
        prog_ifindex: 0,
        expected_attach_type: BPF_XDP,
    };
    match bpf(BPF_PROG_LOAD, &mut attr).and_then(owned) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err((e, String::from_utf8_lossy(&log[..end]).trim().to_owned()))
        }
    }
}

#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Attaches XDP program `prog` to interface `ifindex` as a BPF link (`flags`: 0 lets the
/// kernel use the driver's hook, [`XDP_FLAGS_SKB_MODE`] forces the generic one). Closing the
/// link's descriptor detaches the program.
pub(crate) fn attach_xdp(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    owned(bpf(BPF_LINK_CREATE, &mut attr)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_the_documented_five_instructions() {
        let p = redirect_program(7);
        assert_eq!(
            p.len(),
            6,
            "five instructions, the 64-bit load taking two slots"
        );
        assert_eq!((p[0].code, p[0].off), (0x61, XDP_MD_RX_QUEUE_INDEX));
        assert_eq!((p[1].code, p[1].imm), (0x18, 7));
        assert_eq!((p[3].code, p[3].imm), (0xb7, XDP_PASS));
        assert_eq!((p[4].code, p[4].imm), (0x85, BPF_FUNC_REDIRECT_MAP));
        assert_eq!(p[5].code, 0x95);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(std::mem::size_of::<ProgLoad>(), 72);
    }
}
