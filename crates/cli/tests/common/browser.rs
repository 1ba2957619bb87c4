//! A real browser for the tests: Debian's Chromium, headless, driven through the DevTools
//! protocol.

use std::path::Path;

use serde_json::json;
use tokio::process::Command;

use super::WAIT;

/// Debian's Chromium, headless, as this machine allows it (no sandbox as root, no background
/// connections to a closed network).
pub fn chromium(profile: &Path) -> Command {
    let mut command = Command::new("chromium");
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg("--window-size=1200,800")
        .arg(format!("--user-data-dir={}", profile.display()))
        .kill_on_drop(true);
    command
}

async fn devtools_new_tab(host: &str, url: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("PUT /json/new?{url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "DevTools closed the connection: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>())
            })
            .expect("a Content-Length")
            .unwrap();
        if body.len() >= length {
            return serde_json::from_str(&body[..length]).unwrap();
        }
    }
}

/// A page opened through the DevTools protocol, to ask it questions while it runs.
pub struct Page {
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    next_id: u64,
    _browser: tokio::process::Child,
}

impl Page {
    /// Starts Chromium with a DevTools port and opens `url` in a new tab.
    pub async fn open(profile: &Path, url: &str) -> Page {
        use tokio::io::AsyncBufReadExt;
        let mut browser = chromium(profile)
            .args(["--remote-debugging-port=0", "about:blank"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("chromium is installed by the test command");
        let mut lines = tokio::io::BufReader::new(browser.stderr.take().unwrap()).lines();
        let devtools = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.to_string();
                }
            }
            panic!("chromium exited without a DevTools port");
        })
        .await
        .expect("DevTools in time");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let host = devtools.trim_start_matches("ws://").split('/').next().unwrap().to_string();
        // A blank tab first, then the page: the DevTools endpoint would cut a URL at its `&`.
        let target = devtools_new_tab(&host, "about:blank").await;
        let page_url = target["webSocketDebuggerUrl"].as_str().expect("a page target").to_string();
        let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
        let (socket, _) = tokio_tungstenite::client_async(page_url, stream).await.unwrap();
        let mut page = Page { socket, next_id: 1, _browser: browser };
        page.navigate(url).await;
        page
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> serde_json::Value {
        let reply =
            self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true})).await;
        reply["result"]["value"].clone()
    }

    /// Loads `url` in the tab, as typing it into the address bar would.
    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// One DevTools method call, and its result.
    pub async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        let id = self.next_id;
        self.next_id += 1;
        let call = json!({"id": id, "method": method, "params": params});
        self.socket.send(tokio_tungstenite::tungstenite::Message::text(call.to_string())).await.unwrap();
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next()).await.unwrap().unwrap().unwrap();
            let reply: serde_json::Value =
                serde_json::from_str(message.to_text().unwrap_or("{}")).unwrap_or_default();
            if reply["id"] == id {
                return reply["result"].clone();
            }
        }
    }

    /// A screenshot of the page, kept as `test-artifacts/<name>` of the test run.
    pub async fn screenshot(&mut self, name: &str) {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        std::fs::write(artifacts.join(name), png).unwrap();
    }

    /// Waits until `expression` evaluates to `expected`.
    pub async fn until(&mut self, expression: &str, expected: serde_json::Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.eval(expression).await;
            if value == expected {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let text = self.eval("document.body ? document.body.innerText : location.href").await;
                panic!("{expression}: {value}, not {expected}; the page says {text}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
