//! The composition root: options, then logging, adapters, the agent, and
//! the server until a stop signal. Nothing else.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth::cli::{self, CliOutcome};
use berth::signature::SignatureGuard;
use berth::{facts, logging, security, Agent};
use berth_adapters::clock::TokioClock;
use berth_adapters::docker::DockerSocket;
use berth_adapters::http::tls::{self, TlsIdentity};
use berth_adapters::http::{HttpsServer, ServerLimits};
use berth_domain::headers::{AGENT_API_VERSION, AGENT_VERSION};
use berth_domain::options::Options;
use tracing::{error, info};

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 4096;

fn main() -> ExitCode {
    let options = match cli::parse(std::env::args_os()) {
        Ok(options) => options,
        Err(CliOutcome::Clap(error)) => error.exit(),
        Err(CliOutcome::Invalid(error)) => {
            eprintln!("berth: {error}");
            return ExitCode::from(2);
        }
    };
    logging::init(options.log_level, options.log_mode);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("berth: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    info!(version = AGENT_VERSION, "agent running on Docker platform");
    let engine = DockerSocket::new(options.docker_host.clone(), options.timeouts.connect);
    let facts = facts::watch_engine_facts(
        engine.clone(),
        options.facts_interval,
        options.timeouts.connect,
    )
    .await;

    let identity = match (&options.ssl_cert, &options.ssl_key) {
        (Some(cert), Some(key)) => TlsIdentity::from_pem_files(cert, key),
        _ => {
            let addresses: Vec<IpAddr> = options
                .advertise_addr
                .into_iter()
                .chain([options.host])
                .collect();
            TlsIdentity::self_signed(host_name().as_deref(), &addresses)
        }
    }
    .map_err(|error| error.to_string())?;
    let tls_config = tls::server_config(&identity, options.ssl_ca.as_deref())
        .map_err(|error| error.to_string())?;

    let limits = ServerLimits {
        header_timeout: options.timeouts.header,
        idle_timeout: options.timeouts.idle,
        shutdown_timeout: options.timeouts.shutdown,
        max_connections: MAX_CONNECTIONS,
    };
    let address = SocketAddr::new(options.host, options.port);
    let server = HttpsServer::bind(address, Arc::clone(&tls_config), limits)
        .await
        .map_err(|error| format!("cannot listen on {address}: {error}"))?;
    let bound = server.local_addr().map_err(|error| error.to_string())?;
    info!(
        server_addr = %bound.ip(),
        server_port = bound.port(),
        use_tls = true,
        mutual_tls = options.ssl_ca.is_some(),
        api_version = AGENT_API_VERSION,
        docker_host = %options.docker_host,
        "starting Agent API server"
    );
    let signatures = SignatureGuard::from_secret(options.secret.clone())?;
    let agent = Agent::new(engine, facts, signatures.clone());
    // Edge agents have their own gate (the Edge key) instead.
    let edge = options.edge.enabled;
    let secret_timeout = options.secret_timeout;
    let unpaired = async move {
        if edge {
            std::future::pending::<()>().await;
        }
        security::unassociated_after(TokioClock, secret_timeout, signatures).await;
    };
    let stopped_unpaired = Arc::new(AtomicBool::new(false));
    let stop = {
        let stopped_unpaired = Arc::clone(&stopped_unpaired);
        async move {
            tokio::select! {
                () = stop_signal() => {}
                () = unpaired => stopped_unpaired.store(true, Ordering::SeqCst),
            }
        }
    };
    server.run(agent, stop).await;
    if stopped_unpaired.load(Ordering::SeqCst) {
        info!("the API is closed until berth is restarted; waiting for SIGTERM");
        stop_signal().await;
    }
    info!("berth stopped");
    Ok(())
}

/// The machine's host name, for the certificate's names.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            error!(%error, "cannot listen for SIGTERM; only SIGINT stops berth");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}
