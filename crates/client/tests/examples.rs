//! The converter examples, run end to end against Mosquitto 2.0 (any broker will do): a reading
//! on `temp/celsius` comes back on `temp/fahrenheit` and `temp/kelvin`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `cargo test` builds the examples next to the test binaries.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    deps.parent().unwrap().join("examples").join(name)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mosquitto_sub(port: u16, topic: &str) -> Child {
    Command::new("mosquitto_sub")
        .args(["-p", &port.to_string(), "-t", topic, "-C", "1", "-W", "10"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed by the test command")
}

#[test]
fn converters_run_against_mosquitto() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("cauldron-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n")).unwrap();
    let _broker = Killed(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed"),
    );
    wait_for_port(port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let _fahrenheit = Killed(Command::new(example("celsius_to_fahrenheit")).arg(&url).spawn().unwrap());
    let _kelvin = Killed(Command::new(example("kelvin")).arg(&url).spawn().unwrap());
    let fahrenheit = mosquitto_sub(port, "temp/fahrenheit");
    let kelvin = mosquitto_sub(port, "temp/kelvin");
    // Publish until both converters are up and answered (they connect on their own time).
    let deadline = Instant::now() + Duration::from_secs(10);
    let publish = || {
        Command::new("mosquitto_pub")
            .args(["-p", &port.to_string(), "-t", "temp/celsius", "-m", "21.5"])
            .status()
            .unwrap()
    };
    publish();
    let mut outputs = Vec::new();
    for child in [fahrenheit, kelvin] {
        let mut child = child;
        loop {
            if let Some(_status) = child.try_wait().unwrap() {
                break;
            }
            assert!(Instant::now() < deadline, "no converted reading");
            std::thread::sleep(Duration::from_millis(200));
            publish();
        }
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        outputs.push(out.trim().to_string());
    }
    assert_eq!(outputs, ["70.7", "294.65"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
