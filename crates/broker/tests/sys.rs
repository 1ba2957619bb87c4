//! `$SYS` deliveries go through the authorizer like any other message.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cauldron_broker::{Authorizer, Broker, CancellationToken, ClientInfo, Config};
use cauldron_client::{Client, Options};
use cauldron_proto::QoS;
use common::*;

/// Only "admin" may read `$SYS`.
struct SysForAdmins;

impl Authorizer for SysForAdmins {
    fn can_publish(&self, _: &ClientInfo, _: &str) -> bool {
        true
    }
    fn can_subscribe(&self, _: &ClientInfo, _: &str) -> bool {
        true
    }
    fn can_receive(&self, client: &ClientInfo, topic: &str) -> bool {
        !topic.starts_with("$SYS/") || client.username.as_deref() == Some("admin")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_is_readable_only_as_the_acl_allows() {
    let config = Config { sys_interval: 1, ..Config::default() };
    let broker = Broker::with_authorizer(config, Arc::new(SysForAdmins));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(cauldron_broker::run(Arc::clone(&broker), vec![listener], CancellationToken::new()));

    let (admin, mut admin_messages) =
        Client::connect(Options::new(&addr, "a").credentials("admin", "x")).await.unwrap();
    admin.subscribe("$SYS/#", QoS::AtMostOnce).await.unwrap();
    let (user, mut user_messages) =
        Client::connect(Options::new(&addr, "u").credentials("user", "x")).await.unwrap();
    user.subscribe("$SYS/#", QoS::AtMostOnce).await.unwrap();

    let first = next(&mut admin_messages).await;
    assert!(first.topic.starts_with("$SYS/broker/"));
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), user_messages.recv()).await.is_err(),
        "nothing for user"
    );
}
