//! Where `device add` and `code` read a device key: standard input (`--key -`), a file
//! (`--key-file PATH`) or an environment variable (`--key-env VAR`), so that a key never has to
//! appear on the command line, where every user of the machine sees it (`ps`,
//! `/proc/PID/cmdline`) and the shell's history keeps it. `--key VALUE` still works, for test
//! keys and throw-away ones.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::Args;
use otp_algo::OtpKey;
use zeroize::Zeroizing;

use super::Failure;

/// The most bytes read for a key (a base32 key of 64 bytes is 103 characters).
const MAX_KEY_TEXT: u64 = 4096;

/// The options naming a device key; at most one may be given.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct KeySource {
    /// Base32 device key, or `-` to read it from standard input. A key given here is visible to
    /// every user in `ps` and stays in the shell's history: prefer `-`, --key-file or --key-env.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Read the base32 device key from this file (surrounding white space is ignored).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Read the base32 device key from this environment variable.
    #[arg(long, value_name = "VAR")]
    key_env: Option<String>,
}

impl KeySource {
    /// The key, or `None` when no option names one. Bad input is a usage failure (exit 2)
    /// naming the option.
    pub fn read(&self) -> Result<Option<OtpKey>, Failure> {
        let (option, text) = match (&self.key, &self.key_file, &self.key_env) {
            (Some(key), _, _) if key == "-" => ("--key -", read_stdin()?),
            (Some(key), _, _) => ("--key", Zeroizing::new(key.clone())),
            (None, Some(path), _) => ("--key-file", read_file(path)?),
            (None, None, Some(var)) => ("--key-env", read_env(var)?),
            (None, None, None) => return Ok(None),
        };
        OtpKey::from_base32(text.trim())
            .map(Some)
            .map_err(|err| Failure::usage(format!("{option}: {err}")))
    }
}

/// The key from standard input: typed without echo on a terminal, else all of the input.
fn read_stdin() -> Result<Zeroizing<String>, Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return rpassword::prompt_password("Device key (base32): ")
            .map(Zeroizing::new)
            .map_err(|err| Failure::usage(format!("--key -: cannot read the key: {err}")));
    }
    read_bounded(stdin.lock())
        .map_err(|err| Failure::usage(format!("--key -: cannot read standard input: {err}")))
}

fn read_file(path: &Path) -> Result<Zeroizing<String>, Failure> {
    std::fs::File::open(path)
        .and_then(read_bounded)
        .map_err(|err| Failure::usage(format!("--key-file {}: {err}", path.display())))
}

fn read_env(var: &str) -> Result<Zeroizing<String>, Failure> {
    match std::env::var(var) {
        Ok(value) => Ok(Zeroizing::new(value)),
        Err(std::env::VarError::NotPresent) => Err(Failure::usage(format!(
            "--key-env: the environment variable {var} is not set"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::usage(format!(
            "--key-env: the environment variable {var} is not text"
        ))),
    }
}

/// At most [`MAX_KEY_TEXT`] bytes of `input` as text.
fn read_bounded(input: impl Read) -> std::io::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    input.take(MAX_KEY_TEXT).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(key: Option<&str>, key_file: Option<&Path>, key_env: Option<&str>) -> KeySource {
        KeySource {
            key: key.map(str::to_owned),
            key_file: key_file.map(Path::to_path_buf),
            key_env: key_env.map(str::to_owned),
        }
    }

    const KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn a_key_from_an_argument_a_file_or_the_environment() {
        let expected = OtpKey::from_base32(KEY).unwrap();
        let from_argument = source(Some(KEY), None, None).read().unwrap().unwrap();
        assert_eq!(from_argument.as_bytes(), expected.as_bytes());
        let path = std::env::temp_dir().join(format!("taler-otp-key-{}", std::process::id()));
        std::fs::write(&path, format!("  {KEY}\n")).unwrap();
        let from_file = source(None, Some(&path), None).read().unwrap().unwrap();
        assert_eq!(from_file.as_bytes(), expected.as_bytes());
        std::fs::remove_file(&path).unwrap();
        // The variable the test process inherits: PATH is set, but it is no key.
        let failure = source(None, None, Some("PATH")).read().err().unwrap();
        assert_eq!(failure.status, 2);
        assert!(
            failure.message.starts_with("--key-env:"),
            "{}",
            failure.message
        );
        assert!(source(None, None, None).read().unwrap().is_none());
    }

    #[test]
    fn missing_sources_name_the_option() {
        let nonexistent = Path::new("/nonexistent/key");
        let unset = "TALER_OTP_TEST_NO_SUCH_VARIABLE";
        for (given, expected) in [
            (
                source(None, Some(nonexistent), None),
                "--key-file /nonexistent/key",
            ),
            (source(None, None, Some(unset)), "is not set"),
        ] {
            let failure = given.read().err().unwrap();
            assert!(failure.message.contains(expected), "{}", failure.message);
        }
        let failure = source(Some("GEZD1"), None, None).read().err().unwrap();
        assert!(failure.message.starts_with("--key:"), "{}", failure.message);
    }
}
