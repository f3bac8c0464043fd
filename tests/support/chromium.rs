//! Headless Chromium (Debian's `chromium`) driven over the DevTools
//! protocol, for testing the Edge key page as a person uses it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The browser, or `None` when the suite skips what needs it.
pub fn chromium_binary() -> Option<String> {
    super::berth_process::from_env_or_skip(
        "BERTH_TEST_CHROMIUM",
        "Chromium",
        "run scripts/test, which installs it (BERTH_TEST_CHROMIUM)",
    )
}

pub struct Chromium {
    child: Child,
    profile: PathBuf,
    page: WebSocketStream<TcpStream>,
    next_id: u64,
}

impl Chromium {
    /// Opens `url` in a fresh headless browser and attaches to its page.
    pub async fn open(binary: &str, url: &str) -> Chromium {
        let profile = std::env::temp_dir().join(format!(
            "berth-chromium-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = Command::new(binary)
            // Its own process group, so its helpers can be ended with it.
            .process_group(0)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (found, devtools) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("DevTools listening on ws://") {
                    let _ = found.send(rest.split('/').next().unwrap_or_default().to_string());
                }
            }
        });
        let address = devtools
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium announced its DevTools address");
        let deadline = Instant::now() + Duration::from_secs(30);
        let socket_url = loop {
            let pages = devtools_json(&address).await;
            let page = pages.as_array().and_then(|pages| {
                pages.iter().find(|p| {
                    p["type"] == "page" && p["url"].as_str().is_some_and(|u| u.starts_with(url))
                })
            });
            if let Some(page) = page {
                break page["webSocketDebuggerUrl"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "chromium never opened {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let authority = socket_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(&authority).await.unwrap();
        let (page, _) = tokio_tungstenite::client_async(socket_url.as_str(), stream)
            .await
            .expect("attach to the page");
        Chromium {
            child,
            profile,
            page,
            next_id: 1,
        }
    }

    /// Evaluates JavaScript in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({"id": id, "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true, "awaitPromise": true}});
        self.page
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .expect("chromium answered")
                .expect("the page socket is open")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                return answer["result"]["result"]["value"].clone();
            }
        }
    }

    /// Waits until `expression` is true in the page.
    pub async fn wait_until(&mut self, expression: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.eval(expression).await != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "never true in the page: {expression}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn devtools_json(address: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = TcpStream::connect(address).await else {
        return Value::Null;
    };
    // DevTools answers HTTP/1.1 only and keeps the connection open, so the
    // body is read by its length.
    let request = format!("GET /json/list HTTP/1.1\r\nHost: {address}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Value::Null;
    }
    let read = async {
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer).to_string();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })?
                .parse()
                .ok()?;
            if body.len() >= length {
                return serde_json::from_str(body).ok();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
        .unwrap_or(Value::Null)
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The group is the browser's own PID: its renderers and helpers.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
