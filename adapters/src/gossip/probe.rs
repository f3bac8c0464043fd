//! Probes a gossip peer as memberlist itself would (`berth doctor`): a
//! TCP connect to its gossip port, and real memberlist pings over UDP,
//! small and large, answered by the peer's own ack.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use berth_domain::gossip::keyring::{sealed_len, Keyring};
use berth_domain::gossip::messages::{decode_packet, probe_ping, Message};
use tokio::net::UdpSocket;

/// memberlist's largest gossip packet (its UDP buffer size).
pub const LARGE_PACKET: usize = 1400;
/// How many pings go out, spread over the wait, in case one is lost.
const TRIES: u32 = 3;

/// Whether the peer's gossip port takes a TCP connection within `timeout`.
///
/// # Errors
/// Why it did not.
pub async fn tcp(target: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, crate::dial::tcp(target)).await {
        Ok(Ok(_)) => Ok(started.elapsed()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Sends memberlist pings of about `size` bytes on the wire (sealed with
/// `keyring` when set) and waits for the peer's ack: `Some(round trip)`, or
/// `None` when no ack came within `timeout`.
///
/// # Errors
/// A local socket that cannot be made or used.
pub async fn udp_ping(
    target: SocketAddr,
    keyring: Option<&Keyring>,
    size: usize,
    timeout: Duration,
) -> Result<Option<Duration>, String> {
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|error| format!("cannot open a UDP socket: {error}"))?;
    let seq = std::process::id().wrapping_mul(7919) ^ size as u32;
    // The sealing's overhead comes out of the size asked for.
    let overhead = keyring.map_or(0, |_| sealed_len(0));
    let plain = probe_ping(seq, size.saturating_sub(overhead));
    let packet = match keyring {
        Some(keyring) => {
            let mut nonce = [0u8; 12];
            getrandom::getrandom(&mut nonce).map_err(|error| error.to_string())?;
            keyring.seal(&plain, &[], nonce)
        }
        None => plain,
    };
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = vec![0u8; 65_536];
    for attempt in 0..TRIES {
        socket
            .send_to(&packet, target)
            .await
            .map_err(|error| format!("cannot send to {target}: {error}"))?;
        let until = if attempt + 1 == TRIES {
            deadline
        } else {
            (tokio::time::Instant::now() + timeout / TRIES).min(deadline)
        };
        while let Ok(received) = tokio::time::timeout_at(until, socket.recv_from(&mut buffer)).await
        {
            let Ok((len, from)) = received else { break };
            if from.ip() != target.ip() {
                continue;
            }
            let plain = match keyring {
                Some(keyring) => match keyring.open(&buffer[..len], &[]) {
                    Ok(plain) => plain,
                    Err(_) => continue,
                },
                None => buffer[..len].to_vec(),
            };
            let (messages, _) = decode_packet(&plain);
            if messages
                .iter()
                .any(|m| matches!(m, Message::Ack { seq: acked, .. } if *acked == seq))
            {
                return Ok(Some(started.elapsed()));
            }
        }
    }
    Ok(None)
}
