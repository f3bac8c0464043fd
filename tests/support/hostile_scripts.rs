//! What a hostile tunnel server does once the key exchange and login are
//! through, one script per behaviour, for the scripted server of
//! `scripted_ssh.rs`: run in process by `tests/hostile_ssh.rs` and behind
//! a websocket against a berth process by `tests/hostile_tunnel.rs`.
//! `target` is the one place the client may be asked to dial.

use std::time::Duration;

use super::scripted_ssh::{chisel_open, string, ScriptedServer};

pub const MSG_IGNORE: u8 = 2;
pub const MSG_KEXINIT: u8 = 20;
pub const MSG_GLOBAL_REQUEST: u8 = 80;
pub const MSG_REQUEST_SUCCESS: u8 = 81;
pub const MSG_CHANNEL_OPEN_CONFIRMATION: u8 = 91;
pub const MSG_CHANNEL_OPEN_FAILURE: u8 = 92;
pub const MSG_CHANNEL_WINDOW_ADJUST: u8 = 93;
pub const MSG_CHANNEL_DATA: u8 = 94;

/// Opens a chisel channel to `target` and waits for the client's
/// confirmation; returns the client's channel ID, `None` if it has gone.
/// (Scripts end quietly when the client goes: the tests judge the client.)
pub async fn open_channel(server: &mut ScriptedServer, target: &str) -> Option<u32> {
    server.send(&chisel_open(7, 1 << 20, target)).await.ok()?;
    let confirmation = server
        .receive_kind(MSG_CHANNEL_OPEN_CONFIRMATION)
        .await
        .ok()?;
    Some(u32::from_be_bytes(confirmation[5..9].try_into().ok()?))
}

pub fn data(channel: u32, bytes: &[u8]) -> Vec<u8> {
    [
        &[MSG_CHANNEL_DATA][..],
        &channel.to_be_bytes(),
        &string(bytes),
    ]
    .concat()
}

pub async fn four_gib_packet(server: ScriptedServer, _: String) {
    let mut sender = server.drain();
    sender
        .send_raw(&[0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0])
        .await
        .ok();
    std::future::pending::<()>().await;
}

pub async fn window_past_2_32(mut server: ScriptedServer, target: String) {
    let Some(id) = open_channel(&mut server, &target).await else {
        return;
    };
    let adjust = [
        &[MSG_CHANNEL_WINDOW_ADJUST][..],
        &id.to_be_bytes(),
        &u32::MAX.to_be_bytes(),
    ]
    .concat();
    let mut sender = server.drain();
    for _ in 0..3 {
        sender.send(&adjust).await.ok();
    }
    std::future::pending::<()>().await;
}

/// 2,000 × 32 KiB on one channel without waiting for the window (2 MiB).
pub async fn data_beyond_the_window(mut server: ScriptedServer, target: String) {
    let Some(id) = open_channel(&mut server, &target).await else {
        return;
    };
    let mut sender = server.drain();
    let chunk = vec![b'x'; 32 * 1024];
    for _ in 0..2_000 {
        if sender.send(&data(id, &chunk)).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    std::future::pending::<()>().await;
}

/// 10,000 data messages on channels never opened; then checks the client
/// still answers a ping, and goes away.
pub async fn data_on_unknown_channels(mut server: ScriptedServer, _: String) {
    let chunk = vec![b'y'; 1024];
    for n in 0..10_000u32 {
        if server.send(&data(1000 + n, &chunk)).await.is_err() {
            return;
        }
    }
    let ping = [&[MSG_GLOBAL_REQUEST][..], &string(b"ping"), &[1]].concat();
    if server.send(&ping).await.is_ok() {
        let _ = server.receive_kind(MSG_REQUEST_SUCCESS).await;
    }
}

/// Opens `opens` channels to `target` at once; returns how many the
/// client confirmed and refused, then goes away.
pub async fn channel_flood(mut server: ScriptedServer, target: String, opens: u32) -> (u32, u32) {
    let (mut confirmed, mut refused) = (0, 0);
    for n in 0..opens {
        if server
            .send(&chisel_open(n, 1 << 20, &target))
            .await
            .is_err()
        {
            return (confirmed, refused);
        }
    }
    while confirmed + refused < opens {
        let Ok(answer) = server.receive().await else {
            break;
        };
        match answer[0] {
            MSG_CHANNEL_OPEN_CONFIRMATION => confirmed += 1,
            MSG_CHANNEL_OPEN_FAILURE => refused += 1,
            _ => {}
        }
    }
    (confirmed, refused)
}

pub async fn rekey_never_completed(server: ScriptedServer, _: String) {
    let mut sender = server.drain();
    let kexinit = berth_adapters::tunnel::ssh::kex::server::kexinit([9; 16]);
    assert_eq!(kexinit[0], MSG_KEXINIT);
    let _ = sender.send(&kexinit).await;
    std::future::pending::<()>().await;
}

pub async fn ignore_forever(server: ScriptedServer, _: String) {
    let mut sender = server.drain();
    let ignore = [&[MSG_IGNORE][..], &string(b"nothing")].concat();
    while sender.send(&ignore).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn stall_mid_packet(server: ScriptedServer, _: String) {
    let mut sender = server.drain();
    let packet = sender.seal(&[MSG_IGNORE, 0, 0, 0, 0]);
    let _ = sender.send_raw(&packet[..packet.len() / 2]).await;
    std::future::pending::<()>().await;
}

/// Re-keys with a host key other than the one the client was given.
pub async fn host_key_changed(mut server: ScriptedServer, _: String) {
    let _ = server.rekey([8; 32]).await;
    std::future::pending::<()>().await;
}
