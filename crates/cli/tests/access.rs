//! Authentication and authorization with Mosquitto's own files: a password file written by
//! `mosquitto_passwd`, and the OwnTracks ACL shape.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cauldron_client::{Client, Error, Options, Protocol, QoS};
use cauldron_proto::{Publish, ReasonCode};
use common::*;

fn mosquitto_passwd(file: &Path, user: &str, password: &str, create: bool) {
    let mut args = vec!["-b"];
    if create {
        args.insert(0, "-c");
    }
    let status = std::process::Command::new("mosquitto_passwd")
        .args(&args)
        .arg(file)
        .args([user, password])
        .status()
        .expect("mosquitto_passwd (Debian package mosquitto) is installed by the test command");
    assert!(status.success());
}

const ACL: &str = "\
user jane
topic readwrite owntracks/jane/#
topic read owntracks/+/+
topic read owntracks/+/+/event

user bob
topic readwrite owntracks/bob/#
topic read owntracks/+/+
";

fn files(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let passwords = dir.join("passwords");
    mosquitto_passwd(&passwords, "jane", "janes-secret", true);
    mosquitto_passwd(&passwords, "bob", "bobs-secret", false);
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    (passwords.display().to_string(), acl.display().to_string())
}

async fn refused(options: Options) -> ReasonCode {
    match Client::connect(options).await {
        Err(Error::Refused(code)) => code,
        Ok(_) => panic!("connected"),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_password_files_and_the_right_connack_codes() {
    let dir = data_dir("passwords");
    let (passwords, _) = files(&dir);
    let broker = Cauldron::start(&dir, &["--password-file", &passwords, "--sys-interval", "0"]).await;
    let options = |id: &str| Options::new(&broker.addr, id);
    Client::connect(options("ok").credentials("jane", "janes-secret")).await.expect("right password");
    let started = Instant::now();
    // 3.1.1: 0x05 not authorized, for a wrong password as for anonymous refused by default (0x04
    // is for malformed credentials), as Mosquitto answers.
    assert_eq!(refused(options("x").credentials("jane", "wrong")).await, ReasonCode::NotAuthorized);
    assert!(started.elapsed() >= Duration::from_millis(900), "refusals are answered after a delay");
    assert_eq!(refused(options("y").credentials("nobody", "x")).await, ReasonCode::NotAuthorized);
    assert_eq!(refused(options("z")).await, ReasonCode::NotAuthorized);
    // 5.0: 0x86 and 0x87.
    let v5 = |id: &str| options(id).protocol(Protocol::V5);
    assert_eq!(refused(v5("a").credentials("bob", "wrong")).await, ReasonCode::BadUserNameOrPassword);
    assert_eq!(refused(v5("b")).await, ReasonCode::NotAuthorized);
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owntracks_acl_lets_friends_read_locations_and_nothing_else() {
    let dir = data_dir("acl");
    let (passwords, acl) = files(&dir);
    let broker =
        Cauldron::start(&dir, &["--password-file", &passwords, "--acl-file", &acl, "--sys-interval", "0"])
            .await;
    let login = |id: &str, user: &str, pw: &'static str| Options::new(&broker.addr, id).credentials(user, pw);
    let (jane, mut janes) = Client::connect(login("jane-phone", "jane", "janes-secret")).await.unwrap();
    assert_eq!(jane.subscribe("owntracks/+/+", QoS::AtLeastOnce).await.unwrap(), ReasonCode::GrantedQoS1);
    // A filter no permitted topic can match is granted, as by Mosquitto; nothing arrives on it.
    assert_eq!(jane.subscribe("secret/#", QoS::AtLeastOnce).await.unwrap(), ReasonCode::GrantedQoS1);

    let (bob, _) =
        Client::connect(login("bob-phone", "bob", "bobs-secret").protocol(Protocol::V5)).await.unwrap();
    bob.publish("owntracks/bob/phone", "{\"_type\":\"location\"}", QoS::AtLeastOnce, false).await.unwrap();
    // Bob may not write under Jane's name: MQTT 5 says so with 0x87.
    let mut forged = Publish::new("owntracks/jane/phone", &b"forged"[..]);
    forged.qos = QoS::AtLeastOnce;
    assert_eq!(bob.publish_packet(forged).await.unwrap(), Some(ReasonCode::NotAuthorized));
    bob.publish("owntracks/bob/phone/secret", "hidden from friends", QoS::AtLeastOnce, false).await.unwrap();

    let got = tokio::time::timeout(WAIT, janes.recv()).await.unwrap().unwrap();
    assert_eq!(&got.topic[..], "owntracks/bob/phone");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), janes.recv()).await.is_err(),
        "nothing else reaches Jane"
    );
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_line_stops_the_start_and_names_file_and_line() {
    let dir = data_dir("bad-acl");
    std::fs::create_dir_all(&dir).unwrap();
    let acl = dir.join("acl");
    std::fs::write(&acl, "user jane\ntopic read owntracks/#\ntopic read owntracks/#/x\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--acl-file"])
        .arg(&acl)
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:3:", acl.display())), "{stderr}");
    assert!(stderr.contains("MQTT-4.7.1-1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_passwords_and_acl_without_dropping_connections() {
    let dir = data_dir("reload");
    std::fs::create_dir_all(&dir).unwrap();
    let passwords = dir.join("passwords");
    mosquitto_passwd(&passwords, "jane", "janes-secret", true);
    let acl = dir.join("acl");
    std::fs::write(&acl, "user jane\ntopic read news/#\n").unwrap();
    let (p, a) = (passwords.display().to_string(), acl.display().to_string());
    let mut broker =
        Cauldron::start(&dir, &["--password-file", &p, "--acl-file", &a, "--sys-interval", "0"]).await;
    let (jane, mut janes) =
        Client::connect(Options::new(&broker.addr, "jane").credentials("jane", "janes-secret"))
            .await
            .unwrap();
    jane.subscribe("news/#", QoS::AtMostOnce).await.unwrap();
    assert!(matches!(
        refused(Options::new(&broker.addr, "bob").credentials("bob", "bobs-secret")).await,
        ReasonCode::NotAuthorized
    ));

    // Bob joins, Jane loses her news; one SIGHUP applies both.
    mosquitto_passwd(&passwords, "bob", "bobs-secret", false);
    std::fs::write(&acl, "user jane\ntopic read weather/#\n\nuser bob\ntopic write news/#\n").unwrap();
    broker.hangup().await;
    let (bob, _) = Client::connect(Options::new(&broker.addr, "bob").credentials("bob", "bobs-secret"))
        .await
        .expect("bob after reload");
    bob.publish("news/today", "reloaded", QoS::AtLeastOnce, false).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), janes.recv()).await.is_err(),
        "the new ACL applies to Jane's connection"
    );
    jane.publish("still/connected", "yes", QoS::AtLeastOnce, false)
        .await
        .expect("Jane's connection survived the reload");

    // A broken file on reload is reported and the one in use stays.
    std::fs::write(&acl, "topic read a/#/b\n").unwrap();
    broker.hangup().await;
    bob.publish("news/later", "x", QoS::AtLeastOnce, false).await.unwrap();
    broker.terminate().await;
}
