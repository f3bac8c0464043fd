//! The composition root: options, then logging, adapters, the agent, and
//! the server until a stop signal. Nothing else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod edge_setup;

use berth::cli::{self, CliOutcome, Invocation, OperatorCommand};
use berth::cluster::Cluster;
use berth::dockerhub::DockerHubProbe;
use berth::edge::agent_update;
use berth::edge::engine_calls::EngineCalls;
use berth::edge::manifests::ManifestDeployer;
use berth::kubernetes::KubernetesProxy;
use berth::metrics::{Metrics, MetricsEndpoint};
use berth::operator;
use berth::registry_lookup::{CredentialLookup, CredentialsInUse};
use berth::signature::SignatureGuard;
use berth::status::{self, StatusSources};
use berth::{credential_helper, facts, logging, security, Agent};
use berth_adapters::clock::TokioClock;
use berth_adapters::docker::{DockerSocket, OwnContainer};
use berth_adapters::fs::ConfinedFiles;
use berth_adapters::gossip::memberlist::MemberlistMembership;
use berth_adapters::gossip::{AnyMembership, GossipConfig};
use berth_adapters::host::SysfsHostProbe;
use berth_adapters::http::tls::{self, TlsIdentity};
use berth_adapters::http::{probe, HttpServer, ServerLimits};
use berth_adapters::kubernetes::{own_namespace, KubeApiServer};
use berth_adapters::kubernetes_objects::ClusterObjects;
use berth_adapters::peers::HttpsPeers;
use berth_adapters::portainer::{PortainerHttp, PortainerTls};
use berth_domain::cluster::{agent_tags, Seed};
use berth_domain::engine::EngineFacts;
use berth_domain::gossip::keyring::Keyring;
use berth_domain::headers::{AGENT_API_VERSION, AGENT_VERSION};
use berth_domain::kubernetes::Platform;
use berth_domain::options::{GossipKind, Options};
use berth_domain::signature::signing::KeyKind;
use berth_ports::Membership;
use tracing::{error, info, warn};

/// How long `berth healthcheck` waits for `/ping`.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long leaving the cluster may hold up the exit.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    // The credential helper runs inside the docker CLI's process tree and
    // needs none of berth's options.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(action) = credential_helper::invoked_as(&args) {
        return credential_helper::run(&action);
    }
    let options = match cli::parse(args) {
        Ok(Invocation::Run(options)) => options,
        Ok(Invocation::Healthcheck(options)) => return healthcheck(&options),
        Ok(Invocation::Operator(command, options)) => return operator_command(command, &options),
        Ok(Invocation::Generated(what)) => {
            return match cli::generate(what, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("berth: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(CliOutcome::Clap(error)) => error.exit(),
        Err(CliOutcome::Invalid(error)) => {
            eprintln!("berth: {error}");
            return ExitCode::from(2);
        }
    };
    logging::init(options.log_level, options.log_mode);
    // Randomness and trust roots, which the first connections need, are
    // made ready beside the start-up rather than on their paths.
    std::thread::spawn(berth_adapters::http::tls::warm_up);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Counted here, not by tokio: tokio would read TOKIO_WORKER_THREADS
    // and panic on a bad value.
    builder.worker_threads(
        options
            .worker_threads
            .unwrap_or_else(default_worker_threads),
    );
    let Some(runtime) = runtime(builder) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// One worker fewer than the cores, at least one: the engine berth
/// proxies runs on the same host, and a worker per core made berth's
/// workers and the engine wake each other across cores. On two cores one
/// worker spent 11 % less CPU per `/_ping` at 32 connections, with the
/// same throughput, and added 0.17 ms less to a container list
/// (`scripts/bench-runtime`, docs/benchmarks.md).
fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get().saturating_sub(1).max(1))
}

/// The async runtime from `builder`, or `None` once the reason is printed.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|error| eprintln!("berth: cannot start the async runtime: {error}"))
        .ok()
}

/// `berth healthcheck`: 0 when the local agent answers `/ping`, else 1.
fn healthcheck(options: &Options) -> ExitCode {
    let host = if options.host.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        options.host
    };
    let address = SocketAddr::new(host, options.port);
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(probe::ping(address, HEALTHCHECK_TIMEOUT)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("berth healthcheck: {why}");
            ExitCode::FAILURE
        }
    }
}

/// `berth doctor`, `berth status`, `berth keys new`: no logging, a small
/// runtime, and the exit status the command gives.
fn operator_command(command: OperatorCommand, options: &Options) -> ExitCode {
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match command {
        OperatorCommand::Doctor => {
            let findings = runtime.block_on(operator::doctor::examine(options));
            print!("{}", berth_domain::doctor::render(&findings));
            ExitCode::from(berth_domain::doctor::exit_code(&findings))
        }
        OperatorCommand::Status { json } => {
            let path = status::socket_path(&options.data_path);
            match runtime.block_on(operator::status::read(&path)) {
                Ok(doc) if json => {
                    println!("{doc}");
                    ExitCode::SUCCESS
                }
                Ok(doc) => {
                    print!("{}", operator::status::render(&doc));
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("berth status: {why}");
                    ExitCode::FAILURE
                }
            }
        }
        OperatorCommand::KeysClientCert {
            dir,
            ca_cert,
            ca_key,
            name,
        } => match operator::keys::client_certificate(&dir, &ca_cert, &ca_key, &name) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("berth keys client-cert: {why}");
                ExitCode::FAILURE
            }
        },
        OperatorCommand::KeysNew { dir, ed25519 } => {
            let kind = if ed25519 {
                KeyKind::Ed25519
            } else {
                KeyKind::P256
            };
            match operator::keys::new_keys(&dir, kind, options.secret.as_deref()) {
                Ok(keys) => {
                    print!("{}", operator::keys::report(&keys));
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("berth keys new: {why}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    // Listening for the stop signals comes first: a SIGTERM while berth
    // starts (an orchestrator changing its mind) must take the graceful
    // path, not the default action that kills the process.
    let mut stop_signals = StopSignals::install();
    let started = std::time::SystemTime::now();
    let platform = options.platform();
    info!(
        version = AGENT_VERSION,
        "agent running on {} platform",
        platform.name()
    );
    let kubernetes = options
        .kubernetes
        .as_ref()
        .map(|cluster| {
            KubeApiServer::in_cluster(
                &cluster.api_host,
                cluster.api_port,
                Path::new(&cluster.service_account_dir),
                options.timeouts.connect,
            )
        })
        .transpose()?;
    let own_namespace = options
        .kubernetes
        .as_ref()
        .map(|cluster| own_namespace(Path::new(&cluster.service_account_dir)))
        .unwrap_or_default();
    // On Kubernetes the engine is never asked: the agent refuses Docker
    // requests there.
    let engine = DockerSocket::new(options.docker_host.clone(), options.timeouts.connect);
    let engine_health = facts::EngineHealth::default();
    let hostname = berth::advertise::host_name();
    let facts = match &kubernetes {
        Some(_) => facts::fixed(EngineFacts {
            node_name: hostname.clone().unwrap_or_default(),
            ..EngineFacts::unknown()
        }),
        None => {
            facts::watch_engine_facts_with(
                engine.clone(),
                options.facts_interval,
                options.timeouts.connect,
                engine_health.clone(),
            )
            .await
        }
    };
    let own_container = match (&hostname, &kubernetes) {
        (Some(name), None) => engine.own_container(name).await.unwrap_or_default(),
        _ => OwnContainer::default(),
    };
    let (advertise, _) = berth::advertise::choose(&options, own_container.address);
    if options.edge.update_id != 0 && platform == Platform::Docker {
        tokio::spawn(agent_update::finish_update(
            EngineCalls::new(engine.clone()),
            options.edge.update_id,
            hostname.clone().unwrap_or_default(),
        ));
    }

    let identity = match (&options.ssl_cert, &options.ssl_key) {
        (Some(cert), Some(key)) => TlsIdentity::from_pem_files(cert, key),
        _ => TlsIdentity::self_signed(hostname.as_deref(), &[advertise, options.host]),
    }
    .map_err(|error| error.to_string())?;
    let tls_config = tls::server_config_with(
        &identity,
        options.ssl_ca.as_deref(),
        options.client_cert_auth,
    )
    .map_err(|error| error.to_string())?;

    let limits = ServerLimits {
        header_timeout: options.timeouts.header,
        idle_timeout: options.timeouts.idle,
        shutdown_timeout: options.timeouts.shutdown,
        max_connections: options.max_connections,
        max_header_bytes: options.max_header_bytes,
    };
    let edge = options.edge.enabled;
    // An Edge agent is reached through its tunnel: plain HTTP on its own
    // address, as the reference.
    let (address, server_tls) = if edge {
        (SocketAddr::new(advertise, options.port), None)
    } else {
        (
            SocketAddr::new(options.host, options.port),
            Some(Arc::clone(&tls_config)),
        )
    };
    let server = HttpServer::bind(address, server_tls, limits)
        .await
        .map_err(|error| format!("cannot listen on {address}: {error}"))?;
    let bound = server.local_addr().map_err(|error| error.to_string())?;
    let registry_credentials = CredentialsInUse::default();
    let lookup = start_credential_lookup(
        options.credentials_addr,
        registry_credentials.clone(),
        limits,
    )
    .await;

    let cluster = start_cluster(
        &options,
        &facts,
        &identity,
        &own_container,
        &hostname,
        advertise,
        bound.port(),
    )
    .await?;
    let edge_mode = if edge {
        Some(
            edge_setup::start(
                &options,
                &facts,
                engine.clone(),
                bound,
                limits,
                cluster.as_ref(),
                edge_setup::RegistryLookup {
                    credentials: registry_credentials,
                    address: lookup,
                },
                kubernetes.as_ref().map(|api| {
                    ManifestDeployer::new(ClusterObjects::new(api.clone()), own_namespace.clone())
                }),
            )
            .await?,
        )
    } else {
        None
    };
    if let Some(cluster) = &cluster {
        let keys = edge_mode.as_ref().map(|mode| mode.gate.keys.clone());
        tokio::spawn(
            cluster
                .clone()
                .keep_tags_current(bound.port(), facts.clone(), keys),
        );
    }

    // What a burst of requests freed goes back to the kernel (see heap).
    tokio::spawn(berth_adapters::heap::keep_releasing_free_pages());

    let metrics = Metrics::default();
    if let Some(address) = options.metrics_addr {
        let mut endpoint = MetricsEndpoint::new(
            metrics.clone(),
            cluster.as_ref().map(|c| c.membership().clone()),
            server.open_connections(),
            engine_health.clone(),
        );
        if let Some(mode) = &edge_mode {
            endpoint = endpoint.with_tunnel(mode.gauge.clone());
        }
        start_metrics_server(address, endpoint, limits).await?;
    }
    info!(
        mode = if options.edge.enabled { "edge" } else { "standard" },
        node = %facts.borrow().node_name,
        server_addr = %bound.ip(),
        server_port = bound.port(),
        use_tls = !edge,
        mutual_tls = options.ssl_ca.is_some(),
        api_version = AGENT_API_VERSION,
        platform = platform.name(),
        docker_host = %options.docker_host,
        advertise_addr = %advertise,
        clustered = cluster.is_some(),
        "starting Agent API server"
    );
    let cluster = cluster.map(|c| c.with_metrics(metrics.clone()));
    let signatures = SignatureGuard::from_secret(options.secret.clone())?;
    status::serve(
        status::socket_path(&options.data_path),
        StatusSources {
            started,
            edge,
            api_address: bound,
            facts: facts.clone(),
            engine_health,
            open_connections: server.open_connections(),
            signatures: signatures.clone(),
            secret_mode: options.secret.is_some(),
            secret_timeout: options.secret_timeout,
            membership: cluster.as_ref().map(|c| c.membership().clone()),
            tunnel: edge_mode.as_ref().map(|mode| mode.gauge.clone()),
            polls: edge_mode.as_ref().map(|mode| mode.polls.clone()),
        },
    );
    let agent = Agent::new(
        engine,
        SysfsHostProbe::new(&options.host_root),
        ConfinedFiles::new(&options.volumes_root, &options.host_root),
        facts,
        signatures.clone(),
        cluster.clone(),
    )
    .with_metrics(metrics);
    let agent = match dockerhub_probe(&options) {
        Some(probe) => agent.with_dockerhub(probe),
        None => agent,
    };
    let agent = if options.client_cert_auth {
        agent.with_client_certificates()
    } else {
        agent
    };
    let agent = match edge_mode {
        Some(mode) => agent.with_edge(mode.gate),
        None => agent,
    };
    let agent = match kubernetes {
        Some(api) => {
            let objects = ClusterObjects::new(api.clone());
            agent.with_kubernetes(KubernetesProxy::new(api, objects, own_namespace))
        }
        None => agent,
    };
    // Edge agents have their own gate (the Edge key) instead.
    let secret_timeout = options.secret_timeout;
    let unpaired = async move {
        if edge {
            std::future::pending::<()>().await;
        }
        security::unassociated_after(TokioClock, secret_timeout, signatures).await;
    };
    tokio::pin!(unpaired);
    let stopped_unpaired = AtomicBool::new(false);
    let stop = async {
        tokio::select! {
            () = stop_signals.received() => {}
            () = &mut unpaired => stopped_unpaired.store(true, Ordering::SeqCst),
        }
    };
    server.run(agent, stop).await;
    if stopped_unpaired.load(Ordering::SeqCst) {
        info!("the API is closed until berth is restarted; waiting for SIGTERM");
        stop_signals.received().await;
    }
    if let Some(cluster) = cluster {
        if tokio::time::timeout(LEAVE_TIMEOUT, cluster.membership().leave())
            .await
            .is_err()
        {
            warn!("leaving the cluster took too long; exiting anyway");
        }
    }
    info!("berth stopped");
    Ok(())
}

pub type ProductionCluster = Cluster<AnyMembership, HttpsPeers>;

/// Serves `/metrics` on its own plain-HTTP listener until the process ends.
async fn start_metrics_server(
    address: SocketAddr,
    endpoint: MetricsEndpoint<AnyMembership>,
    limits: ServerLimits,
) -> Result<(), String> {
    let server = HttpServer::bind(address, None, limits)
        .await
        .map_err(|error| format!("cannot listen for metrics on {address}: {error}"))?;
    info!(metrics_addr = %address, "serving Prometheus metrics at /metrics");
    tokio::spawn(server.run(endpoint, std::future::pending()));
    Ok(())
}

/// Docker Hub for `POST /v2/dockerhub`, through the proxies the Edge
/// poll uses, verified with the system's CAs.
fn dockerhub_probe(options: &Options) -> Option<DockerHubProbe<PortainerHttp>> {
    let client = |url: &str| {
        // Docker Hub's own certificates, checked against the system's CAs.
        PortainerHttp::new(
            url,
            PortainerTls::default(),
            edge_setup::proxy_settings(options),
        )
        .map_err(|why| warn!(%why, "POST /v2/dockerhub will answer 501"))
        .ok()
    };
    Some(DockerHubProbe::new(
        client(&options.dockerhub_auth_url)?,
        client(&options.dockerhub_registry_url)?,
    ))
}

/// Serves the registry credential lookup on loopback until the process
/// ends. Its address taken is not fatal, as for the Go agent: Edge stacks
/// then pull from private registries without credentials, and say so.
async fn start_credential_lookup(
    address: SocketAddr,
    credentials: CredentialsInUse,
    limits: ServerLimits,
) -> Option<SocketAddr> {
    let server = match HttpServer::bind(address, None, limits).await {
        Ok(server) => server,
        Err(error) => {
            warn!(%address, %error, "cannot serve the registry credential lookup; Edge stacks will pull without registry credentials");
            return None;
        }
    };
    let bound = server.local_addr().ok()?;
    info!(lookup_addr = %bound, "serving the registry credential lookup");
    tokio::spawn(server.run(CredentialLookup::new(credentials), std::future::pending()));
    Some(bound)
}

/// Joins the gossip cluster when the engine is a swarm node or
/// `AGENT_CLUSTER_ADDR` is set; `None` leaves the agent standalone.
async fn start_cluster(
    options: &Options,
    facts: &facts::FactsReceiver,
    identity: &TlsIdentity,
    own_container: &OwnContainer,
    hostname: &Option<String>,
    advertise: IpAddr,
    agent_port: u16,
) -> Result<Option<ProductionCluster>, String> {
    let facts_now = facts.borrow().clone();
    let seeds: Vec<Seed> = if !options.cluster_seeds.is_empty() {
        options.cluster_seeds.clone()
    } else {
        // In a swarm service, every task of the service is a peer.
        own_container
            .service_name
            .iter()
            .map(|service| Seed {
                host: format!("tasks.{service}"),
                port: options.cluster_port,
            })
            .collect()
    };
    if !facts_now.is_swarm_node() && options.cluster_seeds.is_empty() {
        return Ok(None);
    }
    let gossip = GossipConfig {
        node_id: format!(
            "{}-{}",
            facts_now.node_name,
            hostname.as_deref().unwrap_or("berth")
        ),
        bind: SocketAddr::new(options.host, options.cluster_port),
        advertise: SocketAddr::new(advertise, options.cluster_port),
        probe_interval: options.cluster_probe_interval,
        probe_timeout: options.cluster_probe_timeout,
        tags: agent_tags(agent_port, &facts_now, false),
        keyring: match &options.cluster_key {
            Some(key) => Some(Keyring::new(vec![key.clone()])?),
            None => None,
        },
    };
    let membership = match options.cluster_gossip {
        GossipKind::Memberlist => MemberlistMembership::start(gossip)
            .await
            .map(AnyMembership::Memberlist),
        #[cfg(feature = "serf-rs")]
        GossipKind::SerfRs => berth_adapters::gossip::serf_rs::SerfMembership::start(gossip)
            .await
            .map(AnyMembership::SerfRs),
        #[cfg(not(feature = "serf-rs"))]
        GossipKind::SerfRs => Err(berth_ports::MembershipError(
            "AGENT_CLUSTER_GOSSIP=serf-rs: this berth was built without it (cargo build --features serf-rs)".into(),
        )),
    }
    .map_err(|error| error.to_string())?;
    // Edge agents serve plain HTTP; their peers call them so.
    let peers = if options.edge.enabled {
        HttpsPeers::plain(options.timeouts.connect)
    } else {
        HttpsPeers::new(
            tls::peer_client_config(Some(identity)).map_err(|error| error.to_string())?,
            options.timeouts.connect,
        )
    };
    let cluster = Cluster::new(membership, peers, options.timeouts.fanout)
        .with_fanout_budget(options.fanout_budget);
    if seeds.is_empty() {
        info!("no peers to join yet: AGENT_CLUSTER_ADDR is unset and no swarm service was found");
    } else {
        tokio::spawn(cluster.clone().join_until_joined(seeds));
    }
    info!(
        gossip_port = options.cluster_port,
        "agent running in cluster mode"
    );
    Ok(Some(cluster))
}

/// SIGTERM and SIGINT, listened for from the moment this is made.
struct StopSignals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(error) => {
                error!(%error, "cannot listen for {name}");
                None
            }
        };
        StopSignals {
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Resolves at the next SIGTERM or SIGINT.
    async fn received(&mut self) {
        async fn next(stream: &mut Option<tokio::signal::unix::Signal>) {
            match stream {
                Some(stream) => {
                    stream.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = next(&mut self.terminate) => info!("SIGTERM received"),
            () = next(&mut self.interrupt) => info!("SIGINT received"),
        }
    }
}
