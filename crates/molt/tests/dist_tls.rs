//! Mutual TLS between nodes (`NodeConfig::tls`), with certificates made
//! for the test by rcgen: nodes whose certificates one authority signed
//! talk as plain ones do; a node without TLS, a certificate from another
//! authority, or one for another host is refused at the door, counted, and
//! every node goes on. A PEM file without what it should hold is named.

mod support;

use molt::{ConnectError, Node, NodeConfig, Tls, TlsError};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use support::dist::{dist_config, eventually, round_trip};

/// A certificate authority, and its certificate as PEM.
fn authority() -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let certificate = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), certificate.pem())
}

/// A node's TLS: a certificate for `host` signed by `issuer`, trusting
/// `trusted` (an authority's PEM).
fn tls_for(issuer: &Issuer<'static, KeyPair>, trusted: &str, host: &str) -> Tls {
    let key = KeyPair::generate().unwrap();
    let certificate = CertificateParams::new(vec![host.to_owned()]).unwrap().signed_by(&key, issuer).unwrap();
    Tls::from_pem(certificate.pem().as_bytes(), key.serialize_pem().as_bytes(), trusted.as_bytes()).unwrap()
}

fn tls_node(name: &str, tls: Tls) -> Node {
    Node::start(dist_config(name).tls(tls)).unwrap()
}

#[test]
fn nodes_whose_certificates_one_authority_signed_talk_over_tls() {
    let (issuer, pem) = authority();
    let a = tls_node("a", tls_for(&issuer, &pem, "127.0.0.1"));
    let b = tls_node("b", tls_for(&issuer, &pem, "127.0.0.1"));
    a.connect(b.name()).expect("a connects to b over TLS");
    for n in 1..=3 {
        assert_eq!(round_trip(&a, &b, n), Ok(Ok(n)));
        assert_eq!(round_trip(&b, &a, n), Ok(Ok(n)));
    }
    assert_eq!((a.dist_counts(), b.dist_counts()), ((0, 0), (0, 0)));
    // The bytes are TLS: a node that speaks the plain protocol, with the
    // right secret, is refused, and b goes on.
    let plain = Node::start(dist_config("plain")).unwrap();
    assert!(matches!(plain.connect(b.name()), Err(ConnectError::Failed { .. })));
    eventually("b counts the refusal", || b.dist_counts().1 == 1);
    assert_eq!(round_trip(&a, &b, 4), Ok(Ok(4)));
}

#[test]
fn a_certificate_from_another_authority_is_refused_both_ways() {
    let (issuer, pem) = authority();
    let (stranger, stranger_pem) = authority();
    let a = tls_node("a", tls_for(&issuer, &pem, "127.0.0.1"));
    let b = tls_node("b", tls_for(&issuer, &pem, "127.0.0.1"));
    // Signed by another authority, trusting it too: refused by b, and b's
    // certificate refused by it.
    let c = tls_node("c", tls_for(&stranger, &stranger_pem, "127.0.0.1"));
    let refused = c.connect(b.name()).unwrap_err();
    assert!(refused.to_string().contains("TLS"), "{refused}");
    let refused = b.connect(c.name()).unwrap_err();
    assert!(refused.to_string().contains("TLS"), "{refused}");
    eventually("both count a refusal", || b.dist_counts().1 == 1 && c.dist_counts().1 == 1);
    // Signed by another authority, trusting the right one: b refuses it.
    let d = tls_node("d", tls_for(&stranger, &pem, "127.0.0.1"));
    assert!(d.connect(b.name()).is_err());
    eventually("b counts the second refusal", || b.dist_counts().1 == 2);
    a.connect(b.name()).expect("a still connects");
    assert_eq!(round_trip(&a, &b, 5), Ok(Ok(5)));
}

#[test]
fn a_certificate_for_another_host_is_refused_both_ways() {
    let (issuer, pem) = authority();
    let a = tls_node("a", tls_for(&issuer, &pem, "127.0.0.1"));
    // b's certificate is for another address than its name says: the
    // dialer refuses it, and so does the side it dials once b says its
    // name (a certificate only makes a node of its own host).
    let b = tls_node("b", tls_for(&issuer, &pem, "10.1.2.3"));
    let refused = a.connect(b.name()).unwrap_err();
    assert!(refused.to_string().contains("TLS"), "{refused}");
    let refused = b.connect(a.name()).unwrap_err();
    assert!(refused.to_string().contains("its TLS certificate is not for the host in its node name"), "{refused}");
    eventually("a counts the refusal", || a.dist_counts().1 == 1);
    let c = tls_node("c", tls_for(&issuer, &pem, "127.0.0.1"));
    c.connect(a.name()).expect("c connects to a");
    assert_eq!(round_trip(&c, &a, 6), Ok(Ok(6)));
}

#[test]
fn pem_without_what_it_should_hold_is_named() {
    let (issuer, pem) = authority();
    let key = KeyPair::generate().unwrap();
    let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    let (certificate, key) = (certificate.pem(), key.serialize_pem());
    let missing = |result: Result<Tls, TlsError>| result.unwrap_err().to_string();
    assert_eq!(
        missing(Tls::from_pem(b"nothing", key.as_bytes(), pem.as_bytes())),
        "no certificate in the certificate file: give a PEM file with a certificate in it"
    );
    assert_eq!(
        missing(Tls::from_pem(certificate.as_bytes(), certificate.as_bytes(), pem.as_bytes())),
        "no private key in the key file: give a PEM file with a private key in it"
    );
    assert_eq!(
        missing(Tls::from_pem(certificate.as_bytes(), key.as_bytes(), b"")),
        "no certificate in the authority file: give a PEM file with a certificate in it"
    );
    let unreadable =
        missing(Tls::from_pem_files("/nonexistent/node.pem", "/nonexistent/key.pem", "/nonexistent/ca.pem"));
    assert!(unreadable.starts_with("could not read /nonexistent/node.pem: "), "{unreadable}");
    // The key's text is never shown.
    let tls = Tls::from_pem(certificate.as_bytes(), key.as_bytes(), pem.as_bytes()).unwrap();
    assert_eq!(format!("{tls:?}"), "Tls { .. }");
    let _ = NodeConfig::new("n").tls(tls);
}
