//! Real crates over netpoll's streams through the async I/O traits: a TLS 1.3 handshake and a
//! 1 MiB echo through rustls (futures-rustls, `futures_io` traits), 10,000 lines through
//! tokio-util's `Framed` + `LinesCodec` (tokio's traits, no tokio runtime), and 1,000
//! keep-alive requests to a hyper 1.x HTTP/1.1 server. Each runs on the kernel (epoll) and on
//! smoltcp over the in-memory wire.

use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::join;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::{SinkExt, StreamExt};
use futures_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use futures_rustls::{TlsAcceptor, TlsConnector};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use netpoll_conformance::io::pattern;
use netpoll_conformance::{run_case, Env, Harness};
use netpoll_stack::{SocketBackend, TcpStream};
use tokio_util::codec::{Framed, LinesCodec};

const TLS_ECHO_LEN: usize = 1 << 20;
const LINES: usize = 10_000;
const REQUESTS: usize = 1_000;

/// A self-signed certificate for "localhost", made now, and the TLS 1.3-only configs of
/// both ends (ring provider).
fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("generate a self-signed certificate");
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 with ring")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server certificate");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("trust the self-signed certificate");
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 with ring")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// TLS 1.3 handshake, then 1 MiB echoed: the client writes while it reads back.
async fn tls_echo_1mib<B: SocketBackend>(env: Env<B>) {
    let (server_cfg, client_cfg) = tls_configs();
    let (client, server) = env.pair().await;
    let echo = env.spawn(async move {
        let mut tls = TlsAcceptor::from(server_cfg)
            .accept(server)
            .await
            .expect("server handshake");
        let version = tls.get_ref().1.protocol_version();
        let mut buf = vec![0u8; 16 * 1024];
        let mut echoed = 0;
        loop {
            let n = tls.read(&mut buf).await.expect("server read");
            if n == 0 {
                break;
            }
            tls.write_all(&buf[..n]).await.expect("server write");
            tls.flush().await.expect("server flush");
            echoed += n;
        }
        tls.close().await.expect("server close_notify");
        (version, echoed)
    });
    let name = ServerName::try_from("localhost").unwrap();
    let tls = env
        .within(
            "TLS handshake",
            Duration::from_secs(10),
            TlsConnector::from(client_cfg).connect(name, client),
        )
        .await
        .expect("client handshake");
    let (mut rd, mut wr) = tls.split();
    let data = pattern(TLS_ECHO_LEN, 0x5a);
    let writer = async {
        wr.write_all(&data).await.expect("client write");
        wr.close().await.expect("client close_notify");
    };
    let reader = async {
        // A fixed buffer, not `read_to_end`: that zeroes all spare capacity on every read.
        let mut got = Vec::with_capacity(TLS_ECHO_LEN);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match rd.read(&mut buf).await.expect("client read") {
                0 => return got,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let ((), got) = env
        .within(
            "1 MiB TLS echo",
            Duration::from_secs(20),
            join(writer, reader),
        )
        .await;
    assert_eq!(got.len(), TLS_ECHO_LEN);
    assert!(got == data, "the TLS echo arrived altered");
    let (version, echoed) = env.within("echo task", Duration::from_secs(5), echo).await;
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(echoed, TLS_ECHO_LEN);
}

/// 10,000 lines through `Framed<TcpStream, LinesCodec>` on both ends.
async fn lines_echo_10k<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let echo = env.spawn(async move {
        let mut framed = Framed::new(server, LinesCodec::new_with_max_length(1024));
        let mut echoed = 0;
        while let Some(line) = framed.next().await {
            framed
                .send(line.expect("server line"))
                .await
                .expect("server send");
            echoed += 1;
        }
        echoed
    });
    let framed = Framed::new(client, LinesCodec::new_with_max_length(1024));
    let (mut sink, mut stream) = framed.split();
    let writer = async {
        for i in 0..LINES {
            sink.feed(format!("line {i} {}", "x".repeat(i % 97)))
                .await
                .expect("client feed");
        }
        sink.flush().await.expect("client flush");
    };
    let reader = async {
        let mut got = Vec::with_capacity(LINES);
        while got.len() < LINES {
            got.push(
                stream
                    .next()
                    .await
                    .expect("end of stream")
                    .expect("client line"),
            );
        }
        got
    };
    let ((), got) = env
        .within(
            "10,000 lines",
            Duration::from_secs(20),
            join(writer, reader),
        )
        .await;
    for (i, line) in got.iter().enumerate() {
        assert_eq!(*line, format!("line {i} {}", "x".repeat(i % 97)));
    }
    let client = sink.reunite(stream).expect("same Framed").into_inner();
    client.shutdown_write().unwrap();
    assert_eq!(
        env.within("echo task", Duration::from_secs(5), echo).await,
        LINES
    );
}

/// hyper's I/O traits over a netpoll stream (hyper has its own `rt::Read`/`rt::Write`).
struct HyperIo<B: SocketBackend>(TcpStream<B>);

impl<B: SocketBackend> hyper::rt::Read for HyperIo<B> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut chunk = [0u8; 8192];
        let len = buf.remaining().min(chunk.len());
        let n = core::task::ready!(self.0.poll_read(cx, &mut chunk[..len]))?;
        buf.put_slice(&chunk[..n]);
        Poll::Ready(Ok(()))
    }
}

impl<B: SocketBackend> hyper::rt::Write for HyperIo<B> {
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

/// The server side: hyper's HTTP/1.1 connection answering each request with its body
/// prefixed by its path. Returns when the client closes.
async fn serve_http<B: SocketBackend>(server: TcpStream<B>) {
    let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        let body = req.into_body().collect().await?.to_bytes();
        let mut reply = path.into_bytes();
        reply.extend_from_slice(&body);
        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(reply))))
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(HyperIo(server), service)
        .await
        .expect("hyper serve_connection");
}

/// 1,000 keep-alive requests on one connection to a hyper server; the client is a kernel
/// `std::net::TcpStream` (on the epoll instance) or hyper's client on the other host (on the
/// smoltcp wire).
fn hyper_keep_alive<H: Harness>(kernel_client: bool) {
    run_case::<H, _, _>("hyper_keep_alive_1000", move |env| async move {
        let listener = env.listen();
        let addr = env.addr_of(&listener);
        let server = env.spawn(async move {
            let (conn, _) = listener.accept().await.expect("accept");
            serve_http(conn).await;
        });
        if kernel_client {
            let (done, answered) = futures::channel::oneshot::channel();
            std::thread::spawn(move || {
                let _ = done.send(std_http_client(addr));
            });
            let answered = env
                .within("kernel client", Duration::from_secs(20), answered)
                .await
                .expect("client thread ended");
            assert_eq!(answered, REQUESTS);
        } else {
            let stream = env.connect(addr).await;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(HyperIo(stream))
                    .await
                    .expect("client handshake");
            let driver = env.spawn(async move { conn.await.expect("client connection") });
            let requests = async {
                for i in 0..REQUESTS {
                    let req = Request::post(format!("/r{i}"))
                        .header("host", "netpoll")
                        .body(Full::new(Bytes::from(format!("body {i}"))))
                        .unwrap();
                    let resp = sender.send_request(req).await.expect("send_request");
                    assert_eq!(resp.status(), 200);
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(body, format!("/r{i}body {i}").as_bytes());
                }
            };
            env.within("1,000 requests", Duration::from_secs(20), requests)
                .await;
            drop(sender);
            env.within("client connection ends", Duration::from_secs(5), driver)
                .await;
        }
        env.within("server connection ends", Duration::from_secs(5), server)
            .await;
    });
}

/// A plain blocking HTTP/1.1 client: `REQUESTS` POSTs on one keep-alive connection, each
/// response read by its `Content-Length`. Returns how many were answered correctly.
fn std_http_client(addr: std::net::SocketAddr) -> usize {
    let conn = std::net::TcpStream::connect(addr).expect("kernel client connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.set_nodelay(true).unwrap();
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    for i in 0..REQUESTS {
        let body = format!("body {i}");
        // One write per request: `write!` on an unbuffered socket writes piece by piece,
        // and Nagle would hold the pieces back for the server's delayed ACK.
        let request = format!(
            "POST /r{i} HTTP/1.1\r\nHost: netpoll\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(request.as_bytes()).expect("write request");
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.starts_with("HTTP/1.1 200"), "status {status:?}");
        let mut length = None;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).expect("header");
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.trim().parse::<usize>().expect("content-length"));
                }
            }
        }
        let mut reply = vec![0u8; length.expect("a Content-Length header")];
        reader.read_exact(&mut reply).expect("response body");
        assert_eq!(reply, format!("/r{i}body {i}").as_bytes());
    }
    REQUESTS
}

#[test]
fn hosted_tls_echo() {
    run_case::<netpoll_conformance::hosted::HostedHarness, _, _>("tls_echo_1mib", tls_echo_1mib);
}

#[test]
fn smoltcp_tls_echo() {
    run_case::<netpoll_conformance::smoltcp::WireHarness, _, _>("tls_echo_1mib", tls_echo_1mib);
}

#[test]
fn hosted_lines_echo() {
    run_case::<netpoll_conformance::hosted::HostedHarness, _, _>("lines_echo_10k", lines_echo_10k);
}

#[test]
fn smoltcp_lines_echo() {
    run_case::<netpoll_conformance::smoltcp::WireHarness, _, _>("lines_echo_10k", lines_echo_10k);
}

#[test]
fn hosted_hyper_keep_alive() {
    hyper_keep_alive::<netpoll_conformance::hosted::HostedHarness>(true);
}

#[test]
fn smoltcp_hyper_keep_alive() {
    hyper_keep_alive::<netpoll_conformance::smoltcp::WireHarness>(false);
}
