//! The inbound port: what the HTTP server hands each request to.

use std::future::Future;
use std::net::SocketAddr;

use http::{Request, Response};

use crate::body::Body;

/// The application, as the HTTP server sees it. Every request gets an
/// answer: errors are already turned into Portainer-shaped responses.
pub trait RequestHandler: Clone + Send + Sync + 'static {
    fn handle(
        &self,
        request: Request<Body>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// A request extension: the connection presented a client certificate
/// that the server's CA verified during the TLS handshake (a handshake
/// with a certificate that does not verify never gets this far).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedClientCertificate;
