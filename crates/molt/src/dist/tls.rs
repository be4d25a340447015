//! Mutual TLS for links between machines (rustls, through tokio-rustls):
//! both ends of a connection present a certificate signed by the authority
//! the other trusts, and the dialer checks that the certificate is for the
//! host in the node's name. The handshake over the group's secret runs as
//! before, inside the encrypted stream: TLS decides which machines may
//! talk and keeps the bytes private, the secret which nodes form a group.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream a connection runs over: plain TCP, or TLS over it.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin + std::any::Any {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// The TCP stream `io` is, when it is plain TCP (senders may then write
/// to it themselves, `link.rs`); else `io` back.
pub(crate) fn plain(io: Box<dyn Transport>) -> Result<TcpStream, Box<dyn Transport>> {
    if !(&*io as &dyn std::any::Any).is::<TcpStream>() {
        return Err(io);
    }
    let io: Box<dyn std::any::Any> = io;
    Ok(*io.downcast::<TcpStream>().unwrap_or_else(|_| unreachable!("checked to be a TcpStream")))
}

/// A node's side of mutual TLS: its certificate and key, and the authority
/// whose certificates it accepts from its peers. Give it to
/// [`NodeConfig::tls`](crate::NodeConfig::tls); every node of the group
/// needs one (a node without TLS cannot talk to one with it).
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Nothing of the key.
        f.write_str("Tls { .. }")
    }
}

/// Why a [`Tls`] could not be made.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("could not read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The PEM holds no certificate, or no private key, where one is needed.
    #[error("no {what} in the {file}: give a PEM file with a {what} in it")]
    Missing {
        /// What was looked for.
        what: &'static str,
        /// Which file it was looked for in.
        file: &'static str,
    },
    /// rustls refused the certificates or the key.
    #[error("the certificates or key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The authority's certificates do not make a verifier of peers.
    #[error("the authority's certificates cannot verify peers: {0}")]
    Authority(String),
}

impl Tls {
    /// Reads the node's certificate chain, its private key and the
    /// authority's certificates from PEM files.
    pub fn from_pem_files(
        certificate: impl AsRef<Path>,
        key: impl AsRef<Path>,
        authority: impl AsRef<Path>,
    ) -> Result<Tls, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
        };
        Tls::from_pem(&read(certificate.as_ref())?, &read(key.as_ref())?, &read(authority.as_ref())?)
    }

    /// As [`Tls::from_pem_files`], from the PEM text itself.
    pub fn from_pem(certificate: &[u8], key: &[u8], authority: &[u8]) -> Result<Tls, TlsError> {
        let chain = certificates(certificate, "certificate file")?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|_| TlsError::Missing { what: "private key", file: "key file" })?;
        let mut roots = RootCertStore::empty();
        for root in certificates(authority, "authority file")? {
            roots.add(root)?;
        }
        let roots = Arc::new(roots);
        // ring: pure Rust and assembly, built by cargo alone.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError::Authority(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Opens TLS over a connection dialed to the node `name`, whose
    /// certificate must be for the host in the name (not for whatever
    /// address, a proxy's say, was dialed).
    pub(crate) async fn connect(&self, name: &str, stream: TcpStream) -> std::io::Result<Box<dyn Transport>> {
        let host = host_of(name).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{name:?} has no host TLS can check"))
        })?;
        Ok(Box::new(self.connector.connect(host, stream).await?))
    }

    /// Opens TLS over an accepted connection; the peer's certificate, for
    /// [`is_for`] once the peer says its name.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<(Box<dyn Transport>, Option<CertificateDer<'static>>)> {
        let stream = self.acceptor.accept(stream).await?;
        let certificate = stream.get_ref().1.peer_certificates().and_then(<[_]>::first).map(|c| c.clone().into_owned());
        Ok((Box::new(stream), certificate))
    }
}

/// The host in a node name (`name@host:port`), as TLS checks it.
fn host_of(name: &str) -> Option<ServerName<'static>> {
    let (_, address) = super::parse_name(name).ok()?;
    let (host, _) = address.rsplit_once(':')?;
    ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned()).ok()
}

/// Whether `certificate` (which the authority signed: TLS checked) is for
/// the host in the node name `name`: a machine that holds a certificate
/// may only call itself a node of its own host.
pub(crate) fn is_for(certificate: &CertificateDer<'_>, name: &str) -> bool {
    let Some(host) = host_of(name) else { return false };
    webpki::EndEntityCert::try_from(certificate).is_ok_and(|end| end.verify_is_valid_for_subject_name(&host).is_ok())
}

/// Every certificate in a PEM text; at least one.
fn certificates(pem: &[u8], file: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Missing { what: "certificate", file })?;
    if chain.is_empty() {
        return Err(TlsError::Missing { what: "certificate", file });
    }
    Ok(chain)
}
