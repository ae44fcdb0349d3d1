//! Test your server under a partition: a client talks to an echo server over a simulated
//! network with delay and loss; the link is cut for 30 s, during which the client's reads time
//! out on their deadline; after the repair the same connection carries on where it stopped.
//!
//! Everything runs in simulated time on one thread, so the 30 s take microseconds, and the
//! run is a function of the seed: `cargo run -p netpoll-drivers --example sim_partition -- 42`
//! prints the same trace hash every time.

use core::time::Duration;

use netpoll_drivers::{Impairments, SimDevice, SimNet, SmolBackend};
use netpoll_stack::{TcpListener, TcpStream};

type Backend = SmolBackend<SimDevice>;

const SERVER: usize = 0;
const CLIENT: usize = 1;

/// The server under test: echoes each connection until EOF.
async fn echo_server(listener: TcpListener<Backend>) {
    loop {
        let Ok((conn, peer)) = listener.accept().await else {
            return;
        };
        println!("server: accepted {peer}");
        listener.handle().spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = conn.read(&mut buf).await {
                if conn.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = conn.close().await;
        });
    }
}

/// Sends `msg` and reads its echo, each read bounded by a 2 s deadline.
async fn ping(conn: &TcpStream<Backend>, msg: &[u8]) -> Result<Vec<u8>, netpoll_stack::Error> {
    conn.write_all(msg).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < msg.len() {
        conn.set_read_deadline(Some(conn.handle().now() + Duration::from_secs(2)))?;
        match conn.read(&mut buf).await? {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    Ok(got)
}

fn main() {
    let seed = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("the seed is a number"))
        .unwrap_or(1);
    let link = Impairments {
        loss_ppm: 10_000, // 1 %
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(2),
        ..Impairments::NONE
    };
    let mut net = SimNet::builder(2)
        .seed(seed)
        .impairments(link)
        .build()
        .expect("build the network");
    let addr = net.addr(SERVER, 7);
    let (server, client) = (net.host(SERVER).clone(), net.host(CLIENT).clone());
    let switch = net.switch.clone();
    let h = net.handle().clone();

    net.block_on(async move {
        let listener = TcpListener::bind(&server, addr).expect("bind");
        h.spawn(echo_server(listener));
        let conn = TcpStream::connect(&client, addr).await.expect("connect");

        for i in 0..3 {
            let msg = format!("hello {i}");
            let echo = ping(&conn, msg.as_bytes()).await.expect("echo");
            assert_eq!(echo, msg.as_bytes());
            println!("{:>9?} client: echoed {msg:?}", h.now());
        }

        println!("{:>9?} --- partition", h.now());
        switch.partition(SERVER, CLIENT);
        let cut = h.now();
        let mut timeouts = 0;
        while h.now() - cut < Duration::from_secs(30) {
            // The write is buffered; the read's deadline ends the wait.
            match ping(&conn, b"anyone there?").await {
                Err(e) if e.is_timeout() => {
                    timeouts += 1;
                    println!("{:>9?} client: {e}", h.now());
                }
                other => panic!("a reply crossed a partition: {other:?}"),
            }
        }
        println!("{:>9?} --- repair", h.now());
        switch.repair(SERVER, CLIENT);

        // The unanswered pings were still queued: their echoes come first.
        let pending = b"anyone there?".len() * timeouts;
        let mut buf = vec![0u8; pending];
        let mut got = 0;
        conn.set_read_deadline(Some(h.now() + Duration::from_secs(60)))
            .expect("deadline");
        while got < pending {
            got += conn.read(&mut buf[got..]).await.expect("backlog");
        }
        println!(
            "{:>9?} client: {timeouts} queued pings echoed after the repair",
            h.now()
        );
        let echo = ping(&conn, b"still here").await.expect("echo after repair");
        assert_eq!(echo, b"still here");
        println!("{:>9?} client: echoed \"still here\"", h.now());
        conn.close().await.expect("close");
    });

    let stats = net.switch.stats();
    println!(
        "seed {seed}: {} frames sent, {} lost, {} dropped by the partition; trace {:016x}",
        stats.sent,
        stats.lost,
        stats.partitioned,
        net.switch.trace_hash()
    );
}
