//! `cauldron bench pubsub` against the real broker: every message counted, numbers reported.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_reports_every_message_at_each_qos() {
    let dir = data_dir("bench");
    let broker = Cauldron::start(&dir, &[]).await;
    for qos in ["0", "1", "2"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
            .args(["bench", "pubsub", "-H", &broker.addr, "-c", "3", "-n", "100", "-q", qos, "--json"])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "qos {qos}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("\"sent\":300,\"received\":300,\"errors\":0"), "{stdout}");
        assert!(stdout.contains("\"p99\":"), "{stdout}");
    }
    broker.terminate().await;
}
