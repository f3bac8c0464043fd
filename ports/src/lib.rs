//! berth's ports: the traits the application drives and the adapters
//! implement, each beside the error type it returns.
//!
//! Ports are `Clone + Send + Sync + 'static`, and their methods return
//! `impl Future<…> + Send`, so a service can be generic over them and be
//! tested with in-memory fakes.

pub mod body;
pub mod clock;
pub mod deployer;
pub mod docker_engine;
pub mod files;
pub mod host_probe;
pub mod key_store;
pub mod kubernetes_api;
pub mod kubernetes_objects;
pub mod membership;
pub mod peer_agents;
pub mod portainer_api;
pub mod request_handler;
pub mod scheduler;
pub mod script_host;
pub mod tunnel_client;

pub use body::{empty_body, full_body, read_bounded, Body, BoxError};
pub use clock::Clock;
pub use deployer::{DeployError, Deployer, Deployment, ProjectState, StackEngine};
pub use docker_engine::{DockerEngine, EngineError};
pub use files::{FileRead, Files, FilesError};
pub use host_probe::{HostProbe, HostProbeError};
pub use key_store::{KeyStore, KeyStoreError};
pub use kubernetes_api::{KubernetesApi, KubernetesError};
pub use kubernetes_objects::{Change, KubernetesObjects, ObjectsError};
pub use membership::{Membership, MembershipError};
pub use peer_agents::{PeerAgents, PeerError};
pub use portainer_api::{EdgeAnswer, EdgeCall, PortainerApi, PortainerError};
pub use request_handler::{ConnectionStanding, RequestHandler, VerifiedClientCertificate};
pub use scheduler::{JobRun, Scheduler, SchedulerError};
pub use script_host::{ScriptError, ScriptHost, ScriptOutcome};
pub use tunnel_client::{OpenTunnel, TunnelClient, TunnelError, TunnelSpec};
