//! `berth doctor`: probes what the agent depends on, with the options the
//! agent runs with, and says for each check what is wrong and what to do.
//! The verdicts are the domain's (`berth_domain::doctor`); this gathers.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_adapters::docker::DockerSocket;
use berth_adapters::gossip::probe;
use berth_adapters::host;
use berth_adapters::http::tls::certificate_facts;
use berth_adapters::key_file::KeyFile;
use berth_adapters::portainer::PortainerHttp;
use berth_domain::doctor::{
    judge_advertise, judge_certificate, judge_overlay, judge_peer, Finding, PeerProbe,
};
use berth_domain::edge::key::EdgeKey;
use berth_domain::edge::status::refusal_text;
use berth_domain::gossip::keyring::Keyring;
use berth_domain::headers::AGENT_VERSION;
use berth_domain::options::Options;
use berth_ports::{DockerEngine as _, EdgeCall, KeyStore as _, PortainerApi as _};
use serde_json::Value;

use crate::operator::status;

/// The bound on each network probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The bound on the poll, which crosses Portainer's own work.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// Every check, in the order a person would look.
pub async fn examine(options: &Options) -> Vec<Finding> {
    let mut findings = Vec::new();
    let running = status::read(&crate::status::socket_path(&options.data_path)).await;
    findings.push(match &running {
        Ok(doc) => Finding::ok(
            "agent",
            format!(
                "running here (pid {}, up {})",
                doc["pid"],
                status::duration_text(doc["uptime_seconds"].as_u64().unwrap_or(0))
            ),
        ),
        Err(why) => Finding::warning(
            "agent",
            format!("no running agent answers its control socket: {why}"),
            "run doctor where the agent runs (docker exec <agent> /berth doctor) with the same DATA_PATH; \
             the checks below still run",
        ),
    });
    let engine = DockerSocket::new(options.docker_host.clone(), options.timeouts.connect);
    findings.push(check_engine(&engine, options).await);
    let own = match crate::advertise::host_name() {
        Some(name) => engine.own_container(&name).await.unwrap_or_default(),
        None => Default::default(),
    };
    let (advertise, reason) = crate::advertise::choose(options, own.address);
    findings.push(judge_advertise(advertise, reason, &host::local_addresses()));
    findings.extend(judge_overlay(
        advertise,
        own.service_name.as_deref(),
        &own.networks,
    ));
    findings.extend(check_peers(options).await);
    findings.push(check_certificate(options));
    findings.push(check_signatures(options, running.as_ref().ok()));
    if options.edge.enabled {
        findings.extend(check_edge(options, running.as_ref().ok()).await);
    }
    for (name, root) in [
        ("volumes root", &options.volumes_root),
        ("host root", &options.host_root),
    ] {
        findings.push(check_root(name, root));
    }
    findings
}

async fn check_engine(engine: &DockerSocket, options: &Options) -> Finding {
    match tokio::time::timeout(PROBE_TIMEOUT, engine.facts()).await {
        Ok(Ok(facts)) => {
            let role = match facts.role.tag() {
                "" => "standalone".to_string(),
                role => format!("swarm {role}"),
            };
            let version = engine_version(engine).await.unwrap_or_else(|| "version unknown".into());
            Finding::ok(
                "engine",
                format!(
                    "{} answers: {version}, node {}, {role}",
                    options.docker_host, facts.node_name
                ),
            )
        }
        Ok(Err(error)) => Finding::failed(
            "engine",
            format!("{} does not answer: {error}", options.docker_host),
            "mount the engine's socket into the agent (-v /var/run/docker.sock:/var/run/docker.sock) \
             or point DOCKER_HOST at it, and check that the engine runs",
        ),
        Err(_) => Finding::failed(
            "engine",
            format!("{} took more than {PROBE_TIMEOUT:?} to answer", options.docker_host),
            "the engine is overloaded or hung: check `systemctl status docker` and its log",
        ),
    }
}

/// `GET /version`'s engine and API versions, as `Docker 20.10.24 (API 1.41)`.
async fn engine_version(engine: &DockerSocket) -> Option<String> {
    use http_body_util::BodyExt as _;
    // Go's HTTP server refuses an HTTP/1.1 request without a Host.
    let request = http::Request::get("/version")
        .header(http::header::HOST, "docker")
        .body(berth_ports::empty_body())
        .ok()?;
    let answer = tokio::time::timeout(PROBE_TIMEOUT, engine.forward(request))
        .await
        .ok()?
        .ok()?;
    let body = tokio::time::timeout(PROBE_TIMEOUT, answer.into_body().collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    let version: Value = serde_json::from_slice(&body).ok()?;
    let product = version["Components"][0]["Name"]
        .as_str()
        .filter(|name| name.contains("Podman"))
        .map_or("Docker", |_| "Podman");
    Some(format!(
        "{product} {} (API {})",
        version["Version"].as_str()?,
        version["ApiVersion"].as_str()?
    ))
}

async fn check_peers(options: &Options) -> Vec<Finding> {
    if options.cluster_seeds.is_empty() {
        return vec![Finding::ok(
            "cluster peers",
            "none configured (AGENT_CLUSTER_ADDR unset): in a swarm service the peers are the service's tasks",
        )];
    }
    let keyring = options
        .cluster_key
        .as_ref()
        .and_then(|key| Keyring::new(vec![key.clone()]).ok());
    let mut findings = Vec::new();
    for seed in &options.cluster_seeds {
        let target = format!("{}:{}", seed.host, seed.port);
        let addresses: Vec<SocketAddr> =
            match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host(target.as_str()))
                .await
            {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(error)) => {
                    findings.push(Finding::failed(
                        format!("peer {target}"),
                        format!("the name does not resolve: {error}"),
                        "fix AGENT_CLUSTER_ADDR, or the DNS the agent uses",
                    ));
                    continue;
                }
                Err(_) => {
                    findings.push(Finding::failed(
                        format!("peer {target}"),
                        "resolving the name took too long",
                        "check the DNS the agent uses",
                    ));
                    continue;
                }
            };
        for address in addresses {
            findings.push(judge_peer(&probe_peer(address, keyring.as_ref()).await));
        }
    }
    findings
}

async fn probe_peer(address: SocketAddr, keyring: Option<&Keyring>) -> PeerProbe {
    let tcp = probe::tcp(address, PROBE_TIMEOUT).await;
    let small = probe::udp_ping(address, keyring, 0, PROBE_TIMEOUT)
        .await
        .ok()
        .flatten();
    let large = match small {
        Some(_) => probe::udp_ping(address, keyring, probe::LARGE_PACKET, PROBE_TIMEOUT)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    PeerProbe {
        peer: address.to_string(),
        tcp,
        udp_small: small,
        udp_large: large,
    }
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn check_certificate(options: &Options) -> Finding {
    if options.edge.enabled {
        return Finding::ok(
            "api certificate",
            "none: an Edge agent serves plain HTTP inside its tunnel",
        );
    }
    match &options.ssl_cert {
        None => Finding::ok(
            "api certificate",
            "self-signed, made at each start (SSL_CERT unset); Portainer does not verify it",
        ),
        Some(path) => match certificate_facts(path) {
            Ok(facts) => judge_certificate(
                &facts.names,
                facts.not_before,
                facts.not_after,
                now_seconds(),
            ),
            Err(error) => Finding::failed(
                "api certificate",
                error.to_string(),
                "point SSL_CERT at a readable PEM certificate (and SSL_KEY at its key)",
            ),
        },
    }
}

fn check_signatures(options: &Options, running: Option<&Value>) -> Finding {
    if options.edge.enabled {
        return Finding::ok(
            "signatures",
            "Edge mode: requests come through the tunnel, gated by the Edge key",
        );
    }
    let certificates = if options.client_cert_auth {
        "; client certificates from SSL_CACERT authorise without a signature"
    } else {
        ""
    };
    if options.secret.is_some() {
        return Finding::ok(
            "signatures",
            format!(
                "secret mode (AGENT_SECRET set): Portainer must use the same secret{certificates}"
            ),
        );
    }
    let Some(api) = running.map(|doc| &doc["api"]) else {
        return Finding::ok(
            "signatures",
            "default mode: the first Portainer key to connect pairs the agent",
        );
    };
    if api["paired"].as_bool() == Some(true) {
        return Finding::ok(
            "signatures",
            format!("default mode, paired with a Portainer key{certificates}"),
        );
    }
    match api["shutdown_in_seconds"].as_u64() {
        Some(0) => Finding::failed(
            "signatures",
            "no Portainer paired in time: the API is closed (security shutdown)",
            "restart the agent and add the environment in Portainer within AGENT_SECRET_TIMEOUT",
        ),
        Some(left) => Finding::warning(
            "signatures",
            format!(
                "not paired yet: the API closes in {} unless a Portainer connects",
                status::duration_text(left)
            ),
            "add this environment in Portainer now, or set AGENT_SECRET on both sides",
        ),
        None => Finding::ok("signatures", "default mode, not paired yet"),
    }
}

async fn check_edge(options: &Options, running: Option<&Value>) -> Vec<Finding> {
    let text = match &options.edge.key {
        Some(key) => Some(key.clone()),
        None => KeyFile::new(&options.data_path).load().await.ok().flatten(),
    };
    let Some(text) = text else {
        return vec![Finding::warning(
            "edge key",
            "no Edge key yet (EDGE_KEY unset and none saved under DATA_PATH)",
            "set EDGE_KEY from Portainer's environment page, or paste it on the agent's key page",
        )];
    };
    let key = match EdgeKey::parse(&text) {
        Ok(key) => key,
        Err(error) => {
            return vec![Finding::failed(
                "edge key",
                format!("the Edge key does not decode: {error}"),
                "copy the key again from Portainer, whole and without quotes",
            )]
        }
    };
    let mut findings = vec![Finding::ok(
        "edge key",
        format!(
            "Portainer {}, tunnel server {}, endpoint {}",
            key.portainer_url,
            key.tunnel_addr,
            if key.endpoint_id == 0 {
                "assigned by Portainer".to_string()
            } else {
                key.endpoint_id.to_string()
            }
        ),
    )];
    let proxies = crate::edge::proxy_settings(options);
    let tls = crate::edge::portainer_tls(options);
    findings.push(check_poll(options, &key, tls, proxies.clone()).await);
    findings.push(check_tunnel(&key, proxies.for_tunnel()).await);
    if let Some(poll) = running.and_then(|doc| doc["edge"]["last_poll"].as_object()) {
        findings.push(match poll.get("error").and_then(Value::as_str) {
            None => Finding::ok("last poll", "succeeded"),
            Some(error) => Finding::failed(
                "last poll",
                error.to_string(),
                "see the checks above; a 403 means Portainer does not know this Edge ID or key",
            ),
        });
    }
    findings
}

/// One status poll, as the agent makes it: Portainer reachable with the
/// TLS and proxy settings in use, and answering for this Edge ID.
async fn check_poll(
    options: &Options,
    key: &EdgeKey,
    tls: berth_adapters::portainer::PortainerTls,
    proxies: berth_domain::edge::proxy::ProxySettings,
) -> Finding {
    let via = key
        .portainer_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| {
            let secure = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
            proxies
                .for_portainer(secure, uri.host()?, port)
                .map(|proxy| format!(" through the proxy {proxy}"))
        })
        .unwrap_or_default();
    let client = match PortainerHttp::new(&key.portainer_url, tls, proxies) {
        Ok(client) => client,
        Err(why) => {
            return Finding::failed(
                "portainer",
                format!("cannot make the poll client: {why}"),
                "check the CA, certificate and key files (MTLS_*) and the proxy options",
            )
        }
    };
    if key.endpoint_id == 0 {
        return Finding::ok(
            "portainer",
            "a global key: Portainer assigns the environment at the first poll (not tried here)",
        );
    }
    let call = EdgeCall {
        method: http::Method::GET,
        path: format!("/api/endpoints/{}/edge/status", key.endpoint_id),
        headers: vec![
            (
                "X-PortainerAgent-EdgeID".into(),
                options.edge.id.clone().unwrap_or_default(),
            ),
            ("Portainer-Agent".into(), AGENT_VERSION.into()),
        ],
        body: Vec::new(),
        timeout: POLL_TIMEOUT,
    };
    let url = &key.portainer_url;
    match client.call(call).await {
        Ok(answer) if answer.status == 200 => {
            Finding::ok("portainer", format!("{url} answers this agent's poll{via}"))
        }
        Ok(answer) => Finding::failed(
            "portainer",
            format!(
                "{url} refuses the poll{via}: {}",
                refusal_text(answer.status, &answer.body)
            ),
            "Portainer does not accept this agent: check that EDGE_ID and the key are the \
             environment's in Portainer, and that the environment was not removed",
        ),
        Err(error) => Finding::failed(
            "portainer",
            format!("{url} unreachable{via}: {error}"),
            "check that Portainer runs and listens there, the firewall between, the TLS options \
             (EDGE_INSECURE_POLL, MTLS_*) and HTTPS_PROXY/HTTP_PROXY/NO_PROXY",
        ),
    }
}

/// chisel's websocket upgrade at the tunnel address, through the tunnel's
/// proxy when one is set.
async fn check_tunnel(key: &EdgeKey, proxy: Option<&str>) -> Finding {
    let via = proxy.map_or(String::new(), |p| format!(" through the proxy {p}"));
    match berth_adapters::tunnel::probe_upgrade(&key.tunnel_addr, proxy, PROBE_TIMEOUT).await {
        Ok(()) => Finding::ok(
            "tunnel server",
            format!("{} upgrades to chisel's websocket{via}", key.tunnel_addr),
        ),
        Err(error) => Finding::failed(
            "tunnel server",
            format!("no websocket at {}{via}: {error}", key.tunnel_addr),
            "Portainer's tunnel port (8000 by default) must be reachable from this node, and a \
             proxy must allow CONNECT to it",
        ),
    }
}

fn check_root(name: &str, root: &str) -> Finding {
    match std::fs::read_dir(Path::new(root)) {
        Ok(_) => Finding::ok(name, format!("{root} present and readable")),
        Err(error) => Finding::warning(
            name,
            format!("{root}: {error}"),
            format!(
                "mount it into the agent container if Portainer should browse it (-v ...:{root})"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_root_is_a_warning_with_the_mount_to_add() {
        let finding = check_root("host root", "/nonexistent-berth-root");
        assert_eq!(finding.verdict, berth_domain::doctor::Verdict::Warning);
        assert!(finding.fix.unwrap().contains("/nonexistent-berth-root"));
    }
}
