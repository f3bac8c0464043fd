//! An Edge agent without a key takes it from a cluster peer that has one
//! (its `EdgeKeySet` tag), as the reference's start-up does, but keeps
//! looking until one answers rather than asking once. Peers prove they
//! belong to the same Edge environment instead of asking with nothing.

use std::net::SocketAddr;
use std::time::Duration;

use berth_domain::edge::key::peer_proof;
use berth_domain::edge::status::field;
use berth_domain::headers::REQUEST_EDGE_KEY_PROOF;
use berth_ports::{empty_body, Membership, PeerAgents};
use http::Request;
use tracing::{debug, info};

use super::keys::{AssociateError, EdgeKeys};
use crate::cluster::Cluster;
use berth_ports::read_bounded;

/// How long one peer may take to answer, as the reference's 3 s.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);
const LOOK_AGAIN: Duration = Duration::from_secs(5);
const MAX_ANSWER: usize = 64 * 1024;

/// Looks for a peer with the key until this agent has one.
pub async fn fetch_from_peers<M: Membership, P: PeerAgents>(
    cluster: Cluster<M, P>,
    keys: EdgeKeys,
    edge_id: String,
) {
    let proof = peer_proof(&edge_id);
    while !keys.is_set() {
        let holders: Vec<SocketAddr> = cluster
            .membership()
            .members()
            .await
            .into_iter()
            .filter(|m| m.is_alive() && m.edge_key_set)
            .map(|m| SocketAddr::new(m.address, m.agent_port))
            .collect();
        for peer in holders {
            match ask(cluster.peers(), peer, &proof).await {
                Ok(key) => match keys.associate(&key).await {
                    Ok(()) | Err(AssociateError::AlreadySet) => {
                        info!(%peer, "took the Edge key from a cluster peer");
                        return;
                    }
                    Err(error) => debug!(%peer, %error, "a peer's Edge key was refused"),
                },
                Err(why) => debug!(%peer, %why, "a peer did not give its Edge key"),
            }
        }
        tokio::select! {
            _ = keys.wait() => return,
            () = tokio::time::sleep(LOOK_AGAIN) => {}
        }
    }
}

async fn ask<P: PeerAgents>(peers: &P, peer: SocketAddr, proof: &str) -> Result<String, String> {
    let request = Request::get("/key")
        .header(REQUEST_EDGE_KEY_PROOF, proof)
        .body(empty_body())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = peers
            .forward(peer, request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("answered {}", response.status()));
        }
        let body = read_bounded(response.into_body(), MAX_ANSWER).await?;
        key_in_answer(&body)
    };
    tokio::time::timeout(PEER_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

/// The key in a peer's `{"key": …}`, its field matched as Go's JSON decoder
/// (the Go agent's key fetch) matches it, whatever the case.
fn key_in_answer(body: &[u8]) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    value
        .as_object()
        .and_then(|object| field(object, "key"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "no key in the answer".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_field_matches_whatever_its_case() {
        assert_eq!(key_in_answer(br#"{"key":"abc"}"#).unwrap(), "abc");
        assert_eq!(key_in_answer(br#"{"Key":"abc"}"#).unwrap(), "abc");
        assert!(key_in_answer(br#"{"keys":"abc"}"#).is_err());
        assert!(key_in_answer(b"not json").is_err());
    }
}
