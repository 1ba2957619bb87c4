//! The broker as a library, whole: a `Server` built from one `Setup` gives an embedding program
//! what `cauldron serve` has: the password file and ACL enforced, state kept in the store across
//! restarts, files reloaded in place, and a bad file refused before anything starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cauldron_broker::auth::password::hash_sha512;
use cauldron_broker::config::{ListenerSpec, Setup};
use cauldron_broker::{CancellationToken, Config, Server};
use cauldron_client::{Client, Error, Options, QoS};
use cauldron_proto::ReasonCode;

const WAIT: Duration = Duration::from_secs(10);

fn folder(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn setup(dir: &Path) -> Setup {
    let config = Config { data_dir: dir.join("data"), allow_anonymous: false, ..Config::default() };
    Setup {
        config,
        listeners: vec![ListenerSpec {
            addr: Some("127.0.0.1:0".parse().unwrap()),
            ..ListenerSpec::default()
        }],
        password_file: Some(dir.join("passwd")),
        acl_file: Some(dir.join("acl")),
        bridges: Vec::new(),
        cluster: None,
        warnings: Vec::new(),
    }
}

fn write_password(dir: &Path, password: &str) {
    std::fs::write(dir.join("passwd"), format!("jane:{}\n", hash_sha512(password.as_bytes()).unwrap()))
        .unwrap();
}

async fn start(
    dir: &Path,
) -> (String, CancellationToken, tokio::task::JoinHandle<()>, cauldron_broker::Reload) {
    let server = Server::build(setup(dir)).await.unwrap();
    let addr = server.tcp_addresses()[0].to_string();
    let reload = server.reload();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move { server.run(stop).await.unwrap() });
    (addr, shutdown, task, reload)
}

async fn login(addr: &str, password: &str) -> Result<(Client, cauldron_client::Messages), Error> {
    Client::connect(Options::new(addr, "embedded").credentials("jane", password.as_bytes().to_vec())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_from_one_setup_enforces_keeps_and_reloads() {
    let dir = folder("server-embedded");
    write_password(&dir, "first");
    std::fs::write(dir.join("acl"), "user jane\ntopic readwrite home/#\n").unwrap();
    let (addr, shutdown, task, reload) = start(&dir).await;
    // The password file: a wrong password is refused (the client speaks 3.1.1: return code 5,
    // not authorised, as Mosquitto answers it).
    let refused = login(&addr, "wrong").await.map(|_| ()).unwrap_err();
    assert!(matches!(refused, Error::Refused(ReasonCode::NotAuthorized)), "{refused:?}");
    let (client, _) = login(&addr, "first").await.unwrap();
    // The ACL: jane's retained message under home/ is kept, one elsewhere is not.
    client.publish("home/door", "open", QoS::AtLeastOnce, true).await.unwrap();
    client.publish("office/door", "open", QoS::AtLeastOnce, true).await.unwrap();
    // A new password, read again in place: the old one stops working, the new one works.
    write_password(&dir, "second");
    reload.run();
    assert!(login(&addr, "first").await.is_err());
    drop(client);
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();

    // Restarted on the same folder: the retained message is there, from the store.
    let (addr, shutdown, task, _) = start(&dir).await;
    let (client, mut messages) = login(&addr, "second").await.unwrap();
    client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    let kept = tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
    assert_eq!((&kept.topic[..], &kept.payload[..], kept.retain), ("home/door", &b"open"[..], true));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), messages.recv()).await.is_err(),
        "office/door was refused"
    );
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();

    // A broken ACL line stops the build, naming the file and line; nothing is bound.
    std::fs::write(dir.join("acl"), "user jane\nsubscribe home/#\n").unwrap();
    let error = Server::build(setup(&dir)).await.err().expect("a bad ACL is refused").to_string();
    assert!(error.contains("acl") && error.contains('2'), "{error}");
}
