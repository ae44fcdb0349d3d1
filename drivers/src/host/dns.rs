//! Host-name resolution: one smoltcp `socket-dns` socket per host, asking the servers of
//! [`Config::dns_servers`](crate::Config::dns_servers).
//!
//! The socket lives in the UDP sockets' set (`host/udp.rs`): a DNS query is a UDP datagram
//! from a port smoltcp picks for it, and smoltcp matches the answer to the socket by that
//! port, as it does for any UDP socket. While a query is in flight every drive pass polls
//! that set, so smoltcp sends the query, retransmits it (1 s, doubling to 10 s), moves to the
//! next server once 10 s passed without an answer (noticed at its next retransmission, so
//! up to 15 s) and gives up after the last; the pass reports
//! smoltcp's next retransmit as its deadline, so a blocked poller wakes for it. A finished
//! query wakes the waiting task through smoltcp's own query waker.

use alloc::vec::Vec;
use core::fmt;
use core::task::{Poll, Waker};

use smoltcp::phy::Device;
use smoltcp::socket::dns::{self, GetQueryResultError, QueryHandle, StartQueryError};
use smoltcp::wire::{DnsQueryType, IpAddress};

use super::{Done, Host, Inner};

/// Queries one host can have in flight at once; one more fails with
/// [`ResolveError::TooManyQueries`].
const MAX_QUERIES: usize = 8;

/// Why a name could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolveError {
    /// [`Config::dns_servers`](crate::Config::dns_servers) is empty: resolution is off.
    NoDnsServer,
    /// The name is empty, has an empty label or a label longer than 63 bytes, or is longer
    /// than smoltcp's name limit.
    InvalidName,
    /// Every query slot of the host is in use.
    TooManyQueries,
    /// No server gave an answer: each was asked for 10 to 15 s (smoltcp's retransmissions)
    /// without a reply, or answered with an error or without records of the asked type.
    NoAnswer,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResolveError::NoDnsServer => "no DNS server configured",
            ResolveError::InvalidName => "invalid host name",
            ResolveError::TooManyQueries => "too many DNS queries in flight",
            ResolveError::NoAnswer => "no DNS server answered (timed out or failed)",
        })
    }
}

impl core::error::Error for ResolveError {}

impl<D: Device> Host<D> {
    /// Runs `op` under the host lock; the caller wakes the poller if it queued egress.
    fn dns_op<R>(&self, op: impl FnOnce(&mut Inner<D>) -> R) -> Done<R> {
        let mut inner = self.inner.lock();
        let value = op(&mut inner);
        Done {
            value,
            wake_poller: core::mem::take(&mut inner.kick),
        }
    }

    /// Starts a query for `name`'s records of type `kind`.
    pub(crate) fn start_query(
        &self,
        name: &str,
        kind: DnsQueryType,
    ) -> Done<Result<QueryHandle, ResolveError>> {
        self.dns_op(|inner| inner.start_query(name, kind))
    }

    /// The addresses of query `query` once it has finished; until then files `waker` to be
    /// woken when it does.
    pub(crate) fn poll_query(
        &self,
        query: QueryHandle,
        waker: &Waker,
    ) -> Done<Poll<Result<Vec<IpAddress>, ResolveError>>> {
        self.dns_op(|inner| {
            let udp = &mut inner.udp;
            let Some(handle) = udp.dns else {
                return Poll::Ready(Err(ResolveError::NoDnsServer));
            };
            let socket = udp.set_mut().get_mut::<dns::Socket<'static>>(handle);
            let result = match socket.get_query_result(query) {
                Err(GetQueryResultError::Pending) => {
                    socket.register_query_waker(query, waker);
                    return Poll::Pending;
                }
                Ok(addresses) => Ok(addresses.iter().copied().collect()),
                Err(GetQueryResultError::Failed) => Err(ResolveError::NoAnswer),
            };
            udp.dns_pending = udp.dns_pending.saturating_sub(1);
            Poll::Ready(result)
        })
    }

    /// Abandons unfinished query `query` (its waiter went away).
    pub(crate) fn cancel_query(&self, query: QueryHandle) -> Done<()> {
        self.dns_op(|inner| {
            let udp = &mut inner.udp;
            if let Some(handle) = udp.dns {
                udp.set_mut()
                    .get_mut::<dns::Socket<'static>>(handle)
                    .cancel_query(query);
                udp.dns_pending = udp.dns_pending.saturating_sub(1);
            }
        })
    }
}

impl<D: Device> Inner<D> {
    fn start_query(&mut self, name: &str, kind: DnsQueryType) -> Result<QueryHandle, ResolveError> {
        if self.config.dns_servers.is_empty() {
            return Err(ResolveError::NoDnsServer);
        }
        let udp = &mut self.udp;
        let handle = match udp.dns {
            Some(h) => h,
            None => {
                let slots: Vec<Option<dns::DnsQuery>> = (0..MAX_QUERIES).map(|_| None).collect();
                let h = udp
                    .set_mut()
                    .add(dns::Socket::new(&self.config.dns_servers, slots));
                udp.dns = Some(h);
                h
            }
        };
        let socket = udp.set_mut().get_mut::<dns::Socket<'static>>(handle);
        let query = socket
            .start_query(self.iface.context(), name, kind)
            .map_err(|e| match e {
                StartQueryError::NoFreeSlot => ResolveError::TooManyQueries,
                StartQueryError::InvalidName | StartQueryError::NameTooLong => {
                    ResolveError::InvalidName
                }
            })?;
        udp.dns_pending += 1;
        self.kick = true;
        Ok(query)
    }
}
