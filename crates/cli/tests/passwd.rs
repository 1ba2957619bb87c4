//! `cauldron passwd` with mosquitto_passwd's flags; the broker reads what it writes.

mod common;

use std::process::Command;

use cauldron_broker::auth::password::PasswordFile;
use common::*;

fn passwd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cauldron")).arg("passwd").args(args).output().unwrap()
}

#[test]
fn create_update_delete_and_convert_plain_text() {
    let dir = data_dir("passwd");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pw");
    let f = file.to_str().unwrap();
    assert!(passwd(&["-c", "-b", f, "alice", "one"]).status.success());
    assert!(passwd(&["-b", "-H", "sha512-pbkdf2", f, "bob", "two"]).status.success());
    assert!(passwd(&["-b", "-H", "sha512", f, "carol", "three"]).status.success());
    assert!(passwd(&["-b", f, "alice", "uno"]).status.success(), "update in place");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().next().unwrap().starts_with("alice:$argon2id$"), "argon2id by default, order kept");
    assert!(text.contains("bob:$7$1000$") && text.contains("carol:$6$"));
    let users = PasswordFile::load(&file).unwrap();
    assert!(users.check("alice", b"uno") && !users.check("alice", b"one"));
    assert!(users.check("bob", b"two") && users.check("carol", b"three"));

    assert!(passwd(&["-D", f, "carol"]).status.success());
    assert!(!PasswordFile::load(&file).unwrap().check("carol", b"three"));
    let missing = passwd(&["-D", f, "carol"]);
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("not found"));

    let erin = format!("erin:$6$YQ==${}==", "A".repeat(86)); // a 64-byte hash
    std::fs::write(&file, format!("dave:plain\n# note\n{erin}\n")).unwrap();
    assert!(passwd(&["-U", "-H", "sha512-pbkdf2", f]).status.success());
    let converted = std::fs::read_to_string(&file).unwrap();
    assert!(converted.starts_with("dave:$7$") && converted.contains(&format!("# note\n{erin}\n")));
    assert!(PasswordFile::load(&file).unwrap().check("dave", b"plain"));

    // Interactive mode reads the password from standard input when it is not a terminal.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args(["passwd", f, "frank"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"from-stdin\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert!(PasswordFile::load(&file).unwrap().check("frank", b"from-stdin"));
}
