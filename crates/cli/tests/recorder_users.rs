//! The recorder with the broker's users: HTTP mode with friends from the ACL, per-user
//! isolation of the API, `/ws/last` and the map, deletes by owner or admin.

mod common;

use std::path::Path;

use common::owntracks::*;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::process::Command;

/// jane may read john; john reads only himself; admin reads everyone.
fn users(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let passwords = dir.join("passwd");
    let acl = dir.join("acl");
    write_passwords(
        &passwords,
        "sha512-pbkdf2",
        &[("jane", "jane-pw"), ("john", "john-pw"), ("admin", "admin-pw")],
    );
    std::fs::write(
        &acl,
        "user jane\ntopic readwrite owntracks/jane/#\ntopic read owntracks/john/+\n\n\
        user john\ntopic readwrite owntracks/john/#\n\nuser admin\ntopic read owntracks/#\n",
    )
    .unwrap();
    (passwords.display().to_string(), acl.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_friends_come_from_the_acl_and_users_see_only_what_they_may_read() {
    let dir = data_dir("recorder-users");
    let (passwords, acl) = users(&dir);
    let broker = Cauldron::start(
        &dir,
        &["--password-file", &passwords, "--acl-file", &acl, "--recorder-admin", "admin"],
    )
    .await;
    let (jane, john, admin) =
        (basic("jane", "jane-pw"), basic("john", "john-pw"), basic("admin", "admin-pw"));
    let post = |auth: String, device: &'static str, body: Value| {
        let http_addr = broker.http.clone();
        async move {
            let headers = [
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
                ("X-Limit-D", device),
            ];
            http(&http_addr, "POST", "/pub", &headers, body.to_string().as_bytes()).await
        }
    };
    let location =
        |tst: i64, tid: &str| json!({"_type": "location", "lat": 52.5, "lon": 13.4, "tst": tst, "tid": tid});

    // HTTP mode: john sees himself only; a card and location of jane, then her friends.
    let answer = post(john.clone(), "phone", location(1706856000, "jo")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!([{"_type": "location", "tid": "jo", "lat": 52.5, "lon": 13.4, "tst": 1706856000, "topic": "owntracks/john/phone"}])
    );
    let card = json!({"_type": "card", "tid": "ja", "name": "Jane", "face": "iVBORw0KGgo="});
    assert_eq!(post(jane.clone(), "phone", card).await.status, 200);
    // The user is who logged in: an X-Limit-U header naming john does not make jane john.
    let headers = [("Authorization", jane.as_str()), ("X-Limit-U", "john"), ("X-Limit-D", "phone")];
    let answer =
        http(&broker.http, "POST", "/pub", &headers, location(1706856100, "ja").to_string().as_bytes())
            .await
            .json();
    let types: Vec<(&str, &str)> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["_type"].as_str().unwrap(), o["tid"].as_str().unwrap()))
        .collect();
    assert_eq!(types, [("card", "ja"), ("location", "ja"), ("location", "jo")], "{answer}");
    assert_eq!(answer[0]["name"], "Jane");
    // What jane posted is published for MQTT-mode friends too: her location, retained, where the
    // app would have published it.
    let mqtt = Command::new("mosquitto_sub")
        .args(["-p", port(&broker.addr), "-u", "admin", "-P", "admin-pw", "-t", "owntracks/jane/phone"])
        .args(["-C", "1", "-W", "5", "-F", "%r %p"])
        .output()
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&mqtt.stdout);
    assert!(line.starts_with("1 {") && line.contains("\"tid\":\"ja\""), "{line}");
    // Wrong or missing password: 401 and nothing stored; the map page needs a login too.
    assert_eq!(post(basic("jane", "wrong"), "phone", location(1706856200, "xx")).await.status, 401);
    assert_eq!(http(&broker.http, "GET", "/api/0/last", &[], b"").await.status, 401);
    let page = http(&broker.http, "GET", "/", &[], b"").await;
    assert_eq!((page.status, page.header("www-authenticate").is_some()), (401, true));
    assert_eq!(http(&broker.http, "GET", "/", &[("Authorization", &jane)], b"").await.status, 200);
    // Friends set by hand replace the ACL's for that device: jane's phone now sees only itself.
    let data = dir.to_str().unwrap();
    cauldron_cli(&["recorder", "friends", "set", "jane", "phone", "jane/phone", "--data-dir", data]).await;
    let answer = post(jane.clone(), "phone", json!({"_type": "status"})).await.json();
    let tids: Vec<&str> = answer.as_array().unwrap().iter().map(|o| o["tid"].as_str().unwrap()).collect();
    assert_eq!(tids, ["ja", "ja"], "{answer}");
    cauldron_cli(&["recorder", "friends", "delete", "jane", "phone", "--data-dir", data]).await;

    // Isolation: the API and the WebSocket show each user what the ACL lets them read.
    let lasts = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| format!("{}/{}", o["username"].as_str().unwrap(), o["device"].as_str().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(lasts(&wait_json(&broker.http, "/api/0/last", Some(&john), |_| true).await), ["john/phone"]);
    assert_eq!(
        lasts(&wait_json(&broker.http, "/api/0/last", Some(&jane), |_| true).await),
        ["jane/phone", "john/phone"]
    );
    assert_eq!(
        lasts(&wait_json(&broker.http, "/api/0/last", Some(&admin), |_| true).await),
        ["jane/phone", "john/phone"]
    );
    assert_eq!(
        wait_json(&broker.http, "/api/0/list", Some(&john), |_| true).await,
        json!({"results": ["john"]})
    );
    let janes = format!("/api/0/locations?user=jane&device=phone&{DAY}");
    assert_eq!(http(&broker.http, "GET", &janes, &[("Authorization", &john)], b"").await.status, 403);
    assert_eq!(wait_json(&broker.http, &janes, Some(&jane), |_| true).await["count"], 1);
    assert_eq!(wait_json(&broker.http, &janes, Some(&admin), |_| true).await["count"], 1);

    // /ws/last as john: LAST gives his device only; jane's new point is not pushed to him,
    // his own is.
    let mut socket = websocket(&broker.http, &john).await;
    socket.send(tokio_tungstenite::tungstenite::Message::text("LAST")).await.unwrap();
    let first = next_json(&mut socket).await;
    assert_eq!((first["username"].as_str(), first["tid"].as_str()), (Some("john"), Some("jo")));
    post(jane.clone(), "phone", location(1706856300, "ja")).await;
    post(john.clone(), "phone", location(1706856400, "jo")).await;
    let pushed = next_json(&mut socket).await;
    assert_eq!((pushed["username"].as_str(), pushed["tst"].as_i64()), (Some("john"), Some(1706856400)));

    // Deleting: not someone else's points; your own, by time, and last falls back.
    let delete = |auth: String, query: &'static str| {
        let http_addr = broker.http.clone();
        async move {
            http(
                &http_addr,
                "DELETE",
                &format!("/api/0/locations?{query}"),
                &[("Authorization", auth.as_str())],
                b"",
            )
            .await
        }
    };
    assert_eq!(delete(jane.clone(), "user=john&device=phone&tst=1706856400").await.status, 403);
    assert_eq!(delete(john.clone(), "user=john&device=phone").await.status, 400, "no range: nothing deleted");
    let deleted = delete(john.clone(), "user=john&device=phone&tst=1706856400").await;
    assert_eq!(deleted.json(), json!({"deleted": 1}));
    let last = wait_json(&broker.http, "/api/0/last", Some(&john), |_| true).await;
    assert_eq!(last[0]["tst"], 1706856000);
    // An admin deletes a whole device.
    let gone = http(
        &broker.http,
        "DELETE",
        "/api/0/device?user=jane&device=phone",
        &[("Authorization", &admin)],
        b"",
    )
    .await;
    assert_eq!(gone.json(), json!({"deleted": 3}), "two locations and the status record");
    assert_eq!(lasts(&wait_json(&broker.http, "/api/0/last", Some(&admin), |_| true).await), ["john/phone"]);
}
