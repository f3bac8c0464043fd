//! The `KubernetesObjects` port with kube-rs: discovery of an object's
//! resource (CustomResourceDefinitions' kinds included) and server-side
//! apply, over the `KubernetesApi` port's connection to the API server.
//! kube's client takes any tower service as its transport, so it uses the
//! same verified, pooled connection and the same credential handling as the
//! proxy, and brings no TLS stack of its own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_domain::kubernetes::Credential;
use berth_domain::kubernetes_stack::{Manifest, Refusal, FIELD_MANAGER};
use berth_ports::{Body, BoxError, KubernetesApi, KubernetesError, KubernetesObjects};
use berth_ports::{Change, ObjectsError};
use http::{Request, Response};
use http_body_util::BodyExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::Client;
use tower_service::Service;

/// The longest one object's discovery and apply may take.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a new CustomResourceDefinition may take to be established.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an establishing CustomResourceDefinition is looked at.
const ESTABLISHED_POLL: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct ClusterObjects<K> {
    api: K,
}

impl<K: KubernetesApi> ClusterObjects<K> {
    pub fn new(api: K) -> Self {
        ClusterObjects { api }
    }

    /// A kube client whose requests carry `credential`; cheap, so each
    /// stack request has its own and no caller's token outlives it.
    fn client(&self, credential: Credential) -> Client {
        Client::new(
            Transport {
                api: self.api.clone(),
                credential,
            },
            berth_domain::kubernetes_stack::DEFAULT_NAMESPACE,
        )
    }

    /// The API of `manifest`'s resource, in its namespace if the resource
    /// is namespaced, and the object as it is to be sent there.
    async fn resource_of(
        &self,
        manifest: &Manifest,
        credential: Credential,
    ) -> Result<(Api<DynamicObject>, serde_json::Value), ObjectsError> {
        let client = self.client(credential);
        let kind = GroupVersionKind::gvk(manifest.group(), manifest.version(), &manifest.kind);
        let (resource, capabilities) =
            discovery::pinned_kind(&client, &kind)
                .await
                .map_err(|error| match error {
                    kube::Error::Api(status) if status.code == 404 => {
                        ObjectsError::Refused(Refusal::UnknownKind)
                    }
                    kube::Error::Discovery(_) => ObjectsError::Refused(Refusal::UnknownKind),
                    other => objects_error(other),
                })?;
        let mut object = manifest.object.clone();
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(client, &manifest.namespace, &resource),
            Scope::Cluster => {
                if let Some(metadata) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    metadata.remove("namespace");
                }
                Api::all_with(client, &resource)
            }
        };
        Ok((api, object))
    }

    /// The API of `manifest`'s resource; none when its kind is gone (a
    /// definition deleted before its objects): nothing of it is left.
    async fn api_if_known(
        &self,
        manifest: &Manifest,
        credential: Credential,
    ) -> Result<Option<Api<DynamicObject>>, ObjectsError> {
        match self.resource_of(manifest, credential).await {
            Ok((api, _)) => Ok(Some(api)),
            Err(ObjectsError::Refused(Refusal::UnknownKind)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn apply_once(
        &self,
        manifest: &Manifest,
        dry_run: bool,
        credential: Credential,
    ) -> Result<Change, ObjectsError> {
        let (api, object) = self.resource_of(manifest, credential).await?;
        let before = if dry_run {
            None
        } else {
            api.get_opt(&manifest.name)
                .await
                .map_err(objects_error)?
                .map(as_json)
                .transpose()?
        };
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        let applied = api
            .patch(&manifest.name, &params, &Patch::Apply(&object))
            .await
            .map_err(objects_error)?;
        Ok(Change {
            before,
            after: as_json(applied)?,
        })
    }

    async fn established(&self, name: &str, credential: Credential) -> Result<(), ObjectsError> {
        // Read untyped: k8s-openapi's CustomResourceDefinition, with its
        // whole schema type, adds 140 KB to the static binary for one
        // condition (scripts/build-release amd64, 21,032,368 → 20,892,336
        // bytes).
        let kind = GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition");
        let resource = ApiResource::from_gvk_with_plural(&kind, "customresourcedefinitions");
        let definitions: Api<DynamicObject> = Api::all_with(self.client(credential), &resource);
        loop {
            let definition = definitions.get(name).await.map_err(objects_error)?;
            let conditions = definition.data["status"]["conditions"].as_array().cloned();
            let established = conditions.unwrap_or_default().iter().any(|condition| {
                condition["type"] == "Established" && condition["status"] == "True"
            });
            if established {
                return Ok(());
            }
            tokio::time::sleep(ESTABLISHED_POLL).await;
        }
    }
}

impl<K: KubernetesApi> KubernetesObjects for ClusterObjects<K> {
    async fn apply(
        &self,
        manifest: &Manifest,
        dry_run: bool,
        credential: Credential,
    ) -> Result<Change, ObjectsError> {
        let what = format!("applying {}", manifest.label());
        within(
            APPLY_TIMEOUT,
            what,
            self.apply_once(manifest, dry_run, credential),
        )
        .await
    }

    async fn delete(
        &self,
        manifest: &Manifest,
        credential: Credential,
    ) -> Result<(), ObjectsError> {
        let deleting = async {
            let Some(api) = self.api_if_known(manifest, credential).await? else {
                return Ok(());
            };
            match api
                .delete(&manifest.name, &DeleteParams::background())
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(error) => Err(objects_error(error)),
            }
        };
        within(
            APPLY_TIMEOUT,
            format!("deleting {}", manifest.label()),
            deleting,
        )
        .await
    }

    async fn exists(
        &self,
        manifest: &Manifest,
        credential: Credential,
    ) -> Result<bool, ObjectsError> {
        let looking = async {
            let Some(api) = self.api_if_known(manifest, credential).await? else {
                return Ok(false);
            };
            let found = api.get_opt(&manifest.name).await.map_err(objects_error)?;
            Ok(found.is_some())
        };
        within(
            APPLY_TIMEOUT,
            format!("looking for {}", manifest.label()),
            looking,
        )
        .await
    }

    async fn wait_established(
        &self,
        name: &str,
        credential: Credential,
    ) -> Result<(), ObjectsError> {
        let what = format!("establishing customresourcedefinition {name}");
        within(
            ESTABLISHED_TIMEOUT,
            what,
            self.established(name, credential),
        )
        .await
    }
}

/// `work`, given `limit` at most.
async fn within<T>(
    limit: Duration,
    what: String,
    work: impl Future<Output = Result<T, ObjectsError>>,
) -> Result<T, ObjectsError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(ObjectsError::Timeout {
            what,
            after_seconds: limit.as_secs(),
        })
    })
}

/// The API server's refusals keep their code and message; a failure to ask
/// it keeps the port's error.
fn objects_error(error: kube::Error) -> ObjectsError {
    match error {
        kube::Error::Api(status) => ObjectsError::Refused(Refusal::Refused {
            status: status.code,
            message: status.message,
        }),
        kube::Error::Service(error) => match error.downcast::<KubernetesError>() {
            Ok(error) => ObjectsError::Api(*error),
            Err(other) => unexpected(other.to_string()),
        },
        other => unexpected(other.to_string()),
    }
}

fn as_json(object: DynamicObject) -> Result<serde_json::Value, ObjectsError> {
    serde_json::to_value(object).map_err(|error| unexpected(error.to_string()))
}

fn unexpected(message: String) -> ObjectsError {
    ObjectsError::Refused(Refusal::Refused {
        status: 502,
        message,
    })
}

/// kube's transport: each request through the `KubernetesApi` port, with
/// the stack request's credential.
struct Transport<K> {
    api: K,
    credential: Credential,
}

impl<K: KubernetesApi> Service<Request<kube::client::Body>> for Transport<K> {
    type Response = Response<Body>;
    type Error = KubernetesError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, KubernetesError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), KubernetesError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let api = self.api.clone();
        let credential = self.credential.clone();
        let (parts, body) = request.into_parts();
        let body = body
            .map_err(|error| Box::new(error) as BoxError)
            .boxed_unsync();
        Box::pin(async move {
            api.forward(Request::from_parts(parts, body), credential)
                .await
        })
    }
}
