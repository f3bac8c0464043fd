//! Composition of Edge mode: the key (option, file or page), then, once a
//! key is set, the Portainer client, the tunnel driver and the poll loop.

use std::net::SocketAddr;

use berth::edge::jobs::EdgeJobs;
use berth::edge::key_page::{self, PAGE_LIFETIME};
use berth::edge::keys::EdgeKeys;
use berth::edge::peer_key::fetch_from_peers;
use berth::edge::poll::{follow, local_time_zone, PollIdentity, Poller};
use berth::edge::stacks::EdgeStacks;
use berth::edge::tunnel::{self, Activity, TunnelGauge, TunnelHandle, TunnelSettings};
use berth::edge::EdgeGate;
use berth::facts::FactsReceiver;
use berth_adapters::deployer::CliDeployer;
use berth_adapters::host_scripts::HostScripts;
use berth_adapters::http::ServerLimits;
use berth_adapters::key_file::KeyFile;
use berth_adapters::portainer::{PortainerHttp, PortainerTls};
use berth_adapters::scheduler::CronScheduler;
use berth_adapters::tunnel::{ChiselClient, TunnelTimeouts};
use berth_domain::edge::proxy::{NoProxy, ProxySettings};
use berth_domain::options::Options;
use tracing::error;

use crate::ProductionCluster;

/// One docker or compose command (a deploy may pull images).
const STACK_TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

pub struct EdgeMode {
    pub gate: EdgeGate,
    pub gauge: TunnelGauge,
}

/// Loads the key (or opens the key page) and starts polling once a key is
/// set. `api` is the bound API address the tunnel's channels reach.
pub async fn start(
    options: &Options,
    facts: &FactsReceiver,
    api: SocketAddr,
    limits: ServerLimits,
    cluster: Option<&ProductionCluster>,
) -> Result<EdgeMode, String> {
    let store = KeyFile::new(&options.data_path);
    let keys = EdgeKeys::new(store.clone());
    keys.load(options.edge.key.as_deref(), &store).await?;
    let edge_id = options.edge.id.clone().unwrap_or_default();
    if let (false, Some(cluster)) = (keys.is_set(), cluster) {
        tokio::spawn(fetch_from_peers(
            cluster.clone(),
            keys.clone(),
            edge_id.clone(),
        ));
    }
    if !keys.is_set() {
        let page = SocketAddr::new(options.edge.server_host, options.edge.server_port);
        key_page::start(page, keys.clone(), limits, PAGE_LIFETIME).await?;
    }
    let activity = Activity::default();
    let gauge = TunnelGauge::default();
    let proxies = ProxySettings {
        https: options.edge.https_proxy.clone(),
        http: options.edge.http_proxy.clone(),
        no_proxy: NoProxy::parse(options.edge.no_proxy.as_deref().unwrap_or_default()),
    };
    let tunnel_enabled = options.edge.tunnel;
    let host_root = options.host_root.clone();
    let job_timeout = options.edge.job_timeout;
    let jobs_edge_id = edge_id.clone();
    let stacks_edge_id = edge_id.clone();
    let assets = options.assets_path.clone();
    let docker_host = options.docker_host.to_string();
    let stacks_folder = std::path::Path::new(&options.data_path).join("edge_stacks");
    let inactivity = options.edge.inactivity_timeout;
    let tls = PortainerTls {
        insecure: options.edge.insecure_poll,
        ca: options.mtls.ca.clone(),
        cert: options.mtls.cert.clone(),
        key: options.mtls.key.clone(),
    };
    let gate = EdgeGate {
        keys: keys.clone(),
        activity: activity.clone(),
        edge_id: edge_id.clone(),
    };
    let identity = PollIdentity {
        edge_id: edge_id.clone(),
        update_id: options.edge.update_id,
        time_zone: local_time_zone(),
    };
    let (poll_keys, poll_facts, poll_activity, poll_gauge) =
        (keys.clone(), facts.clone(), activity.clone(), gauge.clone());
    let certificate_wait = match (&options.mtls.cert, &options.mtls.key) {
        (Some(cert), Some(key)) if !options.mtls.retry_interval.is_zero() => {
            Some((cert.clone(), key.clone(), options.mtls.retry_interval))
        }
        _ => None,
    };
    tokio::spawn(async move {
        if let Some((cert, key, every)) = certificate_wait {
            wait_for_files(&[cert, key], every).await;
        }
        let key = poll_keys.wait().await;
        let tunnel_proxy = proxies.for_tunnel().map(str::to_string);
        let api_client = match PortainerHttp::new(&key.portainer_url, tls, proxies) {
            Ok(client) => client,
            Err(why) => {
                error!(%why, "the Edge key's Portainer URL is unusable; not polling");
                return;
            }
        };
        let handle = if tunnel_enabled {
            tunnel::spawn(
                ChiselClient::new(TunnelTimeouts::default()),
                TunnelSettings {
                    server: key.tunnel_addr.clone(),
                    fingerprint: key.fingerprint.clone(),
                    local_target: api.to_string(),
                    proxy: tunnel_proxy,
                    edge_id,
                    inactivity,
                },
                poll_activity,
                poll_gauge,
            )
        } else {
            TunnelHandle::disabled()
        };
        let api_client_for_stacks = api_client.clone();
        let stacks_facts = poll_facts.clone();
        let poller = Poller::new(api_client.clone(), poll_keys, identity, handle, poll_facts);
        let jobs = EdgeJobs::new(
            CronScheduler::default(),
            HostScripts::new(host_root),
            api_client,
            jobs_edge_id,
            job_timeout,
        );
        tokio::spawn(follow(jobs, poller.answers()));
        let stacks = EdgeStacks::new(
            CliDeployer::new(assets, docker_host, STACK_TOOL_TIMEOUT),
            api_client_for_stacks,
            stacks_edge_id,
            stacks_folder,
            stacks_facts,
        );
        tokio::spawn(follow(stacks, poller.answers()));
        poller.run().await;
    });
    Ok(EdgeMode { gate, gauge })
}

/// MTLS_CERT_RETRY_INTERVAL: the client certificate may be written after
/// the agent starts (by a sidecar); polls wait for it instead of failing.
async fn wait_for_files(paths: &[String], every: std::time::Duration) {
    let mut logged = false;
    while !paths.iter().all(|p| std::path::Path::new(p).exists()) {
        if !logged {
            tracing::info!(
                ?paths,
                "waiting for the client certificate files before polling"
            );
            logged = true;
        }
        tokio::time::sleep(every).await;
    }
}
