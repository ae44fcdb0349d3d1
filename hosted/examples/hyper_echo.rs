//! An HTTP/1.1 server with hyper 1.x over netpoll (`hyper::server::conn::http1`), answering
//! each request with its path and body. hyper has its own I/O traits; the adapter below
//! implements them with `TcpStream`'s poll-based I/O (`poll_read`, `poll_write`).
//!
//! `cargo run -p netpoll-hosted --example hyper_echo --features tokio` sends 1,000 keep-alive
//! requests from a kernel-side client thread and prints the rate; with `-- serve` it keeps
//! listening on 127.0.0.1:8080 (`curl -d hello 127.0.0.1:8080/echo`).

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use netpoll_hosted::{Runtime, TcpListener, TcpStream};

const REQUESTS: usize = 1_000;

/// hyper's `rt::Read`/`rt::Write` over a netpoll stream.
struct HyperIo(TcpStream);

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Read into a stack buffer, then copy: filling hyper's uninitialized buffer in place
        // needs `unsafe`.
        let mut chunk = [0u8; 8192];
        let len = buf.remaining().min(chunk.len());
        let n = std::task::ready!(self.0.poll_read(cx, &mut chunk[..len]))?;
        buf.put_slice(&chunk[..n]);
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.poll_write(cx, buf).map_err(Into::into)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0.poll_flush(cx).map_err(Into::into)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0.poll_shutdown(cx).map_err(Into::into)
    }
}

async fn echo(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let mut reply = req.uri().path().as_bytes().to_vec();
    reply.extend_from_slice(&req.into_body().collect().await?.to_bytes());
    Ok(Response::new(Full::new(Bytes::from(reply))))
}

/// `REQUESTS` POSTs on one keep-alive connection from a blocking kernel socket.
fn kernel_client(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let conn = std::net::TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let started = Instant::now();
    for i in 0..REQUESTS {
        let body = format!("body {i}");
        // One write per request: `write!` on an unbuffered socket writes piece by piece,
        // and Nagle would hold the pieces back for the server's delayed ACK.
        let request = format!(
            "POST /r{i} HTTP/1.1\r\nHost: netpoll\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(request.as_bytes())?;
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(std::io::Error::other)?;
                }
            }
        }
        let mut reply = vec![0u8; length];
        reader.read_exact(&mut reply)?;
        if reply != format!("/r{i}{body}").as_bytes() {
            return Err(std::io::Error::other(format!("request {i}: wrong reply")));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{REQUESTS} keep-alive requests in {:.1} ms ({:.0} requests/s)",
        elapsed.as_secs_f64() * 1e3,
        REQUESTS as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = std::env::args().nth(1).as_deref() == Some("serve");
    let mut rt = Runtime::new()?;
    let bind = if serve {
        "127.0.0.1:8080"
    } else {
        "127.0.0.1:0"
    };
    let listener = TcpListener::bind(rt.backend(), bind.parse()?)?;
    let addr = listener.local_addr()?;
    println!("HTTP/1.1 server on {addr}");
    let client = (!serve).then(|| std::thread::spawn(move || kernel_client(addr)));
    rt.block_on(async move {
        loop {
            let (conn, _peer) = listener.accept().await?;
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(HyperIo(conn), hyper::service::service_fn(echo));
            if serve {
                netpoll_hosted::spawn(async move {
                    if let Err(e) = connection.await {
                        eprintln!("connection: {e}");
                    }
                });
            } else {
                // The one client's connection: served until it closes.
                connection.await?;
                return Ok::<_, Box<dyn std::error::Error>>(());
            }
        }
    })?;
    if let Some(client) = client {
        client.join().map_err(|_| "client thread panicked")??;
    }
    Ok(())
}
