//! The real listener: slowloris clients are cut off while others are served (L4), and TLS is
//! 1.3 only, with HSTS on responses.

use std::sync::Arc;
use std::time::Duration;

use bastion_server::listen::{ConnLimits, serve, tls13_config};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::harness::{TestApp, options, spawn_app_with};

async fn start(
    app: &TestApp,
    tls: Option<Arc<rustls::ServerConfig>>,
    header_secs: u64,
) -> (std::net::SocketAddr, watch::Sender<bool>) {
    start_with(app, tls, header_secs, 64).await
}

async fn start_with(
    app: &TestApp,
    tls: Option<Arc<rustls::ServerConfig>>,
    header_secs: u64,
    connections_max: usize,
) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    let limits = ConnLimits {
        header_read_timeout_secs: header_secs,
        tls_handshake_timeout_secs: 2,
        connections_max,
        connections_per_address_max: connections_max,
    };
    tokio::spawn(serve(listener, app.router.clone(), tls, limits, rx));
    (addr, tx)
}

/// Reads until EOF (or error); returns what was read.
async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_slowloris_is_cut_off_while_others_are_served() {
    let app = spawn_app_with(options(false, &[])).await;
    let (addr, stop) = start(&app, None, 1).await;

    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // A normal client on another connection is served meanwhile.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(GET_HEALTHZ).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut ok))
        .await
        .unwrap();
    assert!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&resp)
    );

    // Each stalled connection is closed within a few seconds (never answered 200).
    for mut s in slow {
        let got = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut s))
            .await
            .expect("slowloris connection still open after 5 s");
        assert!(
            !got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    // And the server still serves.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(GET_HEALTHZ).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut ok))
        .await
        .unwrap();
    assert!(resp.starts_with(b"HTTP/1.1 200"));
    let _ = stop.send(true);
}

fn client_config(
    cert: CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_is_refused_and_tls_1_3_is_served_with_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let cert_der = certified.cert.der().clone();
    let server_cfg = tls13_config(&cert_path, &key_path).unwrap();
    // Files that do not hold PEM are refused with a clear error.
    assert!(tls13_config(&key_path, &cert_path).is_err());
    assert!(tls13_config(&dir.path().join("missing.pem"), &key_path).is_err());

    let app = spawn_app_with(options(true, &[])).await;
    let (addr, stop) = start(&app, Some(server_cfg), 5).await;
    let name = ServerName::try_from("localhost").unwrap();

    // TLS 1.2 only: the handshake fails.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let c12 = tokio_rustls::TlsConnector::from(client_config(
        cert_der.clone(),
        &[&rustls::version::TLS12],
    ));
    let r = tokio::time::timeout(Duration::from_secs(5), c12.connect(name.clone(), tcp))
        .await
        .unwrap();
    assert!(r.is_err(), "a TLS 1.2 handshake succeeded");

    // TLS 1.3: served, with HSTS.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let c13 = tokio_rustls::TlsConnector::from(client_config(cert_der, &[&rustls::version::TLS13]));
    let mut tls = tokio::time::timeout(Duration::from_secs(5), c13.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    tls.write_all(GET_HEALTHZ).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut tls))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&resp).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        text.contains("strict-transport-security: max-age="),
        "{text}"
    );
    assert!(!text.contains("\r\nserver:"), "{text}");
    let _ = stop.send(true);
}

/// A client that connects and never sends a byte is cut off too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_silent_connection_is_closed() {
    let app = spawn_app_with(options(false, &[])).await;
    let (addr, stop) = start(&app, None, 1).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut silent))
        .await
        .expect("a silent connection is still open after 5 s");
    assert!(got.is_empty() || !got.starts_with(b"HTTP/1.1 200"));
    let _ = stop.send(true);
}

/// A TLS client that stalls in the handshake is cut off by the handshake limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_stalled_tls_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let app = spawn_app_with(options(true, &[])).await;
    let (addr, stop) = start(&app, Some(tls13_config(&cert_path, &key_path).unwrap()), 5).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Half a TLS record header, then nothing.
    s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(6), read_to_close(&mut s))
        .await
        .expect("a stalled TLS handshake is still open after 6 s");
    let _ = stop.send(true);
}

/// Silent connections must not hold every connection slot: with `connections_max = 2`, two
/// clients that connect and send nothing must not lock a third, normal client out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_silent_connections_do_not_exhaust_the_slots() {
    let app = spawn_app_with(options(false, &[])).await;
    let (addr, stop) = start_with(&app, None, 1, 2).await;
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(8), async {
        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(GET_HEALTHZ).await.unwrap();
        read_to_close(&mut ok).await
    })
    .await
    .expect("a normal client was locked out by two silent connections for 8 s");
    assert!(served.starts_with(b"HTTP/1.1 200"));
    let _ = stop.send(true);
}

/// A client that sends the HTTP/2 preface and a SETTINGS frame, then stays idle, must not
/// keep its connection: HTTP/2 is not served (hyper has no idle timeout for it).
#[tokio::test]
async fn l4_idle_http2_preface_is_closed() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(options(false, &[])).await;
    let (addr, stop) = start(&app, None, 1).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut idle))
        .await
        .expect("an idle HTTP/2 connection is still open after 5 s");
    assert!(!got.starts_with(b"HTTP/1.1 200"));
    let _ = stop.send(true);
}

/// One address cannot take every slot: past its share a connection is closed at once, while
/// another address is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_one_address_cannot_take_every_connection() {
    let app = spawn_app_with(options(false, &[])).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let limits = ConnLimits {
        header_read_timeout_secs: 5,
        tls_handshake_timeout_secs: 2,
        connections_max: 64,
        connections_per_address_max: 2,
    };
    tokio::spawn(serve(listener, app.router.clone(), None, limits, rx));
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(GET_HEALTHZ).await;
    let got = tokio::time::timeout(Duration::from_secs(3), read_to_close(&mut third))
        .await
        .expect("the third connection from one address was kept open");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // Another address (127.0.0.2, also loopback) is served meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(addr).await.unwrap();
    other.write_all(GET_HEALTHZ).await.unwrap();
    let served = read_to_close(&mut other).await;
    assert!(
        served.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&served)
    );
    let _ = stop.send(true);
}
