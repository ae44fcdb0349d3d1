//! Connecting by host name: [`lookup_host`] asks the system resolver (`getaddrinfo`, through
//! std's `ToSocketAddrs`) on a helper thread, so no worker ever blocks on DNS (Go: the cgo
//! resolver's thread); [`connect`] then dials each address in order, as Go's dialer does
//! (`dialSerial`).
//!
//! A numeric address (`"127.0.0.1:80"`, `"[::1]:80"`) is parsed in place, with no thread.

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use netpoll_core::Instant;
use netpoll_stack::{Error, ErrorKind, Op};

use crate::TcpStream;

/// The least time one address of several gets out of a shared deadline (Go's dialer: 2 s).
const MIN_ATTEMPT: Duration = Duration::from_secs(2);

/// Where the helper thread leaves its answer for the waiting task.
#[derive(Default)]
struct Answer {
    result: Option<io::Result<Vec<SocketAddr>>>,
    waker: Option<Waker>,
}

/// Resolves `"host:port"` (or a numeric `"ip:port"`) to its addresses, in the resolver's
/// order (tokio: `net::lookup_host`). The lookup runs on its own thread; dropping the future
/// abandons it (the thread finishes and its answer is dropped).
///
/// ```
/// netpoll_hosted::Runtime::new().unwrap().block_on(async {
///     let addrs = netpoll_hosted::lookup_host("localhost:80").await.unwrap();
///     assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
/// });
/// ```
pub async fn lookup_host(host: &str) -> io::Result<Vec<SocketAddr>> {
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let answer = Arc::new(Mutex::new(Answer::default()));
    let host = host.to_owned();
    let for_thread = answer.clone();
    std::thread::Builder::new()
        .name("netpoll-resolve".into())
        .spawn(move || {
            let result = host.to_socket_addrs().map(Iterator::collect);
            let waker = {
                let mut answer = for_thread.lock().unwrap_or_else(|p| p.into_inner());
                answer.result = Some(result);
                answer.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        })?;
    poll_fn(|cx| {
        let mut answer = answer.lock().unwrap_or_else(|p| p.into_inner());
        match answer.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                answer.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}

/// Connects to `"host:port"` on the current runtime: resolves it ([`lookup_host`]) and
/// tries each address in order until one accepts (Go: `net.Dial("tcp", addr)`). The error is
/// the first address's, as Go reports it.
///
/// ```no_run
/// netpoll_hosted::Runtime::new().unwrap().block_on(async {
///     let conn = netpoll_hosted::connect("localhost:80").await?;
///     conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
///     Ok::<_, std::io::Error>(())
/// }).unwrap();
/// ```
///
/// # Panics
/// Outside [`Runtime::block_on`](crate::Runtime::block_on).
pub async fn connect(addr: &str) -> io::Result<TcpStream> {
    connect_deadline(addr, None).await
}

/// [`connect`] giving up with a timeout error at `deadline` (an instant of
/// [`now`](crate::now)). With several addresses, each attempt gets an equal share of the
/// time left, but at least 2 s, as in Go's dialer (`partialDeadline`); the lookup counts
/// against the deadline too.
///
/// # Panics
/// Outside [`Runtime::block_on`](crate::Runtime::block_on).
pub async fn connect_deadline(addr: &str, deadline: Option<Instant>) -> io::Result<TcpStream> {
    let addrs = match deadline {
        None => lookup_host(addr).await?,
        Some(d) => match crate::timeout_at(d, lookup_host(addr)).await {
            Ok(addrs) => addrs?,
            Err(_) => {
                return Err(Error::new(Op::Connect, ErrorKind::TimedOut).into());
            }
        },
    };
    connect_addrs(&addrs, deadline).await
}

/// Dials `addrs` in order (Go: `dialSerial`).
async fn connect_addrs(addrs: &[SocketAddr], deadline: Option<Instant>) -> io::Result<TcpStream> {
    let backend = crate::backend();
    let mut first_error = None;
    for (i, &addr) in addrs.iter().enumerate() {
        let attempt_deadline = deadline.map(|d| partial_deadline(crate::now(), d, addrs.len() - i));
        match TcpStream::connect_deadline(&backend, addr, attempt_deadline).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                let out_of_time = deadline.is_some_and(|d| crate::now() >= d);
                first_error.get_or_insert(e);
                if out_of_time {
                    break;
                }
            }
        }
    }
    Err(match first_error {
        Some(e) => e.into(),
        None => io::Error::new(io::ErrorKind::InvalidInput, "no addresses to connect to"),
    })
}

/// The deadline of one of `left` remaining attempts: an equal share of the time left, at
/// least [`MIN_ATTEMPT`], never past `deadline` (Go: `partialDeadline`).
fn partial_deadline(now: Instant, deadline: Instant, left: usize) -> Instant {
    if now >= deadline {
        return deadline;
    }
    let remaining = deadline - now;
    let share = remaining / u32::try_from(left.max(1)).unwrap_or(u32::MAX);
    if share < MIN_ATTEMPT {
        if remaining < MIN_ATTEMPT {
            return deadline;
        }
        return now + MIN_ATTEMPT;
    }
    now + share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attempt_gets_an_equal_share_but_at_least_two_seconds() {
        let now = Instant::from_nanos(1_000);
        let secs = |s| now + Duration::from_secs(s);
        assert_eq!(partial_deadline(now, secs(30), 3), secs(10));
        assert_eq!(partial_deadline(now, secs(30), 1), secs(30));
        assert_eq!(partial_deadline(now, secs(5), 4), secs(2));
        assert_eq!(partial_deadline(now, secs(1), 4), secs(1));
        assert_eq!(partial_deadline(secs(9), secs(5), 2), secs(5));
    }
}
