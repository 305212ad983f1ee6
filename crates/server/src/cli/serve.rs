//! `taler-otp serve`: the HTTP server, over the configured or the embedded database.
//!
//! On first start (no default instance yet) it creates the default instance and an access
//! token for it in one transaction, and writes the token to `<DATA_DIR>/first-token`, a file
//! only the service's user can read, before that transaction commits; it prints the file's
//! path, never the token (standard output ends up in the journal). A crash leaves both the
//! instance and its token or neither. SIGINT/SIGTERM stop it gracefully, then the embedded
//! cluster.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use otp_store::tokens::SecretToken;
use otp_store::{Store, StoreError, instances};

use super::Failure;
use crate::config::{Listen, Settings, mask_database_url};
use crate::database::Database;
use crate::error::error_chain;
use crate::startup::{Application, StartupError};
use crate::telemetry;

/// Runs `taler-otp serve`.
pub async fn run(settings: Settings, json_logs: bool) -> Result<(), Failure> {
    telemetry::init(json_logs);
    let database = Database::open(&settings)
        .await
        .map_err(|err| Failure::failed(err.to_string()))?;
    let pacer = database.pace_writeback(settings.writeback_pace);
    let application = Application::build(&settings, &database.store_config)
        .await
        .map_err(|err| match err {
            StartupError::DatabaseUnreachable(detail) => {
                Failure::failed(unreachable_message(&settings, &detail))
            }
            err => Failure::failed(err.to_string()),
        })?;
    let store =
        Store::connect(&database.store_config).map_err(|err| Failure::failed(error_chain(&err)))?;
    first_start(&store, &settings).await?;
    match (&settings.listen, application.port()) {
        (Listen::Tcp { bind_to, .. }, Some(port)) => {
            tracing::info!("listening on http://{bind_to}:{port}/")
        }
        (Listen::Unix { path, .. }, _) => tracing::info!("listening on unix:{}", path.display()),
        _ => {}
    }
    let result = application.run_until_stopped().await;
    tracing::info!("server stopped");
    if let Some(pacer) = pacer {
        pacer.stop();
    }
    database.close();
    result.map_err(|err| Failure::failed(format!("server failed: {err}")))
}

/// The file, under `DATA_DIR`, that receives the first start's token.
pub const FIRST_TOKEN_FILE: &str = "first-token";

/// Why the first start failed.
enum FirstStart {
    Store(StoreError),
    File(PathBuf, std::io::Error),
}

impl From<StoreError> for FirstStart {
    fn from(err: StoreError) -> FirstStart {
        FirstStart::Store(err)
    }
}

/// Creates the default instance with an `all` token, the first time only, and tells where the
/// token is.
async fn first_start(store: &Store, settings: &Settings) -> Result<(), Failure> {
    let instance = &settings.default_instance;
    let path = settings.data_dir.join(FIRST_TOKEN_FILE);
    let mut written = false;
    let created = instances::create_with_token(
        store,
        instance,
        instance.as_str(),
        "all",
        "created on first start",
        |secret| {
            write_token_file(&path, secret).map_err(|err| FirstStart::File(path.clone(), err))?;
            written = true;
            Ok(())
        },
    )
    .await;
    match created {
        Ok(true) => {
            println!(
                "Created the default instance '{instance}'. Its access token is in {} (readable only by this user); store it elsewhere and delete the file.",
                path.display()
            );
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(err) => {
            if written {
                // The transaction did not commit: the token in the file is not valid.
                let _ = std::fs::remove_file(&path);
            }
            Err(Failure::failed(match err {
                FirstStart::Store(err) => format!(
                    "creating the default instance and its token: {}",
                    error_chain(&err)
                ),
                FirstStart::File(path, err) => format!(
                    "writing the first access token to {}: {err}; check [otp] DATA_DIR",
                    path.display()
                ),
            }))
        }
    }
}

/// Writes `secret` to a new file at `path`, mode 0600, and makes it durable. A file already
/// there is left from a start that did not finish (the instance did not exist, so its token is
/// not valid) and is replaced; `create_new` never follows a link planted there.
fn write_token_file(path: &Path, secret: &SecretToken) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    };
    let mut file = match open() {
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()?
        }
        opened => opened?,
    };
    file.write_all(secret.expose().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// One line naming the setting to check when the database cannot be reached.
pub fn unreachable_message(settings: &Settings, detail: &str) -> String {
    match &settings.database_url {
        Some(url) => format!(
            "database unreachable at [merchantdb-postgres] CONFIG = {}: {detail}",
            mask_database_url(url)
        ),
        None => format!("embedded database unreachable: {detail}"),
    }
}
