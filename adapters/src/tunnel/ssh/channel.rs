//! Channels the server opens (chisel's `chisel` type): each is a TCP
//! connection to the agent's API, pumped in both directions by two tasks.
//! SSH flow control bounds the memory: the server may send no more than the
//! window berth grants, and berth grants more only once bytes reach the
//! socket; the server's window is a semaphore the reading pump must hold.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

/// The window berth grants the server per channel.
pub const LOCAL_WINDOW: u32 = 2 * 1024 * 1024;
/// The largest data message berth accepts.
pub const LOCAL_MAX_PACKET: u32 = 32 * 1024;

/// What the channel tasks tell the session.
pub enum ChannelEvent {
    Dialed {
        id: u32,
        result: Result<TcpStream, String>,
    },
    Data {
        id: u32,
        bytes: Vec<u8>,
    },
    /// The agent closed its side.
    Eof {
        id: u32,
    },
    /// Bytes written to the agent, which may be granted again.
    Consumed {
        id: u32,
        bytes: u32,
    },
    WriteFailed {
        id: u32,
    },
}

pub enum ToLocal {
    Data(Vec<u8>),
    Eof,
}

/// The session's view of one channel.
pub struct Channel {
    pub remote_id: u32,
    pub remote_window: Arc<Semaphore>,
    /// `None` until dialled, and after the server's CLOSE.
    pub to_local: Option<mpsc::UnboundedSender<ToLocal>>,
    pub read_size: usize,
    /// What the server may still send before berth grants more: data past
    /// it is a protocol violation, not something to buffer.
    pub local_window: u32,
    pub unacknowledged: u32,
    pub sent_eof: bool,
    pub received_eof: bool,
    pub sent_close: bool,
}

impl Channel {
    pub fn new(remote_id: u32, remote_window: u32, remote_max_packet: u32) -> Self {
        let read_size = remote_max_packet
            .min(LOCAL_MAX_PACKET)
            .min(remote_window.max(1))
            .max(1) as usize;
        Channel {
            remote_id,
            remote_window: Arc::new(Semaphore::new(remote_window as usize)),
            to_local: None,
            read_size,
            local_window: LOCAL_WINDOW,
            unacknowledged: 0,
            sent_eof: false,
            received_eof: false,
            sent_close: false,
        }
    }
}

pub fn spawn_dial(id: u32, target: String, timeout: Duration, events: mpsc::Sender<ChannelEvent>) {
    tokio::spawn(async move {
        let result = match tokio::time::timeout(timeout, crate::dial::tcp(&target)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(format!("cannot reach {target}: {error}")),
            Err(_) => Err(format!("cannot reach {target} within {timeout:?}")),
        };
        let _ = events.send(ChannelEvent::Dialed { id, result }).await;
    });
}

/// Starts the two pumps; returns the sender for data bound to the agent.
pub fn spawn_pumps(
    id: u32,
    stream: TcpStream,
    channel: &Channel,
    events: mpsc::Sender<ChannelEvent>,
) -> mpsc::UnboundedSender<ToLocal> {
    let (read_half, mut write_half) = stream.into_split();
    let (to_local, mut from_session) = mpsc::unbounded_channel();
    let window = Arc::clone(&channel.remote_window);
    let read_size = channel.read_size;
    let read_events = events.clone();
    tokio::spawn(async move {
        loop {
            // A buffer only once the agent has bytes to send: an idle
            // channel holds none, so thousands of open channels (all a
            // server may ask for) cost little.
            let mut bytes = Vec::new();
            let read = match read_half.readable().await {
                Ok(()) => {
                    bytes.reserve_exact(read_size);
                    read_half.try_read_buf(&mut bytes)
                }
                Err(error) => Err(error),
            };
            let n = match read {
                Ok(n) => n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => 0,
            };
            if n == 0 {
                let _ = read_events.send(ChannelEvent::Eof { id }).await;
                return;
            }
            match window.acquire_many(n as u32).await {
                Ok(permit) => permit.forget(),
                Err(_) => return,
            }
            if read_events
                .send(ChannelEvent::Data { id, bytes })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(message) = from_session.recv().await {
            match message {
                ToLocal::Data(bytes) => {
                    if write_half.write_all(&bytes).await.is_err() {
                        let _ = events.send(ChannelEvent::WriteFailed { id }).await;
                        return;
                    }
                    let bytes = bytes.len() as u32;
                    if events
                        .send(ChannelEvent::Consumed { id, bytes })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                ToLocal::Eof => {
                    let _ = write_half.shutdown().await;
                }
            }
        }
        let _ = write_half.shutdown().await;
    });
    to_local
}
