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

/// A request extension: what the connection's earlier requests showed of
/// their signatures, shared by every request of one connection (the HTTP
/// server makes one per connection).
#[derive(Debug, Clone, Default)]
pub struct ConnectionStanding(std::sync::Arc<std::sync::atomic::AtomicU8>);

impl ConnectionStanding {
    pub fn get(&self) -> berth_domain::signature::overlap::Standing {
        use berth_domain::signature::overlap::Standing;
        match self.0.load(std::sync::atomic::Ordering::Acquire) {
            0 => Standing::Unproven,
            1 => Standing::Proven,
            _ => Standing::Failed,
        }
    }

    /// Records a request whose signature did (or did not) pass.
    pub fn record(&self, passed: bool) {
        use berth_domain::signature::overlap::Standing;
        let code = match self.get().after(passed) {
            Standing::Unproven => 0,
            Standing::Proven => 1,
            Standing::Failed => 2,
        };
        // A failure wins over a success recorded at the same time by
        // another request of the connection (HTTP/1.1 sends them one at a
        // time, but nothing here should depend on it).
        self.0.fetch_max(code, std::sync::atomic::Ordering::AcqRel);
    }
}
