//! What an attacker, a typo or a broken disk does to a running cauldron: each case once made it
//! unable to start, lose state or hang.
mod common;

use std::process::Stdio;
use std::time::Duration;

use cauldron_broker::store::{Op, RedbStore, Store};
use cauldron_client::{Client, Options};
use cauldron_proto::QoS;
use common::owntracks::wait_json;
use common::*;

/// Runs a broker on `dir` long enough to store one retained message.
async fn store_one_retained(dir: &std::path::Path, topic: &str, payload: &str) {
    let broker = Cauldron::start(dir, &["--sys-interval", "0"]).await;
    let (client, _) = Client::connect(Options::new(&broker.addr, "p")).await.unwrap();
    client.publish(topic, payload.to_string(), QoS::AtLeastOnce, true).await.unwrap();
    broker.terminate().await;
}

/// A broker on a fresh data dir `name` with these users (a password file) and this ACL.
async fn with_users_and_acl(name: &str, users: &[(&str, &str)], acl_text: &str) -> Cauldron {
    let dir = data_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (passwords, acl) = (dir.join("passwd"), dir.join("acl"));
    write_passwords(&passwords, "sha512", users);
    std::fs::write(&acl, acl_text).unwrap();
    let (p, a) = (passwords.display().to_string(), acl.display().to_string());
    Cauldron::start(&dir, &["--password-file", &p, "--acl-file", &a, "--sys-interval", "0"]).await
}

/// `POST /pub?d=%2B` once stored a retained message on `owntracks/<user>/+`, and every later
/// start failed on it. Names that are not one topic level are refused with 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_names_must_be_topic_levels() {
    let dir = data_dir("http-levels");
    let broker = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    let location = br#"{"_type":"location","lat":52.5,"lon":13.4,"tst":1700000000}"#;
    for bad in ["d=%2B", "d=%23", "d=a%00b", "d=a/b", "u=%2B&d=x"] {
        let response = http(&broker.http, "POST", &format!("/pub?{bad}"), &[], location).await;
        assert_eq!(response.status, 400, "{bad}: {}", response.body);
    }
    for bad in ["id=a/%2B", "id=%23/x", "id=a/b/c"] {
        let response = http(&broker.http, "GET", &format!("/?{bad}&lat=1&lon=2"), &[], b"").await;
        assert_eq!(response.status, 400, "{bad}: {}", response.body);
    }
    let ok = http(&broker.http, "POST", "/pub?d=phone", &[], location).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    broker.terminate().await;
    let again = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    again.terminate().await;
}

/// A stored record that cannot be read never keeps the broker from starting: it is logged,
/// kept aside in a file with its bytes, and everything else is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_stored_record_is_kept_aside_and_the_rest_restored() {
    let dir = data_dir("bad-record");
    store_one_retained(&dir, "good/topic", "kept").await;
    {
        let (mut store, _, _) = RedbStore::open(&dir.join("cauldron.redb")).unwrap();
        store.commit(&[Op::PutRetained("bad/+".into(), b"not a stored message".to_vec())]).unwrap();
    }
    let mut broker = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    broker.logged("STORED RECORD UNREADABLE").await;
    let (sub, mut messages) = Client::connect(Options::new(&broker.addr, "s")).await.unwrap();
    sub.subscribe("#", QoS::AtMostOnce).await.unwrap();
    let got = tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
    assert_eq!((&got.topic[..], &got.payload[..]), ("good/topic", &b"kept"[..]));
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rejected-records-"))
        .collect();
    assert_eq!(aside.len(), 1);
    let text = std::fs::read_to_string(aside[0].path()).unwrap();
    assert!(text.starts_with("retained\t\"bad/+\""), "{text}");
    broker.terminate().await;
}

/// A second `cauldron serve` on the same data directory once took the lock error for
/// corruption, moved the live file aside and served too. Now it stops with a clear error and the
/// first one's state is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_on_the_same_data_dir_refuses_to_start() {
    let dir = data_dir("two-brokers");
    let first = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    let (client, _) = Client::connect(Options::new(&first.addr, "p")).await.unwrap();
    client.publish("kept", "1", QoS::AtLeastOnce, true).await.unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--no-recorder", "--data-dir"])
        .arg(&dir)
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another cauldron"), "{stderr}");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!files.iter().any(|f| f.contains("corrupt")), "{files:?}");
    first.terminate().await;
    let again = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    let (sub, mut messages) = Client::connect(Options::new(&again.addr, "s")).await.unwrap();
    sub.subscribe("kept", QoS::AtMostOnce).await.unwrap();
    assert_eq!(&tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap().payload[..], b"1");
    again.terminate().await;
}

/// Garbage in the middle of `cauldron.redb` once panicked inside redb at start (exit 101); a
/// corrupt `recorder.sqlite` kept the MQTT broker from starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_files_are_quarantined_or_switch_the_recorder_off() {
    let dir = data_dir("corrupt-files");
    store_one_retained(&dir, "t", "1").await;
    let path = dir.join("cauldron.redb");
    // Everything after the header page: whatever the layout, the tables are in there.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4096..].iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7 + 13) as u8);
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(dir.join("recorder.sqlite"), vec![0x5a; 8192]).unwrap();
    let mut broker = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    broker.logged("OwnTracks recorder OFF").await;
    let (client, _) = Client::connect(Options::new(&broker.addr, "p")).await.unwrap();
    client.publish("t", "2", QoS::AtLeastOnce, false).await.unwrap();
    broker.logged("DATA FILE CORRUPT").await;
    let quarantined = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("cauldron.redb.corrupt-"))
        .expect("moved aside");
    assert_eq!(std::fs::read(quarantined.path()).unwrap(), bytes, "kept as it was");
    assert_eq!(std::fs::read(dir.join("recorder.sqlite")).unwrap(), vec![0x5a; 8192], "left as it was");
    broker.terminate().await;
}

/// A broker whose stderr reader has gone (a supervisor that died) once ignored SIGTERM for
/// seconds; a full pipe could block it for good. Log writes never block anything now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_broker_whose_log_reader_is_gone_or_stalled() {
    for reader in ["gone", "stalled"] {
        let dir = data_dir(&format!("log-{reader}"));
        let port = free_port();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--http", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // Wait until it listens, then make it log a lot: connections with long client ids.
        let mut up = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "listens");
        let held = match reader {
            "gone" => {
                drop(stderr);
                None
            }
            _ => Some(stderr),
        };
        for i in 0..40 {
            let id = format!("{i}-{}", "x".repeat(20_000));
            if let Ok((c, _)) = Client::connect(Options::new(format!("127.0.0.1:{port}"), id.as_str())).await
            {
                drop(c);
            }
        }
        let pid = child.id().unwrap().to_string();
        tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(7), child.wait()).await;
        assert!(status.is_ok(), "{reader}: still running 7 s after SIGTERM");
        drop(held);
    }
}

/// Unmounts the test's small file system however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// After ENOSPC every later write once failed until a restart, while `/readyz` said 200. Now
/// nothing is acknowledged while the disk is full, `/readyz` says 503, and freeing space is
/// enough: the store writes again by itself. Runs on a 4 MB tmpfs, which needs root (as CI is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_recovered_from_without_a_restart() {
    let dir = data_dir("full-disk");
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&dir)
        .status()
        .expect("mount runs");
    assert!(mounted.success(), "mounting a tmpfs needs root; run the suite as root (CI does)");
    let _unmount = Mounted(dir.clone());
    let broker = Cauldron::start(&dir, &["--sys-interval", "0", "--no-recorder"]).await;
    let options = || Options::new(&broker.addr, "writer");
    let (client, _) = Client::connect(options()).await.unwrap();
    client.publish("before", "stored", QoS::AtLeastOnce, true).await.unwrap();
    // Fill the disk.
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        while file.write_all(&[0u8; 64 * 1024]).and_then(|_| file.flush()).is_ok() {}
    }
    let big = vec![b'x'; 256 * 1024];
    let mut refused = false;
    for i in 0..20 {
        let Ok(Ok((client, _))) = tokio::time::timeout(WAIT, Client::connect(options())).await else {
            continue;
        };
        let sent = tokio::time::timeout(
            WAIT,
            client.publish(format!("big/{i}").as_str(), big.clone(), QoS::AtLeastOnce, true),
        )
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            refused = true;
            break;
        }
    }
    assert!(refused, "a full disk refuses acknowledgements");
    assert_eq!(http(&broker.http, "GET", "/readyz", &[], b"").await.status, 503);
    std::fs::remove_file(&filler).unwrap();
    let mut ready = false;
    for _ in 0..50 {
        if http(&broker.http, "GET", "/readyz", &[], b"").await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again once the disk has room, without a restart");
    let (client, _) = Client::connect(options()).await.unwrap();
    tokio::time::timeout(WAIT, client.publish("after", "stored too", QoS::AtLeastOnce, true))
        .await
        .unwrap()
        .unwrap();
    broker.terminate().await;
}

/// `GET /api/0/kill` once deleted data (a link or an image tag was enough); `/ws/last`
/// accepted any `Origin`, so another site could read positions through a logged-in browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_takes_a_non_get_request_and_the_live_feed_its_own_origin() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = data_dir("http-methods");
    let broker = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    let location = br#"{"_type":"location","lat":52.5,"lon":13.4,"tst":1700000000}"#;
    assert_eq!(http(&broker.http, "POST", "/pub?u=jane&d=phone", &[], location).await.status, 200);
    let get = http(&broker.http, "GET", "/api/0/kill?user=jane&device=phone", &[], b"").await;
    assert_eq!(get.status, 405, "{}", get.body);
    let list = http(&broker.http, "GET", "/api/0/list", &[], b"").await;
    assert!(list.body.contains("jane"), "nothing deleted: {}", list.body);
    let post = http(&broker.http, "POST", "/api/0/kill?user=jane&device=phone", &[], b"").await;
    assert_eq!(post.status, 200, "{}", post.body);
    let connect = |origin: Option<String>| {
        let http_addr = broker.http.clone();
        async move {
            let mut request = format!("ws://{http_addr}/ws/last").into_client_request().unwrap();
            if let Some(origin) = origin {
                request.headers_mut().insert("Origin", origin.parse().unwrap());
            }
            let stream = tokio::net::TcpStream::connect(&http_addr).await.unwrap();
            tokio_tungstenite::client_async(request, stream).await.map(drop)
        }
    };
    assert!(connect(Some("https://evil.example".into())).await.is_err(), "another origin is refused");
    assert!(connect(Some(format!("http://{}", broker.http))).await.is_ok(), "the page's own origin");
    assert!(connect(None).await.is_ok(), "a client that is not a browser");
    broker.terminate().await;
}

/// `/metrics` (who is connected, how much flows) once answered anyone when users existed. On
/// an address other than loopback it now takes a login, unless `--metrics-public`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_beyond_loopback_take_a_login() {
    use tokio::io::AsyncBufReadExt;
    let dir = data_dir("metrics-login");
    std::fs::create_dir_all(&dir).unwrap();
    let passwords = dir.join("passwd");
    write_passwords(&passwords, "sha512", &[("ops", "ops-pw")]);
    for public in [false, true] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"));
        command.args(["serve", "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0", "--no-recorder"]);
        command.arg("--password-file").arg(&passwords).arg("--data-dir").arg(dir.join(format!("d{public}")));
        if public {
            command.arg("--metrics-public");
        }
        let mut child = command.stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let port = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("HTTP listening on 0.0.0.0:").nth(1) {
                    return rest.split_whitespace().next().unwrap().to_string();
                }
            }
            panic!("no HTTP listener");
        })
        .await
        .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let anonymous = http(&addr, "GET", "/metrics", &[], b"").await.status;
        let wrong =
            http(&addr, "GET", "/metrics", &[("Authorization", &basic("ops", "nope"))], b"").await.status;
        let right =
            http(&addr, "GET", "/metrics", &[("Authorization", &basic("ops", "ops-pw"))], b"").await.status;
        match public {
            false => assert_eq!((anonymous, wrong, right), (401, 401, 200)),
            true => assert_eq!(anonymous, 200),
        }
        child.kill().await.unwrap();
    }
}

/// A read-only user once created devices others see through HTTP mode and OsmAnd. Those store
/// only what the user could have published over MQTT by the broker's ACL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_and_osmand_honour_the_acls_write_permission() {
    let acl = "user jane\ntopic readwrite owntracks/jane/#\n\nuser bob\ntopic read owntracks/#\n";
    let broker = with_users_and_acl("http-acl", &[("jane", "jane-pw"), ("bob", "bob-pw")], acl).await;
    let location = br#"{"_type":"location","lat":52.5,"lon":13.4,"tst":1700000000}"#;
    let (jane, bob) = (basic("jane", "jane-pw"), basic("bob", "bob-pw"));
    let posted = |auth: String| {
        let http_addr = broker.http.clone();
        async move { http(&http_addr, "POST", "/pub?d=phone", &[("Authorization", &auth)], location).await.status }
    };
    assert_eq!(posted(bob.clone()).await, 403, "read-only bob may not write");
    assert_eq!(posted(jane.clone()).await, 200);
    let report =
        http(&broker.http, "GET", "/?id=bob/phone&lat=1&lon=2", &[("Authorization", &bob)], b"").await;
    assert_eq!(report.status, 403, "{}", report.body);
    // With users, even the version takes a login (13: it told anyone what runs here).
    assert_eq!(http(&broker.http, "GET", "/api/0/version", &[], b"").await.status, 401);
    assert_eq!(
        http(&broker.http, "GET", "/api/0/version", &[("Authorization", &jane)], b"").await.status,
        200
    );
    // Bob reads everything, so the list he sees holds every device there is.
    let users = http(&broker.http, "GET", "/api/0/list", &[("Authorization", &bob)], b"").await;
    assert!(users.body.contains("jane") && !users.body.contains("bob"), "no device of bob's: {}", users.body);
    broker.terminate().await;
}

/// mosquitto.conf's `mount_point` was only warned about, so clients meant to be kept in their
/// own part of the tree saw everything. Now their topics live under the mount point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_point_keeps_a_listeners_clients_in_their_part_of_the_tree() {
    let dir = data_dir("mount-point");
    std::fs::create_dir_all(&dir).unwrap();
    let (open, mounted) = (free_port(), free_port());
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {open} 127.0.0.1\nallow_anonymous true\nlistener {mounted} 127.0.0.1\nmount_point site-a/\n"),
    )
    .unwrap();
    let broker = Cauldron::start(&dir, &["--mosquitto-conf", conf.to_str().unwrap()]).await;
    let at = |port: u16, id: &str| Options::new(format!("127.0.0.1:{port}"), id);
    let (outside, mut outside_messages) = Client::connect(at(open, "outside")).await.unwrap();
    outside.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    let (inside, mut inside_messages) = Client::connect(at(mounted, "inside")).await.unwrap();
    inside.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    inside.publish("temp", "21", QoS::AtLeastOnce, false).await.unwrap();
    let seen = tokio::time::timeout(WAIT, outside_messages.recv()).await.unwrap().unwrap();
    assert_eq!(&seen.topic[..], "site-a/temp", "published under the mount point");
    let echoed = tokio::time::timeout(WAIT, inside_messages.recv()).await.unwrap().unwrap();
    assert_eq!(&echoed.topic[..], "temp", "and seen inside without it");
    outside.publish("elsewhere", "x", QoS::AtLeastOnce, false).await.unwrap();
    outside.publish("site-a/cmd", "go", QoS::AtLeastOnce, false).await.unwrap();
    let got = tokio::time::timeout(WAIT, inside_messages.recv()).await.unwrap().unwrap();
    assert_eq!((&got.topic[..], &got.payload[..]), ("cmd", &b"go"[..]), "nothing from outside the mount");
    broker.terminate().await;
}

/// 09-acl-change: messages queued for a client before SIGHUP took its read access away were
/// still delivered. They are dropped at the reload, as Mosquitto checks at sending time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_acl_applies_to_messages_already_queued() {
    let dir = data_dir("acl-change");
    std::fs::create_dir_all(&dir).unwrap();
    let (passwords, acl) = (dir.join("passwd"), dir.join("acl"));
    write_passwords(&passwords, "sha512", &[("username", "pw")]);
    std::fs::write(&acl, "user username\ntopic readwrite topic/one\ntopic readwrite topic/two\n").unwrap();
    let (p, a) = (passwords.display().to_string(), acl.display().to_string());
    let mut broker =
        Cauldron::start(&dir, &["--password-file", &p, "--acl-file", &a, "--sys-interval", "0"]).await;
    let addr = broker.addr.clone();
    let login = |id: &str| Options::new(&addr, id).credentials("username", "pw").clean_start(false);
    let (sub, _) = Client::connect(login("acl-check")).await.unwrap();
    sub.subscribe("topic/#", QoS::AtLeastOnce).await.unwrap();
    sub.disconnect().await.unwrap();
    let (helper, _) =
        Client::connect(Options::new(&broker.addr, "helper").credentials("username", "pw")).await.unwrap();
    helper.publish("topic/one", "message1", QoS::AtLeastOnce, false).await.unwrap();
    helper.publish("topic/two", "message2", QoS::AtLeastOnce, false).await.unwrap();
    std::fs::write(&acl, "user username\ntopic readwrite topic/one\n").unwrap();
    broker.hangup().await;
    let (_sub, mut messages) = Client::connect(login("acl-check")).await.unwrap();
    let first = tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
    assert_eq!(&first.topic[..], "topic/one");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), messages.recv()).await.is_err(),
        "the message on topic/two, no longer readable, is not delivered"
    );
    broker.terminate().await;
}

/// The recorder once folded names to lowercase, so the password file's `Alice` read, deleted
/// and overwrote `alice`'s devices. Names differing in case or spaces are different users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_names_differing_in_case_are_different_users() {
    let users = [("alice", "a-pw"), ("Alice", "A-pw")];
    let broker = with_users_and_acl("http-case", &users, "pattern readwrite owntracks/%u/#\n").await;
    let location = br#"{"_type":"location","lat":52.5,"lon":13.4,"tst":1700000000}"#;
    let (lower, upper) = (basic("alice", "a-pw"), basic("Alice", "A-pw"));
    let posted = http(&broker.http, "POST", "/pub?d=phone", &[("Authorization", &lower)], location).await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    let path = "/api/0/locations?user=alice&device=phone&from=2023-11-01&to=2023-12-01";
    let mine = wait_json(&broker.http, path, Some(&lower), |v| v["count"] == 1).await;
    assert_eq!(mine["data"][0]["lat"], 52.5);
    let theirs = http(&broker.http, "GET", path, &[("Authorization", &upper)], b"").await;
    assert_eq!(theirs.status, 403, "Alice may not read alice's device: {}", theirs.body);
    let kill = "/api/0/kill?user=alice&device=phone";
    assert_eq!(http(&broker.http, "POST", kill, &[("Authorization", &upper)], b"").await.status, 403);
    // Alice's own post lands on her own device, not on alice's.
    let posted = http(&broker.http, "POST", "/pub?d=phone", &[("Authorization", &upper)], location).await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    for (auth, name) in [(&lower, "alice"), (&upper, "Alice")] {
        let users = wait_json(&broker.http, "/api/0/list", Some(auth), |_| true).await;
        assert_eq!(users, serde_json::json!({"results": [name]}));
    }
    let report = "/?id=alice/phone&lat=1&lon=2";
    assert_eq!(http(&broker.http, "GET", report, &[("Authorization", &upper)], b"").await.status, 403);
    let mine = wait_json(&broker.http, path, Some(&lower), |v| v["count"] == 1).await;
    assert_eq!(mine["data"][0]["lat"], 52.5, "alice's history untouched");
    broker.terminate().await;
}
