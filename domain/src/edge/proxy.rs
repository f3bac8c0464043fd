//! Which proxy an Edge agent's outbound call goes through, read as Go's
//! `net/http` reads it, so berth goes where the Go agent goes.
//!
//! - The poll (Go's `ProxyFromEnvironment`): `HTTPS_PROXY` for an `https://`
//!   Portainer, `HTTP_PROXY` for an `http://` one, neither for `localhost`,
//!   loopback addresses or what `NO_PROXY` excludes.
//! - A proxy URL without a scheme is `http://`; a missing port is the
//!   scheme's (80, 443, 1080); `user:password@` is sent as
//!   `Proxy-Authorization: Basic`.

use std::net::IpAddr;

use base64::Engine as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScheme {
    Http,
    Https,
    Socks5,
}

/// A proxy address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: ProxyScheme,
    pub host: String,
    pub port: u16,
    credentials: Option<(String, String)>,
}

impl ProxyUrl {
    /// # Errors
    /// When the text names no host, an unknown scheme or a bad port.
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let text = text.trim();
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_string(), text),
        };
        let scheme = match scheme.as_str() {
            "http" => ProxyScheme::Http,
            "https" => ProxyScheme::Https,
            "socks5" | "socks5h" => ProxyScheme::Socks5,
            other => return Err(format!("the proxy scheme {other:?} is not supported")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let credentials = userinfo.map(|info| {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            (percent_decode(user), percent_decode(password))
        });
        let (host, port) = split_host_port(hostport)?;
        if host.is_empty() {
            return Err("the proxy address has no host".into());
        }
        let port = match port {
            Some(port) => port,
            None => match scheme {
                ProxyScheme::Http => 80,
                ProxyScheme::Https => 443,
                ProxyScheme::Socks5 => 1080,
            },
        };
        Ok(ProxyUrl {
            scheme,
            host,
            port,
            credentials,
        })
    }

    /// The `Proxy-Authorization` value, when the URL carries credentials.
    pub fn authorization(&self) -> Option<String> {
        self.credentials.as_ref().map(|(user, password)| {
            let pair = format!("{user}:{password}");
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        })
    }

    /// `host:port`, with brackets around an IPv6 host.
    pub fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

/// `host:port`, with brackets around an IPv6 host.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn split_host_port(text: &str) -> Result<(String, Option<u16>), String> {
    let bad_port = || format!("the proxy port in {text:?} is not a number");
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("the proxy address {text:?} is not closed by ]"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.parse().map_err(|_| bad_port())?),
            None if after.is_empty() => None,
            None => return Err(bad_port()),
        };
        return Ok((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((
            host.to_string(),
            Some(port.parse().map_err(|_| bad_port())?),
        )),
        _ => Ok((text.to_string(), None)),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Exclusion {
    All,
    Network {
        address: IpAddr,
        prefix: u8,
    },
    Address {
        address: IpAddr,
        port: Option<u16>,
    },
    /// `.example.com` matches its subdomains; `whole` also the name itself.
    Domain {
        suffix: String,
        whole: bool,
        port: Option<u16>,
    },
}

/// `NO_PROXY`, as Go's `httpproxy` reads it: comma-separated entries, each
/// `*`, an IP, a CIDR network, or a domain (`example.com` and its
/// subdomains; `.example.com` or `*.example.com` its subdomains only),
/// optionally with a port. Malformed entries are skipped, as Go skips them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy(Vec<Exclusion>);

impl NoProxy {
    pub fn parse(text: &str) -> NoProxy {
        let mut exclusions = Vec::new();
        for entry in text.split(',') {
            let entry = entry.trim().to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                return NoProxy(vec![Exclusion::All]);
            }
            if let Some(network) = parse_cidr(&entry) {
                exclusions.push(network);
                continue;
            }
            let Ok((host, port)) = split_host_port(&entry) else {
                continue;
            };
            if host.is_empty() {
                continue;
            }
            if let Ok(address) = host.parse::<IpAddr>() {
                exclusions.push(Exclusion::Address { address, port });
                continue;
            }
            let host = host.strip_prefix('*').unwrap_or(&host);
            let (suffix, whole) = match host.strip_prefix('.') {
                Some(_) => (host.to_string(), false),
                None => (format!(".{host}"), true),
            };
            exclusions.push(Exclusion::Domain {
                suffix,
                whole,
                port,
            });
        }
        NoProxy(exclusions)
    }

    /// Whether a call to `host:port` goes direct: `localhost` and loopback
    /// addresses always do, as in Go.
    pub fn excludes(&self, host: &str, port: u16) -> bool {
        let host = host.trim().trim_matches(['[', ']']).to_ascii_lowercase();
        if host == "localhost" {
            return true;
        }
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        let port_matches = |wanted: &Option<u16>| wanted.is_none_or(|wanted| wanted == port);
        self.0.iter().any(|exclusion| match exclusion {
            Exclusion::All => true,
            Exclusion::Network { address, prefix } => {
                ip.is_some_and(|ip| in_network(ip, *address, *prefix))
            }
            Exclusion::Address { address, port } => ip == Some(*address) && port_matches(port),
            Exclusion::Domain {
                suffix,
                whole,
                port,
            } => {
                (host.ends_with(suffix.as_str()) || (*whole && host == suffix[1..]))
                    && port_matches(port)
            }
        })
    }
}

fn parse_cidr(text: &str) -> Option<Exclusion> {
    let (address, prefix) = text.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= bits).then_some(Exclusion::Network { address, prefix })
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let (ip, network, bits) = match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) => (
            u128::from(u32::from(ip)),
            u128::from(u32::from(network)),
            32u32,
        ),
        (IpAddr::V6(ip), IpAddr::V6(network)) => (u128::from(ip), u128::from(network), 128u32),
        _ => return false,
    };
    let prefix = u32::from(prefix);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (ip >> shift) == (network >> shift)
}

/// The proxy settings an Edge agent was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    pub https: Option<String>,
    pub http: Option<String>,
    pub no_proxy: NoProxy,
}

impl ProxySettings {
    /// The proxy for a call to Portainer at `host:port`, as Go's
    /// `ProxyFromEnvironment` picks it: by the URL's scheme only (an
    /// `https://` Portainer does not fall back to `HTTP_PROXY`), never for
    /// what `NO_PROXY` excludes.
    pub fn for_portainer(&self, secure: bool, host: &str, port: u16) -> Option<&str> {
        let proxy = if secure { &self.https } else { &self.http };
        proxy
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .filter(|_| !self.no_proxy.excludes(host, port))
    }

    /// The proxy for the tunnel, as the Go agent hands it to chisel:
    /// `HTTPS_PROXY`, else `HTTP_PROXY`, whatever the address.
    pub fn for_tunnel(&self) -> Option<&str> {
        self.https
            .as_deref()
            .or(self.http.as_deref())
            .filter(|p| !p.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_read_as_go_reads_them() {
        let plain = ProxyUrl::parse("proxy.example:3128").unwrap();
        assert_eq!(
            (plain.scheme, plain.host.as_str(), plain.port),
            (ProxyScheme::Http, "proxy.example", 3128)
        );
        assert_eq!(plain.authorization(), None);
        assert_eq!(ProxyUrl::parse("http://proxy.example").unwrap().port, 80);
        assert_eq!(ProxyUrl::parse("https://proxy.example/").unwrap().port, 443);
        assert_eq!(
            ProxyUrl::parse("socks5h://10.0.0.1").unwrap().scheme,
            ProxyScheme::Socks5
        );
        let with_user = ProxyUrl::parse("http://agent:p%40ss%3Aword@[fd00::1]:8080").unwrap();
        assert_eq!(with_user.address(), "[fd00::1]:8080");
        // base64("agent:p@ss:word")
        assert_eq!(
            with_user.authorization().as_deref(),
            Some("Basic YWdlbnQ6cEBzczp3b3Jk")
        );
        assert!(ProxyUrl::parse("ftp://proxy").is_err());
        assert!(ProxyUrl::parse("http://proxy:port").is_err());
        assert!(ProxyUrl::parse("http://:3128").is_err());
    }

    #[test]
    fn no_proxy_matches_as_go_does() {
        let no_proxy =
            NoProxy::parse(" Example.com, .internal,*.corp:8443, 10.0.0.0/8, fd00::5 ,,bad:port");
        assert!(no_proxy.excludes("example.com", 443));
        assert!(no_proxy.excludes("api.example.com", 443));
        assert!(!no_proxy.excludes("notexample.com", 443));
        assert!(no_proxy.excludes("portainer.internal", 80));
        assert!(
            !no_proxy.excludes("internal", 80),
            "a leading dot: subdomains only"
        );
        assert!(no_proxy.excludes("p.corp", 8443));
        assert!(!no_proxy.excludes("p.corp", 443), "the port must match");
        assert!(no_proxy.excludes("10.2.3.4", 9443));
        assert!(!no_proxy.excludes("11.2.3.4", 9443));
        assert!(no_proxy.excludes("[fd00::5]", 443));
        assert!(
            no_proxy.excludes("localhost", 9000),
            "localhost is never proxied"
        );
        assert!(no_proxy.excludes("127.0.0.1", 9000));
        assert!(no_proxy.excludes("::1", 9000));
        assert!(NoProxy::parse("*").excludes("anything", 1));
        assert!(!NoProxy::default().excludes("portainer.example", 443));
    }

    #[test]
    fn the_poll_takes_the_proxy_of_its_scheme_and_the_tunnel_either() {
        let settings = ProxySettings {
            https: None,
            http: Some("http://proxy:3128".into()),
            no_proxy: NoProxy::parse("direct.example"),
        };
        assert_eq!(settings.for_portainer(true, "p.example", 443), None);
        assert_eq!(
            settings.for_portainer(false, "p.example", 80),
            Some("http://proxy:3128")
        );
        assert_eq!(settings.for_portainer(false, "direct.example", 80), None);
        assert_eq!(settings.for_portainer(false, "127.0.0.1", 9000), None);
        assert_eq!(settings.for_tunnel(), Some("http://proxy:3128"));
        let both = ProxySettings {
            https: Some("secure-proxy:3128".into()),
            ..settings
        };
        assert_eq!(
            both.for_portainer(true, "p.example", 443),
            Some("secure-proxy:3128")
        );
        assert_eq!(both.for_tunnel(), Some("secure-proxy:3128"));
    }
}
