//! A NATS cluster for the tests: `n` nats-server processes with JetStream, routed to each other
//! on free loopback ports, each fsyncing every write (`sync_interval: always`, what cauldron's
//! durability needs). The server is the one `./scripts/test` installs
//! (`CAULDRON_TEST_NATS_SERVER`), else `nats-server` on the PATH.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{free_port, WAIT};

pub struct NatsServer {
    pub url: String,
    monitor: u16,
    config: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

fn binary() -> String {
    std::env::var("CAULDRON_TEST_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

impl NatsCluster {
    /// Starts the servers and waits until each is ready and routed to the others. A port taken
    /// by someone else between choosing it and the server binding it leaves a server down:
    /// then the whole cluster starts again on new ports (a few times).
    pub async fn start(dir: &Path, n: usize) -> NatsCluster {
        for _ in 0..3 {
            if let Some(cluster) = NatsCluster::try_start(dir, n).await {
                return cluster;
            }
        }
        panic!("no NATS cluster of {n} in {} (see the n*.log there)", dir.display());
    }

    async fn try_start(dir: &Path, n: usize) -> Option<NatsCluster> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..n).map(|_| (free_port(), free_port(), free_port())).collect();
        let routes: Vec<String> =
            ports.iter().map(|(_, route, _)| format!("nats://127.0.0.1:{route}")).collect();
        let mut servers = Vec::new();
        for (i, (client, route, monitor)) in ports.iter().enumerate() {
            let config = dir.join(format!("n{i}.conf"));
            let cluster = match n {
                1 => String::new(),
                _ => format!(
                    "cluster {{ name: cauldron-test, listen: 127.0.0.1:{route}, routes: [{}] }}",
                    routes.join(", ")
                ),
            };
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                     log_file: \"{}\"\n\
                     jetstream {{ store_dir: \"{}\", sync_interval: always }}\n{cluster}\n",
                    dir.join(format!("n{i}.log")).display(),
                    dir.join(format!("js{i}")).display()
                ),
            )
            .unwrap();
            let mut server = NatsServer {
                url: format!("nats://127.0.0.1:{client}"),
                monitor: *monitor,
                config,
                child: None,
            };
            server.spawn();
            servers.push(server);
        }
        let cluster = NatsCluster { servers };
        for server in &cluster.servers {
            // Interest crosses servers over routes: until they are up, a message published on
            // one server does not reach a subscriber on another.
            if !server.ready().await || !server.routed(n - 1).await {
                return None;
            }
        }
        Some(cluster)
    }

    /// `nats://a,nats://b,...` for `--cluster`.
    pub fn urls(&self) -> String {
        self.servers.iter().map(|s| s.url.as_str()).collect::<Vec<_>>().join(",")
    }
}

impl NatsServer {
    fn spawn(&mut self) {
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (./scripts/test installs nats-server)", binary()));
        self.child = Some(child);
    }

    /// Until its monitor says JetStream is up (in a cluster: a meta leader is elected); false
    /// if it is not in time.
    async fn ready(&self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        let monitor = format!("127.0.0.1:{}", self.monitor);
        while tokio::time::Instant::now() < deadline {
            if tokio::net::TcpStream::connect(&monitor).await.is_ok()
                && super::http(&monitor, "GET", "/healthz", &[], b"").await.status == 200
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Until it has a route to each of the `others`; false if it has not in time.
    async fn routed(&self, others: usize) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        let monitor = format!("127.0.0.1:{}", self.monitor);
        while tokio::time::Instant::now() < deadline {
            let routes =
                super::http(&monitor, "GET", "/routez", &[], b"").await.json()["num_routes"].as_u64();
            if routes.unwrap_or(0) as usize >= others {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// kill -9.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts it again on the same ports and store, and waits for it to rejoin `others`.
    pub async fn restart(&mut self, others: usize) {
        self.spawn();
        assert!(self.ready().await, "nats-server {} not ready after a restart", self.url);
        assert!(self.routed(others).await, "nats-server {} has no routes after a restart", self.url);
    }
}
