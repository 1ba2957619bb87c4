//! The same password file and ACL file on cauldron and on Mosquitto 2.0: for every user, topic
//! and direction, what each broker lets through must be the same. The password file is written
//! by `cauldron passwd -H sha512-pbkdf2`, so Mosquitto reading it is checked too.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cauldron_client::{Client, Messages, Options, QoS};
use common::*;

const USERS: [(&str, &str); 4] =
    [("jane", "jane-pw"), ("bob", "bob-pw"), ("recorder", "rec-pw"), ("stranger", "str-pw")];

/// The OwnTracks ACL of shared/reference/owntracks.md §6, plus a pattern and a deny.
const ACL: &str = "\
user jane
topic readwrite owntracks/jane/#
topic read owntracks/+/+
topic read owntracks/+/+/event
topic read owntracks/+/+/info

user bob
topic readwrite owntracks/bob/#
topic read owntracks/+/+
topic read owntracks/+/+/event
topic read owntracks/+/+/info
topic deny owntracks/bob/private

user recorder
topic read owntracks/#
topic write owntracks/+/+/cmd

user admin
topic readwrite #

pattern readwrite devices/%u/#
";

const TOPICS: [&str; 10] = [
    "owntracks/jane/phone",
    "owntracks/jane/phone/event",
    "owntracks/jane/phone/cmd",
    "owntracks/bob/phone",
    "owntracks/bob/phone/info",
    "owntracks/bob/private",
    "devices/jane/t",
    "devices/bob/t",
    "secret/plans",
    "owntracks/jane",
];

async fn drain(messages: &mut Messages) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(400), messages.recv()).await {
        got.insert(format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)));
    }
    got
}

/// Everything each user can write (seen by admin) and read (published by admin), as lines.
async fn observe(addr: &str) -> BTreeSet<String> {
    let login = |id: String, user: &str, pw: &str| {
        Options::new(addr, id).credentials(user.to_string(), pw.to_string().into_bytes())
    };
    let (admin, mut admin_messages) =
        Client::connect(login("admin".into(), "admin", "admin-pw")).await.unwrap();
    admin.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    let mut seen = BTreeSet::new();
    for (user, pw) in USERS {
        let (client, mut messages) = Client::connect(login(format!("{user}-c"), user, pw)).await.unwrap();
        // Writes: what reaches admin.
        for topic in TOPICS {
            client.publish(topic, format!("from {user}"), QoS::AtLeastOnce, false).await.unwrap();
        }
        seen.extend(drain(&mut admin_messages).await.into_iter().map(|m| format!("write {m}")));
        // Reads: subscribed to each topic exactly, what arrives of admin's messages.
        for topic in TOPICS {
            let _ = client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        }
        for topic in TOPICS {
            admin.publish(topic, format!("for {user}"), QoS::AtLeastOnce, false).await.unwrap();
        }
        seen.extend(drain(&mut messages).await.into_iter().map(|m| format!("read by {user}: {m}")));
        drain(&mut admin_messages).await;
        client.disconnect().await.unwrap();
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_files_same_access_on_cauldron_and_mosquitto() {
    let dir = data_dir("parity");
    std::fs::create_dir_all(&dir).unwrap();
    let passwords = dir.join("passwords");
    let users: Vec<(&str, &str)> = std::iter::once(("admin", "admin-pw")).chain(USERS).collect();
    write_passwords(&passwords, "sha512-pbkdf2", &users);
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();

    let conf = format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\nset_tcp_nodelay true\n",
        passwords.display(),
        acl.display()
    );
    let mosquitto = Mosquitto::start(&dir, &conf).await;
    let theirs = observe(&format!("127.0.0.1:{}", mosquitto.port)).await;
    drop(mosquitto);

    let (p, a) = (passwords.display().to_string(), acl.display().to_string());
    let broker =
        Cauldron::start(&dir, &["--password-file", &p, "--acl-file", &a, "--sys-interval", "0"]).await;
    let ours = observe(&broker.addr).await;
    broker.terminate().await;

    assert!(theirs.len() > 20, "the matrix exercised something: {theirs:#?}");
    let only_mosquitto: Vec<_> = theirs.difference(&ours).collect();
    let only_cauldron: Vec<_> = ours.difference(&theirs).collect();
    assert!(
        only_mosquitto.is_empty() && only_cauldron.is_empty(),
        "differences\nonly Mosquitto let through: {only_mosquitto:#?}\nonly cauldron let through: {only_cauldron:#?}"
    );
}
