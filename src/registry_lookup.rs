//! The registry credential lookup (reference §10.11): while an Edge stack
//! deploys, the docker and compose CLIs ask berth's credential helper for
//! a registry's credentials, and the helper asks this server, on loopback
//! (`AGENT_CREDENTIALS_ADDR`, `127.0.0.1:9005` as the Go agent's).
//!
//! `GET /lookup?serverurl=…` answers the credentials of the stack being
//! deployed for that registry, else `204`. Outside Edge mode nothing is
//! ever being deployed, so the answer is `204` (the Go agent's handler
//! crashes there).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use berth_domain::browse::query_value;
use berth_domain::edge::registry::{lookup, RegistryCredential};
use berth_ports::{Body, RequestHandler};
use http::{Method, Request, Response};

use crate::responses::{json, method_not_allowed, no_content, not_found};

/// The credentials of the stack being deployed, shared between Edge
/// stacks (which set them) and the lookup server (which reads them).
#[derive(Clone, Default)]
pub struct CredentialsInUse(Arc<Mutex<Vec<RegistryCredential>>>);

impl CredentialsInUse {
    /// Serves `credentials` until the returned guard is dropped.
    pub fn serve(&self, credentials: Vec<RegistryCredential>) -> Serving {
        *self.lock() = credentials;
        Serving(self.clone())
    }

    pub fn find(&self, server_url: &str) -> Option<RegistryCredential> {
        lookup(&self.lock(), server_url).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RegistryCredential>> {
        // The list is replaced whole, so a panic elsewhere cannot leave it
        // half-written: a poisoned lock is still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Credentials are served while this lives; dropping it forgets them, so
/// they are never handed out after their stack's deploy.
pub struct Serving(CredentialsInUse);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.lock().clear();
    }
}

#[derive(Clone)]
pub struct CredentialLookup {
    credentials: CredentialsInUse,
}

impl CredentialLookup {
    pub fn new(credentials: CredentialsInUse) -> Self {
        CredentialLookup { credentials }
    }
}

impl RequestHandler for CredentialLookup {
    async fn handle(&self, request: Request<Body>, _peer: SocketAddr) -> Response<Body> {
        if request.uri().path() != "/lookup" {
            return not_found();
        }
        if request.method() != Method::GET {
            return method_not_allowed();
        }
        let server_url = query_value(request.uri().query(), "serverurl").unwrap_or_default();
        match self.credentials.find(&server_url) {
            Some(credential) => json(&credential.to_json()),
            None => no_content(),
        }
    }
}
