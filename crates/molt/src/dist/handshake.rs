//! The handshake that opens a connection between two nodes: protocol
//! version, names and incarnations, then mutual authentication by
//! challenge and response over the shared secret (Erlang's distribution
//! handshake, with HMAC-SHA256 in place of MD5 and fresh nonces from both
//! sides). The secret never crosses the wire, and the side that accepted
//! proves itself only after the side that connected did, so a stranger
//! learns nothing it could replay.
//!
//! ```text
//! connecting side                      accepting side
//!   Hello { protocol, name, creation, nonce_c, session, resume } ->
//!                                <- Answer::Challenge { name, creation, nonce_s }
//!                                   (or Answer::Refused: protocol, name)
//!   Proof(HMAC(secret, "client", nonce_s, nonce_c, names)) ->
//!                                <- Verdict::Welcome(HMAC(secret, "server", nonce_c, nonce_s, names))
//!                                   (or Verdict::Refused: a wrong proof, or
//!                                   the nodes are connected already)
//! ```
//!
//! `session` names the session the connection carries (the connecting
//! side draws it for a new one); `resume` asks to carry on one whose
//! connection broke. Both are under the proofs.
//!
//! Only a peer that proved it holds the secret is let near the node's
//! state (its table of peers): a stranger can learn nothing of it, and
//! change nothing.

use std::fmt;

use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::Secret;

/// The distribution protocol this node speaks; a peer that speaks another
/// is refused by name.
pub(crate) const PROTOCOL: u32 = 6;

/// The longest handshake message: names are short, and a stranger must
/// not make a pending handshake hold much memory.
const HANDSHAKE_FRAME: usize = 4096;

type Nonce = [u8; 32];

/// The first message, from the connecting side.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Hello {
    pub(super) protocol: u32,
    pub(super) name: String,
    pub(super) creation: u32,
    pub(super) nonce: Nonce,
    pub(super) session: u64,
    pub(super) resume: bool,
}

/// The accepting side's answer to a [`Hello`].
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Challenge { name: String, creation: u32, nonce: Nonce },
    Refused(Refusal),
}

/// The accepting side's last word.
#[derive(Debug, Serialize, Deserialize)]
enum Verdict {
    Welcome(Proof),
    Refused(Refusal),
}

/// Why the accepting side refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Refusal {
    /// The peer speaks another protocol version: this node's.
    Protocol { ours: u32 },
    /// Both nodes connected to each other at once, and this one's own
    /// connection goes on (the greater name's does, as in Erlang).
    Simultaneous,
    /// The nodes are connected already.
    AlreadyConnected,
    /// The name is this node's own, or not a node name.
    BadName,
    /// The proof was wrong: the peer does not hold the secret.
    WrongSecret,
    /// The session to resume is still closing its broken connection: try
    /// again in a moment.
    Busy,
    /// There is no session to resume: the peer declared this node down.
    UnknownSession,
    /// Its TLS certificate is not for the host in the name it gave.
    CertificateName,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Protocol { ours } => write!(f, "it speaks distribution protocol {ours}, this node {PROTOCOL}"),
            Refusal::Simultaneous => f.write_str("both nodes connected at once; the other connection goes on"),
            Refusal::AlreadyConnected => f.write_str("the nodes are connected already"),
            Refusal::BadName => f.write_str("the name is the peer's own, or not a node name (name@host:port)"),
            Refusal::WrongSecret => f.write_str("authentication failed: the secrets differ"),
            Refusal::Busy => f.write_str("the session's previous connection is still closing; try again"),
            Refusal::UnknownSession => f.write_str("there is no such session to resume any more"),
            Refusal::CertificateName => f.write_str("its TLS certificate is not for the host in its node name"),
        }
    }
}

/// A proof of knowing the secret.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Proof(#[serde(with = "serde_bytes")] pub(super) Vec<u8>);

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection during the handshake")]
    Closed,
    #[error("the peer sent something that is not a handshake message")]
    Garbage,
    #[error("authentication failed: the peer does not hold this node's secret")]
    WrongSecret,
    #[error("the peer refused: {0}")]
    Refused(Refusal),
    #[error("refused the peer: {0}")]
    Refusing(Refusal),
    #[error("the peer answered as {answered}, not {expected}")]
    NotThatNode { expected: String, answered: String },
    #[error("the handshake did not finish within its deadline")]
    Timeout,
    #[error(
        "TLS failed: {0} (each node needs a certificate for the host in its name, signed by an authority \
         the other trusts: see NodeConfig::tls)"
    )]
    Tls(#[source] std::io::Error),
}

/// A peer that passed the handshake.
#[derive(Debug)]
pub(crate) struct Handshaken {
    pub(crate) name: String,
    pub(crate) creation: u32,
    /// The session the connection carries.
    pub(crate) session: u64,
    /// Whether it resumes that session.
    pub(crate) resume: bool,
}

/// A length-delimited connection during the handshake.
pub(crate) type HandshakeStream = Wire<Box<dyn super::tls::Transport>>;

/// Length-delimited frames over any byte stream (a TCP connection, or an
/// in-memory pipe in the fuzz tests).
pub(crate) type Wire<S> = Framed<S, LengthDelimitedCodec>;

pub(crate) fn framed<S: AsyncRead + AsyncWrite>(stream: S) -> Wire<S> {
    Framed::new(stream, LengthDelimitedCodec::builder().max_frame_length(HANDSHAKE_FRAME).new_codec())
}

/// Who this node is, for a handshake.
pub(crate) struct Me<'a> {
    pub(crate) name: &'a str,
    pub(crate) creation: u32,
    pub(crate) secret: &'a Secret,
}

/// Connects as `me` to the node that should be called `expected`, for
/// `session` (to `resume` it, or a new one).
pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut Wire<S>,
    me: &Me<'_>,
    expected: &str,
    session: u64,
    resume: bool,
) -> Result<Handshaken, HandshakeError> {
    let nonce_c = fresh_nonce();
    let hello =
        Hello { protocol: PROTOCOL, name: me.name.to_owned(), creation: me.creation, nonce: nonce_c, session, resume };
    write(stream, &hello).await?;
    let context = Context { session, resume };
    let (name, creation, nonce_s) = match read::<_, Answer>(stream).await? {
        Answer::Challenge { name, creation, nonce } => (name, creation, nonce),
        Answer::Refused(refusal) => return Err(HandshakeError::Refused(refusal)),
    };
    if name != expected {
        return Err(HandshakeError::NotThatNode { expected: expected.to_owned(), answered: name });
    }
    write(
        stream,
        &Proof(proof(
            me.secret,
            View {
                label: b"molt client",
                challenge: &nonce_s,
                own: &nonce_c,
                prover: me.name,
                verifier: &name,
                context,
            },
        )),
    )
    .await?;
    let theirs = match read::<_, Verdict>(stream).await? {
        Verdict::Welcome(Proof(theirs)) => theirs,
        Verdict::Refused(Refusal::WrongSecret) => return Err(HandshakeError::WrongSecret),
        Verdict::Refused(refusal) => return Err(HandshakeError::Refused(refusal)),
    };
    verify(
        me.secret,
        View { label: b"molt server", challenge: &nonce_c, own: &nonce_s, prover: &name, verifier: me.name, context },
        &theirs,
    )?;
    Ok(Handshaken { name, creation, session, resume })
}

/// Accepts a connection as `me`: once the peer proved it holds the
/// secret, `admit` decides from its name and session whether the connection goes on
/// (and takes the peer over, giving `T`). The welcome that ends the
/// handshake comes back unsent, as the connection's first frame: nothing
/// after `admit` may wait (and be cut off by a deadline), or the peer
/// taken over would be left without its connection.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin, T>(
    stream: &mut Wire<S>,
    me: &Me<'_>,
    admit: impl FnOnce(&Handshaken) -> Result<T, Refusal>,
) -> Result<(Handshaken, T, Bytes), HandshakeError> {
    let hello = read::<_, Hello>(stream).await?;
    let refusal = if hello.protocol != PROTOCOL {
        Some(Refusal::Protocol { ours: PROTOCOL })
    } else if hello.name == me.name || super::parse_name(&hello.name).is_err() {
        Some(Refusal::BadName)
    } else {
        None
    };
    if let Some(refusal) = refusal {
        // Best effort: the peer learns why before the close.
        let _ = write(stream, &Answer::Refused(refusal.clone())).await;
        return Err(HandshakeError::Refusing(refusal));
    }
    let nonce_s = fresh_nonce();
    write(stream, &Answer::Challenge { name: me.name.to_owned(), creation: me.creation, nonce: nonce_s }).await?;
    let Proof(theirs) = read::<_, Proof>(stream).await?;
    let context = Context { session: hello.session, resume: hello.resume };
    if verify(
        me.secret,
        View {
            label: b"molt client",
            challenge: &nonce_s,
            own: &hello.nonce,
            prover: &hello.name,
            verifier: me.name,
            context,
        },
        &theirs,
    )
    .is_err()
    {
        let _ = write(stream, &Verdict::Refused(Refusal::WrongSecret)).await;
        return Err(HandshakeError::WrongSecret);
    }
    let peer = Handshaken { name: hello.name, creation: hello.creation, session: hello.session, resume: hello.resume };
    let taken = match admit(&peer) {
        Ok(taken) => taken,
        Err(refusal) => {
            let _ = write(stream, &Verdict::Refused(refusal.clone())).await;
            return Err(HandshakeError::Refusing(refusal));
        }
    };
    let welcome = Proof(proof(
        me.secret,
        View {
            label: b"molt server",
            challenge: &hello.nonce,
            own: &nonce_s,
            prover: me.name,
            verifier: &peer.name,
            context,
        },
    ));
    let welcome = postcard::to_stdvec(&Verdict::Welcome(welcome)).map_err(|_| HandshakeError::Garbage)?;
    Ok((peer, taken, Bytes::from(welcome)))
}

/// A nonce from the operating system's generator.
fn fresh_nonce() -> Nonce {
    let mut nonce = [0; 32];
    // The OS generator fails only on systems molt does not run on; a
    // constant nonce there would make a proof replayable, so stop.
    getrandom::fill(&mut nonce).expect("the operating system's random number generator failed");
    nonce
}

/// What the connecting side asked for, bound into both proofs: nobody can
/// turn a new session into a resumption, or the other way round.
#[derive(Debug, Clone, Copy)]
struct Context {
    session: u64,
    resume: bool,
}

/// One side's view of the handshake, which its proof covers: a label for
/// the side, both nonces (the other side's first, so each proof answers a
/// challenge), both names and the session asked for.
#[derive(Debug, Clone, Copy)]
struct View<'a> {
    label: &'static [u8],
    challenge: &'a Nonce,
    own: &'a Nonce,
    prover: &'a str,
    verifier: &'a str,
    context: Context,
}

/// The MAC over a view; each name goes in with its length.
fn mac(secret: &Secret, view: View<'_>) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes a key of any length");
    mac.update(view.label);
    mac.update(view.challenge);
    mac.update(view.own);
    for name in [view.prover, view.verifier] {
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name.as_bytes());
    }
    mac.update(&view.context.session.to_le_bytes());
    mac.update(&[u8::from(view.context.resume)]);
    mac
}

fn proof(secret: &Secret, view: View<'_>) -> Vec<u8> {
    mac(secret, view).finalize().into_bytes().to_vec()
}

/// Checks a proof in constant time.
fn verify(secret: &Secret, view: View<'_>, proof: &[u8]) -> Result<(), HandshakeError> {
    mac(secret, view).verify_slice(proof).map_err(|_| HandshakeError::WrongSecret)
}

async fn write<S: AsyncRead + AsyncWrite + Unpin, T: Serialize>(
    stream: &mut Wire<S>,
    message: &T,
) -> Result<(), HandshakeError> {
    let bytes = postcard::to_stdvec(message).map_err(|_| HandshakeError::Garbage)?;
    stream.send(Bytes::from(bytes)).await?;
    Ok(())
}

async fn read<S: AsyncRead + AsyncWrite + Unpin, T: serde::de::DeserializeOwned>(
    stream: &mut Wire<S>,
) -> Result<T, HandshakeError> {
    match stream.next().await {
        None => Err(HandshakeError::Closed),
        // An oversized length prefix is garbage too.
        Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => Err(HandshakeError::Garbage),
        Some(Err(e)) => Err(HandshakeError::Io(e)),
        Some(Ok(bytes)) => postcard::from_bytes(&bytes).map_err(|_| HandshakeError::Garbage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_the_secret_the_nonces_and_the_names() {
        let secret = Secret::new("one secret").unwrap();
        let (a, b) = ([1; 32], [2; 32]);
        let context = Context { session: 5, resume: false };
        let good_view =
            View { label: b"molt client", challenge: &a, own: &b, prover: "x@h:1", verifier: "y@h:2", context };
        let good = proof(&secret, good_view);
        assert!(verify(&secret, good_view, &good).is_ok());
        let other = Secret::new("another").unwrap();
        assert!(verify(&other, good_view, &good).is_err());
        let changed = [
            View { label: b"molt server", ..good_view },
            View { challenge: &b, own: &a, ..good_view },
            View { prover: "y@h:2", verifier: "x@h:1", ..good_view },
            // Names are length-prefixed: moving a character between them
            // changes the proof.
            View { prover: "x@h:1y", verifier: "@h:2", ..good_view },
            // The session asked for is bound too.
            View { context: Context { session: 6, resume: false }, ..good_view },
            View { context: Context { session: 5, resume: true }, ..good_view },
        ];
        for view in changed {
            assert!(verify(&secret, view, &good).is_err(), "{view:?}");
        }
    }
}
