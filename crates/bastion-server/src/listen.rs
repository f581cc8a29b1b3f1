//! The accept loop: TLS 1.3 (rustls, aws-lc-rs) or plain HTTP, HTTP/1.1 and HTTP/2 through
//! hyper, with explicit limits against slow clients (slowloris) and connection floods.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time allowed to send the complete request head (slowloris defence).
    pub header_read_timeout_secs: u64,
    /// Time allowed for the TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// Concurrent connections served; further ones wait in the kernel backlog.
    pub connections_max: usize,
    /// Concurrent connections from one peer address; a further one is closed at once, so
    /// one client cannot take every slot. Behind a trusted proxy every connection comes
    /// from the proxy: set it to `connections_max` there.
    pub connections_per_address_max: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            tls_handshake_timeout_secs: 10,
            connections_max: 1024,
            connections_per_address_max: 64,
        }
    }
}

/// Open connections per peer address (see [`ConnLimits::connections_per_address_max`]).
#[derive(Clone, Default)]
struct PerAddress(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One counted connection; uncounted when dropped.
struct AddressSlot {
    table: PerAddress,
    ip: std::net::IpAddr,
}

impl PerAddress {
    fn take(&self, ip: std::net::IpAddr, max: usize) -> Option<AddressSlot> {
        let mut t = self.0.lock().ok()?;
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.0.lock()
            && let Some(n) = t.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// TLS could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file is missing or holds no certificate.
    #[error("cannot read a PEM certificate chain from `{0}`")]
    Cert(String),
    /// The key file is missing or holds no private key.
    #[error("cannot read a PEM private key from `{0}`")]
    Key(String),
    /// rustls refused the pair.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// Builds a rustls server config that speaks **TLS 1.3 only** (RFC 8446), with the
/// aws-lc-rs provider, offering only `http/1.1` by ALPN (see [`serve`]).
///
/// # Errors
/// [`TlsError`] when the files cannot be read or do not match.
pub fn tls13_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|_| TlsError::Cert(cert.display().to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Cert(cert.display().to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(cert.display().to_string()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::Key(key.display().to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // HTTP/1.1 only: hyper has no idle or preface timeout for HTTP/2, so an HTTP/2 client
    // that opens a connection and stays silent would hold a connection slot forever.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `router` on `listener` until `shutdown` turns true.
///
/// HTTP/1.1 only (RFC 9112): HTTP/2 is not served, because hyper gives an HTTP/2 connection
/// that sent its preface no idle timeout, and slots are a limited resource.
/// Each connection gets the header-read timeout; over TLS, the handshake timeout too.
/// The peer address is attached as [`axum::extract::ConnectInfo`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let per_address = PerAddress::default();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
            _ = shutdown.changed() => return,
        };
        // One address over its share: closed at once (the stream is dropped), uncounted.
        let Some(address_slot) = per_address.take(peer.ip(), limits.connections_per_address_max)
        else {
            tracing::debug!(peer = %peer, "connection refused: too many from this address");
            continue;
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _address_slot = address_slot;
            let svc = TowerToHyperService::new(tower::ServiceExt::map_request(
                router,
                move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                },
            ));
            let first_byte = Duration::from_secs(limits.header_read_timeout_secs);
            let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs))
                .max_buf_size(64 * 1024);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(64);
            let result = match acceptor {
                Some(acc) => {
                    let hs = tokio::time::timeout(
                        Duration::from_secs(limits.tls_handshake_timeout_secs),
                        acc.accept(stream),
                    )
                    .await;
                    match hs {
                        Ok(Ok(tls)) => {
                            builder
                                .serve_connection(
                                    TokioIo::new(FirstByteDeadline::new(tls, first_byte)),
                                    svc,
                                )
                                .await
                        }
                        _ => return,
                    }
                }
                None => {
                    builder
                        .serve_connection(
                            TokioIo::new(FirstByteDeadline::new(stream, first_byte)),
                            svc,
                        )
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
            }
        });
    }
}

/// The peer address of a request, as attached by [`serve`].
pub type PeerAddr = axum::extract::ConnectInfo<SocketAddr>;

/// An I/O stream whose reads fail with `TimedOut` if no byte arrives within a deadline after
/// the connection starts.
///
/// hyper's `header_read_timeout` only runs once HTTP/1 parsing has begun; before that, the
/// protocol sniffing of the `auto` builder reads with no timer, so a client that connects and
/// sends nothing would hold a connection slot forever (slowloris). After the first byte the
/// deadline is gone and hyper's own timeouts apply.
struct FirstByteDeadline<IO> {
    io: IO,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> FirstByteDeadline<IO> {
    fn new(io: IO, within: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return res;
        };
        match res {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the deadline",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
