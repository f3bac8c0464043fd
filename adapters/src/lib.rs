//! berth's adapters: one module per technology, each implementing a port.
//!
//! - [`docker`]: the `DockerEngine` port over a unix socket or TCP (hyper),
//!   engine facts through bollard.
//! - [`clock`]: the `Clock` port on tokio's timer.
//! - [`peers`]: the `PeerAgents` port, a pooled HTTPS client to other agents.
//! - [`fs`]: the `Files` port with cap-std, confined beneath each root.
//! - [`gossip`]: the `Membership` port on the serf crate.
//! - [`tunnel`]: the `TunnelClient` port, chisel's client (SSH over a
//!   websocket) with berth's own small SSH client.
//! - [`portainer`]: the `PortainerApi` port, one HTTP(S) call per
//!   connection, through a proxy when configured.
//! - [`kubernetes`]: the `KubernetesApi` port, the cluster's API server
//!   over verified HTTPS, with the caller's or the pod's token.
//! - [`kubernetes_objects`]: the `KubernetesObjects` port, kube-rs's
//!   discovery and server-side apply over that same connection.
//! - [`key_file`]: the `KeyStore` port, the Edge key under `DATA_PATH`.
//! - [`dial`]: TCP connections, through an HTTP CONNECT proxy if set.
//! - [`scheduler`]: the `Scheduler` port with the cron crate.
//! - [`deployer`]: the `Deployer` port with the docker and compose CLIs.
//! - [`host_scripts`]: the `ScriptHost` port, Edge job scripts run inside
//!   the host root.
//! - [`host`]: facts about the machine (its addresses).
//! - [`heap`]: the heap's free pages given back to the kernel.
//! - [`http`]: the HTTPS server (hyper + rustls) that feeds every request to
//!   a `RequestHandler`, with connection limits, timeouts and graceful
//!   shutdown.

pub mod clock;
pub mod deployer;
pub mod dial;
pub mod docker;
pub mod fs;
pub mod gossip;
pub mod heap;
pub mod host;
pub mod host_scripts;
pub mod http;
mod io;
pub mod key_file;
pub mod kubernetes;
pub mod kubernetes_objects;
pub mod peers;
pub mod portainer;
pub mod scheduler;
pub mod tunnel;
