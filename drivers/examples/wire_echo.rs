//! An echo server and client on two smoltcp hosts joined by an in-memory wire, in simulated
//! time: no TAP device, no privileges.
//!
//! ```text
//! cargo run -p netpoll-drivers --example wire_echo
//! ```

use netpoll_drivers::WireNet;
use netpoll_stack::{TcpListener, TcpStream};

fn main() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let addr = net.addr_a(7);
    let handle = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, addr).expect("listen");
        let server = handle.spawn(async move {
            let (conn, peer) = listener.accept().await.expect("accept");
            println!("server: connection from {peer}");
            let mut buf = [0u8; 1024];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => conn.write_all(&buf[..n]).await.expect("write"),
                    Err(e) => panic!("server: {e}"),
                }
            }
            conn.close().await.expect("close");
        });
        let conn = TcpStream::connect(&b, addr).await.expect("connect");
        for line in ["hello", "from", "smoltcp"] {
            conn.write_all(line.as_bytes()).await.expect("write");
            let mut buf = [0u8; 64];
            let n = conn.read(&mut buf).await.expect("read");
            println!(
                "client: echoed {:?}",
                core::str::from_utf8(&buf[..n]).unwrap_or("?")
            );
        }
        conn.shutdown_write().expect("shutdown");
        server.await;
        conn.close().await.expect("close");
    });
    println!("wire: {:?}", net.wire.stats());
}
