//! Host-name resolution on the smoltcp engine (`host/dns.rs`): host A asks a tiny DNS server
//! that host B runs on a netpoll `UdpSocket`, on the in-memory wire in simulated time.

use core::time::Duration;

use netpoll_drivers::smoltcp::wire::{DnsQueryType, IpAddress, Ipv4Address, Ipv6Address};
use netpoll_drivers::{Config, ResolveError, WireNet, WIRE_ADDR_B};
use netpoll_stack::{SocketBackend, UdpSocket};

const ANSWER_V4: Ipv4Address = Ipv4Address::new(192, 0, 2, 7);
const ANSWER_V6: Ipv6Address = Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

/// A wire whose hosts ask B's port 53.
fn net_with_dns_server() -> WireNet {
    WireNet::builder()
        .configure(|c: &mut Config| c.dns_servers = vec![IpAddress::from(WIRE_ADDR_B)])
        .build()
        .expect("build the wire")
}

/// The reply to `query` with one record for its question (A or AAAA), or `None` if the
/// query cannot be parsed.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    // Header: ID, flags, and four counts; the question's name follows at byte 12.
    let mut end = 12;
    loop {
        let len = *query.get(end)? as usize;
        end += 1 + len;
        if len == 0 {
            break;
        }
    }
    let qtype = u16::from_be_bytes([*query.get(end)?, *query.get(end + 1)?]);
    let question = query.get(12..end + 4)?;
    let rdata: Vec<u8> = match qtype {
        1 => ANSWER_V4.octets().to_vec(),
        28 => ANSWER_V6.octets().to_vec(),
        _ => return None,
    };
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]); // the query's ID
    reply.extend_from_slice(&[0x81, 0x80]); // response, recursion desired and available
    reply.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]); // one question, one answer
    reply.extend_from_slice(question);
    reply.extend_from_slice(&[0xc0, 12]); // the name: a pointer to the question's
    reply.extend_from_slice(&qtype.to_be_bytes());
    reply.extend_from_slice(&[0, 1]); // class IN
    reply.extend_from_slice(&60u32.to_be_bytes()); // TTL
    reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    reply.extend_from_slice(&rdata);
    Some(reply)
}

#[test]
fn a_name_resolves_to_the_servers_a_and_aaaa_records() {
    let mut net = net_with_dns_server();
    let (a, b, server_addr) = (net.a.clone(), net.b.clone(), net.addr_b(53));
    let handle = net.a.handle().clone();
    net.scheduler.block_on(async move {
        let server = UdpSocket::bind(&b, server_addr).unwrap();
        let questions = handle.spawn(async move {
            let mut asked = 0;
            let mut buf = [0u8; 512];
            while asked < 2 {
                let (n, from) = server.read_from(&mut buf).await.unwrap();
                let reply = answer(&buf[..n]).expect("a well-formed query");
                server.write_to(&reply, from).await.unwrap();
                asked += 1;
            }
            // Closing here could drop the last reply still queued to send.
            (asked, server)
        });
        let v4 = a.resolve("example.test").await;
        assert_eq!(v4, Ok(vec![IpAddress::Ipv4(ANSWER_V4)]));
        let v6 = a.resolve_records("example.test.", DnsQueryType::Aaaa).await;
        assert_eq!(v6, Ok(vec![IpAddress::Ipv6(ANSWER_V6)]));
        let (asked, server) = questions.await;
        assert_eq!(asked, 2);
        server.close().await.unwrap();
    });
}

#[test]
fn no_dns_server_configured_is_a_clear_error() {
    let mut net = WireNet::new();
    let a = net.a.clone();
    net.scheduler.block_on(async move {
        assert_eq!(
            a.resolve("example.test").await,
            Err(ResolveError::NoDnsServer)
        );
    });
}

#[test]
fn a_bad_name_is_refused_before_any_query() {
    let mut net = net_with_dns_server();
    let a = net.a.clone();
    net.scheduler.block_on(async move {
        for name in ["", "a..b", &"x".repeat(64)] {
            assert_eq!(
                a.resolve(name).await,
                Err(ResolveError::InvalidName),
                "{name:?}"
            );
        }
    });
}

#[test]
fn an_unanswered_query_gives_up_after_smoltcps_retries() {
    // Nothing listens on B's port 53: every query and retransmission goes unanswered.
    let mut net = net_with_dns_server();
    let a = net.a.clone();
    let handle = net.a.handle().clone();
    net.scheduler.block_on(async move {
        let started = handle.now();
        assert_eq!(a.resolve("example.test").await, Err(ResolveError::NoAnswer));
        let waited = handle.now() - started;
        // smoltcp asks one server for 10 s, retransmitting at 1, 3 and 7 s; it notices the
        // 10 s have passed at its next retransmission time, 15 s.
        assert!(
            waited >= Duration::from_secs(10) && waited <= Duration::from_secs(15),
            "gave up after {waited:?}"
        );
        // The host is still usable: a later query fails the same way, not with a full table.
        assert_eq!(a.resolve("example.test").await, Err(ResolveError::NoAnswer));
    });
}
