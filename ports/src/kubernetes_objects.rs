//! The objects of the cluster berth runs in, as a stack applies them:
//! found by discovery (so CustomResourceDefinitions' kinds too) and
//! applied server-side.

use std::fmt;
use std::future::Future;

use berth_domain::kubernetes::Credential;
use berth_domain::kubernetes_stack::{Manifest, Refusal};

use serde_json::Value;

use crate::kubernetes_api::KubernetesError;

/// An object as the API server held it before an apply (none when the
/// apply created it) and as the apply left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub before: Option<Value>,
    pub after: Value,
}

/// Why an object was not applied.
#[derive(Debug)]
pub enum ObjectsError {
    /// The cluster answered no (see [`Refusal`]).
    Refused(Refusal),
    /// The API server could not be asked.
    Api(KubernetesError),
    /// No answer within the time an object's apply is given.
    Timeout { what: String, after_seconds: u64 },
}

impl fmt::Display for ObjectsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectsError::Refused(Refusal::UnknownKind) => f.write_str("no such kind"),
            ObjectsError::Refused(Refusal::Refused { status, message }) => {
                write!(f, "{status}: {message}")
            }
            ObjectsError::Api(error) => error.fmt(f),
            ObjectsError::Timeout {
                what,
                after_seconds,
            } => write!(f, "{what} took more than {after_seconds}s"),
        }
    }
}

impl std::error::Error for ObjectsError {}

pub trait KubernetesObjects: Clone + Send + Sync + 'static {
    /// Applies `manifest` server-side (berth's field manager, taking over
    /// fields another manager set, as a deploy of the same stack must), in
    /// its namespace if its kind is namespaced, as `credential`. With
    /// `dry_run` the API server checks it all and keeps nothing.
    ///
    /// # Errors
    /// An [`ObjectsError`]; the cluster's refusal carries its own message.
    fn apply(
        &self,
        manifest: &Manifest,
        dry_run: bool,
        credential: Credential,
    ) -> impl Future<Output = Result<Change, ObjectsError>> + Send;

    /// Deletes `manifest`'s object, its dependents in the background as
    /// kubectl does; an object (or a kind) already gone is no error.
    ///
    /// # Errors
    /// An [`ObjectsError`].
    fn delete(
        &self,
        manifest: &Manifest,
        credential: Credential,
    ) -> impl Future<Output = Result<(), ObjectsError>> + Send;

    /// Whether `manifest`'s object exists (one being deleted still does).
    ///
    /// # Errors
    /// An [`ObjectsError`].
    fn exists(
        &self,
        manifest: &Manifest,
        credential: Credential,
    ) -> impl Future<Output = Result<bool, ObjectsError>> + Send;

    /// Waits until the CustomResourceDefinition named `name` is
    /// established, so objects of its kind can be applied.
    ///
    /// # Errors
    /// [`ObjectsError::Timeout`] when it is not established in time.
    fn wait_established(
        &self,
        name: &str,
        credential: Credential,
    ) -> impl Future<Output = Result<(), ObjectsError>> + Send;
}
