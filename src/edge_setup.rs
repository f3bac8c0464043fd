//! Composition of Edge mode: the key (option, file or page), then, once a
//! key is set, the Portainer client, the tunnel driver and the poll loop.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth::credential_helper::{ADDRESS_VARIABLE, HELPER_NAME};
use berth::edge::async_poll::{AsyncPoller, AsyncWorkers};
use berth::edge::async_work;
use berth::edge::configs::{EdgeConfigs, SyncConfigs};
use berth::edge::jobs::EdgeJobs;
use berth::edge::key_page::{self, PAGE_LIFETIME};
use berth::edge::keys::EdgeKeys;
use berth::edge::manifests::ManifestDeployer;
use berth::edge::peer_key::fetch_from_peers;
use berth::edge::poll::{follow, local_time_zone, PollIdentity, Poller};
use berth::edge::poll_record::PollRecord;
use berth::edge::reports::{PortainerReports, Reports, SharedOutbox};
use berth::edge::stacks::{EdgeStacks, StackSettings, SyncStacks};
use berth::edge::tunnel::{self, Activity, TunnelGauge, TunnelHandle, TunnelSettings};
use berth::edge::EdgeGate;
use berth::facts::FactsReceiver;
use berth::registry_lookup::CredentialsInUse;
use berth_adapters::deployer::CliDeployer;
use berth_adapters::docker::DockerSocket;
use berth_adapters::fs::ConfinedFiles;
use berth_adapters::host_scripts::HostScripts;
use berth_adapters::http::ServerLimits;
use berth_adapters::key_file::KeyFile;
use berth_adapters::kubernetes::KubeApiServer;
use berth_adapters::kubernetes_objects::ClusterObjects;
use berth_adapters::portainer::PortainerHttp;
use berth_adapters::scheduler::CronScheduler;
use berth_adapters::tunnel::{ChiselClient, TunnelTimeouts};
use berth_domain::edge::async_protocol::MetaFields;
use berth_domain::options::Options;
use berth_ports::{DeployError, Deployer, Deployment, ProjectState};
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::ProductionCluster;

/// One docker or compose command (a deploy may pull images).
const STACK_TOOL_TIMEOUT: Duration = Duration::from_secs(600);
/// Commands waiting for one kind of work in async mode.
const WORK_QUEUE: usize = 64;
/// Where async mode keeps the timestamp of the last command it ran.
const ASYNC_CURSOR_FILE: &str = "edge_async_command_timestamp";

pub struct EdgeMode {
    pub gate: EdgeGate,
    pub gauge: TunnelGauge,
    pub polls: PollRecord,
}

/// Loads the key (or opens the key page) and starts polling once a key is
/// set. `api` is the bound API address the tunnel's channels reach;
/// `kubernetes`, on a Kubernetes cluster, deploys its Edge stacks.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    options: &Options,
    facts: &FactsReceiver,
    engine: DockerSocket,
    api: SocketAddr,
    limits: ServerLimits,
    cluster: Option<&ProductionCluster>,
    lookup: RegistryLookup,
    kubernetes: Option<ClusterDeployer>,
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
    let polls = PollRecord::default();
    let poll_record = polls.clone();
    let proxies = proxy_settings(options);
    // Where the tunnel goes comes with the key, once one is set.
    let tunnel = TunnelSettings {
        server: String::new(),
        fingerprint: String::new(),
        local_target: api.to_string(),
        proxy: proxies.for_tunnel().map(str::to_string),
        edge_id: edge_id.clone(),
        inactivity: options.edge.inactivity_timeout,
    };
    let tunnel_enabled = options.edge.tunnel;
    let asynchronous = options.edge.asynchronous;
    let work = EdgeWork::from_options(options, facts.clone(), edge_id.clone(), lookup, kubernetes);
    let meta = MetaFields {
        edge_groups: options.edge.groups.clone(),
        tags: options.edge.tags.clone(),
        environment_group: options.edge.environment_group,
    };
    let cursor = KeyFile::named(&options.data_path, ASYNC_CURSOR_FILE);
    let tls = berth::edge::portainer_tls(options);
    let gate = EdgeGate {
        keys: keys.clone(),
        activity: activity.clone(),
        edge_id: edge_id.clone(),
    };
    let identity = PollIdentity {
        edge_id,
        update_id: options.edge.update_id,
        time_zone: local_time_zone(),
        platform: options.platform(),
    };
    let (poll_gauge, poll_facts) = (gauge.clone(), facts.clone());
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
        let key = keys.wait().await;
        let api_client = match PortainerHttp::new(&key.portainer_url, tls, proxies) {
            Ok(client) => client,
            Err(why) => {
                error!(%why, "the Edge key's Portainer URL is unusable; not polling");
                return;
            }
        };
        if asynchronous {
            let poller = work
                .start_async(api_client, engine, keys, identity, meta, cursor)
                .with_record(poll_record);
            poller.run().await;
            return;
        }
        let handle = if tunnel_enabled {
            let settings = TunnelSettings {
                server: key.tunnel_addr.clone(),
                fingerprint: key.fingerprint.clone(),
                ..tunnel
            };
            let client = ChiselClient::new(TunnelTimeouts::default());
            tunnel::spawn(client, settings, activity, poll_gauge)
        } else {
            TunnelHandle::disabled()
        };
        let poller = Poller::new(api_client.clone(), keys, identity, handle, poll_facts)
            .with_record(poll_record);
        work.start_sync(&api_client, &poller);
        poller.run().await;
    });
    Ok(EdgeMode { gate, gauge, polls })
}

pub use berth::edge::proxy_settings;

/// Edge stacks on a Kubernetes cluster: manifests applied to it.
pub type ClusterDeployer = ManifestDeployer<ClusterObjects<KubeApiServer>>;

/// Where Edge stacks go: the engine (compose or swarm) or the cluster.
#[derive(Clone)]
enum StackDeployer {
    Engine(CliDeployer),
    Cluster(ClusterDeployer),
}

impl Deployer for StackDeployer {
    async fn validate(&self, deployment: &Deployment) -> Result<(), DeployError> {
        match self {
            StackDeployer::Engine(engine) => engine.validate(deployment).await,
            StackDeployer::Cluster(cluster) => cluster.validate(deployment).await,
        }
    }

    async fn pull(&self, deployment: &Deployment) -> Result<(), DeployError> {
        match self {
            StackDeployer::Engine(engine) => engine.pull(deployment).await,
            StackDeployer::Cluster(cluster) => cluster.pull(deployment).await,
        }
    }

    async fn deploy(&self, deployment: &Deployment) -> Result<(), DeployError> {
        match self {
            StackDeployer::Engine(engine) => engine.deploy(deployment).await,
            StackDeployer::Cluster(cluster) => cluster.deploy(deployment).await,
        }
    }

    async fn state(&self, deployment: &Deployment) -> Result<ProjectState, DeployError> {
        match self {
            StackDeployer::Engine(engine) => engine.state(deployment).await,
            StackDeployer::Cluster(cluster) => cluster.state(deployment).await,
        }
    }

    async fn remove(&self, deployment: &Deployment) -> Result<(), DeployError> {
        match self {
            StackDeployer::Engine(engine) => engine.remove(deployment).await,
            StackDeployer::Cluster(cluster) => cluster.remove(deployment).await,
        }
    }
}

/// What Edge work (stacks, jobs, configurations) needs, in either mode.
struct EdgeWork {
    edge_id: String,
    facts: FactsReceiver,
    deployer: StackDeployer,
    stacks: StackSettings<ConfinedFiles>,
    scripts: HostScripts,
    job_timeout: Duration,
    files: ConfinedFiles,
}

/// The registry credential lookup: what it serves, and where it listens
/// (`None` when its address was taken).
pub struct RegistryLookup {
    pub credentials: CredentialsInUse,
    pub address: Option<SocketAddr>,
}

impl EdgeWork {
    fn from_options(
        options: &Options,
        facts: FactsReceiver,
        edge_id: String,
        lookup: RegistryLookup,
        kubernetes: Option<ClusterDeployer>,
    ) -> Self {
        let files = ConfinedFiles::new(&options.volumes_root, &options.host_root);
        let deployer = match kubernetes {
            Some(cluster) => StackDeployer::Cluster(cluster),
            None => StackDeployer::Engine(engine_deployer(options, lookup.address)),
        };
        EdgeWork {
            stacks: StackSettings {
                edge_id: edge_id.clone(),
                folder: Path::new(&options.data_path).join("edge_stacks"),
                facts: facts.clone(),
                host: files.clone(),
                host_is_root: Path::new(&options.host_root) == Path::new("/"),
                credentials: lookup.credentials,
            },
            edge_id,
            facts,
            deployer,
            scripts: HostScripts::new(options.host_root.clone()),
            job_timeout: options.edge.job_timeout,
            files,
        }
    }
}

/// Compose and `docker stack`, with the registry credential helper when
/// its lookup listens.
fn engine_deployer(options: &Options, lookup: Option<SocketAddr>) -> CliDeployer {
    let deployer = CliDeployer::new(
        options.assets_path.clone(),
        options.docker_host.to_string(),
        STACK_TOOL_TIMEOUT,
    );
    let helper_folder = Path::new(&options.data_path).join("docker-credentials");
    let deployer = match lookup {
        Some(address) => deployer
            .clone()
            .with_credential_helper(&helper_folder, HELPER_NAME, ADDRESS_VARIABLE, address)
            .unwrap_or_else(|error| {
                warn!(folder = %helper_folder.display(), %error, "cannot set up the registry credential helper; Edge stacks will pull without registry credentials");
                deployer
            }),
        None => deployer,
    };
    deployer
}

impl EdgeWork {
    fn jobs<R: Reports>(&self, reports: R) -> EdgeJobs<CronScheduler, HostScripts, R> {
        EdgeJobs::new(
            CronScheduler::default(),
            self.scripts.clone(),
            reports,
            self.job_timeout,
        )
    }

    /// Sync mode: each kind of work follows the poll answers on its own
    /// task, reporting to Portainer's endpoints. A cluster runs stacks
    /// only: jobs and configurations are files and scripts on a host,
    /// which an agent in a pod does not have (Portainer offers them for
    /// Docker environments).
    fn start_sync(self, api: &PortainerHttp, poller: &Poller<PortainerHttp>) {
        let on_cluster = matches!(self.deployer, StackDeployer::Cluster(_));
        if !on_cluster {
            let jobs = self.jobs(PortainerReports::new(api.clone(), self.edge_id.clone()));
            tokio::spawn(follow(jobs, poller.answers()));
            let configs = SyncConfigs::new(self.files.clone(), api.clone(), self.edge_id.clone());
            tokio::spawn(follow(configs, poller.answers()));
        }
        let stacks = SyncStacks::new(self.deployer, api.clone(), self.stacks);
        tokio::spawn(follow(stacks, poller.answers()));
    }

    /// Async mode: no tunnel, ever; commands hand work to a task per kind,
    /// whose results wait in the outbox for the next snapshot.
    fn start_async(
        self,
        api: PortainerHttp,
        engine: DockerSocket,
        keys: EdgeKeys,
        identity: PollIdentity,
        meta: MetaFields,
        cursor: KeyFile,
    ) -> AsyncPoller<PortainerHttp, DockerSocket, KeyFile> {
        let outbox = SharedOutbox::default();
        let (stacks, stacks_work) = mpsc::channel(WORK_QUEUE);
        let (jobs, jobs_work) = mpsc::channel(WORK_QUEUE);
        let (configs, configs_work) = mpsc::channel(WORK_QUEUE);
        let folder = self.stacks.folder.clone();
        let edge_stacks =
            EdgeStacks::new(self.deployer.clone(), outbox.clone(), self.stacks.clone());
        tokio::spawn(async_work::run_stacks(
            edge_stacks,
            self.deployer.clone(),
            self.facts.clone(),
            folder,
            stacks_work,
        ));
        tokio::spawn(async_work::run_jobs(self.jobs(outbox.clone()), jobs_work));
        let edge_configs = EdgeConfigs::new(self.files.clone());
        tokio::spawn(async_work::run_configs(
            edge_configs,
            outbox.clone(),
            configs_work,
        ));
        let workers = AsyncWorkers {
            stacks,
            jobs,
            configs,
        };
        AsyncPoller::new(
            api, engine, keys, identity, meta, self.facts, outbox, workers, cursor,
        )
    }
}

/// MTLS_CERT_RETRY_INTERVAL: the client certificate may be written after
/// the agent starts (by a sidecar); polls wait for it instead of failing.
async fn wait_for_files(paths: &[String], every: Duration) {
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
