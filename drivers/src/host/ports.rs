//! Which local ports are taken: listeners, and the ephemeral ports of connects.

use alloc::collections::BTreeMap;

use super::slab::Id;

/// Which local ports are taken.
pub(super) struct Ports {
    /// Port → the listener on it.
    pub(super) listeners: BTreeMap<u16, Id>,
    /// Port → number of connections holding it as their ephemeral port.
    conns: BTreeMap<u16, u32>,
    next: u16,
    range: (u16, u16),
}

impl Ports {
    pub(super) fn new(range: (u16, u16)) -> Self {
        let (lo, hi) = (range.0.max(1), range.1.max(range.0.max(1)));
        Ports {
            listeners: BTreeMap::new(),
            conns: BTreeMap::new(),
            next: lo,
            range: (lo, hi),
        }
    }

    pub(super) fn in_use(&self, port: u16) -> bool {
        self.listeners.contains_key(&port) || self.conns.contains_key(&port)
    }

    /// Picks and holds a free ephemeral port.
    pub(super) fn alloc(&mut self) -> Option<u16> {
        let (lo, hi) = self.range;
        let span = u32::from(hi - lo) + 1;
        for _ in 0..span {
            let port = self.next;
            self.next = if port >= hi { lo } else { port + 1 };
            if !self.in_use(port) {
                self.conns.insert(port, 1);
                return Some(port);
            }
        }
        None
    }

    /// Picks a free ephemeral port without holding it.
    pub(super) fn pick(&mut self) -> Option<u16> {
        let port = self.alloc()?;
        self.release(port);
        Some(port)
    }

    pub(super) fn release(&mut self, port: u16) {
        if let Some(n) = self.conns.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.conns.remove(&port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_skip_taken_and_wrap() {
        let mut ports = Ports::new((60000, 60002));
        ports.listeners.insert(
            60001,
            Id {
                index: 0,
                generation: 1,
            },
        );
        assert_eq!(ports.alloc(), Some(60000));
        assert_eq!(ports.alloc(), Some(60002), "60001 has a listener");
        assert_eq!(ports.alloc(), None, "all taken");
        ports.release(60000);
        assert_eq!(
            ports.alloc(),
            Some(60000),
            "wraps around to the released port"
        );
        assert!(ports.in_use(60001) && ports.in_use(60002));
        ports.release(60002);
        assert_eq!(ports.pick(), Some(60002));
        assert!(!ports.in_use(60002), "pick does not hold the port");
    }
}
