//! The measurement behind molt's choice of transport (issue 8): QUIC
//! (quinn) against TCP, each alone over 127.0.0.1 in one process, on the
//! distribution benchmarks' shapes: small round trips one at a time, 1 MiB
//! writes streamed (plain TCP, TCP with TLS as molt's mutual TLS runs, and
//! QUIC, which is always encrypted), and the longest small round trip on
//! one QUIC stream while 64 MiB go on another of the same connection (the
//! head-of-line blocking QUIC's streams are for). Not part of the harness
//! or of `.ci/run`:
//!
//! ```sh
//! cargo run --release -p molt-bench --features quic --bin quic_eval
//! ```
//!
//! prints one JSON line per run. The README's "Why TCP" quotes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;
const ROUND_TRIPS: usize = 20_000;
const BULK_MIB: usize = 500;
const BIG: usize = 64 * MIB;

/// A self-signed certificate for "localhost", and its key.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a certificate");
    let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
    (made.cert.der().clone(), key.into())
}

fn roots(certificate: &CertificateDer<'static>) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.clone()).expect("the certificate is a root");
    roots
}

/// A QUIC connection to a server endpoint, both on 127.0.0.1.
async fn quic_pair() -> (quinn::Connection, quinn::Connection, quinn::Endpoint, quinn::Endpoint) {
    let (certificate, key) = certificate();
    let server_config = quinn::ServerConfig::with_single_cert(vec![certificate.clone()], key).expect("a server");
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).expect("binds");
    let address: SocketAddr = server.local_addr().unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("binds");
    let client_config = quinn::ClientConfig::with_root_certificates(Arc::new(roots(&certificate))).expect("a client");
    client.set_default_client_config(client_config);
    let connecting = client.connect(address, "localhost").expect("connects");
    let accepting = async { server.accept().await.expect("an incoming connection").await.expect("accepted") };
    let (near, far) = tokio::join!(async { connecting.await.expect("connected") }, accepting);
    (near, far, client, server)
}

/// A TCP connection over 127.0.0.1, both ends.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (near, far) = tokio::join!(TcpStream::connect(address), listener.accept());
    let (near, (far, _)) = (near.unwrap(), far.unwrap());
    near.set_nodelay(true).unwrap();
    far.set_nodelay(true).unwrap();
    (near, far)
}

/// Seconds for `ROUND_TRIPS` round trips of 8 bytes.
async fn round_trips<R1, W1, R2, W2>(mut near: (R1, W1), mut far: (R2, W2)) -> f64
where
    R1: AsyncRead + Unpin,
    W1: AsyncWrite + Unpin,
    R2: AsyncRead + Unpin + Send + 'static,
    W2: AsyncWrite + Unpin + Send + 'static,
{
    let echo = tokio::spawn(async move {
        let mut buffer = [0u8; 8];
        for _ in 0..ROUND_TRIPS {
            far.0.read_exact(&mut buffer).await.unwrap();
            far.1.write_all(&buffer).await.unwrap();
        }
    });
    let start = Instant::now();
    let mut buffer = [0u8; 8];
    for i in 0..ROUND_TRIPS as u64 {
        near.1.write_all(&i.to_le_bytes()).await.unwrap();
        near.0.read_exact(&mut buffer).await.unwrap();
        assert_eq!(u64::from_le_bytes(buffer), i);
    }
    let seconds = start.elapsed().as_secs_f64();
    echo.await.unwrap();
    seconds
}

/// Seconds to move `BULK_MIB` writes of 1 MiB, and a byte back.
async fn bulk<W, R>(
    mut near: W,
    mut far: R,
    mut answer: impl AsyncWrite + Unpin + Send + 'static,
    mut back: impl AsyncRead + Unpin,
) -> f64
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin + Send + 'static,
{
    let reader = tokio::spawn(async move {
        let mut buffer = vec![0u8; MIB];
        let mut left = BULK_MIB * MIB;
        while left > 0 {
            let read = far.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the stream ended early");
            left -= read;
        }
        answer.write_all(&[1]).await.unwrap();
        answer.flush().await.unwrap();
    });
    let chunk = vec![7u8; MIB];
    let start = Instant::now();
    for _ in 0..BULK_MIB {
        near.write_all(&chunk).await.unwrap();
    }
    near.flush().await.unwrap();
    let mut one = [0u8];
    back.read_exact(&mut one).await.unwrap();
    let seconds = start.elapsed().as_secs_f64();
    reader.await.unwrap();
    seconds
}

async fn tcp_round_trips() -> f64 {
    let (near, far) = tcp_pair().await;
    round_trips(near.into_split(), far.into_split()).await
}

async fn quic_round_trips() -> f64 {
    let (near, far, _client, _server) = quic_pair().await;
    let (send, recv) = near.open_bi().await.unwrap();
    let opened = async {
        let (mut send, recv) = (send, recv);
        // A stream is announced by its first bytes.
        send.write_all(&[0]).await.unwrap();
        (recv, send)
    };
    let accepted = async {
        let (send, mut recv) = far.accept_bi().await.unwrap();
        let mut zero = [0u8];
        recv.read_exact(&mut zero).await.unwrap();
        (recv, send)
    };
    let (near, far) = tokio::join!(opened, accepted);
    round_trips(near, far).await
}

async fn tcp_bulk() -> f64 {
    let (near, far) = tcp_pair().await;
    let ((far_read, far_write), (near_read, near_write)) = (far.into_split(), near.into_split());
    bulk(near_write, far_read, far_write, near_read).await
}

async fn tls_bulk() -> f64 {
    let (certificate, key) = certificate();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&certificate))
        .with_no_client_auth();
    let (near, far) = tcp_pair().await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let (near, far) =
        tokio::join!(connector.connect(ServerName::try_from("localhost").unwrap(), near), acceptor.accept(far));
    let ((near_read, near_write), (far_read, far_write)) =
        (tokio::io::split(near.unwrap()), tokio::io::split(far.unwrap()));
    bulk(near_write, far_read, far_write, near_read).await
}

async fn quic_bulk() -> f64 {
    let (near, far, _client, _server) = quic_pair().await;
    let (near_send, near_recv) = near.open_bi().await.unwrap();
    let mut near_send = near_send;
    // The far side sees the stream once bytes come: accepted as they do
    // (its connection kept: dropping the last handle closes it).
    let accept = tokio::spawn(async move {
        let streams = far.accept_bi().await.unwrap();
        (far, streams)
    });
    near_send.write_all(&[0]).await.unwrap();
    let (_far, (far_send, mut far_recv)) = accept.await.unwrap();
    let mut zero = [0u8];
    far_recv.read_exact(&mut zero).await.unwrap();
    bulk(near_send, far_recv, far_send, near_recv).await
}

/// The longest round trip of 8 bytes on one stream while `BIG` bytes go
/// on another stream of the same connection.
async fn quic_latency_under_bulk() -> f64 {
    let (near, far, _client, _server) = quic_pair().await;
    let far_side = tokio::spawn(async move {
        // The first stream echoes, the second takes the big transfer.
        let (mut echo_send, mut echo_recv) = far.accept_bi().await.unwrap();
        let echo = tokio::spawn(async move {
            let mut buffer = [0u8; 8];
            while echo_recv.read_exact(&mut buffer).await.is_ok() {
                if echo_send.write_all(&buffer).await.is_err() {
                    break;
                }
            }
        });
        let (mut big_send, mut big_recv) = far.accept_bi().await.unwrap();
        let mut buffer = vec![0u8; MIB];
        let mut left = BIG + 1;
        while left > 0 {
            left -= big_recv.read(&mut buffer).await.unwrap().expect("more of the big transfer");
        }
        big_send.write_all(&[1]).await.unwrap();
        echo.await.unwrap();
    });
    let (mut echo_send, mut echo_recv) = near.open_bi().await.unwrap();
    echo_send.write_all(&0u64.to_le_bytes()).await.unwrap();
    let mut buffer = [0u8; 8];
    echo_recv.read_exact(&mut buffer).await.unwrap();
    let (mut big_send, mut big_recv) = near.open_bi().await.unwrap();
    big_send.write_all(&[0]).await.unwrap();
    let big = tokio::spawn(async move {
        big_send.write_all(&vec![7u8; BIG]).await.unwrap();
        let mut one = [0u8];
        big_recv.read_exact(&mut one).await.unwrap();
    });
    let mut worst = 0f64;
    let mut i = 1u64;
    while !big.is_finished() {
        let start = Instant::now();
        echo_send.write_all(&i.to_le_bytes()).await.unwrap();
        echo_recv.read_exact(&mut buffer).await.unwrap();
        worst = worst.max(start.elapsed().as_secs_f64());
        i += 1;
    }
    big.await.unwrap();
    echo_send.finish().unwrap();
    far_side.await.unwrap();
    worst
}

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    runtime.block_on(async {
        for _ in 0..3 {
            let (tcp_rt, quic_rt) = (tcp_round_trips().await, quic_round_trips().await);
            let (tcp, tls, quic) = (tcp_bulk().await, tls_bulk().await, quic_bulk().await);
            let quic_worst = quic_latency_under_bulk().await;
            println!(
                "{}",
                serde_json::json!({
                    "round_trip_us": { "tcp": tcp_rt * 1e6 / ROUND_TRIPS as f64, "quic": quic_rt * 1e6 / ROUND_TRIPS as f64 },
                    "bulk_500mib_s": { "tcp": tcp, "tcp_tls": tls, "quic": quic },
                    "quic_worst_round_trip_under_64mib_ms": quic_worst * 1e3,
                })
            );
        }
    });
}
