//! Mosquitto password files: `username:hash` lines with `$6$` (salted SHA-512), `$7$`
//! (PBKDF2-HMAC-SHA512, the iteration count read from the line) or `$argon2id$` hashes. A file
//! written by `mosquitto_passwd` works unchanged; comparisons are constant-time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha2::{Digest, Sha512};

/// A problem with a password file, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

impl FileError {
    /// Reads `path` and parses it with `parse`, whose errors carry a 1-based line number; any
    /// problem, reading included (line 0), names the file.
    pub fn load<T>(
        path: &Path,
        parse: impl FnOnce(&str) -> Result<T, (usize, String)>,
    ) -> Result<T, FileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            file: file.clone(),
            line: 0,
            problem: e.to_string(),
        })?;
        parse(&text).map_err(|(line, problem)| FileError { file, line, problem })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    /// `$6$salt$sha512(password || salt)`.
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// `$7$iterations$salt$pbkdf2_hmac_sha512(password, salt, iterations)`.
    Pbkdf2 { iterations: u32, salt: Vec<u8>, hash: Vec<u8> },
    /// The standard argon2 encoded string.
    Argon2id(String),
}

/// The users of a password file.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
    /// The costliest hash in the file, checked (and its answer ignored) for users who do not
    /// exist, so that an absent user takes as long to refuse as a present one.
    decoy: Option<Hash>,
}

/// Password checks run on tokio's blocking pool, at most half the cores at once (at least
/// one): a flood of logins waits its turn there instead of stalling the connections that
/// share a runtime worker, and leaves cores for the traffic.
static HASHING: OnceLock<tokio::sync::Semaphore> = OnceLock::new();

fn hashing_permits() -> &'static tokio::sync::Semaphore {
    HASHING.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores.div_ceil(2))
    })
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn pbkdf2(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

impl Hash {
    /// Roughly what verifying costs, to pick the decoy.
    fn cost(&self) -> u64 {
        match self {
            Hash::Sha512 { .. } => 0,
            Hash::Pbkdf2 { iterations, .. } => u64::from(*iterations),
            Hash::Argon2id(_) => u64::MAX,
        }
    }

    fn parse(text: &str) -> Result<Hash, String> {
        let b64 = |s: &str| BASE64.decode(s).map_err(|e| format!("bad base64 ({e})"));
        // Both are SHA-512 outputs; a shorter one is a truncated line, not a hash.
        let digest = |s: &str| match b64(s)? {
            hash if hash.len() == 64 => Ok(hash),
            hash => Err(format!("a hash of {} bytes; SHA-512 makes 64", hash.len())),
        };
        if text.starts_with("$argon2id$") {
            PasswordHash::new(text).map_err(|e| format!("bad argon2id hash ({e})"))?;
            return Ok(Hash::Argon2id(text.to_string()));
        }
        let parts: Vec<&str> = text.split('$').collect();
        match parts.as_slice() {
            ["", "6", "", _] => Err("an empty salt".into()),
            ["", "6", salt, hash] => Ok(Hash::Sha512 { salt: b64(salt)?, hash: digest(hash)? }),
            ["", "7", iterations, salt, hash] => {
                let iterations =
                    iterations.parse().map_err(|_| format!("bad iteration count {iterations:?}"))?;
                let salt = b64(salt)?;
                if salt.len() != 12 && salt.len() != 64 {
                    return Err(format!("salt of {} bytes; Mosquitto writes 12 or 64", salt.len()));
                }
                Ok(Hash::Pbkdf2 { iterations, salt, hash: digest(hash)? })
            }
            _ => Err("not a $6$, $7$ or $argon2id$ hash".into()),
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Sha512 { salt, hash } => {
                let digest = Sha512::new().chain_update(password).chain_update(salt).finalize();
                equal_in_constant_time(&digest, hash)
            }
            Hash::Pbkdf2 { iterations, salt, hash } => {
                equal_in_constant_time(&pbkdf2(password, salt, *iterations), hash)
            }
            // The argon2 crate compares in constant time itself.
            Hash::Argon2id(encoded) => PasswordHash::new(encoded)
                .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password, &parsed).is_ok()),
        }
    }
}

impl PasswordFile {
    /// Reads a password file; the first bad line is an error naming file and line.
    pub fn load(path: &Path) -> Result<PasswordFile, FileError> {
        FileError::load(path, PasswordFile::parse)
    }

    /// Parses password file text; errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<PasswordFile, (usize, String)> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line.split_once(':').ok_or((i + 1, "expected username:hash".to_string()))?;
            if user.is_empty() {
                return Err((i + 1, "no user name before the ':'".into()));
            }
            let hash = Hash::parse(hash).map_err(|problem| (i + 1, format!("user {user:?}: {problem}")))?;
            users.insert(user.to_string(), hash);
        }
        let decoy = users.values().max_by_key(|h| h.cost()).cloned();
        Ok(PasswordFile { users, decoy })
    }

    /// Whether `password` is right for `username`. Unknown users cost the file's costliest hash,
    /// so timing does not tell which users exist. Blocks for as long as the hash takes (tens
    /// of milliseconds for argon2id): async callers use [`PasswordFile::check_off_runtime`].
    /// An empty password never matches, even a hash made of one (as in Mosquitto, where it
    /// counts as no password at all).
    pub fn check(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(hash) => hash.verify(password) && !password.is_empty(),
            None => {
                if let Some(decoy) = &self.decoy {
                    let _ = decoy.verify(password);
                }
                false
            }
        }
    }

    /// [`PasswordFile::check`] on the blocking pool, bounded (see `HASHING`).
    pub async fn check_off_runtime(self: Arc<Self>, username: String, password: Vec<u8>) -> bool {
        let Ok(_turn) = hashing_permits().acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || self.check(&username, &password)).await.unwrap_or(false)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A `$6$` hash (salted SHA-512), the format of Mosquitto 1.6 and earlier.
pub fn hash_sha512(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; 12];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let digest = Sha512::new().chain_update(password).chain_update(salt).finalize();
    Ok(format!("$6${}${}", BASE64.encode(salt), BASE64.encode(digest)))
}

/// An argon2id hash with Mosquitto 2.1's parameters (t=1, m=47104 KiB, p=1).
pub fn hash_argon2id(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let params = argon2::Params::new(47104, 1, 1, None).map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    Ok(argon.hash_password(password, &salt).map_err(|e| e.to_string())?.to_string())
}

/// A `$7$` hash as Mosquitto 2.0 writes it (12-byte salt), with `iterations` rounds.
pub fn hash_pbkdf2(password: &[u8], iterations: u32) -> Result<String, String> {
    let mut salt = [0u8; 12];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let hash = pbkdf2(password, &salt, iterations);
    Ok(format!("$7${iterations}${}${}", BASE64.encode(salt), BASE64.encode(hash)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 09-pwfile-parse-invalid: a hash of the empty password lets nobody in.
    #[test]
    fn an_empty_password_never_matches() {
        let hash = hash_sha512(b"").unwrap();
        let file = PasswordFile::parse(&format!("empty:{hash}\n")).unwrap();
        assert!(!file.check("empty", b""));
        assert!(!file.check("empty", b"x"));
    }

    /// Lines written by Debian's `mosquitto_passwd` 2.0.11 (`-b`, password "s3cret" / "hunter2").
    const MOSQUITTO_2_0: &str = "alice:$7$101$smU9hGMr56F5a15e$/xk8ytfxqyceSHmO84ryKqs23A0kbY+NM2cDS4hX8LvX2/Al+KmpMwd136wr26TK5944//jVKlUBZC07u3AsLQ==\n\
bob:$7$101$PKYtOCvUgVAmO8TE$o17d0s0O8lrPtj73YbkA1S5lEMROHUCa0AoU4MysaMcFvu+LPIxiSnWWldROYFaGGiJR9yTWSCge+/yucGfDDg==\n";

    #[test]
    fn mosquitto_passwd_files_verify() {
        let file = PasswordFile::parse(MOSQUITTO_2_0).unwrap();
        assert_eq!(file.len(), 2);
        assert!(file.check("alice", b"s3cret"));
        assert!(file.check("bob", b"hunter2"));
        assert!(!file.check("alice", b"hunter2"));
        assert!(!file.check("carol", b"s3cret"));
    }

    #[test]
    fn sha512_and_argon2id_and_our_own_hashes() {
        let salt = b"0123456789ab";
        let digest = Sha512::new().chain_update(b"pw").chain_update(salt).finalize();
        let line = format!("old:$6${}${}\n", BASE64.encode(salt), BASE64.encode(digest));
        let argon = hash_argon2id(b"pw2").unwrap();
        let pbkdf = hash_pbkdf2(b"pw3", 1000).unwrap();
        let text = format!("{line}# a comment\n\nnew:{argon}\nmid:{pbkdf}\n");
        let file = PasswordFile::parse(&text).unwrap();
        assert!(file.check("old", b"pw") && !file.check("old", b"pw2"));
        assert!(file.check("new", b"pw2") && !file.check("new", b"pw"));
        assert!(file.check("mid", b"pw3"));
        assert!(argon.starts_with("$argon2id$v=19$m=47104,t=1,p=1$"));
    }

    #[test]
    fn bad_lines_name_their_line() {
        assert_eq!(PasswordFile::parse("a:$7$101$x$y\n").unwrap_err().0, 1);
        let ok = format!("ok:$6$YQ==${}", BASE64.encode([7u8; 64]));
        let (line, problem) = PasswordFile::parse(&format!("{ok}\nnocolon\n")).unwrap_err();
        assert_eq!((line, problem.as_str()), (2, "expected username:hash"));
        assert!(PasswordFile::parse("p:plaintext\n").unwrap_err().1.contains("not a $6$"));
    }

    /// 09-pwfile-parse-invalid: blank lines and comments, first or last, are no error; each
    /// line Mosquitto would drop its user for stops the start, naming the line
    /// (docs/COMPATIBILITY.md says why).
    #[test]
    fn mosquittos_invalid_password_lines() {
        let good = "test:$6$njERlZMi/7DzNB9E$iiavfuXvUm8iyDZArTy7smTxh07GXXOrOsqxfW6gkOYVXHGk+W+i/8d3xDxrMwEPygEBhoA8A/gjQC0N2M4Lkw==";
        for (first, last) in [("", ""), ("#comment", "#comment"), ("", "#comment")] {
            let file = PasswordFile::parse(&format!("{first}\n{good}\n{last}\n")).unwrap();
            assert!(file.check("test", b"test"), "{first:?} {last:?}");
        }
        let hash = &good["test:".len()..];
        for bad in [
            "bad:".to_string(),
            "bad:bad".into(),
            "bad:$".into(),
            "bad:$6".into(),
            "bad:$6$".into(),
            "bad:$6$njERlZMi/7DzNB9E".into(),
            "bad:$6$njERlZMi/7DzNB9E$".into(),
            format!("bad:{}", hash.replacen("$6$", "$5$", 1)),
            format!(":{hash}"),
            format!("bad:{}", hash.replacen("lZMi", "{ZMi", 1)),
            format!("bad:{}", hash.replacen("XvUm8", "Xv{}8", 1)),
        ] {
            let refused = PasswordFile::parse(&format!("{bad}\n{good}\n"));
            assert_eq!(refused.err().map(|(line, _)| line), Some(1), "{bad:?}");
        }
    }
}

/// A password file that can be swapped while the broker runs (SIGHUP): logins read the current
/// one; connected clients are not affected.
#[derive(Debug, Default)]
pub struct Passwords {
    current: std::sync::RwLock<Option<Arc<PasswordFile>>>,
}

impl Passwords {
    pub fn new(file: Option<PasswordFile>) -> Passwords {
        Passwords { current: std::sync::RwLock::new(file.map(Arc::new)) }
    }

    pub fn current(&self) -> Option<Arc<PasswordFile>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, file: PasswordFile) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(file));
    }
}
