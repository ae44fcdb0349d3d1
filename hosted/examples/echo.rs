//! The README's example: an echo server with a 30-second idle deadline per connection.
//!
//! `cargo run -p netpoll-hosted --example echo` (listens on 127.0.0.1:9009).

use std::time::Duration;

use netpoll_hosted::{Runtime, TcpListener};

fn main() -> std::io::Result<()> {
    let mut rt = Runtime::new()?;
    rt.block_on(async {
        let addr = "127.0.0.1:9009".parse().unwrap();
        let listener = TcpListener::bind(&netpoll_hosted::backend(), addr)?;
        loop {
            let (conn, _peer) = listener.accept().await?;
            netpoll_hosted::spawn(async move {
                let mut buf = [0u8; 128];
                loop {
                    // Go-style deadline: this read fails with `is_timeout()` after 30 s of silence.
                    let deadline = netpoll_hosted::now() + Duration::from_secs(30);
                    let _ = conn.set_read_deadline(Some(deadline));
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break, // EOF, reset, timeout or closed
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = conn.close().await;
            });
        }
    })
}
