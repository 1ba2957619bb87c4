//! `cauldron config check FILE`: read a configuration the way `serve` would, load every file it
//! names (passwords, ACL, certificates), and print what would run, or the first problem.

use std::path::PathBuf;

use cauldron_broker::auth::{acl::AclFile, password::PasswordFile};
use cauldron_broker::config::mosquitto;
use cauldron_broker::tls::Tls;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Check a cauldron.toml (by its extension) or a mosquitto.conf, and print what would run.
    Check {
        /// The configuration file.
        file: PathBuf,
    },
}

pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check { file } = command;
    let setup = match file.extension().is_some_and(|e| e == "toml") {
        true => cauldron_broker::config::toml::read(&file)?.setup,
        false => mosquitto::read(&file)?,
    };
    if let Some(path) = &setup.password_file {
        let users = PasswordFile::load(path)?;
        println!("password file {}: {} users", path.display(), users.len());
    }
    if let Some(path) = &setup.acl_file {
        AclFile::load(path)?;
        println!("acl file {}: ok", path.display());
    }
    for listener in &setup.listeners {
        if let Some(tls) = &listener.tls {
            Tls::load(tls.clone())?;
        }
    }
    print!("{}", setup.describe());
    Ok(())
}
