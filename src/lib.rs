//! berth's application layer: the use cases, generic over the ports, and
//! the pieces `main.rs` wires together.
//!
//! - [`agent`]: the request handler: asks the domain where a request goes
//!   and executes the answer.
//! - [`proxy`]: the one proxy core: forwards a request to an engine with
//!   bodies streamed both ways and upgrades spliced; [`coalesce`] joins the
//!   engine's small answer frames before they are written.
//! - [`browse`]: `/browse/*` through the confined `Files` port.
//! - [`cluster`]: forwarding to other agents, cluster-wide lists, `/agents`,
//!   tags and joining.
//! - [`console`]: websocket consoles bridged to the engine's attach and exec.
//! - [`kubernetes`]: the `/kubernetes` proxy to the API server of the
//!   cluster berth serves, through the `KubernetesApi` port, and
//!   [`pod_console`], `/websocket/pod`'s console into a pod's container.
//! - [`edge`]: Edge mode: the key, its page, the API gate, polling and the
//!   tunnel driver.
//! - [`responses`]: Portainer-shaped answers and the common headers.
//! - [`signature`]: the Portainer signature check; [`security`]: the
//!   shutdown of an agent nobody paired with.
//! - [`facts`]: keeps the engine facts fresh.
//! - [`metrics`]: Prometheus counters and their unsigned endpoint.
//! - [`registry_lookup`]: the registry credentials of the Edge stack being
//!   deployed, served on loopback to [`credential_helper`], the docker
//!   credential helper berth also is.
//! - [`dockerhub`]: Docker Hub's pull limits for `POST /v2/dockerhub`.
//! - [`cli`] and [`logging`]: options from flags and environment, tracing.

pub mod advertise;
pub mod agent;
pub mod browse;
pub mod cli;
pub mod cluster;
pub mod coalesce;
pub mod console;
pub mod credential_helper;
pub mod dockerhub;
pub mod edge;
pub mod facts;
pub mod in_flight;
pub mod kubernetes;
pub mod kubernetes_stack;
pub mod logging;
pub mod metrics;
pub mod operator;
pub mod pod_console;
pub mod proxy;
pub mod registry_lookup;
pub mod responses;
pub mod security;
pub mod signature;
pub mod status;

pub use agent::Agent;
