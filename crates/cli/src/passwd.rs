//! `cauldron passwd`: manage a Mosquitto password file with `mosquitto_passwd`'s flags.
//! Writes argon2id by default (Mosquitto 2.1 reads it); `-H sha512-pbkdf2` writes the `$7$`
//! format Mosquitto 2.0 reads too.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cauldron_broker::auth::password::{hash_argon2id, hash_pbkdf2, hash_sha512, PasswordFile};

#[derive(clap::Args)]
pub struct PasswdArgs {
    /// Create a new file, overwriting an existing one.
    #[arg(short = 'c', conflicts_with_all = ["delete", "update"])]
    create: bool,
    /// Delete the user rather than adding or updating it.
    #[arg(short = 'D', conflicts_with = "update")]
    delete: bool,
    /// Batch mode: the password is the last argument.
    #[arg(short = 'b')]
    batch: bool,
    /// Turn a plain-text `user:password` file into hashes.
    #[arg(short = 'U')]
    update: bool,
    /// Hash: argon2id (default), sha512-pbkdf2 (`$7$`, readable by Mosquitto 2.0) or sha512.
    #[arg(short = 'H', value_name = "ALGORITHM", default_value = "argon2id")]
    algorithm: Algorithm,
    file: PathBuf,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Algorithm {
    Argon2id,
    #[value(name = "sha512-pbkdf2")]
    Sha512Pbkdf2,
    Sha512,
}

/// PBKDF2 rounds for new `$7$` hashes (Mosquitto 2.1's default; 2.0 reads any count).
const PBKDF2_ITERATIONS: u32 = 1000;

fn hash(algorithm: Algorithm, password: &str) -> anyhow::Result<String> {
    let result = match algorithm {
        Algorithm::Argon2id => hash_argon2id(password.as_bytes()),
        Algorithm::Sha512Pbkdf2 => hash_pbkdf2(password.as_bytes(), PBKDF2_ITERATIONS),
        Algorithm::Sha512 => hash_sha512(password.as_bytes()),
    };
    result.map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

fn ask_password() -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = rpassword::prompt_password("Password: ")?;
    let again = rpassword::prompt_password("Reenter password: ")?;
    if first != again {
        bail!("passwords do not match");
    }
    Ok(first)
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

pub fn run(args: PasswdArgs) -> anyhow::Result<()> {
    if args.update {
        return update_plain_text(&args.file, args.algorithm);
    }
    let Some(username) = args.username.as_deref() else { bail!("a username is required") };
    if username.contains(':') {
        bail!("usernames must not contain ':'");
    }
    let existing = match args.create {
        true => String::new(),
        false => {
            std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?
        }
    };
    let mut lines: Vec<String> = existing.lines().map(str::to_string).collect();
    let position = lines.iter().position(|l| l.split_once(':').is_some_and(|(user, _)| user == username));
    if args.delete {
        match position {
            Some(i) => {
                lines.remove(i);
            }
            None => bail!("user {username} not found in {}", args.file.display()),
        }
    } else {
        let password = match (args.batch, args.password) {
            (true, Some(password)) => password,
            (true, None) => bail!("-b needs the password as the last argument"),
            (false, _) => ask_password()?,
        };
        let line = format!("{username}:{}", hash(args.algorithm, &password)?);
        match position {
            Some(i) => lines[i] = line,
            None => lines.push(line),
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    PasswordFile::parse(&text).map_err(|(line, problem)| anyhow::anyhow!("line {line}: {problem}"))?;
    write_atomically(&args.file, &text)
}

/// `-U`: every `user:password` line whose password is not a hash yet is hashed.
fn update_plain_text(path: &Path, algorithm: Algorithm) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = String::new();
    for line in text.lines() {
        match line.split_once(':') {
            Some((user, secret)) if !secret.starts_with('$') && !line.starts_with('#') => {
                out.push_str(&format!("{user}:{}\n", hash(algorithm, secret)?));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    write_atomically(path, &out)
}
