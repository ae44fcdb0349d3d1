//! A line echo through tokio-util's `Framed` + `LinesCodec` over netpoll: the codec drives
//! `TcpStream` through tokio's `AsyncRead`/`AsyncWrite` impls (feature `tokio`; only the
//! traits: the runtime is netpoll's). A client in the same process sends 10,000 lines while
//! it reads them back, and prints the rate.
//!
//! `cargo run -p netpoll-hosted --example lines_echo --features tokio`

use std::time::Instant;

use futures::{SinkExt, StreamExt};
use netpoll_hosted::{Runtime, TcpListener, TcpStream};
use tokio_util::codec::{Framed, LinesCodec};

const LINES: usize = 10_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rt = Runtime::new()?;
    rt.block_on(async {
        let listener = TcpListener::bind(&netpoll_hosted::backend(), "127.0.0.1:0".parse()?)?;
        let addr = listener.local_addr()?;
        println!("line echo server on {addr}");
        netpoll_hosted::spawn(async move {
            while let Ok((conn, _peer)) = listener.accept().await {
                netpoll_hosted::spawn(async move {
                    let mut lines = Framed::new(conn, LinesCodec::new_with_max_length(64 * 1024));
                    while let Some(Ok(line)) = lines.next().await {
                        if lines.send(line).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });

        let conn = TcpStream::connect(&netpoll_hosted::backend(), addr).await?;
        let (mut sink, mut stream) = Framed::new(conn, LinesCodec::new()).split();
        let started = Instant::now();
        let writer = async {
            for i in 0..LINES {
                sink.feed(format!("line {i}")).await?;
            }
            sink.flush().await
        };
        let reader = async {
            for i in 0..LINES {
                match stream.next().await {
                    Some(Ok(line)) if line == format!("line {i}") => {}
                    other => return Err(format!("line {i}: got {other:?}")),
                }
            }
            Ok(())
        };
        let (written, read) = futures::join!(writer, reader);
        written?;
        read?;
        let elapsed = started.elapsed();
        println!(
            "{LINES} lines echoed in {:.1} ms ({:.0} lines/s)",
            elapsed.as_secs_f64() * 1e3,
            LINES as f64 / elapsed.as_secs_f64()
        );
        Ok(())
    })
}
