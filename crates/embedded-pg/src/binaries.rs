//! The PostgreSQL programs: where they are, which user runs them, and how
//! they are run (a clean environment, `/` as working directory).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::EmbeddedError;

/// The `PATH` of the PostgreSQL programs when the caller has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `$PG_BINDIR`,
/// else the newest `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`,
/// else the `PATH`.
pub fn find_bindir() -> Result<PathBuf, EmbeddedError> {
    let has_server = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(EmbeddedError::NoBinaries)
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    let mut pg_config = Command::new("pg_config");
    clean_environment(&mut pg_config);
    if let Ok(output) = pg_config.arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_server(dir))
        .ok_or(EmbeddedError::NoBinaries)
}

/// The user and group to run PostgreSQL as: `None` unless we are root, then
/// the `postgres` user (there is no fallback: another account's files are not
/// ours to create).
pub(crate) fn run_as() -> Result<Option<(u32, u32)>, EmbeddedError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        _ => Err(EmbeddedError::NoUser),
    }
}

/// The program `program` of `bindir`, run as `run_as` (when we are root),
/// in `/` and with a clean environment.
pub(crate) fn command(bindir: &Path, program: &str, run_as: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(bindir.join(program));
    clean_environment(&mut command);
    // The unprivileged user may not be able to read our working directory.
    command.current_dir("/");
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    command
}

/// Clears the environment of `command` but for `PATH` and the C locale: the
/// caller's variables (secrets such as the key-encryption key, and `PG*`
/// variables that would redirect the programs) do not reach PostgreSQL.
fn clean_environment(command: &mut Command) {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH));
    command
        .env_clear()
        .env("PATH", path)
        .env("LANG", "C")
        .env("LC_ALL", "C");
}

/// Runs `command` to completion; a failure names `program`, its exit status
/// and its output.
pub(crate) fn run(program: &'static str, command: &mut Command) -> Result<Output, EmbeddedError> {
    let output = command.output().map_err(|err| EmbeddedError::Command {
        program,
        detail: format!("cannot run {:?}: {err}", command.get_program()),
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    Err(EmbeddedError::Command {
        program,
        detail: format!(
            "{}: {} {}",
            output.status,
            text(&output.stderr),
            text(&output.stdout)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_get_only_path_and_the_c_locale() {
        let mut env = Command::new("/usr/bin/env");
        clean_environment(&mut env);
        let Ok(output) = env.output() else {
            return; // No env(1) here.
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["LANG", "LC_ALL", "PATH"]);
    }
}
