//! Split halves on kernel sockets: owned halves in two tasks, the write half's drop sending
//! the FIN, `reunite`, and borrowed halves polled together in one task.

use netpoll_hosted::{backend, spawn, Runtime, TcpListener, TcpStream};
use netpoll_stack::split::{OwnedReadHalf, OwnedWriteHalf};

/// A connected pair: (client, server side).
async fn pair() -> (TcpStream, TcpStream) {
    let b = backend();
    let listener = TcpListener::bind(&b, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = spawn(async move { listener.accept().await.unwrap().0 });
    let client = TcpStream::connect(&b, addr).await.unwrap();
    (client, accept.await)
}

async fn read_to_end(read: &OwnedReadHalf<netpoll_hosted::KernelBackend>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read.read(&mut buf).await.unwrap() {
            0 => return out,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn owned_halves_run_in_two_tasks_and_dropping_the_writer_sends_eof() {
    Runtime::builder()
        .workers(2)
        .build()
        .unwrap()
        .block_on(async {
            let (client, server) = pair().await;
            let (server_read, server_write) = server.into_split();
            // The server echoes in two tasks: one reads, the other writes what it is sent.
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let reader = spawn(async move {
                let mut buf = [0u8; 1000];
                loop {
                    let n = server_read.read(&mut buf).await.unwrap();
                    tx.send(buf[..n].to_vec()).unwrap();
                    if n == 0 {
                        return server_read;
                    }
                }
            });
            let writer = spawn(async move {
                let mut sent = 0;
                loop {
                    match rx.try_recv() {
                        Ok(chunk) if chunk.is_empty() => break,
                        Ok(chunk) => {
                            server_write.write_all(&chunk).await.unwrap();
                            sent += chunk.len();
                        }
                        Err(_) => netpoll_hosted::yield_now().await,
                    }
                }
                // Dropping `server_write` here shuts the write direction down.
                sent
            });

            let (client_read, client_write) = client.into_split();
            let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            let expected = payload.clone();
            let send = spawn(async move {
                client_write.write_all(&payload).await.unwrap();
                // The client's writer drops: the server reads EOF and ends its writer.
            });
            let echoed = read_to_end(&client_read).await;
            send.await;
            assert_eq!(writer.await, expected.len());
            assert_eq!(echoed, expected, "the echo arrives whole and ends with EOF");
            let server_read = reader.await;
            assert_eq!(server_read.read(&mut [0u8; 8]).await.unwrap(), 0);
        });
}

#[test]
fn reunite_gives_the_stream_back_and_refuses_halves_of_two_streams() {
    Runtime::new().unwrap().block_on(async {
        let (a, a_peer) = pair().await;
        let (b, _b_peer) = pair().await;
        let (a_read, a_write) = a.into_split();
        let (b_read, b_write) = b.into_split();

        let err = a_read.reunite(b_write).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tried to reunite halves that are not from the same socket"
        );
        let (a_read, b_write): (OwnedReadHalf<_>, OwnedWriteHalf<_>) = (err.0, err.1);
        let b = b_read.reunite(b_write).unwrap();
        let a = a_read.reunite(a_write).unwrap();

        // Reuniting did not shut anything down: the stream still writes.
        a.write_all(b"still open").await.unwrap();
        let mut buf = [0u8; 16];
        let n = a_peer.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"still open");
        drop(b);
    });
}

#[test]
fn borrowed_halves_read_and_write_at_once_in_one_task() {
    Runtime::new().unwrap().block_on(async {
        let (client, server) = pair().await;
        let echo = spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match server.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => server.write_all(&buf[..n]).await.unwrap(),
                }
            }
        });
        let (read, write) = client.split();
        let payload = vec![7u8; 300_000];
        let sending = async {
            write.write_all(&payload).await.unwrap();
            write.shutdown_write().unwrap();
        };
        let receiving = async {
            let mut got = 0;
            let mut buf = [0u8; 8192];
            loop {
                match read.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got += n,
                }
            }
        };
        // Sequentially this would deadlock once both socket buffers fill.
        let ((), got) = futures::join!(sending, receiving);
        assert_eq!(got, payload.len());
        echo.await;
    });
}
