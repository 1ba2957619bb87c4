//! Black-box harness: the real `cauldron` binary as a child process on a data directory, which
//! tests kill (-9 or TERM) and start again.
#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod nats;
pub mod owntracks;

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Cauldron {
    child: Child,
    pub addr: String,
    /// The HTTP listener (`/metrics`, `/healthz`, `/readyz`).
    pub http: String,
    /// Every MQTT listener, in the order opened (plain ones first, then TLS).
    pub listeners: Vec<String>,
    /// What the broker logged, line by line, as it arrives.
    pub log: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Lines already read while starting.
    early: Vec<String>,
}

/// A fresh data directory under the target directory, removed first if it exists.
pub fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Cauldron {
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Cauldron {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cauldron"))
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", std::env::var("CAULDRON_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the cauldron binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, mut log) = tokio::sync::mpsc::unbounded_channel();
        // Read to the end whatever it is: a forwarder that stopped at a line that is not UTF-8
        // would leave the pipe to fill, and the node to block on its next log line.
        // Kept beside the node's data too, for a look after a failed run.
        let _ = std::fs::create_dir_all(data_dir);
        let mut kept =
            std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("stderr.log")).ok();
        tokio::spawn(async move {
            let mut stderr = BufReader::new(stderr);
            let mut line = Vec::new();
            while stderr.read_until(b'\n', &mut line).await.is_ok_and(|n| n > 0) {
                if let Some(file) = &mut kept {
                    let _ = std::io::Write::write_all(file, &line);
                }
                let text = String::from_utf8_lossy(&line).trim_end_matches('\n').to_string();
                let _ = tx.send(text);
                line.clear();
            }
        });
        // The listener is bound to port 0: learn the real address from the log.
        // Both listeners are bound to port 0: learn the real addresses from the log.
        let mut early = Vec::new();
        let expected = 1 + extra.iter().filter(|a| a.ends_with("-listen")).count();
        // A cluster node joins NATS (stream, consumer, retained messages) before it listens.
        let wait = if extra.contains(&"--cluster") { WAIT * 4 } else { WAIT };
        let (addr, http) = tokio::time::timeout(wait, async {
            let (mut addr, mut http) = (None, None);
            while let Some(line) = log.recv().await {
                // Text logs end the address at a space, JSON logs at the closing quote.
                let after = |marker: &str| {
                    let rest = line.split(marker).nth(1)?;
                    Some(rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap().to_string())
                };
                addr = addr.or(after("Opening listener on "));
                http = http.or(after("HTTP listening on "));
                early.push(line);
                let opened = early.iter().filter(|l| l.contains("Opening listener on ")).count();
                if let (Some(addr), Some(http), true) = (&addr, &http, opened >= expected) {
                    return (addr.clone(), http.clone());
                }
            }
            panic!("cauldron exited before listening: {early:?}");
        })
        .await
        .expect("cauldron listens");
        let listeners = early
            .iter()
            .filter_map(|l| l.split("Opening listener on ").nth(1))
            .map(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap().to_string())
            .collect();
        Cauldron { child, addr, http, listeners, log, early }
    }

    /// kill -9: no chance to commit or say goodbye.
    pub async fn kill9(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill").args([&format!("-{name}"), &pid]).status().unwrap();
        assert!(sent.success(), "kill -{name} {pid}");
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(mut self) {
        let pid = self.child.id().unwrap().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        let status =
            tokio::time::timeout(WAIT, self.child.wait()).await.expect("exits after SIGTERM").unwrap();
        assert!(status.success(), "clean exit, got {status}");
    }

    /// SIGHUP: reload password file, ACL file and certificates; returns once the reload is logged.
    pub async fn hangup(&mut self) {
        let pid = self.child.id().unwrap().to_string();
        Command::new("kill").args(["-HUP", &pid]).status().await.unwrap();
        self.logged("reload done").await;
    }

    /// Every log line printed since the last look, for a failing test's message.
    pub fn drain_log(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.log.try_recv() {
            lines.push(line);
        }
        lines
    }

    /// Waits for a log line containing `text` and returns it.
    pub async fn logged(&mut self, text: &str) -> String {
        if let Some(line) = self.early.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        tokio::time::timeout(WAIT, async {
            while let Some(line) = self.log.recv().await {
                if line.contains(text) {
                    return line;
                }
            }
            panic!("log ended without {text:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no log line with {text:?}"))
    }
}

/// Certificates made for a test.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A second client certificate (CN=mallory), listed in `crl` as revoked.
    pub revoked_cert: PathBuf,
    pub revoked_key: PathBuf,
    pub crl: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate for "jane".
pub fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "cauldron test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.distinguished_name.push(DnType::CommonName, "jane");
    let client_cert = client.signed_by(&client_key, &issuer).unwrap();
    let revoked_key = KeyPair::generate().unwrap();
    let mut revoked = CertificateParams::new(Vec::<String>::new()).unwrap();
    revoked.distinguished_name.push(DnType::CommonName, "mallory");
    revoked.serial_number = Some(rcgen::SerialNumber::from(7u64));
    let revoked_cert = revoked.signed_by(&revoked_key, &issuer).unwrap();
    let now = rcgen::date_time_ymd(2026, 1, 1);
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: rcgen::date_time_ymd(2036, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(7u64),
            revocation_time: now,
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();
    Pki {
        revoked_cert: write("revoked.pem", revoked_cert.pem()),
        revoked_key: write("revoked.key", revoked_key.serialize_pem()),
        crl: write("crl.pem", crl.pem().unwrap()),
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server_cert.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
    }
}

/// A free loopback port below the kernel's ephemeral range (32768 and up): a port the system
/// hands out for outgoing connections can be taken by one of a parallel test's clients in the
/// moment a broker is restarted on it ("Address already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test binary starts somewhere else, so one does not reuse the last one's ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() * 97 % COUNT,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Mosquitto 2.0 (the Debian package) on a free loopback port with `conf` (mosquitto.conf lines
/// for that listener), for tests that compare against it. Killed when dropped.
pub struct Mosquitto {
    _child: Child,
    pub port: u16,
}

impl Mosquitto {
    pub async fn start(dir: &Path, conf: &str) -> Mosquitto {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, format!("listener {port} 127.0.0.1\nuser root\n{conf}")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto (Debian package) is installed by the test command");
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "mosquitto did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Mosquitto { _child: child, port }
    }
}

/// An HTTP/1.0 response: status, headers (lowercased names) and body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One plain HTTP/1.0 request (the connection closes after the response).
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpResponse { status, headers, body: body.to_string() }
}

/// `Authorization: Basic ...` for `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Writes a password file for `users` with `cauldron passwd -b -H <hash>` (`argon2id`, or
/// `sha512-pbkdf2` where Mosquitto 2.0 must read it too).
pub fn write_passwords(file: &Path, hash: &str, users: &[(&str, &str)]) {
    for (i, (user, password)) in users.iter().enumerate() {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cauldron"));
        command.args(["passwd", "-b", "-H", hash]);
        if i == 0 {
            command.arg("-c");
        }
        assert!(
            command.arg(file).args([user, password]).status().unwrap().success(),
            "cauldron passwd {user}"
        );
    }
}
