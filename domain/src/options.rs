//! The option model: every option of the Portainer agent plus the ones berth
//! adds, their defaults, and the validation that turns raw strings into a
//! checked [`Options`].
//!
//! The table [`OPTION_SPECS`] is the single source of truth: the command
//! line is built from it, and the README's options table lists it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::cluster::{parse_seeds, Seed};
use crate::duration::parse_go_duration;
use crate::kubernetes::Platform;

/// How an option's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    Flag,
    Duration,
    Port,
    Integer,
    IpAddress,
    IntegerList,
    LogLevel,
    LogMode,
    DockerHost,
    SocketAddress,
}

/// One option: its environment variable, its flag and its default.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub env: &'static str,
    /// The long flag, without the leading `--`.
    pub flag: &'static str,
    /// Deprecated flag names still accepted.
    pub aliases: &'static [&'static str],
    pub kind: ValueKind,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

const fn spec(
    env: &'static str,
    flag: &'static str,
    kind: ValueKind,
    default: Option<&'static str>,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        env,
        flag,
        aliases: &[],
        kind,
        default,
        help,
    }
}

use ValueKind as K;

/// Every option berth reads, in the order `--help` shows them.
pub const OPTION_SPECS: &[OptionSpec] = &[
    spec(
        "AGENT_HOST",
        "host",
        K::IpAddress,
        Some("0.0.0.0"),
        "API listen address",
    ),
    spec("AGENT_PORT", "port", K::Port, Some("9001"), "API port"),
    spec(
        "AGENT_SECRET",
        "secret",
        K::Text,
        None,
        "Shared secret (secret mode)",
    ),
    spec(
        "AGENT_SECRET_TIMEOUT",
        "secret-timeout",
        K::Duration,
        Some("72h"),
        "Shut the API down after this long without an associated Portainer",
    ),
    spec(
        "AGENT_CLUSTER_ADDR",
        "cluster-addr",
        K::Text,
        None,
        "Address(es) of cluster peers to join: DNS name, IP or host:port, comma-separated",
    ),
    spec(
        "AGENT_CLUSTER_PROBE_TIMEOUT",
        "agent-cluster-timeout",
        K::Duration,
        Some("500ms"),
        "Gossip probe timeout",
    ),
    spec(
        "AGENT_CLUSTER_PROBE_INTERVAL",
        "agent-cluster-interval",
        K::Duration,
        Some("1s"),
        "Gossip probe interval",
    ),
    spec(
        "AGENT_CLUSTER_PORT",
        "cluster-port",
        K::Port,
        Some("7946"),
        "Gossip port (berth)",
    ),
    spec(
        "AGENT_CLUSTER_GOSSIP",
        "cluster-gossip",
        K::Text,
        Some("memberlist"),
        "Gossip implementation: memberlist (HashiCorp's wire protocol, joins Go agents) or serf-rs (berth agents only; a build with --features serf-rs) (berth)",
    ),
    spec(
        "AGENT_CLUSTER_KEY",
        "cluster-key",
        K::Text,
        None,
        "Gossip encryption key, base64 of 16, 24 or 32 bytes, as Go serf's -encrypt takes it (berth)",
    ),
    spec(
        "AGENT_ADVERTISE_ADDR",
        "advertise-addr",
        K::IpAddress,
        None,
        "IP address peers use to reach this agent (berth)",
    ),
    spec(
        "DOCKER_HOST",
        "docker-host",
        K::DockerHost,
        Some("unix:///var/run/docker.sock"),
        "Docker engine endpoint: unix:///path or tcp://host:port; with PODMAN=1 unix:///run/podman/podman.sock (berth)",
    ),
    spec(
        "PODMAN",
        "podman",
        K::Flag,
        Some("false"),
        "A Podman host: its socket and volume folder by default, and no cluster",
    ),
    spec(
        "KUBERNETES_SERVICE_HOST",
        "kubernetes-service-host",
        K::Text,
        None,
        "The cluster's API server (an IP): Kubernetes sets it in every pod, and berth then serves that cluster instead of a Docker engine",
    ),
    spec(
        "KUBERNETES_SERVICE_PORT",
        "kubernetes-service-port",
        K::Port,
        Some("443"),
        "The API server's port; Kubernetes sets it (berth)",
    ),
    spec(
        "KUBERNETES_SERVICE_ACCOUNT_DIR",
        "kubernetes-service-account-dir",
        K::Text,
        Some("/var/run/secrets/kubernetes.io/serviceaccount"),
        "The pod's service account: its token, berth's own credential, and ca.crt, the CA the API server's certificate must chain to (berth)",
    ),
    spec(
        "SSL_CERT",
        "ssl-cert",
        K::Text,
        None,
        "PEM certificate for the API; a self-signed one is generated when unset (berth)",
    ),
    spec(
        "SSL_KEY",
        "ssl-key",
        K::Text,
        None,
        "PEM private key for SSL_CERT (berth)",
    ),
    spec(
        "SSL_CACERT",
        "ssl-cacert",
        K::Text,
        None,
        "PEM CA certificate: when set, clients must present a certificate it signed (mutual TLS) (berth)",
    ),
    spec(
        "AGENT_MAX_HEADER_BYTES",
        "max-header-bytes",
        K::Integer,
        Some("65536"),
        "The largest request header block, in bytes (8192 to 16777216); larger ones get a 431 (berth)",
    ),
    spec(
        "AGENT_CLIENT_CERT_AUTH",
        "client-cert-auth",
        K::Flag,
        Some("false"),
        "With SSL_CACERT: a client certificate from that CA authorises its requests without a signature; clients without one may connect and must sign (berth)",
    ),
    spec(
        "METRICS_ADDR",
        "metrics-addr",
        K::SocketAddress,
        None,
        "Serve unsigned Prometheus metrics at http://ADDR/metrics, for example 0.0.0.0:9100; off when unset (berth)",
    ),
    spec(
        "AGENT_CREDENTIALS_ADDR",
        "credentials-addr",
        K::SocketAddress,
        Some("127.0.0.1:9005"),
        "Loopback address of the registry credential lookup that Edge stacks' docker credential helper asks; port 0 picks a free one (berth)",
    ),
    spec(
        "DOCKERHUB_AUTH_URL",
        "dockerhub-auth-url",
        K::Text,
        Some("https://auth.docker.io"),
        "Docker Hub's token service, asked by POST /v2/dockerhub (berth)",
    ),
    spec(
        "DOCKERHUB_REGISTRY_URL",
        "dockerhub-registry-url",
        K::Text,
        Some("https://registry-1.docker.io"),
        "Docker Hub's registry, asked by POST /v2/dockerhub for the pull limits (berth)",
    ),
    spec(
        "AGENT_CONNECT_TIMEOUT",
        "connect-timeout",
        K::Duration,
        Some("5s"),
        "Timeout to connect to the engine or a peer agent (berth)",
    ),
    spec(
        "AGENT_HEADER_TIMEOUT",
        "header-timeout",
        K::Duration,
        Some("30s"),
        "Timeout for a client's TLS handshake and request headers (berth)",
    ),
    spec(
        "AGENT_IDLE_TIMEOUT",
        "idle-timeout",
        K::Duration,
        Some("120s"),
        "Close a keep-alive connection idle this long between requests (berth)",
    ),
    spec(
        "AGENT_FANOUT_TIMEOUT",
        "fanout-timeout",
        K::Duration,
        Some("10s"),
        "Per-node timeout of cluster-wide lists (berth)",
    ),
    spec(
        "AGENT_FANOUT_BUDGET",
        "fanout-budget",
        K::Integer,
        Some("128"),
        "Node answers all cluster-wide lists wait on at once (1 to 100000); a list over N nodes takes N, or all of it, and later lists wait their turn as long as AGENT_FANOUT_TIMEOUT, then get a 503 (berth)",
    ),
    spec(
        "AGENT_SHUTDOWN_TIMEOUT",
        "shutdown-timeout",
        K::Duration,
        Some("10s"),
        "How long in-flight requests may finish after SIGTERM (berth)",
    ),
    spec(
        "AGENT_FACTS_INTERVAL",
        "facts-interval",
        K::Duration,
        Some("60s"),
        "How often engine facts (node name, swarm role) are read again besides after the engine's events that may change them (berth)",
    ),
    spec(
        "AGENT_MAX_CONNECTIONS",
        "max-connections",
        K::Integer,
        Some("4096"),
        "Client connections served at once; beyond, a clear 503 (berth)",
    ),
    spec(
        "AGENT_WORKER_THREADS",
        "worker-threads",
        K::Text,
        Some("auto"),
        "Threads serving requests; auto is one fewer than the cores, at least one (berth)",
    ),
    spec(
        "ASSETS_PATH",
        "assets",
        K::Text,
        Some("/app"),
        "Folder holding the docker and compose binaries",
    ),
    spec(
        "DATA_PATH",
        "data",
        K::Text,
        Some("/data"),
        "Folder holding agent_edge_key, Edge stacks and the async command timestamp",
    ),
    spec(
        "AGENT_HOST_ROOT",
        "host-root",
        K::Text,
        Some("/host"),
        "Where the host's root is mounted: host info and host browsing read under it (berth)",
    ),
    spec(
        "AGENT_VOLUMES_ROOT",
        "volumes-root",
        K::Text,
        Some("/var/lib/docker/volumes"),
        "Where the engine keeps volumes: volume browsing reads <root>/<volume>/_data; with PODMAN=1 /var/lib/containers/storage/volumes (berth)",
    ),
    spec(
        "LOG_LEVEL",
        "log-level",
        K::LogLevel,
        Some("INFO"),
        "ERROR, WARN, INFO or DEBUG (any case)",
    ),
    spec(
        "LOG_MODE",
        "log-mode",
        K::LogMode,
        Some("PRETTY"),
        "PRETTY, NOCOLOR or JSON",
    ),
    spec(
        "UPDATE_ID",
        "update-id",
        K::Integer,
        Some("0"),
        "Edge update ID",
    ),
    spec("EDGE", "edge", K::Flag, Some("false"), "Edge mode"),
    spec(
        "EDGE_ASYNC",
        "edge-async",
        K::Flag,
        Some("false"),
        "Async Edge mode: snapshots and commands over one endpoint, no tunnel (requires EDGE)",
    ),
    spec("EDGE_KEY", "edge-key", K::Text, None, "Edge key"),
    spec("EDGE_ID", "edge-id", K::Text, None, "Edge ID"),
    spec(
        "EDGE_SERVER_HOST",
        "edge-host",
        K::IpAddress,
        Some("0.0.0.0"),
        "Edge key page listen address",
    ),
    spec(
        "EDGE_SERVER_PORT",
        "edge-port",
        K::Port,
        Some("80"),
        "Edge key page port",
    ),
    spec(
        "EDGE_INACTIVITY_TIMEOUT",
        "edge-inactivity",
        K::Duration,
        Some("5m"),
        "Close the Edge tunnel after this long without activity",
    ),
    spec(
        "EDGE_JOB_TIMEOUT",
        "edge-job-timeout",
        K::Duration,
        Some("1h"),
        "Stop an Edge job's script that runs longer than this (berth)",
    ),
    spec(
        "EDGE_INSECURE_POLL",
        "edge-insecurepoll",
        K::Flag,
        Some("false"),
        "Skip TLS verification when polling Portainer",
    ),
    spec(
        "EDGE_TUNNEL",
        "edge-tunnel",
        K::Flag,
        Some("true"),
        "Open the reverse tunnel when Portainer asks",
    ),
    spec(
        "HTTPS_PROXY",
        "edge-tunnel-https-proxy",
        K::Text,
        None,
        "Proxy for the Edge tunnel (wins over HTTP_PROXY) and for polling an https:// Portainer",
    ),
    spec(
        "HTTP_PROXY",
        "edge-tunnel-http-proxy",
        K::Text,
        None,
        "Proxy for the Edge tunnel and for polling an http:// Portainer",
    ),
    spec(
        "NO_PROXY",
        "no-proxy",
        K::Text,
        None,
        "Portainer addresses polled without a proxy, as Go reads NO_PROXY: hosts, domains, IPs, CIDR networks, comma-separated (berth)",
    ),
    spec(
        "EDGE_GROUPS",
        "edge-groups",
        K::IntegerList,
        None,
        "Edge group IDs, colon-separated (auto-onboarding)",
    ),
    spec(
        "PORTAINER_GROUP",
        "environment-group",
        K::Integer,
        Some("0"),
        "Environment group ID (auto-onboarding)",
    ),
    spec(
        "PORTAINER_TAGS",
        "tags",
        K::IntegerList,
        None,
        "Tag IDs, colon-separated (auto-onboarding)",
    ),
    OptionSpec {
        aliases: &["sslcert"],
        ..spec(
            "MTLS_SSL_CERT",
            "mtlscert",
            K::Text,
            None,
            "Client certificate for polling Portainer",
        )
    },
    OptionSpec {
        aliases: &["sslkey"],
        ..spec(
            "MTLS_SSL_KEY",
            "mtlskey",
            K::Text,
            None,
            "Private key of MTLS_SSL_CERT",
        )
    },
    OptionSpec {
        aliases: &["sslcacert"],
        ..spec(
            "MTLS_SSL_CA",
            "mtlscacert",
            K::Text,
            None,
            "CA bundle to verify Portainer",
        )
    },
    spec(
        "MTLS_CERT_RETRY_INTERVAL",
        "certificate-retry-interval",
        K::Duration,
        Some("0"),
        "Wait for the mTLS files at start, checking at this interval",
    ),
    spec(
        "AWS_CLIENT_CERT",
        "aws-cert",
        K::Text,
        Some("/certs/aws-client.crt"),
        "IAM Roles Anywhere client certificate",
    ),
    spec(
        "AWS_CLIENT_KEY",
        "aws-key",
        K::Text,
        Some("/certs/aws-client.key"),
        "IAM Roles Anywhere client key",
    ),
    spec(
        "AWS_CLIENT_BUNDLE",
        "aws-bundle",
        K::Text,
        None,
        "IAM Roles Anywhere bundle",
    ),
    spec(
        "AWS_ROLE_ARN",
        "aws-role-arn",
        K::Text,
        None,
        "IAM Roles Anywhere role ARN",
    ),
    spec(
        "AWS_TRUST_ANCHOR_ARN",
        "aws-trust-anchor-arn",
        K::Text,
        None,
        "IAM Roles Anywhere trust anchor ARN",
    ),
    spec(
        "AWS_PROFILE_ARN",
        "aws-profile-arn",
        K::Text,
        None,
        "IAM Roles Anywhere profile ARN",
    ),
    spec(
        "AWS_REGION",
        "aws-region",
        K::Text,
        None,
        "IAM Roles Anywhere region",
    ),
];

/// Where a raw value came from, so an error can name what the user typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Environment,
}

/// The raw values a user gave, keyed by environment variable name. Options
/// the user did not give are absent and take their default.
#[derive(Debug, Clone, Default)]
pub struct RawOptions {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl RawOptions {
    pub fn new() -> Self {
        RawOptions::default()
    }

    /// Records a value. `env` must be the `env` of an [`OptionSpec`].
    pub fn set(&mut self, env: &'static str, value: impl Into<String>, source: Source) {
        self.values.insert(env, (value.into(), source));
    }

    fn get(&self, env: &str) -> Option<(&str, Source)> {
        self.values.get(env).map(|(v, s)| (v.as_str(), *s))
    }
}

/// A value that does not fit its option. Displayed as one line naming the
/// option, the value and what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub env: &'static str,
    pub flag: &'static str,
    pub value: String,
    pub source: Source,
    pub expected: String,
}

/// Options whose values are secrets: an error names their length only, so
/// a mistyped key does not end up in logs.
const SECRET_OPTIONS: [&str; 3] = ["AGENT_CLUSTER_KEY", "AGENT_SECRET", "EDGE_KEY"];

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if SECRET_OPTIONS.contains(&self.env) {
            format!("({} characters, not shown)", self.value.chars().count())
        } else {
            format!("{:?}", self.value)
        };
        match self.source {
            Source::Environment => write!(f, "invalid value {value} for {}", self.env)?,
            Source::Flag => write!(
                f,
                "invalid value {value} for --{} ({})",
                self.flag, self.env
            )?,
        }
        write!(f, ": expected {}", self.expected)
    }
}

impl std::error::Error for OptionError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    Pretty,
    NoColor,
    Json,
}

/// Where the Docker engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    Unix { path: String },
    Tcp { host: String, port: u16 },
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerHost::Unix { path } => write!(f, "unix://{path}"),
            DockerHost::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

impl DockerHost {
    /// Parses `unix:///path` or `tcp://host:port` (a bare `host:port` is not
    /// accepted, so a typo cannot silently mean something else).
    pub fn parse(text: &str) -> Option<DockerHost> {
        if let Some(path) = text.strip_prefix("unix://") {
            return (path.starts_with('/') && path.len() > 1).then(|| DockerHost::Unix {
                path: path.to_string(),
            });
        }
        let address = text.strip_prefix("tcp://")?.trim_end_matches('/');
        let (host, port) = address.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().ok()?;
        if host.is_empty() || port == 0 || host.contains('/') {
            return None;
        }
        Some(DockerHost::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

/// Timeouts that bound every wait of a request's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub header: Duration,
    pub idle: Duration,
    pub fanout: Duration,
    pub shutdown: Duration,
}

/// Where the cluster's API server is, and the pod's credentials for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesOptions {
    pub api_host: String,
    pub api_port: u16,
    pub service_account_dir: String,
}

/// The Edge options. Only parsed and validated so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeOptions {
    pub enabled: bool,
    pub asynchronous: bool,
    pub key: Option<String>,
    pub id: Option<String>,
    pub server_host: IpAddr,
    pub server_port: u16,
    pub inactivity_timeout: Duration,
    pub job_timeout: Duration,
    pub insecure_poll: bool,
    pub tunnel: bool,
    pub https_proxy: Option<String>,
    pub http_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub groups: Vec<u64>,
    pub environment_group: i64,
    pub tags: Vec<u64>,
    pub update_id: i64,
}

/// Client certificate options for polling Portainer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsOptions {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub ca: Option<String>,
    pub retry_interval: Duration,
}

/// IAM Roles Anywhere options, carried for Edge registries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsOptions {
    pub client_cert: String,
    pub client_key: String,
    pub client_bundle: Option<String>,
    pub role_arn: Option<String>,
    pub trust_anchor_arn: Option<String>,
    pub profile_arn: Option<String>,
    pub region: Option<String>,
}

/// Which gossip adapter joins the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GossipKind {
    /// HashiCorp memberlist and serf on the wire, as the Go agent speaks.
    Memberlist,
    /// The `serf` crate: berth agents only.
    SerfRs,
}

/// Checked options. Built only by [`Options::from_raw`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub host: IpAddr,
    pub port: u16,
    pub secret: Option<String>,
    pub secret_timeout: Duration,
    pub cluster_addr: Option<String>,
    /// `AGENT_CLUSTER_ADDR`, parsed; empty when unset.
    pub cluster_seeds: Vec<Seed>,
    pub cluster_probe_timeout: Duration,
    pub cluster_probe_interval: Duration,
    pub cluster_port: u16,
    pub cluster_gossip: GossipKind,
    /// The gossip key's bytes (checked: 16, 24 or 32 of them).
    pub cluster_key: Option<Vec<u8>>,
    pub advertise_addr: Option<IpAddr>,
    /// `PODMAN=1`: the engine is Podman's Docker-compatible API.
    pub podman: bool,
    /// Set when berth runs in a pod: it serves that Kubernetes cluster.
    pub kubernetes: Option<KubernetesOptions>,
    pub docker_host: DockerHost,
    pub ssl_cert: Option<String>,
    pub ssl_key: Option<String>,
    /// Mutual TLS: the CA that client certificates must chain to.
    pub ssl_ca: Option<String>,
    /// With `ssl_ca`: a verified client certificate stands in for a
    /// signature, and clients without one may connect (and must sign).
    pub client_cert_auth: bool,
    /// Where the Prometheus endpoint listens; off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the registry credential lookup listens (loopback only: it
    /// hands out registry passwords).
    pub credentials_addr: SocketAddr,
    /// Docker Hub's token service and registry, without a trailing `/`.
    pub dockerhub_auth_url: String,
    pub dockerhub_registry_url: String,
    pub timeouts: Timeouts,
    pub facts_interval: Duration,
    /// Node answers that cluster-wide lists may wait on at once.
    pub fanout_budget: usize,
    pub max_connections: usize,
    /// Threads of the async runtime; `None` is one fewer than the cores.
    pub worker_threads: Option<usize>,
    /// The largest request header block accepted, in bytes.
    pub max_header_bytes: usize,
    pub assets_path: String,
    pub data_path: String,
    pub host_root: String,
    pub volumes_root: String,
    pub log_level: LogLevel,
    pub log_mode: LogMode,
    pub edge: EdgeOptions,
    pub mtls: MtlsOptions,
    pub aws: AwsOptions,
}

/// Reads one option, applying its default, and reports a bad value with the
/// option's names.
struct Reader<'a> {
    raw: &'a RawOptions,
}

impl Reader<'_> {
    fn spec(env: &str) -> &'static OptionSpec {
        OPTION_SPECS
            .iter()
            .find(|s| s.env == env)
            .unwrap_or_else(|| panic!("{env} is not in OPTION_SPECS"))
    }

    /// The raw text and its source, or the default (sourced as environment).
    fn text(&self, env: &str) -> Option<(String, Source)> {
        let spec = Self::spec(env);
        match self.raw.get(env) {
            Some((value, source)) => Some((value.to_string(), source)),
            None => spec.default.map(|d| (d.to_string(), Source::Environment)),
        }
    }

    /// The error for a value that cannot stand with the others: the
    /// option's value as given (empty when unset) and what it must be.
    fn refused(&self, env: &str, expected: &str) -> OptionError {
        let spec = Self::spec(env);
        let (value, source) = self
            .text(env)
            .unwrap_or((String::new(), Source::Environment));
        OptionError {
            env: spec.env,
            flag: spec.flag,
            value,
            source,
            expected: expected.to_string(),
        }
    }

    fn optional_text(&self, env: &str) -> Option<String> {
        self.text(env).map(|(v, _)| v).filter(|v| !v.is_empty())
    }

    fn required_text(&self, env: &str) -> String {
        self.optional_text(env).unwrap_or_default()
    }

    fn parsed<T>(
        &self,
        env: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, OptionError> {
        let Some((value, source)) = self.text(env) else {
            return Ok(None);
        };
        if value.is_empty() && Self::spec(env).default.is_none() {
            return Ok(None);
        }
        match parse(&value) {
            Some(parsed) => Ok(Some(parsed)),
            None => {
                let spec = Self::spec(env);
                Err(OptionError {
                    env: spec.env,
                    flag: spec.flag,
                    value,
                    source,
                    expected: expected.to_string(),
                })
            }
        }
    }

    /// For options that have a default, so a value is always there.
    fn with_default<T>(
        &self,
        env: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, OptionError> {
        Ok(self
            .parsed(env, expected, parse)?
            .unwrap_or_else(|| panic!("{env} has no default")))
    }

    fn duration(&self, env: &str) -> Result<Duration, OptionError> {
        self.with_default(env, EXPECT_DURATION, parse_go_duration)
    }

    fn port(&self, env: &str) -> Result<u16, OptionError> {
        self.with_default(env, EXPECT_PORT, |v| v.parse::<u16>().ok())
    }

    fn ip(&self, env: &str) -> Result<Option<IpAddr>, OptionError> {
        self.parsed(env, EXPECT_IP, |v| v.parse::<IpAddr>().ok())
    }

    fn flag(&self, env: &str) -> Result<bool, OptionError> {
        self.with_default(env, EXPECT_FLAG, parse_go_bool)
    }

    fn integer(&self, env: &str) -> Result<i64, OptionError> {
        self.with_default(env, EXPECT_INTEGER, |v| v.parse::<i64>().ok())
    }

    fn integer_list(&self, env: &str) -> Result<Vec<u64>, OptionError> {
        Ok(self
            .parsed(env, EXPECT_INTEGER_LIST, parse_integer_list)?
            .unwrap_or_default())
    }
}

/// Where a rootful Podman serves its Docker-compatible API.
pub const PODMAN_SOCKET: &str = "unix:///run/podman/podman.sock";
/// Where a rootful Podman keeps named volumes (`<name>/_data`).
pub const PODMAN_VOLUMES_ROOT: &str = "/var/lib/containers/storage/volumes";

const EXPECT_DURATION: &str = "a duration such as 72h, 30m, 10s or 500ms";
const EXPECT_PORT: &str = "a port number from 0 to 65535";
const EXPECT_CONNECTIONS: &str = "a number of connections from 1 to 1000000";
const EXPECT_FANOUT_BUDGET: &str = "a number of node answers from 1 to 100000";
const EXPECT_WORKERS: &str = "auto, or a number of threads from 1 to 1024";
const EXPECT_HEADER_BYTES: &str = "a number of bytes from 8192 to 16777216";
const EXPECT_IP: &str = "an IP address such as 0.0.0.0 or 10.0.0.5 (not a host name)";
const EXPECT_FLAG: &str = "a boolean: 1, true, 0 or false";
const EXPECT_INTEGER: &str = "a whole number";
const EXPECT_INTEGER_LIST: &str = "whole numbers separated by colons, such as 1:4:7";
const EXPECT_LOG_LEVEL: &str = "one of ERROR, WARN, INFO, DEBUG (any case)";
const EXPECT_LOG_MODE: &str = "one of PRETTY, NOCOLOR, JSON (any case)";
const EXPECT_GOSSIP: &str = "memberlist or serf-rs";
const EXPECT_GOSSIP_KEY: &str =
    "standard base64 of a 16, 24 or 32-byte key (serf keygen makes one)";
const EXPECT_SOCKET_ADDRESS: &str = "an IP address and a port, such as 0.0.0.0:9100";
const EXPECT_LOOPBACK: &str =
    "a loopback IP address and a port, such as 127.0.0.1:9005 (it hands out registry passwords)";
const EXPECT_HTTP_URL: &str = "an http:// or https:// URL, such as https://auth.docker.io";
const EXPECT_DOCKER_HOST: &str = "unix:///path/to/docker.sock or tcp://host:port";

/// Go's `strconv.ParseBool`, case-insensitive.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

fn parse_integer_list(text: &str) -> Option<Vec<u64>> {
    text.split(':')
        .map(|part| part.parse::<u64>().ok())
        .collect()
}

fn parse_log_level(text: &str) -> Option<LogLevel> {
    match text.to_ascii_uppercase().as_str() {
        "ERROR" => Some(LogLevel::Error),
        "WARN" => Some(LogLevel::Warn),
        "INFO" => Some(LogLevel::Info),
        "DEBUG" => Some(LogLevel::Debug),
        _ => None,
    }
}

/// An `http://` or `https://` URL with a host, its trailing `/` removed.
fn parse_http_url(text: &str) -> Option<String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))?;
    let host = rest.split('/').next().unwrap_or("");
    (!host.is_empty() && !host.contains(char::is_whitespace))
        .then(|| text.trim_end_matches('/').to_string())
}

fn parse_gossip(text: &str) -> Option<GossipKind> {
    match text.to_ascii_lowercase().as_str() {
        "memberlist" => Some(GossipKind::Memberlist),
        "serf-rs" => Some(GossipKind::SerfRs),
        _ => None,
    }
}

fn parse_gossip_key(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .filter(|key| [16, 24, 32].contains(&key.len()))
}

fn parse_log_mode(text: &str) -> Option<LogMode> {
    match text.to_ascii_uppercase().as_str() {
        "PRETTY" => Some(LogMode::Pretty),
        "NOCOLOR" => Some(LogMode::NoColor),
        "JSON" => Some(LogMode::Json),
        _ => None,
    }
}

impl Options {
    /// The platform berth serves (reference §1).
    pub fn platform(&self) -> Platform {
        Platform::detect(
            self.podman,
            self.kubernetes.as_ref().map(|k| k.api_host.as_str()),
        )
    }

    /// Validates every option. The first bad value is reported.
    ///
    /// # Errors
    /// An [`OptionError`] naming the option, the value and what it expects.
    pub fn from_raw(raw: &RawOptions) -> Result<Options, OptionError> {
        let r = Reader { raw };
        let edge = EdgeOptions {
            enabled: r.flag("EDGE")?,
            asynchronous: r.flag("EDGE_ASYNC")?,
            key: r.optional_text("EDGE_KEY"),
            id: r.optional_text("EDGE_ID"),
            server_host: r
                .ip("EDGE_SERVER_HOST")?
                .expect("EDGE_SERVER_HOST has a default"),
            server_port: r.port("EDGE_SERVER_PORT")?,
            inactivity_timeout: r.duration("EDGE_INACTIVITY_TIMEOUT")?,
            job_timeout: r.duration("EDGE_JOB_TIMEOUT")?,
            insecure_poll: r.flag("EDGE_INSECURE_POLL")?,
            tunnel: r.flag("EDGE_TUNNEL")?,
            https_proxy: r.optional_text("HTTPS_PROXY"),
            http_proxy: r.optional_text("HTTP_PROXY"),
            no_proxy: r.optional_text("NO_PROXY"),
            groups: r.integer_list("EDGE_GROUPS")?,
            environment_group: r.integer("PORTAINER_GROUP")?,
            tags: r.integer_list("PORTAINER_TAGS")?,
            update_id: r.integer("UPDATE_ID")?,
        };
        if edge.asynchronous && !edge.enabled {
            return Err(r.refused("EDGE_ASYNC", "EDGE=1 as well: async mode is an Edge mode"));
        }
        if edge.enabled && edge.id.is_none() {
            return Err(r.refused(
                "EDGE_ID",
                "the Edge ID Portainer gave this environment: EDGE=1 needs it",
            ));
        }
        let podman = r.flag("PODMAN")?;
        if podman && r.optional_text("AGENT_CLUSTER_ADDR").is_some() {
            return Err(r.refused(
                "AGENT_CLUSTER_ADDR",
                "unset with PODMAN=1: Podman hosts are not clustered",
            ));
        }
        let kubernetes = match r.optional_text("KUBERNETES_SERVICE_HOST") {
            Some(api_host) if !podman => Some(KubernetesOptions {
                api_host,
                api_port: r.port("KUBERNETES_SERVICE_PORT")?,
                service_account_dir: r.required_text("KUBERNETES_SERVICE_ACCOUNT_DIR"),
            }),
            _ => None,
        };
        if kubernetes.is_some() && edge.asynchronous {
            return Err(r.refused(
                "EDGE_ASYNC",
                "unset on Kubernetes (KUBERNETES_SERVICE_HOST is set): async Edge mode sends the environment's snapshot, which berth makes for Docker hosts only so far; standard Edge mode (EDGE=1) serves a cluster",
            ));
        }
        let options = Options {
            host: r.ip("AGENT_HOST")?.expect("AGENT_HOST has a default"),
            port: r.port("AGENT_PORT")?,
            secret: r.optional_text("AGENT_SECRET"),
            secret_timeout: r.duration("AGENT_SECRET_TIMEOUT")?,
            cluster_addr: r.optional_text("AGENT_CLUSTER_ADDR"),
            cluster_seeds: Vec::new(),
            cluster_probe_timeout: r.duration("AGENT_CLUSTER_PROBE_TIMEOUT")?,
            cluster_probe_interval: r.duration("AGENT_CLUSTER_PROBE_INTERVAL")?,
            cluster_port: r.port("AGENT_CLUSTER_PORT")?,
            cluster_gossip: r.with_default("AGENT_CLUSTER_GOSSIP", EXPECT_GOSSIP, parse_gossip)?,
            cluster_key: r.parsed("AGENT_CLUSTER_KEY", EXPECT_GOSSIP_KEY, parse_gossip_key)?,
            advertise_addr: r.ip("AGENT_ADVERTISE_ADDR")?,
            podman,
            kubernetes,
            docker_host: match (podman, raw.get("DOCKER_HOST")) {
                (true, None) => DockerHost::parse(PODMAN_SOCKET).expect("a unix:// address"),
                _ => r.with_default("DOCKER_HOST", EXPECT_DOCKER_HOST, DockerHost::parse)?,
            },
            ssl_cert: r.optional_text("SSL_CERT"),
            ssl_key: r.optional_text("SSL_KEY"),
            ssl_ca: r.optional_text("SSL_CACERT"),
            client_cert_auth: r.flag("AGENT_CLIENT_CERT_AUTH")?,
            metrics_addr: r.parsed("METRICS_ADDR", EXPECT_SOCKET_ADDRESS, |v| {
                v.parse::<SocketAddr>().ok()
            })?,
            credentials_addr: r.with_default("AGENT_CREDENTIALS_ADDR", EXPECT_LOOPBACK, |v| {
                v.parse::<SocketAddr>()
                    .ok()
                    .filter(|a| a.ip().is_loopback())
            })?,
            dockerhub_auth_url: r.with_default(
                "DOCKERHUB_AUTH_URL",
                EXPECT_HTTP_URL,
                parse_http_url,
            )?,
            dockerhub_registry_url: r.with_default(
                "DOCKERHUB_REGISTRY_URL",
                EXPECT_HTTP_URL,
                parse_http_url,
            )?,
            timeouts: Timeouts {
                connect: r.duration("AGENT_CONNECT_TIMEOUT")?,
                header: r.duration("AGENT_HEADER_TIMEOUT")?,
                idle: r.duration("AGENT_IDLE_TIMEOUT")?,
                fanout: r.duration("AGENT_FANOUT_TIMEOUT")?,
                shutdown: r.duration("AGENT_SHUTDOWN_TIMEOUT")?,
            },
            facts_interval: r.duration("AGENT_FACTS_INTERVAL")?,
            fanout_budget: r.with_default("AGENT_FANOUT_BUDGET", EXPECT_FANOUT_BUDGET, |v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
            })?,
            max_connections: r.with_default("AGENT_MAX_CONNECTIONS", EXPECT_CONNECTIONS, |v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
            })?,
            worker_threads: r.with_default(
                "AGENT_WORKER_THREADS",
                EXPECT_WORKERS,
                |v| match v {
                    "auto" => Some(None),
                    v => v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .map(Some),
                },
            )?,
            max_header_bytes: r.with_default(
                "AGENT_MAX_HEADER_BYTES",
                EXPECT_HEADER_BYTES,
                |v| {
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (8192..=16 << 20).contains(n))
                },
            )?,
            assets_path: r.required_text("ASSETS_PATH"),
            data_path: r.required_text("DATA_PATH"),
            host_root: r.required_text("AGENT_HOST_ROOT"),
            volumes_root: match (podman, raw.get("AGENT_VOLUMES_ROOT")) {
                (true, None) => PODMAN_VOLUMES_ROOT.to_string(),
                _ => r.required_text("AGENT_VOLUMES_ROOT"),
            },
            log_level: r.with_default("LOG_LEVEL", EXPECT_LOG_LEVEL, parse_log_level)?,
            log_mode: r.with_default("LOG_MODE", EXPECT_LOG_MODE, parse_log_mode)?,
            edge,
            mtls: MtlsOptions {
                cert: r.optional_text("MTLS_SSL_CERT"),
                key: r.optional_text("MTLS_SSL_KEY"),
                ca: r.optional_text("MTLS_SSL_CA"),
                retry_interval: r.duration("MTLS_CERT_RETRY_INTERVAL")?,
            },
            aws: AwsOptions {
                client_cert: r.required_text("AWS_CLIENT_CERT"),
                client_key: r.required_text("AWS_CLIENT_KEY"),
                client_bundle: r.optional_text("AWS_CLIENT_BUNDLE"),
                role_arn: r.optional_text("AWS_ROLE_ARN"),
                trust_anchor_arn: r.optional_text("AWS_TRUST_ANCHOR_ARN"),
                profile_arn: r.optional_text("AWS_PROFILE_ARN"),
                region: r.optional_text("AWS_REGION"),
            },
        };
        let mut options = options;
        if let Some(text) = &options.cluster_addr {
            options.cluster_seeds = parse_seeds(text, options.cluster_port).ok_or_else(|| {
                let spec = Reader::spec("AGENT_CLUSTER_ADDR");
                OptionError {
                    env: spec.env,
                    flag: spec.flag,
                    value: text.clone(),
                    source: r
                        .text("AGENT_CLUSTER_ADDR")
                        .map_or(Source::Environment, |(_, s)| s),
                    expected: "DNS names, IPs or host:port, separated by commas".to_string(),
                }
            })?;
        }
        options.check_pairs()?;
        Ok(options)
    }

    /// Rules that involve two options at once.
    fn check_pairs(&self) -> Result<(), OptionError> {
        let zero_rules = [
            ("AGENT_CONNECT_TIMEOUT", self.timeouts.connect),
            ("AGENT_HEADER_TIMEOUT", self.timeouts.header),
            ("AGENT_IDLE_TIMEOUT", self.timeouts.idle),
            ("AGENT_FANOUT_TIMEOUT", self.timeouts.fanout),
            ("AGENT_FACTS_INTERVAL", self.facts_interval),
            ("EDGE_JOB_TIMEOUT", self.edge.job_timeout),
        ];
        for (env, value) in zero_rules {
            if value.is_zero() {
                return Err(pair_error(env, "0", "a duration greater than zero"));
            }
        }
        match (&self.ssl_cert, &self.ssl_key) {
            (Some(_), None) => {
                return Err(pair_error(
                    "SSL_KEY",
                    "",
                    "a key file, since SSL_CERT is set",
                ))
            }
            (None, Some(_)) => {
                return Err(pair_error(
                    "SSL_CERT",
                    "",
                    "a certificate file, since SSL_KEY is set",
                ))
            }
            _ => {}
        }
        if self.ssl_ca.is_some() && self.ssl_cert.is_none() {
            return Err(pair_error(
                "SSL_CERT",
                "",
                "a certificate file (and SSL_KEY), since SSL_CACERT is set: clients check the agent too",
            ));
        }
        if self.client_cert_auth && self.ssl_ca.is_none() {
            return Err(pair_error(
                "SSL_CACERT",
                "",
                "the CA whose client certificates authorise, since AGENT_CLIENT_CERT_AUTH is set",
            ));
        }
        Ok(())
    }
}

fn pair_error(env: &'static str, value: &str, expected: &str) -> OptionError {
    let spec = Reader::spec(env);
    OptionError {
        env: spec.env,
        flag: spec.flag,
        value: value.to_string(),
        source: Source::Environment,
        expected: expected.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&'static str, &str)]) -> Result<Options, OptionError> {
        let mut raw = RawOptions::new();
        for (env, value) in pairs {
            raw.set(env, *value, Source::Environment);
        }
        Options::from_raw(&raw)
    }

    #[test]
    fn podman_hosts_default_to_podmans_socket_and_volumes_and_have_no_cluster() {
        let docker = check(&[]).unwrap();
        assert!(!docker.podman);
        assert_eq!(
            docker.docker_host.to_string(),
            "unix:///var/run/docker.sock"
        );
        assert_eq!(docker.volumes_root, "/var/lib/docker/volumes");
        let podman = check(&[("PODMAN", "1")]).unwrap();
        assert!(podman.podman);
        assert_eq!(podman.docker_host.to_string(), PODMAN_SOCKET);
        assert_eq!(podman.volumes_root, PODMAN_VOLUMES_ROOT);
        let chosen = check(&[
            ("PODMAN", "true"),
            ("DOCKER_HOST", "unix:///run/user/1000/podman/podman.sock"),
            (
                "AGENT_VOLUMES_ROOT",
                "/home/u/.local/share/containers/storage/volumes",
            ),
        ])
        .unwrap();
        assert_eq!(
            chosen.docker_host.to_string(),
            "unix:///run/user/1000/podman/podman.sock"
        );
        assert!(chosen.volumes_root.starts_with("/home/u/"));
        let error = check(&[("PODMAN", "1"), ("AGENT_CLUSTER_ADDR", "tasks.agent")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("AGENT_CLUSTER_ADDR"), "{error}");
        assert!(error.contains("not clustered"), "{error}");
    }

    #[test]
    fn a_pods_environment_makes_berth_the_clusters_agent() {
        let docker = check(&[]).unwrap();
        assert_eq!(docker.kubernetes, None);
        assert_eq!(docker.platform(), Platform::Docker);
        let pod = check(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
        ])
        .unwrap();
        assert_eq!(pod.platform(), Platform::Kubernetes);
        assert_eq!(
            pod.kubernetes,
            Some(KubernetesOptions {
                api_host: "10.96.0.1".into(),
                api_port: 6443,
                service_account_dir: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            })
        );
        let podman = check(&[("PODMAN", "1"), ("KUBERNETES_SERVICE_HOST", "10.96.0.1")]).unwrap();
        assert_eq!(podman.platform(), Platform::Podman);
        let edge = check(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("EDGE", "1"),
            ("EDGE_ID", "e"),
        ])
        .unwrap();
        assert!(edge.edge.enabled && edge.kubernetes.is_some());
        let asynchronous = check(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("EDGE", "1"),
            ("EDGE_ASYNC", "1"),
            ("EDGE_ID", "e"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            asynchronous.contains("EDGE_ASYNC") && asynchronous.contains("Kubernetes"),
            "{asynchronous}"
        );
    }

    #[test]
    fn gossip_choices_and_keys_are_checked() {
        let options = check(&[
            ("AGENT_CLUSTER_GOSSIP", "SERF-RS"),
            ("AGENT_CLUSTER_KEY", "cg8StVXbQJ0gPvMd9o7yrg=="),
        ])
        .unwrap();
        assert_eq!(options.cluster_gossip, GossipKind::SerfRs);
        assert_eq!(options.cluster_key.map(|k| k.len()), Some(16));
        let error = check(&[("AGENT_CLUSTER_GOSSIP", "consul")]).unwrap_err();
        assert!(
            error.to_string().contains("memberlist or serf-rs"),
            "{error}"
        );
        for bad in ["not base64!", "AAAA"] {
            let error = check(&[("AGENT_CLUSTER_KEY", bad)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("16, 24 or 32-byte"), "{error}");
            assert!(!error.contains(bad), "a key is not shown: {error}");
        }
    }

    #[test]
    fn defaults_match_the_reference() {
        let options = check(&[]).unwrap();
        assert_eq!(options.host.to_string(), "0.0.0.0");
        assert_eq!(options.port, 9001);
        assert_eq!(options.secret, None);
        assert_eq!(options.secret_timeout, Duration::from_secs(72 * 3600));
        assert_eq!(options.cluster_probe_timeout, Duration::from_millis(500));
        assert_eq!(options.cluster_probe_interval, Duration::from_secs(1));
        assert_eq!(options.cluster_port, 7946);
        assert_eq!(options.cluster_gossip, GossipKind::Memberlist);
        assert_eq!(options.cluster_key, None);
        assert_eq!(options.data_path, "/data");
        assert_eq!(options.assets_path, "/app");
        assert_eq!(options.log_level, LogLevel::Info);
        assert_eq!(options.log_mode, LogMode::Pretty);
        assert_eq!(
            options.docker_host,
            DockerHost::Unix {
                path: "/var/run/docker.sock".into()
            }
        );
        assert!(!options.edge.enabled);
        assert!(options.edge.tunnel);
        assert_eq!(options.edge.server_port, 80);
        assert_eq!(options.edge.inactivity_timeout, Duration::from_secs(300));
        assert_eq!(options.aws.client_cert, "/certs/aws-client.crt");
    }

    #[test]
    fn bad_values_name_variable_value_and_expectation() {
        let cases = [
            ("AGENT_PORT", "abc", "a port number"),
            ("AGENT_PORT", "70000", "a port number"),
            ("AGENT_SECRET_TIMEOUT", "3 days", "a duration"),
            ("LOG_LEVEL", "loud", "one of ERROR"),
            ("LOG_MODE", "fancy", "one of PRETTY"),
            ("AGENT_HOST", "localhost", "an IP address"),
            ("EDGE", "maybe", "a boolean"),
            ("EDGE_GROUPS", "1:x", "colons"),
            ("UPDATE_ID", "1.5", "a whole number"),
            ("DOCKER_HOST", "/var/run/docker.sock", "unix:///"),
            ("DOCKER_HOST", "tcp://host", "unix:///"),
            ("AGENT_CONNECT_TIMEOUT", "0", "greater than zero"),
            ("AGENT_CLUSTER_ADDR", "a,,b", "separated by commas"),
            ("METRICS_ADDR", "9100", "an IP address and a port"),
            (
                "AGENT_CREDENTIALS_ADDR",
                "0.0.0.0:9005",
                "a loopback IP address",
            ),
            (
                "DOCKERHUB_AUTH_URL",
                "auth.docker.io",
                "an http:// or https:// URL",
            ),
            ("AGENT_CLUSTER_ADDR", "host:port", "separated by commas"),
        ];
        for (env, value, expected) in cases {
            let error = check(&[(env, value)]).unwrap_err();
            let line = error.to_string();
            assert_eq!(error.env, env);
            assert!(line.contains(env), "{line}");
            assert!(
                line.contains(&format!("{value:?}")) || value == "0",
                "{line}"
            );
            assert!(line.contains(expected), "{line}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn flag_errors_name_the_flag_too() {
        let mut raw = RawOptions::new();
        raw.set("AGENT_PORT", "x", Source::Flag);
        let line = Options::from_raw(&raw).unwrap_err().to_string();
        assert!(
            line.contains("--port") && line.contains("AGENT_PORT"),
            "{line}"
        );
    }

    #[test]
    fn log_level_and_mode_accept_any_case() {
        let options = check(&[("LOG_LEVEL", "debug"), ("LOG_MODE", "json")]).unwrap();
        assert_eq!(options.log_level, LogLevel::Debug);
        assert_eq!(options.log_mode, LogMode::Json);
        assert_eq!(
            check(&[("LOG_LEVEL", "Warn")]).unwrap().log_level,
            LogLevel::Warn
        );
    }

    #[test]
    fn edge_async_needs_edge() {
        let error = check(&[("EDGE_ASYNC", "1")]).unwrap_err();
        assert_eq!(error.env, "EDGE_ASYNC");
        assert!(check(&[("EDGE_ASYNC", "true"), ("EDGE", "1"), ("EDGE_ID", "e")]).is_ok());
    }

    #[test]
    fn edge_needs_an_edge_id() {
        let error = check(&[("EDGE", "1")]).unwrap_err();
        assert_eq!(error.env, "EDGE_ID");
        assert!(error.to_string().contains("EDGE=1 needs it"), "{error}");
        assert!(check(&[("EDGE", "1"), ("EDGE_ID", "abc")]).is_ok());
    }

    #[test]
    fn the_header_limit_defaults_to_64_kib_and_stays_in_its_range() {
        assert_eq!(check(&[]).unwrap().max_header_bytes, 65_536);
        assert_eq!(
            check(&[("AGENT_MAX_HEADER_BYTES", "262144")])
                .unwrap()
                .max_header_bytes,
            262_144
        );
        for bad in ["100", "abc", "99999999"] {
            let error = check(&[("AGENT_MAX_HEADER_BYTES", bad)]).unwrap_err();
            assert_eq!(error.env, "AGENT_MAX_HEADER_BYTES");
        }
    }

    #[test]
    fn worker_threads_are_automatic_unless_counted() {
        assert_eq!(check(&[]).unwrap().worker_threads, None);
        assert_eq!(
            check(&[("AGENT_WORKER_THREADS", "auto")])
                .unwrap()
                .worker_threads,
            None
        );
        assert_eq!(
            check(&[("AGENT_WORKER_THREADS", "1")])
                .unwrap()
                .worker_threads,
            Some(1)
        );
        for bad in ["0", "-1", "two", "1025", ""] {
            let error = check(&[("AGENT_WORKER_THREADS", bad)]).unwrap_err();
            assert_eq!(error.env, "AGENT_WORKER_THREADS", "{bad:?}");
            assert!(error.to_string().contains("auto, or a number"), "{error}");
        }
    }

    #[test]
    fn the_fanout_budget_is_a_count_of_node_answers() {
        assert_eq!(check(&[]).unwrap().fanout_budget, 128);
        let options = check(&[("AGENT_FANOUT_BUDGET", "1000")]).unwrap();
        assert_eq!(options.fanout_budget, 1000);
        for bad in ["0", "-4", "lots", "100001", ""] {
            let error = check(&[("AGENT_FANOUT_BUDGET", bad)]).unwrap_err();
            assert_eq!(error.env, "AGENT_FANOUT_BUDGET", "{bad:?}");
            assert!(error.to_string().contains("node answers from 1"), "{error}");
        }
    }

    #[test]
    fn ssl_files_come_in_pairs() {
        assert_eq!(check(&[("SSL_CERT", "/c.pem")]).unwrap_err().env, "SSL_KEY");
        assert_eq!(check(&[("SSL_KEY", "/k.pem")]).unwrap_err().env, "SSL_CERT");
        assert!(check(&[("SSL_CERT", "/c"), ("SSL_KEY", "/k")]).is_ok());
        assert_eq!(
            check(&[("SSL_CACERT", "/ca.pem")]).unwrap_err().env,
            "SSL_CERT"
        );
        let mutual =
            check(&[("SSL_CERT", "/c"), ("SSL_KEY", "/k"), ("SSL_CACERT", "/ca")]).unwrap();
        assert_eq!(mutual.ssl_ca.as_deref(), Some("/ca"));
        assert!(!mutual.client_cert_auth);
        let alone = check(&[
            ("SSL_CERT", "/c"),
            ("SSL_KEY", "/k"),
            ("AGENT_CLIENT_CERT_AUTH", "1"),
        ]);
        assert_eq!(alone.unwrap_err().env, "SSL_CACERT");
        let certs = check(&[
            ("SSL_CERT", "/c"),
            ("SSL_KEY", "/k"),
            ("SSL_CACERT", "/ca"),
            ("AGENT_CLIENT_CERT_AUTH", "true"),
        ]);
        assert!(certs.unwrap().client_cert_auth);
    }

    #[test]
    fn docker_host_forms() {
        assert_eq!(
            DockerHost::parse("tcp://127.0.0.1:2375"),
            Some(DockerHost::Tcp {
                host: "127.0.0.1".into(),
                port: 2375
            })
        );
        assert_eq!(
            DockerHost::parse("tcp://[::1]:2375"),
            Some(DockerHost::Tcp {
                host: "::1".into(),
                port: 2375
            })
        );
        assert_eq!(
            DockerHost::parse("unix:///tmp/d.sock").unwrap().to_string(),
            "unix:///tmp/d.sock"
        );
        for bad in [
            "unix://",
            "unix://relative",
            "tcp://:1",
            "tcp://h:0",
            "http://h:1",
            "",
        ] {
            assert_eq!(DockerHost::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn lists_and_flags_parse() {
        let options = check(&[
            ("EDGE_GROUPS", "1:4:7"),
            ("EDGE_TUNNEL", "FALSE"),
            ("AGENT_ADVERTISE_ADDR", "10.0.0.5"),
            ("AGENT_SECRET", ""),
        ])
        .unwrap();
        assert_eq!(options.edge.groups, vec![1, 4, 7]);
        assert!(!options.edge.tunnel);
        assert_eq!(options.advertise_addr, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(options.secret, None, "an empty secret is no secret");
    }

    #[test]
    fn every_spec_has_unique_names() {
        let mut names = std::collections::BTreeSet::new();
        for spec in OPTION_SPECS {
            assert!(names.insert(spec.env), "{}", spec.env);
            assert!(names.insert(spec.flag), "{}", spec.flag);
        }
    }
}
