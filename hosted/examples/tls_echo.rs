//! A TLS 1.3 echo through rustls over netpoll: futures-rustls drives `TcpStream` through its
//! `futures_io::AsyncRead`/`AsyncWrite` impls (feature `futures-io`), on the epoll runtime.
//! The certificate is self-signed, made at start with rcgen; a client in the same process
//! connects, echoes 1 MiB and prints the handshake time and the echo rate.
//!
//! `cargo run -p netpoll-hosted --example tls_echo --features futures-io`

use std::sync::Arc;
use std::time::Instant;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use futures_rustls::{TlsAcceptor, TlsConnector};
use netpoll_hosted::{Runtime, TcpListener, TcpStream};

const ECHO_LEN: usize = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A certificate for "localhost", trusted by the client below.
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    let mut roots = RootCertStore::empty();
    roots.add(cert)?;
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let acceptor = TlsAcceptor::from(Arc::new(server_config));
    let connector = TlsConnector::from(Arc::new(client_config));

    let mut rt = Runtime::new()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&netpoll_hosted::backend(), "127.0.0.1:0".parse()?)?;
        let addr = listener.local_addr()?;
        println!("TLS echo server on {addr}");
        // The server: one task per connection, echoing until the client's close_notify.
        netpoll_hosted::spawn(async move {
            while let Ok((conn, _peer)) = listener.accept().await {
                let acceptor = acceptor.clone();
                netpoll_hosted::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(conn).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = tls.read(&mut buf).await {
                        if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                    }
                    let _ = tls.close().await;
                });
            }
        });

        let started = Instant::now();
        let conn = TcpStream::connect(&netpoll_hosted::backend(), addr).await?;
        let tls = connector
            .connect(ServerName::try_from("localhost")?, conn)
            .await?;
        let handshake = started.elapsed();
        let version = tls.get_ref().1.protocol_version();
        let (mut rd, mut wr) = tls.split();
        let data: Vec<u8> = (0..ECHO_LEN).map(|i| (i * 7 + i / 251) as u8).collect();
        let started = Instant::now();
        let writer = async {
            wr.write_all(&data).await?;
            wr.close().await
        };
        let reader = async {
            // A fixed buffer, not `read_to_end`: that zeroes all spare capacity on every read.
            let mut got = Vec::with_capacity(ECHO_LEN);
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match rd.read(&mut buf).await? {
                    0 => return Ok::<_, std::io::Error>(got),
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        };
        let (written, got) = futures::join!(writer, reader);
        written?;
        let got = got?;
        let elapsed = started.elapsed();
        if got != data {
            return Err("the echo arrived altered".into());
        }
        println!(
            "{version:?} handshake in {:.2} ms; {} KiB echoed in {:.1} ms ({:.0} MiB/s each way)",
            handshake.as_secs_f64() * 1e3,
            ECHO_LEN / 1024,
            elapsed.as_secs_f64() * 1e3,
            ECHO_LEN as f64 / (1 << 20) as f64 / elapsed.as_secs_f64(),
        );
        Ok(())
    })
}
