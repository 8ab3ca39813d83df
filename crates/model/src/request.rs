//! The read-only view of a request that pipeline stages inspect.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};

/// Who is on the other end of the connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The peer address of the TCP connection.
    pub peer: SocketAddr,
    /// Whether the connection arrived over TLS.
    pub tls: bool,
    /// The verified client certificate's subject (mTLS), when there is one.
    pub client_cert_subject: Option<String>,
    /// The verified client certificate's DNS and URI subject alternative names (mTLS).
    pub client_cert_sans: Vec<String>,
}

/// A request as the pipeline sees it: the head, and the body when a stage asked for it and it
/// fitted the inspection limit.
#[derive(Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
    pub client: &'a ClientInfo,
    /// The id of the route the request matched.
    pub route: &'a str,
    /// The request id (also sent upstream and returned to the client).
    pub request_id: &'a str,
    /// The buffered body, when some stage needs it and it is within the inspection limit.
    pub body: Option<&'a Bytes>,
}

impl RequestView<'_> {
    /// The path part of the request target, still percent-encoded.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query string without the `?`, still percent-encoded.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }
}
