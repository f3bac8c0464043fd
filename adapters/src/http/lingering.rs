//! Lingering close, as Go's server and nginx do it. When berth ends a
//! connection the client may still be sending (an oversized header block
//! answered 431, a bad request answered 400, a body left unread): closing
//! a socket with unread bytes makes the kernel reset the connection, and a
//! client still writing gets the reset instead of the answer already sent
//! to it. So a connection's socket, once berth is done with it, is shut
//! for writing and read to the end, discarding what comes, for a bounded
//! time and number of bytes, and only then closed. A client that closes
//! first costs nothing: its end of file is read at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How long a closed connection is read at most.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// How many bytes are read and discarded at most.
const LINGER_BYTES: usize = 4 * 1024 * 1024;
/// How many connections may linger at once; past that a connection closes
/// at once (a flood of clients that never stop sending holds no more).
const LINGERING_AT_ONCE: usize = 512;

/// The places for lingering connections, shared by a server's connections.
#[derive(Clone)]
pub struct Lingering(Arc<Semaphore>);

impl Default for Lingering {
    fn default() -> Self {
        Lingering(Arc::new(Semaphore::new(LINGERING_AT_ONCE)))
    }
}

impl Lingering {
    /// `stream`, closed with a linger when dropped.
    pub fn wrap(&self, stream: TcpStream) -> LingeringStream {
        LingeringStream {
            stream: Some(stream),
            places: self.clone(),
        }
    }
}

/// A TCP stream that lingers when dropped (see the module).
pub struct LingeringStream {
    stream: Option<TcpStream>,
    places: Lingering,
}

impl LingeringStream {
    fn stream(&mut self) -> &mut TcpStream {
        self.stream
            .as_mut()
            .expect("the stream is taken only when dropped")
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let (Ok(place), Ok(runtime)) = (
            Arc::clone(&self.places.0).try_acquire_owned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        runtime.spawn(async move {
            linger(stream).await;
            drop(place);
        });
    }
}

async fn linger(mut stream: TcpStream) {
    // Already shut by a clean end (TLS's close_notify, then the socket's
    // shutdown); an error here only says so.
    let _ = stream.shutdown().await;
    let mut buffer = [0u8; 16 * 1024];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while left > 0 {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// The server answers and drops its end while the client still has
    /// 2 MiB to send: the client's writes all go through and it reads the
    /// answer, where a plain close resets the connection.
    #[tokio::test]
    async fn a_dropped_connection_reads_what_the_client_still_sends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let lingering = Lingering::default();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = lingering.wrap(stream);
            let mut head = [0u8; 1024];
            stream.read_exact(&mut head).await.unwrap();
            stream.write_all(b"refused\n").await.unwrap();
        });
        let mut client = crate::dial::tcp(address).await.unwrap();
        client
            .write_all(&vec![b'a'; 2 * 1024 * 1024])
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "refused\n");
    }

    #[tokio::test]
    async fn a_client_that_never_stops_is_read_for_a_bounded_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut client = crate::dial::tcp(address).await.unwrap();
            let chunk = vec![b'a'; 64 * 1024];
            let started = tokio::time::Instant::now();
            // Writes fail once the linger gives up and the socket closes.
            while client.write_all(&chunk).await.is_ok() {
                assert!(started.elapsed() < LINGER_TIME * 4, "never cut off");
            }
        });
        let (stream, _) = listener.accept().await.unwrap();
        drop(Lingering::default().wrap(stream));
        client.await.unwrap();
    }
}
