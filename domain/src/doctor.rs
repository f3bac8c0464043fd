//! `berth doctor`'s verdicts: what each finding means and what to do about
//! it. The probing is the adapters'; the judging, here, is pure.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warning,
    Failed,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warning => "warning",
            Verdict::Failed => "FAILED",
        }
    }
}

/// One line of the report and, when not ok, its likely cause and fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub verdict: Verdict,
    pub detail: String,
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            verdict: Verdict::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warning(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::with_fix(Verdict::Warning, check.into(), detail.into(), fix.into())
    }

    pub fn failed(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::with_fix(Verdict::Failed, check.into(), detail.into(), fix.into())
    }

    fn with_fix(verdict: Verdict, check: String, detail: String, fix: String) -> Finding {
        Finding {
            check,
            verdict,
            detail,
            fix: Some(fix),
        }
    }
}

/// The report: one line per check, its fix indented under it, and a
/// closing count.
pub fn render(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for finding in findings {
        let _ = writeln!(
            out,
            "{:<7} {:<width$}  {}",
            finding.verdict.label(),
            finding.check,
            finding.detail
        );
        if let Some(fix) = &finding.fix {
            let _ = writeln!(out, "{:<7} {:<width$}  fix: {fix}", "", "");
        }
    }
    let count = |verdict| findings.iter().filter(|f| f.verdict == verdict).count();
    let warnings = match count(Verdict::Warning) {
        1 => "1 warning".to_string(),
        n => format!("{n} warnings"),
    };
    let _ = writeln!(
        out,
        "\n{} ok, {warnings}, {} failed",
        count(Verdict::Ok),
        count(Verdict::Failed)
    );
    out
}

/// 1 when any check failed, else 0 (warnings do not fail).
pub fn exit_code(findings: &[Finding]) -> u8 {
    u8::from(findings.iter().any(|f| f.verdict == Verdict::Failed))
}

/// What probing one gossip peer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProbe {
    pub peer: String,
    /// The TCP connect to its gossip port: the time, or why it failed.
    pub tcp: Result<Duration, String>,
    /// A small memberlist ping's ack, if one came.
    pub udp_small: Option<Duration>,
    /// A ping as large as memberlist's packets, if acked.
    pub udp_large: Option<Duration>,
}

/// Names what blocks gossip with a peer: UDP alone, large packets alone
/// (an MTU problem), or everything.
pub fn judge_peer(probe: &PeerProbe) -> Finding {
    let check = format!("peer {}", probe.peer);
    let ms = |d: &Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    match (&probe.tcp, &probe.udp_small, &probe.udp_large) {
        (Ok(tcp), Some(small), Some(_)) => Finding::ok(
            check,
            format!("gossip reachable: TCP {}, UDP ping {} (large packets too)", ms(tcp), ms(small)),
        ),
        (Ok(_), Some(_), None) => Finding::failed(
            check,
            "small UDP pings are answered but large ones (1400 bytes) are not: the path drops big datagrams",
            "an MTU problem, often an overlay or VPN network with a smaller MTU: lower the MTU on the path \
             or raise it on the underlay so 1400-byte UDP datagrams pass",
        ),
        (Ok(_), None, _) => Finding::failed(
            check,
            "TCP to the gossip port works but UDP pings get no answer: UDP is blocked",
            "allow UDP on the gossip port (7946 by default) between the nodes, in the host firewall \
             and any security group; without UDP, members are declared failed",
        ),
        (Err(why), Some(_), _) => Finding::failed(
            check,
            format!("UDP pings are answered but TCP to the gossip port fails ({why}): TCP is blocked"),
            "allow TCP on the gossip port (7946 by default) between the nodes; joining and state sync need it",
        ),
        (Err(why), None, _) => Finding::failed(
            check,
            format!("neither TCP ({why}) nor UDP reaches the gossip port"),
            "check that an agent runs there with the same AGENT_CLUSTER_PORT, and that the network \
             lets TCP and UDP 7946 through",
        ),
    }
}

/// Why the advertise address is the one it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvertiseReason {
    Option,
    Container,
    FirstInterface,
    ListenAddress,
}

/// Whether peers can reach this agent at `chosen`: it must be one of this
/// machine's addresses.
pub fn judge_advertise(chosen: IpAddr, reason: AdvertiseReason, local: &[IpAddr]) -> Finding {
    let why = match reason {
        AdvertiseReason::Option => "set by AGENT_ADVERTISE_ADDR",
        AdvertiseReason::Container => "the agent container's address",
        AdvertiseReason::FirstInterface => "this machine's first non-loopback IPv4",
        AdvertiseReason::ListenAddress => "AGENT_HOST, as nothing better was found",
    };
    let others: Vec<String> = local
        .iter()
        .filter(|a| **a != chosen)
        .filter(|a| !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(IpAddr::to_string)
        .collect();
    let others = if others.is_empty() {
        "none".to_string()
    } else {
        others.join(", ")
    };
    if !local.contains(&chosen) && !chosen.is_unspecified() {
        return Finding::failed(
            "advertise address",
            format!("{chosen} ({why}) is not an address of this machine; other candidates: {others}"),
            "peers would gossip to an address nobody answers: set AGENT_ADVERTISE_ADDR to one of this \
             machine's addresses that the other nodes reach, or unset it",
        );
    }
    if chosen.is_loopback() || chosen.is_unspecified() {
        return Finding::warning(
            "advertise address",
            format!("{chosen} ({why}); other candidates: {others}"),
            "other machines cannot reach a loopback address: when the cluster spans machines, set \
             AGENT_ADVERTISE_ADDR to an address they reach",
        );
    }
    Finding::ok(
        "advertise address",
        format!("{chosen} ({why}); other candidates: {others}"),
    )
}

/// In a swarm service, whether `advertise` is on one of the task's own
/// networks (the overlays its peers share; `ingress` is not one): peers in
/// other tasks reach the agent only there. `None` outside a service.
pub fn judge_overlay(
    advertise: IpAddr,
    service: Option<&str>,
    networks: &[(String, IpAddr)],
) -> Option<Finding> {
    let service = service?;
    let overlays: Vec<&(String, IpAddr)> = networks
        .iter()
        .filter(|(name, _)| name != "ingress")
        .collect();
    let listed = overlays
        .iter()
        .map(|(name, address)| format!("{name} {address}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(match overlays.iter().find(|(_, address)| *address == advertise) {
        Some((name, _)) => Finding::ok(
            "overlay network",
            format!("{advertise} is the task's address on {name} (service {service})"),
        ),
        None => Finding::failed(
            "overlay network",
            format!(
                "{advertise} is not on the service {service}'s networks ({})",
                if listed.is_empty() { "none but ingress".to_string() } else { listed }
            ),
            "peers reach each other over the service's overlay network: attach the service to an \
             overlay network and unset AGENT_ADVERTISE_ADDR (or set it to the task's address there)",
        ),
    })
}

/// A certificate's validity against `now` (seconds since the epoch).
pub fn judge_certificate(names: &[String], not_before: i64, not_after: i64, now: i64) -> Finding {
    const DAY: i64 = 86_400;
    let detail = format!(
        "names {}; valid {} days more",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        },
        (not_after - now) / DAY
    );
    if now < not_before {
        return Finding::failed(
            "api certificate",
            format!("not valid yet ({detail})"),
            "check this machine's clock, or issue the certificate with an earlier start",
        );
    }
    if now >= not_after {
        return Finding::failed(
            "api certificate",
            format!("expired {} days ago", (now - not_after) / DAY),
            "renew SSL_CERT/SSL_KEY, or unset them to let berth make a self-signed certificate",
        );
    }
    if not_after - now < 30 * DAY {
        return Finding::warning(
            "api certificate",
            detail,
            "renew SSL_CERT before it expires",
        );
    }
    Finding::ok("api certificate", detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(tcp: bool, small: bool, large: bool) -> Finding {
        let ms = Duration::from_millis(1);
        judge_peer(&PeerProbe {
            peer: "10.0.0.2:7946".into(),
            tcp: if tcp {
                Ok(ms)
            } else {
                Err("connection refused".into())
            },
            udp_small: small.then_some(ms),
            udp_large: large.then_some(ms),
        })
    }

    #[test]
    fn each_gossip_block_is_named_for_what_it_is() {
        assert_eq!(probe(true, true, true).verdict, Verdict::Ok);
        assert!(probe(true, false, false).detail.contains("UDP is blocked"));
        assert!(probe(true, true, false).fix.unwrap().contains("MTU"));
        assert!(probe(false, true, true).detail.contains("TCP is blocked"));
        assert!(probe(false, false, false).detail.contains("neither TCP"));
    }

    #[test]
    fn an_advertise_address_not_on_this_machine_fails() {
        let local: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let wrong = judge_advertise("10.9.9.9".parse().unwrap(), AdvertiseReason::Option, &local);
        assert_eq!(wrong.verdict, Verdict::Failed);
        assert!(wrong.detail.contains("AGENT_ADVERTISE_ADDR") && wrong.detail.contains("10.0.0.1"));
        let right = judge_advertise(
            "10.0.0.1".parse().unwrap(),
            AdvertiseReason::FirstInterface,
            &local,
        );
        assert_eq!(right.verdict, Verdict::Ok);
        let loopback = judge_advertise(
            "127.0.0.1".parse().unwrap(),
            AdvertiseReason::ListenAddress,
            &local,
        );
        assert_eq!(loopback.verdict, Verdict::Warning);
    }

    #[test]
    fn a_service_agent_must_advertise_its_overlay_address() {
        let networks = vec![
            ("ingress".to_string(), "10.0.0.5".parse().unwrap()),
            ("agent_network".to_string(), "10.0.1.7".parse().unwrap()),
        ];
        assert!(judge_overlay("10.0.1.7".parse().unwrap(), None, &networks).is_none());
        let on = judge_overlay("10.0.1.7".parse().unwrap(), Some("agent"), &networks).unwrap();
        assert_eq!(on.verdict, Verdict::Ok);
        assert!(on.detail.contains("agent_network"));
        let ingress = judge_overlay("10.0.0.5".parse().unwrap(), Some("agent"), &networks).unwrap();
        assert_eq!(ingress.verdict, Verdict::Failed);
        assert!(
            ingress.detail.contains("agent_network 10.0.1.7"),
            "{}",
            ingress.detail
        );
    }

    #[test]
    fn certificates_fail_outside_their_dates_and_warn_near_the_end() {
        let day = 86_400;
        let names = vec!["node1".to_string()];
        assert_eq!(
            judge_certificate(&names, 0, 100 * day, 10 * day).verdict,
            Verdict::Ok
        );
        assert_eq!(
            judge_certificate(&names, 0, 100 * day, 80 * day).verdict,
            Verdict::Warning
        );
        assert_eq!(
            judge_certificate(&names, 0, 100 * day, 101 * day).verdict,
            Verdict::Failed
        );
        assert_eq!(
            judge_certificate(&names, 5 * day, 100 * day, day).verdict,
            Verdict::Failed
        );
    }

    #[test]
    fn the_report_has_a_line_per_check_its_fix_and_the_exit_status() {
        let findings = vec![
            Finding::ok("engine", "reachable"),
            Finding::failed("peer x", "UDP is blocked", "allow UDP"),
        ];
        let text = render(&findings);
        assert!(text.contains("ok      engine  reachable"), "{text}");
        assert!(text.contains("FAILED  peer x  UDP is blocked"), "{text}");
        assert!(text.contains("fix: allow UDP"), "{text}");
        assert!(text.contains("1 ok, 0 warnings, 1 failed"), "{text}");
        assert_eq!(exit_code(&findings), 1);
        assert_eq!(exit_code(&findings[..1]), 0);
    }
}
