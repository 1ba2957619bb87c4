//! A Mosquitto configuration in the OwnTracks quicksetup shape (passwords, ACL, a TLS listener,
//! a WebSocket listener) runs unchanged under `--mosquitto-conf`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owntracks_style_mosquitto_conf_with_tls_and_websocket_clients() {
    let dir = data_dir("mosquitto-conf");
    let pki = pki(&dir.join("pki"));
    let bin = env!("CARGO_BIN_EXE_cauldron");
    let passwords = dir.join("passwd");
    write_passwords(&passwords, "sha512-pbkdf2", &[("jane", "jane-pw"), ("bob", "bob-pw")]);
    std::fs::write(
        dir.join("acl"),
        "user jane\ntopic readwrite owntracks/jane/#\ntopic read owntracks/+/+\n\n\
         user bob\ntopic readwrite owntracks/bob/#\ntopic read owntracks/+/+\n",
    )
    .unwrap();
    let (plain, tls, ws) = (free_port(), free_port(), free_port());
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "# written like the OwnTracks quicksetup's owntracks.conf\n\
             pid_file /run/mosquitto/mosquitto.pid\npersistence true\npersistence_location {data}\n\
             log_dest topic\nallow_anonymous false\npassword_file passwd\nacl_file acl\n\
             max_inflight_messages 20\nmax_queued_messages 9000\n\n\
             listener {plain} 127.0.0.1\n\n\
             listener {tls} 127.0.0.1\ncafile pki/ca.pem\ncertfile pki/server.pem\nkeyfile pki/server.key\n\n\
             listener {ws} 127.0.0.1\nprotocol websockets\n",
            data = dir.join("data").display()
        ),
    )
    .unwrap();

    let check = std::process::Command::new(bin).args(["config", "check"]).arg(&conf).output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}{}", String::from_utf8_lossy(&check.stderr));
    assert!(report.contains(&format!("listener 127.0.0.1:{tls} (mqtt+tls)")), "{report}");
    assert!(
        report.contains("password file")
            && report.contains("2 users")
            && report.contains("warning: log_dest"),
        "{report}"
    );

    let conf_arg = conf.display().to_string();
    let broker = Cauldron::start(&dir, &["--mosquitto-conf", &conf_arg]).await;
    // Jane over TLS with her password: her own location is hers to publish.
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &tls.to_string(), "--cafile"])
        .arg(&pki.ca)
        .args([
            "-u",
            "jane",
            "-P",
            "jane-pw",
            "-t",
            "owntracks/jane/phone",
            "-m",
            "{\"_type\":\"location\"}",
            "-r",
            "-q",
            "1",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Bob over WebSocket with paho, reading his own topic.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/paho_ws.py");
    let out = tokio::process::Command::new("python3")
        .args([script, &ws.to_string(), "/mqtt", "-", "bob", "bob-pw", "owntracks/bob/phone"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Bob sees Jane's retained location as a friend.
    let out = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &plain.to_string(),
            "-u",
            "bob",
            "-P",
            "bob-pw",
            "-t",
            "owntracks/+/+",
            "-C",
            "1",
            "-W",
            "5",
            "-v",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "owntracks/jane/phone {\"_type\":\"location\"}");
    // Anonymous clients are refused once listeners are configured.
    let out = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &plain.to_string(), "-t", "x", "-C", "1", "-W", "3"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cauldron_toml_runs_and_bad_keys_stop_the_start() {
    let dir = data_dir("toml");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_cauldron");
    write_passwords(&dir.join("passwd"), "argon2id", &[("jane", "pw")]);
    let (plain, ws) = (free_port(), free_port());
    let config = dir.join("cauldron.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\npassword_file = \"passwd\"\nmax_queued_messages = 50\nsys_interval = 0\n\n\
             [[listener]]\naddress = \"127.0.0.1:{plain}\"\n\n[[listener]]\naddress = \"127.0.0.1:{ws}\"\nprotocol = \"websockets\"\n"
        ),
    )
    .unwrap();
    let check = std::process::Command::new(bin).args(["config", "check"]).arg(&config).output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("max_queued_messages 50") && report.contains("allow_anonymous false"),
        "{report}"
    );

    let config_arg = config.display().to_string();
    let broker = Cauldron::start(&dir, &["--config", &config_arg]).await;
    assert_eq!(broker.addr, format!("127.0.0.1:{plain}"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/paho_ws.py");
    let out = tokio::process::Command::new("python3")
        .args([script, &ws.to_string(), "/mqtt", "-", "jane", "pw", "toml/t"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("data").join("cauldron.redb").exists(), "data_dir relative to the file");
    broker.terminate().await;

    std::fs::write(&config, "sys_interval = 0\nmax_queued_mesages = 5\n").unwrap();
    let out = std::process::Command::new(bin).args(["serve", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&config_arg) && stderr.contains("line 2") && stderr.contains("max_queued_mesages"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_listener_settings_give_each_listener_its_own_auth() {
    use cauldron_client::{Client, Options, QoS};
    let dir = data_dir("per-listener");
    std::fs::create_dir_all(&dir).unwrap();
    write_passwords(&dir.join("passwd"), "argon2id", &[("jane", "pw")]);
    std::fs::write(
        dir.join("acl"),
        "user jane\ntopic readwrite owntracks/jane/#\ntopic read owntracks/+/+\n",
    )
    .unwrap();
    let (open, guarded) = (free_port(), free_port());
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings true\npersistence_location {}\nsys_interval 0\n\
             listener {open} 127.0.0.1\nallow_anonymous true\n\n\
             listener {guarded} 127.0.0.1\nallow_anonymous false\npassword_file passwd\nacl_file acl\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let conf_arg = conf.display().to_string();
    let broker = Cauldron::start(&dir, &["--mosquitto-conf", &conf_arg]).await;
    let open_addr = format!("127.0.0.1:{open}");
    let guarded_addr = format!("127.0.0.1:{guarded}");
    // The open listener takes anonymous clients with no ACL; the guarded one does not.
    let (anon, mut anon_messages) =
        Client::connect(Options::new(&open_addr, "anon")).await.expect("open listener");
    anon.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    assert!(
        Client::connect(Options::new(&guarded_addr, "anon2")).await.is_err(),
        "guarded listener refuses anonymous"
    );
    let (jane, mut janes) =
        Client::connect(Options::new(&guarded_addr, "jane").credentials("jane", "pw")).await.unwrap();
    jane.subscribe("owntracks/+/+", QoS::AtLeastOnce).await.unwrap();
    // Jane's ACL, on her listener, decides what she may publish and receive.
    jane.publish("owntracks/jane/phone", "mine", QoS::AtLeastOnce, false).await.unwrap();
    jane.publish("owntracks/bob/phone", "forged", QoS::AtLeastOnce, false).await.unwrap();
    anon.publish("owntracks/bob/phone", "bob's", QoS::AtLeastOnce, false).await.unwrap();
    anon.publish("owntracks/bob/phone/cmd", "not for jane", QoS::AtLeastOnce, false).await.unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), anon_messages.recv()).await
    {
        seen.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    assert_eq!(seen, ["mine", "bob's", "not for jane"], "the forged one never got in");
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(std::time::Duration::from_millis(500), janes.recv()).await {
        got.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    assert_eq!(got, ["mine", "bob's"]);
    broker.terminate().await;
}

/// Mosquitto's `check_retain_source`: a retained message goes to a new subscriber only while
/// its publisher may still write the topic; who published it is stored with it, so that holds
/// after a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_retain_source_holds_back_what_a_writer_no_longer_may_write() {
    use cauldron_client::{Client, Messages, Options, QoS};
    async fn retained(addr: &str, filter: &str) -> Vec<String> {
        let (reader, mut messages): (Client, Messages) =
            Client::connect(Options::new(addr, "reader").credentials("reader", "pw")).await.unwrap();
        reader.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let mut got = Vec::new();
        while let Ok(Some(m)) =
            tokio::time::timeout(std::time::Duration::from_millis(400), messages.recv()).await
        {
            got.push(String::from_utf8_lossy(&m.payload).into_owned());
        }
        reader.disconnect().await.unwrap();
        got
    }
    let dir = data_dir("retain-source");
    std::fs::create_dir_all(&dir).unwrap();
    write_passwords(&dir.join("passwd"), "argon2id", &[("writer", "pw"), ("reader", "pw")]);
    let acl = dir.join("acl");
    let rules = |writer: &str| format!("user writer\n{writer}\n\nuser reader\ntopic read test/#\n");
    std::fs::write(&acl, rules("topic readwrite test/#")).unwrap();
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "check_retain_source true\npersistence true\npersistence_location {}\nsys_interval 0\n\
             listener {port} 127.0.0.1\nallow_anonymous false\npassword_file passwd\nacl_file acl\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let conf_arg = conf.display().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut broker = Cauldron::start(&dir, &["--mosquitto-conf", &conf_arg]).await;
    let (writer, _) =
        Client::connect(Options::new(&addr, "writer").credentials("writer", "pw")).await.unwrap();
    writer.publish("test/kept", "by writer", QoS::AtLeastOnce, true).await.unwrap();
    writer.disconnect().await.unwrap();
    assert_eq!(retained(&addr, "test/#").await, ["by writer"]);

    // The writer loses write access: what it wrote is no longer handed out.
    std::fs::write(&acl, rules("topic read test/#")).unwrap();
    broker.hangup().await;
    assert!(retained(&addr, "test/#").await.is_empty(), "held back after the reload");

    // Stored with its publisher's name: after a restart the check still knows whom to ask.
    broker.terminate().await;
    std::fs::write(&acl, rules("topic readwrite test/#")).unwrap();
    let broker = Cauldron::start(&dir, &["--mosquitto-conf", &conf_arg]).await;
    assert_eq!(retained(&addr, "test/#").await, ["by writer"], "the writer may again");
    broker.terminate().await;
    std::fs::write(&acl, rules("topic read test/#")).unwrap();
    let broker = Cauldron::start(&dir, &["--mosquitto-conf", &conf_arg]).await;
    assert!(retained(&addr, "test/#").await.is_empty(), "held back after a restart");
    broker.terminate().await;
}
