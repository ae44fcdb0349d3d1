//! The AF_XDP socket's system calls and its shared-memory rings (feature `xdp`, Linux).
//!
//! An AF_XDP socket hands frames over through four single-producer/single-consumer rings
//! mapped into our address space, and a UMEM: a region of our memory, cut into equal frames,
//! that the kernel copies received frames into and reads transmitted ones from:
//!
//! * fill ring (we produce): UMEM frames the kernel may receive into;
//! * RX ring (we consume): descriptors of received frames;
//! * TX ring (we produce): descriptors of frames to send;
//! * completion ring (we consume): UMEM frames the kernel has finished sending.
//!
//! Each ring has a producer and a consumer index shared with the kernel; the kernel reads and
//! writes them with `smp_load_acquire` / `smp_store_release` (`net/xdp/xsk_queue.h`), so ours
//! are Acquire loads and Release stores. The UMEM is split in two halves, one per direction,
//! so that a frame being read (RX half) and one being written (TX half) are never the same
//! memory.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::vec::Vec;

use netpoll_core::sync::{AtomicU32, Ordering};

use super::fd::cvt;
pub(crate) use super::fd::{
    eventfd, eventfd_drain, eventfd_signal, interface_mtu, poll_fds, set_interface_mtu,
};

/// `struct xdp_desc`: one frame in the RX or TX ring.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Desc {
    /// UMEM offset of the frame's first byte.
    pub(crate) addr: u64,
    pub(crate) len: u32,
    options: u32,
}

/// `struct xdp_statistics`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct XskStats {
    /// Frames the kernel dropped for reasons other than a full RX ring or empty fill ring.
    pub(crate) rx_dropped: u64,
    pub(crate) rx_invalid_descs: u64,
    pub(crate) tx_invalid_descs: u64,
    /// Frames dropped because our RX ring was full.
    pub(crate) rx_ring_full: u64,
    /// Frames dropped because the fill ring had no frame to receive into.
    pub(crate) rx_fill_ring_empty_descs: u64,
    pub(crate) tx_ring_empty_descs: u64,
}

/// How the socket binds: the kernel moves frames by DMA into the UMEM (zero-copy, needs driver
/// support) or copies them (any interface, veth included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindMode {
    ZeroCopy,
    Copy,
}

/// Sizes of the UMEM and rings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    /// Bytes per UMEM frame: 2048 or 4096.
    pub(crate) frame_size: u32,
    /// Frames per direction (the UMEM holds twice as many); a power of two.
    pub(crate) frames_per_direction: u32,
}

impl Geometry {
    fn ring_size(&self) -> u32 {
        self.frames_per_direction
    }
}

/// Which setup step failed, and how.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub(crate) step: Step,
    pub(crate) error: io::Error,
}

/// The steps of [`Xsk::open`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Socket,
    Umem,
    Rings,
    Bind,
}

/// An owned memory mapping, unmapped on drop.
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value alone; moving it to another thread
// moves that ownership.
unsafe impl Send for Mmap {}

impl Mmap {
    /// Private anonymous memory of `len` bytes, populated (the UMEM).
    fn anonymous(len: usize) -> io::Result<Mmap> {
        // SAFETY: an anonymous mapping at an address of the kernel's choice touches no
        // existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Mmap::checked(ptr, len)
    }

    /// One of the socket's rings: `len` bytes at page offset `offset` of `fd`.
    fn ring(fd: BorrowedFd<'_>, len: usize, offset: libc::off_t) -> io::Result<Mmap> {
        // SAFETY: a shared mapping of the socket at an address of the kernel's choice touches
        // no existing memory; the kernel checks `offset` and `len` against the ring it names.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset,
            )
        };
        Mmap::checked(ptr, len)
    }

    fn checked(ptr: *mut libc::c_void, len: usize) -> io::Result<Mmap> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from_raw_os_error(12))?;
        Ok(Mmap { ptr, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly a mapping this value owns; nothing borrows it any
        // more (every pointer into it lives in a value dropped before or with this one).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One ring: its mapping, the pointers into it, and our side's index.
struct Ring<T: Copy> {
    map: Mmap,
    producer: usize,
    consumer: usize,
    flags: usize,
    descs: usize,
    mask: u32,
    size: u32,
    /// Our own index: the producer's for fill/TX, the consumer's for RX/completion.
    local: u32,
    _desc: std::marker::PhantomData<T>,
}

impl<T: Copy> Ring<T> {
    fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
    ) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        let offset = libc::off_t::try_from(pgoff)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ring offset"))?;
        let map = Mmap::ring(fd, len, offset)?;
        let fits = |o: u64, n: usize| (o as usize).checked_add(n).is_some_and(|end| end <= len);
        if !(fits(off.producer, 4) && fits(off.consumer, 4) && fits(off.flags, 4)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ring offsets out of range",
            ));
        }
        Ok(Ring {
            map,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            flags: off.flags as usize,
            descs: off.desc as usize,
            mask: size - 1,
            size,
            local: 0,
            _desc: std::marker::PhantomData,
        })
    }

    fn index(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `offset` is one of the producer/consumer/flags offsets the kernel gave, checked
        // in `map` to lie (4 bytes) inside the live mapping; the kernel aligns them to 4 and
        // only ever accesses them atomically, so viewing them as an `AtomicU32` is sound.
        unsafe { AtomicU32::from_ptr(self.map.ptr.as_ptr().add(offset).cast()) }
    }

    fn slot(&self, i: u32) -> *mut T {
        let i = (i & self.mask) as usize;
        // SAFETY: `i < size`, and the mapping holds `size` descriptors from `descs` (its length
        // was computed from exactly that in `map`).
        unsafe { self.map.ptr.as_ptr().add(self.descs).cast::<T>().add(i) }
    }

    /// The kernel asks for a system call to make progress (`XDP_RING_NEED_WAKEUP`).
    fn needs_wakeup(&self) -> bool {
        // Relaxed: a hint the kernel sets and clears; a stale read costs one extra or one
        // delayed (by the next batch) wake-up call.
        self.index(self.flags).load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // ----- producer side (fill, TX) -----

    /// Free slots we may produce into.
    fn free(&self) -> u32 {
        // Acquire: pairs with the kernel's smp_store_release of the consumer index, so the
        // slots it released are no longer read by it when we overwrite them.
        let consumer = self.index(self.consumer).load(Ordering::Acquire);
        self.size - self.local.wrapping_sub(consumer)
    }

    /// Writes slot `i` after our producer index (not yet visible to the kernel).
    fn write(&mut self, i: u32, value: T) {
        let slot = self.slot(self.local.wrapping_add(i));
        // SAFETY: `slot` points into the mapping; the caller checked `i < free()`, so the kernel
        // does not read this slot until `submit` publishes it.
        unsafe { slot.write_volatile(value) };
    }

    /// Publishes `n` written slots.
    fn submit(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        // Release: pairs with the kernel's smp_load_acquire of the producer index, so it sees
        // the descriptors written before.
        self.index(self.producer)
            .store(self.local, Ordering::Release);
    }

    // ----- consumer side (RX, completion) -----

    /// Entries the kernel produced that we have not consumed.
    fn available(&self) -> u32 {
        // Acquire: pairs with the kernel's smp_store_release of the producer index, so the
        // descriptors it wrote are visible.
        let producer = self.index(self.producer).load(Ordering::Acquire);
        producer.wrapping_sub(self.local)
    }

    /// Entry `i` after our consumer index (`i < available()`).
    fn read(&self, i: u32) -> T {
        // SAFETY: `slot` points into the mapping; the caller checked `i < available()`, so the
        // kernel finished writing it and does not reuse it until `release`.
        unsafe { self.slot(self.local.wrapping_add(i)).read_volatile() }
    }

    /// Gives `n` consumed entries back to the kernel.
    fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        // Release: pairs with the kernel's smp_load_acquire of the consumer index: our reads of
        // the entries happen before it overwrites them.
        self.index(self.consumer)
            .store(self.local, Ordering::Release);
    }
}

/// One half of the UMEM: frames `[first, first + len)` in UMEM offsets.
pub(crate) struct Frames {
    base: NonNull<u8>,
    first: u64,
    len: u64,
}

impl Frames {
    /// `len` bytes of the frame at UMEM offset `addr`, if they lie in this half.
    pub(crate) fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = self.check(addr, len)?;
        // SAFETY: `check` proved the range lies in this half of the live UMEM; `&self` keeps
        // writers of this half (only `get_mut`, through `&mut self`) away; the kernel wrote
        // the frame before publishing its descriptor and does not touch it until we give the
        // frame back through the fill ring.
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), len) })
    }

    /// `len` writable bytes of the frame at UMEM offset `addr`, if they lie in this half.
    pub(crate) fn get_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let start = self.check(addr, len)?;
        // SAFETY: as in `get`, with `&mut self` making this the only view; a TX frame is ours
        // from its completion until we put it on the TX ring again.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(start), len) })
    }

    /// The offset into the mapping of `addr`, if `addr..addr + len` lies in this half.
    fn check(&self, addr: u64, len: usize) -> Option<usize> {
        let end = addr.checked_add(len as u64)?;
        (addr >= self.first && end <= self.first + self.len).then_some(addr as usize)
    }
}

/// The receiving half: RX and fill rings, and the UMEM frames they circulate.
pub(crate) struct RxPart {
    ring: Ring<Desc>,
    fill: Ring<u64>,
    pub(crate) frames: Frames,
}

impl RxPart {
    /// Moves up to `max` received descriptors into `out`, releasing their RX ring slots (the
    /// frames stay ours until given back with `fill`). Returns how many.
    pub(crate) fn take(&mut self, max: u32, out: &mut impl Extend<Desc>) -> u32 {
        let n = self.ring.available().min(max);
        out.extend((0..n).map(|i| self.ring.read(i)));
        if n > 0 {
            self.ring.release(n);
        }
        n
    }

    /// Gives frames (UMEM offsets) to the kernel to receive into, as many as fit, taken from
    /// the end of `frames`. Returns how many.
    pub(crate) fn fill(&mut self, frames: &mut Vec<u64>) -> u32 {
        let n = self.fill.free().min(frames.len() as u32);
        for i in 0..n {
            let addr = frames.pop().unwrap_or_default();
            self.fill.write(i, addr);
        }
        if n > 0 {
            self.fill.submit(n);
        }
        n
    }

    /// The kernel needs a system call to take frames from the fill ring.
    pub(crate) fn fill_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }
}

/// The sending half: TX and completion rings, and the UMEM frames they circulate.
pub(crate) struct TxPart {
    ring: Ring<Desc>,
    completion: Ring<u64>,
    pub(crate) frames: Frames,
}

impl TxPart {
    /// Frees every completed TX frame into `out`. Returns how many.
    pub(crate) fn complete(&mut self, out: &mut Vec<u64>) -> u32 {
        let n = self.completion.available();
        out.extend((0..n).map(|i| self.completion.read(i)));
        if n > 0 {
            self.completion.release(n);
        }
        n
    }

    /// Free TX ring slots.
    pub(crate) fn free(&self) -> u32 {
        self.ring.free()
    }

    /// Queues one frame on the TX ring (visible to the kernel at once; sent on the next
    /// wake-up). The caller checked `free() > 0`.
    pub(crate) fn push(&mut self, addr: u64, len: u32) {
        self.ring.write(
            0,
            Desc {
                addr,
                len,
                options: 0,
            },
        );
        self.ring.submit(1);
    }

    /// The kernel needs a `sendto` to send what the TX ring holds.
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.ring.needs_wakeup()
    }
}

/// An AF_XDP socket bound to one queue of one interface, with its UMEM and four rings.
pub(crate) struct Xsk {
    rx: RxPart,
    tx: TxPart,
    fd: OwnedFd,
    /// Dropped last: `rx.frames` and `tx.frames` point into it.
    _umem: Mmap,
}

impl Xsk {
    /// Creates the socket, registers a UMEM of `geometry`, maps the rings and binds to queue
    /// `queue` of interface `ifindex` in `mode`, asking for `XDP_USE_NEED_WAKEUP`.
    pub(crate) fn open(
        ifindex: u32,
        queue: u32,
        mode: BindMode,
        geometry: Geometry,
    ) -> Result<Xsk, SetupError> {
        let at = |step| move |error| SetupError { step, error };
        // SAFETY: `socket(2)` takes no pointers.
        let fd = cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })
            .map_err(at(Step::Socket))?;
        // SAFETY: `socket(2)` succeeded, so `fd` is a valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };

        let frames = geometry.frames_per_direction as usize * 2;
        let umem_len = frames * geometry.frame_size as usize;
        let umem = Mmap::anonymous(umem_len).map_err(at(Step::Umem))?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem_len as u64,
            chunk_size: geometry.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(fd.as_fd_ref(), libc::XDP_UMEM_REG, &reg).map_err(at(Step::Umem))?;

        let size = geometry.ring_size();
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(fd.as_fd_ref(), opt, &size).map_err(at(Step::Rings))?;
        }
        let off = mmap_offsets(fd.as_fd_ref()).map_err(at(Step::Rings))?;
        let b = fd.as_fd_ref();
        let fill = Ring::<u64>::map(b, &off.fr, size, libc::XDP_UMEM_PGOFF_FILL_RING)
            .map_err(at(Step::Rings))?;
        let completion = Ring::<u64>::map(b, &off.cr, size, libc::XDP_UMEM_PGOFF_COMPLETION_RING)
            .map_err(at(Step::Rings))?;
        let rx_ring = Ring::<Desc>::map(b, &off.rx, size, libc::XDP_PGOFF_RX_RING as u64)
            .map_err(at(Step::Rings))?;
        let tx_ring = Ring::<Desc>::map(b, &off.tx, size, libc::XDP_PGOFF_TX_RING as u64)
            .map_err(at(Step::Rings))?;

        // In copy mode every frame in flight is an skb charged to this socket's send buffer
        // until the receiver frees it; with the default buffer (about 200 KiB) `sendto` stops
        // after some 90 frames. Room for every TX frame instead (SO_SNDBUFFORCE needs
        // CAP_NET_ADMIN, which binding needs anyway; SO_SNDBUF is capped by wmem_max).
        let sndbuf = libc::c_int::try_from(half_len(geometry) * 2).unwrap_or(libc::c_int::MAX);
        if set_socket_opt(fd.as_fd_ref(), libc::SO_SNDBUFFORCE, sndbuf).is_err() {
            let _ = set_socket_opt(fd.as_fd_ref(), libc::SO_SNDBUF, sndbuf);
        }

        let flags = libc::XDP_USE_NEED_WAKEUP
            | match mode {
                BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
                BindMode::Copy => libc::XDP_COPY,
            };
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `addr` is a live `sockaddr_xdp` and its exact size is passed with it.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })
        .map_err(at(Step::Bind))?;

        let half = half_len(geometry) as u64;
        let frames_at = |first: u64| Frames {
            base: umem.ptr,
            first,
            len: half,
        };
        Ok(Xsk {
            rx: RxPart {
                ring: rx_ring,
                fill,
                frames: frames_at(0),
            },
            tx: TxPart {
                ring: tx_ring,
                completion,
                frames: frames_at(half),
            },
            fd,
            _umem: umem,
        })
    }

    /// Both halves at once (they share no memory).
    pub(crate) fn parts(&mut self) -> (&mut RxPart, &mut TxPart) {
        (&mut self.rx, &mut self.tx)
    }

    /// The socket descriptor (for `poll(2)` and the XSK map).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd_ref()
    }

    /// The kernel's drop counters for this socket (`XDP_STATISTICS`).
    pub(crate) fn stats(&self) -> io::Result<XskStats> {
        let mut stats = XskStats::default();
        let mut len = std::mem::size_of::<XskStats>() as libc::socklen_t;
        // SAFETY: `stats` is a live, writable `struct xdp_statistics` of `len` bytes, and the
        // kernel writes at most `len` bytes into it.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut stats as *mut XskStats).cast(),
                &mut len,
            )
        })?;
        Ok(stats)
    }
}

// SAFETY: every raw pointer in `Xsk` points into mappings the `Xsk` owns; no other value
// holds them, so moving the whole to another thread moves sole access with it.
unsafe impl Send for Xsk {}

/// `OwnedFd::as_fd` without importing the trait everywhere.
trait AsFdRef {
    fn as_fd_ref(&self) -> BorrowedFd<'_>;
}

impl AsFdRef for OwnedFd {
    fn as_fd_ref(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

/// Bytes of one direction's half of the UMEM.
fn half_len(geometry: Geometry) -> usize {
    geometry.frames_per_direction as usize * geometry.frame_size as usize
}

/// A `SOL_SOCKET` option taking an `int`.
fn set_socket_opt(fd: BorrowedFd<'_>, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live `int` and its size is passed with it; the kernel only reads.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn setsockopt<T>(fd: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` and its exact size is passed with it; the kernel only reads.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn mmap_offsets(fd: BorrowedFd<'_>) -> io::Result<libc::xdp_mmap_offsets> {
    let zero = libc::xdp_ring_offset {
        producer: 0,
        consumer: 0,
        desc: 0,
        flags: 0,
    };
    let mut off = libc::xdp_mmap_offsets {
        rx: zero,
        tx: zero,
        fr: zero,
        cr: zero,
    };
    let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: `off` is a live, writable `struct xdp_mmap_offsets` of `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut len,
        )
    })?;
    if len as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
        // A kernel older than 5.4 (no `flags` offsets, so no need_wakeup).
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    Ok(off)
}

/// Asks the kernel to send what the TX ring holds: `sendto(fd, NULL, 0, MSG_DONTWAIT)`.
pub(crate) fn wake_tx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length send with no buffer and no address passes no pointers the kernel
    // dereferences.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Asks the kernel to take frames from the fill ring: `recvfrom(fd, NULL, 0, MSG_DONTWAIT)`.
pub(crate) fn wake_rx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length receive with no buffer and no address passes no pointers the
    // kernel dereferences.
    let r = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The index of interface `name` (`if_nametoindex`).
pub(crate) fn ifindex(name: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL"))?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        n => Ok(n),
    }
}
