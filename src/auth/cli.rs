//! `fleetgate passwd`: add, remove and list the users of a password file,
//! as `mosquitto_passwd` does, with fleetgate's roles.
//!
//! In: the command line, and a password from `--password`, `--generate` or
//! one line of stdin. Out: the file rewritten whole (a temporary file in
//! the same directory, then renamed over it, so a crash leaves the old file
//! or the new one, never half of either), keeping its owner, group and
//! mode; a new file is 0640 with its directory's group. The gateway reads it
//! at start and on SIGHUP.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::passwd::{check_name, Entry, PasswordFile, PasswordHash, Role, NEW_ENTRY_ITERATIONS};

#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    #[command(subcommand)]
    pub action: PasswdAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum PasswdAction {
    /// Add a user, or change its password and role.
    Add {
        /// The password file (created if missing).
        file: PathBuf,
        /// The user name; a device's is its vehicle id.
        name: String,
        /// device, dashboard, service or admin (service: what the ACL grants).
        #[arg(long, default_value = "service")]
        role: String,
        /// The password (visible in the process list: prefer stdin).
        #[arg(long, conflicts_with = "generate")]
        password: Option<String>,
        /// Make up a random password and print it (for HTTP bearer tokens
        /// and devices provisioned by script).
        #[arg(long)]
        generate: bool,
        /// PBKDF2 iterations.
        #[arg(long, default_value_t = NEW_ENTRY_ITERATIONS)]
        iterations: u32,
    },
    /// Remove a user.
    Remove { file: PathBuf, name: String },
    /// List the users and their roles (never the hashes).
    List { file: PathBuf },
}

pub fn run(args: PasswdArgs) -> anyhow::Result<()> {
    match args.action {
        PasswdAction::Add {
            file,
            name,
            role,
            password,
            generate,
            iterations,
        } => {
            if let Err(why) = check_name(&name) {
                bail!("user name {name:?} {why}");
            }
            let role = Role::parse(&role).with_context(|| {
                format!("unknown role {role:?}: device, dashboard, service or admin")
            })?;
            if iterations < 10_000 {
                bail!("--iterations {iterations} is too weak for a new entry (at least 10000; {NEW_ENTRY_ITERATIONS} by default)");
            }
            let mut users = read_or_new(&file)?;
            let password = match (password, generate) {
                (Some(p), _) => p,
                (None, true) => {
                    let p = random_password()?;
                    println!("{p}");
                    p
                }
                (None, false) => read_password_line()?,
            };
            if password.is_empty() {
                bail!("an empty password would let anyone in as {name:?}");
            }
            let hash = PasswordHash::new(password.as_bytes(), iterations)
                .map_err(|e| anyhow::anyhow!("no randomness for the salt: {e}"))?;
            let replaced = users.get(&name).is_some();
            users.insert(name.clone(), Entry { hash, role });
            write_atomically(&file, &users.render())?;
            eprintln!(
                "{} {name} ({role}) in {}",
                if replaced { "updated" } else { "added" },
                file.display()
            );
        }
        PasswdAction::Remove { file, name } => {
            let mut users = read(&file)?;
            if !users.remove(&name) {
                bail!("{} has no user {name:?}", file.display());
            }
            write_atomically(&file, &users.render())?;
            eprintln!("removed {name} from {}", file.display());
        }
        PasswdAction::List { file } => {
            for (name, entry) in read(&file)?.iter() {
                println!("{name}\t{}\t{:?}", entry.role, entry.hash);
            }
        }
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<PasswordFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    PasswordFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn read_or_new(path: &Path) -> anyhow::Result<PasswordFile> {
    if path.exists() {
        read(path)
    } else {
        Ok(PasswordFile::default())
    }
}

fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// 24 characters from a 64-letter alphabet: 144 bits.
fn random_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 64)]))
        .collect())
}

/// Replaces `path` with `text` through a temporary file and a rename. The
/// file keeps its owner, group and mode (an operator's `chgrp fleetgate`
/// and `chmod 640` survive every change); a new file is 0640 with its
/// directory's group, so a service that reads the directory (as the
/// Debian package's `/etc/fleetgate`, `root:fleetgate 0750`) reads it too.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("the password file needs a file name")?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    #[cfg(unix)]
    keep_ownership(path, dir, &file)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(unix)]
fn keep_ownership(path: &Path, dir: &Path, file: &std::fs::File) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let (uid, gid, mode) = match std::fs::metadata(path) {
        Ok(old) => (Some(old.uid()), old.gid(), old.mode() & 0o777),
        Err(_) => (None, std::fs::metadata(dir)?.gid(), 0o640),
    };
    // Only root may give a file away; anyone may keep a group they are in.
    if std::os::unix::fs::fchown(file, uid, Some(gid)).is_err() {
        let _ = std::os::unix::fs::fchown(file, None, Some(gid));
    }
    // Never wider than the old file: and never readable by everyone.
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o770))
        .context("cannot set the password file's mode")?;
    Ok(())
}
