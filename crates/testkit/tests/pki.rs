//! The test PKI works in real rustls handshakes (mTLS included) and writes usable files.

use std::net::SocketAddr;
use std::sync::Arc;

use apiguard_testkit::{ALPN_H2, ALPN_HTTP11, ClientCertPolicy, ClientIdentity, TestPki};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Serves one TLS connection that answers "pong" to "ping"; returns the outcome of the
/// client side: the negotiated ALPN on success.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: &str,
) -> Result<Option<Vec<u8>>, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(server)
            .accept(stream)
            .await
            .map_err(|e| e.to_string())?;
        let mut ping = [0; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())
    });

    let stream = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let client_side = async {
        let mut tls = TlsConnector::from(client)
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())?;
        // With TLS 1.3 a rejected client certificate surfaces on the first read.
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut pong = [0; 4];
        tls.read_exact(&mut pong).await.map_err(|e| e.to_string())?;
        assert_eq!(&pong, b"pong");
        Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    };
    let outcome = client_side.await;
    let _ = server_task.await;
    outcome
}

#[tokio::test]
async fn tls_with_alpn_for_localhost_and_ip() {
    let pki = TestPki::new();
    let server = pki.server_config(ClientCertPolicy::NotRequested, &[ALPN_H2, ALPN_HTTP11]);
    let client = pki.client_config(ClientIdentity::Anonymous, &[ALPN_H2]);
    let alpn = handshake(server.clone(), client.clone(), "localhost")
        .await
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(ALPN_H2));
    handshake(server.clone(), client, "127.0.0.1")
        .await
        .unwrap();

    let http11 = pki.client_config(ClientIdentity::Anonymous, &[ALPN_HTTP11]);
    let alpn = handshake(server.clone(), http11, "localhost")
        .await
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(ALPN_HTTP11));

    // A certificate for localhost is not valid for another name.
    let client = pki.client_config(ClientIdentity::Anonymous, &[]);
    assert!(handshake(server, client, "example.com").await.is_err());
}

#[tokio::test]
async fn mtls_accepts_only_the_ca_signed_client() {
    let pki = TestPki::new();
    let server = pki.server_config(ClientCertPolicy::Required, &[]);

    let trusted = pki.client_config(ClientIdentity::Trusted, &[]);
    handshake(server.clone(), trusted, "localhost")
        .await
        .unwrap();

    let anonymous = pki.client_config(ClientIdentity::Anonymous, &[]);
    assert!(
        handshake(server.clone(), anonymous, "localhost")
            .await
            .is_err()
    );

    let untrusted = pki.client_config(ClientIdentity::Untrusted, &[]);
    assert!(handshake(server, untrusted, "localhost").await.is_err());

    let optional = pki.server_config(ClientCertPolicy::Optional, &[]);
    let anonymous = pki.client_config(ClientIdentity::Anonymous, &[]);
    handshake(optional, anonymous, "localhost").await.unwrap();
}

#[tokio::test]
async fn a_client_trusting_another_pki_rejects_the_server() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let server = pki.server_config(ClientCertPolicy::NotRequested, &[]);
    let client = other.client_config(ClientIdentity::Anonymous, &[]);
    assert!(handshake(server, client, "localhost").await.is_err());
}

#[test]
fn pem_files_are_written_and_removed() {
    let pki = TestPki::new();
    let files = pki.write_pem_files().unwrap();
    let dir = files.dir().to_path_buf();
    for (path, marker) in [
        (&files.ca_cert, "CERTIFICATE"),
        (&files.server_cert, "CERTIFICATE"),
        (&files.server_key, "PRIVATE KEY"),
        (&files.client_cert, "CERTIFICATE"),
        (&files.client_key, "PRIVATE KEY"),
        (&files.untrusted_ca_cert, "CERTIFICATE"),
        (&files.untrusted_client_cert, "CERTIFICATE"),
        (&files.untrusted_client_key, "PRIVATE KEY"),
    ] {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.starts_with(&format!("-----BEGIN {marker}-----")),
            "{path:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&files.ca_cert).unwrap(),
        pki.ca_cert_pem()
    );
    drop(files);
    assert!(!dir.exists());
}
