//! What stands between an Edge agent and Portainer, met as the Go agent
//! meets it: a real HTTP proxy (Debian's tinyproxy, with credentials and
//! `CONNECT` limited to the tunnel's port) and a Portainer address that
//! redirects. berth once tunnelled even plain `http://` polls through
//! `CONNECT` (refused by proxies that allow it only to a few ports), sent
//! no proxy credentials, and followed no redirect.

mod support;

use base64::Engine as _;
use serde_json::json;
use support::berth_process::engine_host;
use support::chisel::Chisel;
use support::client::request;
use support::edge_world::{fetch_ok, loopback, start_edge_berth, EdgeWorld, WAIT};
use support::portainer_server::{TestPortainer, GLOBAL_ENDPOINT};
use support::tinyproxy::Tinyproxy;

/// A name only the proxy can resolve (to 127.0.0.1): the agent must send
/// its calls through the proxy to reach anything.
const PORTAINER_HOST: &str = "portainer.berth.test";

fn key_naming(portainer: &TestPortainer, chisel: &Chisel, host: &str, endpoint: u64) -> String {
    let chisel_port = chisel.address.rsplit_once(':').unwrap().1;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!(
        "http://{host}:{}|{host}:{chisel_port}|{}|{endpoint}",
        portainer.addr.port(),
        chisel.fingerprint
    ))
}

/// An Edge world and a real proxy that resolves `PORTAINER_HOST` and
/// allows `CONNECT` to the tunnel server's port only, as a proxy that
/// allows it to a few ports would.
async fn proxied_world(name: &str) -> Option<(String, EdgeWorld, Tinyproxy)> {
    let engine = engine_host()?;
    let tinyproxy = support::tinyproxy::binary()?;
    let world = EdgeWorld::start(name).await?;
    let chisel_port: u16 = world
        .chisel
        .address
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let proxy = Tinyproxy::start(&tinyproxy, &[PORTAINER_HOST], &[chisel_port]);
    Some((engine, world, proxy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_and_the_tunnel_go_through_a_real_proxy_as_the_go_agent_sends_them() {
    let Some((
        engine,
        EdgeWorld {
            portainer,
            chisel,
            data,
        },
        proxy,
    )) = proxied_world("proxy").await
    else {
        return;
    };
    let chisel_port: u16 = chisel.address.rsplit_once(':').unwrap().1.parse().unwrap();
    let key = key_naming(&portainer, &chisel, PORTAINER_HOST, 1);
    let proxy_url = proxy.url();
    let berth = start_edge_berth(
        &engine,
        &data,
        &[("EDGE_KEY", &key), ("HTTP_PROXY", &proxy_url)],
    );

    // The poll of an http:// Portainer is asked of the proxy in absolute
    // form, with the proxy's credentials.
    portainer
        .wait_requests("/api/endpoints/1/edge/status", 2, WAIT)
        .await;
    let poll = proxy.wait_request("GET http://", WAIT);
    assert_eq!(
        poll,
        format!(
            "GET http://{PORTAINER_HOST}:{}/api/endpoints/1/edge/status HTTP/1.1",
            portainer.addr.port()
        )
    );
    assert!(
        !proxy.requests().iter().any(|r| r.starts_with("CONNECT")),
        "no CONNECT for plain HTTP: {:?}",
        proxy.requests()
    );

    // The tunnel goes through the proxy's CONNECT, as chisel's client's.
    let grant = chisel.tunnels[0].clone();
    portainer.set_status(json!({"status": "REQUIRED", "port": grant.port,
        "credentials": grant.credentials, "checkin": 0.2}));
    chisel.wait_listening(grant.port, 1, WAIT);
    assert_eq!(
        proxy.wait_request("CONNECT", WAIT),
        format!("CONNECT {PORTAINER_HOST}:{chisel_port} HTTP/1.1")
    );
    let (status, body) = fetch_ok(
        loopback(grant.port),
        request("GET", "/containers/json?all=1", ""),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_portainer_address_is_followed_as_go_follows_it() {
    let Some(engine) = engine_host() else { return };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("redirect").await
    else {
        return;
    };
    let front = TestPortainer::start().await;
    front.redirect_to(&portainer.url());
    // A global key: the claim is a POST (307 keeps it one, with its body),
    // the poll a GET (302).
    let key = key_naming(&front, &chisel, "127.0.0.1", 0);
    let berth = start_edge_berth(&engine, &data, &[("EDGE_KEY", &key)]);

    let claims = portainer
        .wait_requests("/api/endpoints/global-key", 1, WAIT)
        .await;
    assert_eq!(claims[0].method, "POST");
    assert_eq!(claims[0].body, "{}");
    let path = format!("/api/endpoints/{GLOBAL_ENDPOINT}/edge/status");
    let polls = portainer.wait_requests(&path, 1, WAIT).await;
    assert_eq!(polls[0].method, "GET");
    let redirected: Vec<(String, u16)> = front
        .seen()
        .into_iter()
        .map(|s| (s.method, s.status))
        .collect();
    assert!(
        redirected.contains(&("POST".to_string(), 307)),
        "{redirected:?}"
    );
    assert!(
        redirected.contains(&("GET".to_string(), 302)),
        "{redirected:?}"
    );
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_named_in_no_proxy_are_reached_directly() {
    let Some((
        engine,
        EdgeWorld {
            portainer,
            chisel,
            data,
        },
        proxy,
    )) = proxied_world("noproxy").await
    else {
        return;
    };
    let key = key_naming(&portainer, &chisel, PORTAINER_HOST, 1);
    let proxy_url = proxy.url();
    // Only the proxy resolves the name: going direct, as NO_PROXY says,
    // berth cannot resolve it, and the proxy sees nothing.
    let berth = start_edge_berth(
        &engine,
        &data,
        &[
            ("EDGE_KEY", &key),
            ("HTTP_PROXY", &proxy_url),
            ("NO_PROXY", "example.org,.berth.test"),
        ],
    );
    assert!(
        berth.logged_within("polling Portainer failed", WAIT),
        "{:?}",
        berth.log()
    );
    let failure = berth
        .log()
        .into_iter()
        .find(|line| line.contains("polling Portainer failed"))
        .unwrap();
    assert!(failure.contains(PORTAINER_HOST), "{failure}");
    assert!(
        proxy.requests().is_empty(),
        "NO_PROXY bypasses the proxy: {:?}",
        proxy.requests()
    );
    assert!(portainer.seen().is_empty());
    drop(berth);
}
