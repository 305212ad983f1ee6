//! Operator commands over the database: `dbinit`, `instance`, `token` and `device`.

use chrono::Duration as ChronoDuration;
use otp_algo::Algorithm;
use otp_store::instances::Instance;
use otp_store::otp_devices::{self, Created, NewOtpDevice};
use otp_store::{InstanceId, OtpDeviceId, Store, StoreError, instances, migrate, tokens};

use super::{DeviceCommand, Failure, InstanceArg, InstanceCommand, TokenCommand};
use crate::api::{check_description, parse_device_id};
use crate::auth::is_known_scope;
use crate::cli::code::{parse_counter, parse_time};

use crate::clock::now_seconds;
use crate::config::Settings;
use crate::database::Database;
use crate::enrolment;
use crate::error::error_chain;

/// Runs `taler-otp dbinit`.
pub async fn dbinit(settings: &Settings) -> Result<(), Failure> {
    with_store(settings, |store| async move {
        let report = migrate::migrate(&store).await.map_err(db_failure)?;
        if report.applied.is_empty() {
            println!("schema is up to date at version {}", report.current);
        } else {
            println!("schema upgraded to version {} (applied {:?})", report.current, report.applied);
        }
        let instance = &settings.default_instance;
        if instances::ensure(&store, instance, instance.as_str()).await.map_err(db_failure)? {
            println!("created the default instance '{instance}'; create a token with `taler-otp token create --scope write`");
        }
        Ok(())
    })
    .await
}

/// Runs `taler-otp instance …`.
pub async fn instance(settings: &Settings, command: InstanceCommand) -> Result<(), Failure> {
    with_current_store(settings, |store| async move {
        match command {
            InstanceCommand::Create { id, name } => {
                let instance = parse_instance(&id)?;
                let name = name.unwrap_or_else(|| id.clone());
                instances::create(&store, &instance, &name)
                    .await
                    .map_err(|err| match err {
                        StoreError::InstanceExists => {
                            Failure::failed(format!("instance '{instance}' already exists"))
                        }
                        err => db_failure(err),
                    })?;
                println!("created instance '{instance}'");
            }
            InstanceCommand::List => {
                for instance in instances::list(&store).await.map_err(db_failure)? {
                    println!(
                        "{}\t{}\t{}",
                        instance.id,
                        instance.name,
                        instance.created_at.to_rfc3339()
                    );
                }
            }
            InstanceCommand::Delete { id } => {
                let instance = parse_instance(&id)?;
                instances::delete(&store, &instance)
                    .await
                    .map_err(not_found(format!("instance '{instance}'")))?;
                println!("deleted instance '{instance}' with its devices and tokens");
            }
            InstanceCommand::SetPassword { id } => {
                let instance = parse_instance(&id)?;
                existing_instance(&store, &instance).await?;
                super::password::set_password(&store, &instance).await?;
                println!("set the password of instance '{instance}'");
            }
        }
        Ok(())
    })
    .await
}

/// Runs `taler-otp token …`.
pub async fn token(settings: &Settings, command: TokenCommand) -> Result<(), Failure> {
    with_current_store(settings, |store| async move {
        match command {
            TokenCommand::Create { instance, scope, duration, description } => {
                let instance = instance_or_default(&instance, settings)?;
                if !is_known_scope(&scope) {
                    return Err(Failure::usage(format!(
                        "--scope: unknown scope {scope:?}; use readonly, write, all, admin or order-*"
                    )));
                }
                let expires_at = match duration {
                    None => None,
                    Some(text) => {
                        let seconds = text
                            .parse::<i64>()
                            .ok()
                            .filter(|s| (1..=100 * 365 * 86_400).contains(s))
                            .ok_or_else(|| Failure::usage(format!("--duration: expected a positive number of seconds, got {text:?}")))?;
                        Some(crate::clock::now() + ChronoDuration::seconds(seconds))
                    }
                };
                let (_, secret) = tokens::create(&store, &instance, &scope, expires_at, &description)
                    .await
                    .map_err(not_found(format!("instance '{instance}'")))?;
                println!("{}", secret.expose());
            }
            TokenCommand::List { instance } => {
                let instance = instance_or_default(&instance, settings)?;
                existing_instance(&store, &instance).await?;
                println!("serial\tscope\texpires\tcreated\tdescription");
                for token in tokens::list(&store, &instance).await.map_err(db_failure)? {
                    let expires = token.expires_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into());
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        token.serial,
                        token.scope,
                        expires,
                        token.created_at.to_rfc3339(),
                        token.description
                    );
                }
            }
            TokenCommand::Revoke { instance, serial } => {
                let instance = instance_or_default(&instance, settings)?;
                let serial = serial
                    .parse::<i64>()
                    .map_err(|_| Failure::usage(format!("serial: expected an integer, got {serial:?}")))?;
                tokens::revoke(&store, &instance, serial)
                    .await
                    .map_err(not_found(format!("token {serial} of instance '{instance}'")))?;
                println!("revoked token {serial}");
            }
        }
        Ok(())
    })
    .await
}

/// Runs `taler-otp device …`.
pub async fn device(settings: &Settings, command: DeviceCommand) -> Result<(), Failure> {
    with_current_store(settings, |store| async move {
        match command {
            DeviceCommand::Add {
                instance,
                id,
                key,
                generate_key,
                algorithm,
                counter,
                description,
            } => {
                let instance = instance_or_default(&instance, settings)?;
                let id = device_arg(&id, "--id")?;
                let algorithm = algorithm
                    .parse::<Algorithm>()
                    .map_err(|err| Failure::usage(format!("--algorithm: {err}")))?;
                let counter = parse_counter(&counter)?;
                let description =
                    check_description("--description", description).map_err(Failure::usage)?;
                let key = match (key.read()?, generate_key) {
                    (Some(key), _) => key,
                    (None, false) => {
                        return Err(Failure::usage(
                            "--key, --key-file, --key-env or --generate-key is required",
                        ));
                    }
                    (None, true) => {
                        let device = NewOtpDevice {
                            id,
                            description,
                            key: enrolment::generate_key()
                                .map_err(|err| Failure::failed(err.to_string()))?,
                            algorithm,
                            counter,
                        };
                        return add_with_generated_key(&store, &instance, device).await;
                    }
                };
                let device = NewOtpDevice {
                    id,
                    description,
                    key,
                    algorithm,
                    counter,
                };
                match otp_devices::create(&store, &instance, &device).await {
                    Ok(Created::Inserted) => println!("added device '{}'", device.id),
                    Ok(Created::Unchanged) => {
                        println!("device '{}' already present with these details", device.id)
                    }
                    Err(StoreError::DeviceExists) => {
                        return Err(Failure::failed(format!(
                            "device '{}' exists with different details",
                            device.id
                        )));
                    }
                    Err(err) => return Err(not_found(format!("instance '{instance}'"))(err)),
                }
            }
            DeviceCommand::List { instance } => {
                let instance = instance_or_default(&instance, settings)?;
                existing_instance(&store, &instance).await?;
                for device in otp_devices::list(&store, &instance)
                    .await
                    .map_err(db_failure)?
                {
                    println!("{}\t{}", device.id, device.description);
                }
            }
            DeviceCommand::Show {
                instance,
                id,
                time,
                price,
            } => {
                let instance = instance_or_default(&instance, settings)?;
                let id = device_arg(&id, "id")?;
                let time = time
                    .as_deref()
                    .map(parse_time)
                    .transpose()?
                    .unwrap_or_else(now_seconds);
                let price = price
                    .as_deref()
                    .map(crate::params::amount)
                    .transpose()
                    .map_err(|why| Failure::usage(format!("--price: {why}")))?;
                let device = otp_devices::get(&store, &instance, &id)
                    .await
                    .map_err(device_not_found(&id, &instance))?;
                println!("id: {}", device.id);
                println!("description: {}", device.description);
                println!(
                    "algorithm: {} ({})",
                    device.algorithm.as_int(),
                    device.algorithm.name()
                );
                println!("counter: {}", device.counter);
                println!("timestamp: {time}");
                match otp_algo::confirmation(
                    &device.key,
                    device.algorithm,
                    price.as_ref(),
                    time,
                    device.counter,
                ) {
                    Some(code) => println!("code:\n{code}"),
                    None => println!("code: (none for this algorithm without a price)"),
                }
            }
            DeviceCommand::Delete { instance, id } => {
                let instance = instance_or_default(&instance, settings)?;
                let id = device_arg(&id, "id")?;
                otp_devices::delete(&store, &instance, &id)
                    .await
                    .map_err(device_not_found(&id, &instance))?;
                println!("deleted device '{id}'");
            }
            DeviceCommand::Verify {
                instance,
                id,
                code,
                price,
                reference,
            } => {
                let instance = instance_or_default(&instance, settings)?;
                let id = device_arg(&id, "id")?;
                let args = super::verify::VerifyArgs {
                    code,
                    price,
                    reference,
                };
                super::verify::verify(&store, settings, &instance, &id, args).await?;
            }
            DeviceCommand::Unlock { instance, id } => {
                let instance = instance_or_default(&instance, settings)?;
                let id = device_arg(&id, "id")?;
                otp_store::verifications::unlock(&store, &instance, &id)
                    .await
                    .map_err(device_not_found(&id, &instance))?;
                println!("unlocked device '{id}'");
            }
        }
        Ok(())
    })
    .await
}

/// `device add --generate-key`: stores `device` (whose key was just generated) and prints its
/// key, its provisioning URI and the URI as a QR code, once (`docs/api.md` §11). Nothing is
/// printed unless the device was stored.
async fn add_with_generated_key(
    store: &Store,
    instance: &InstanceId,
    device: NewOtpDevice,
) -> Result<(), Failure> {
    if device.algorithm == Algorithm::None {
        return Err(Failure::usage(
            "--generate-key: algorithm NONE has no codes, so there is no key to generate; give --key or another --algorithm",
        ));
    }
    let found = existing_instance(store, instance).await?;
    let issuer = if found.name.is_empty() {
        found.id.as_str()
    } else {
        found.name.as_str()
    };
    let uri = enrolment::otpauth_uri(
        issuer,
        device.id.as_str(),
        &device.key,
        device.algorithm,
        device.counter,
    )
    .ok_or_else(|| Failure::failed("no provisioning URI for algorithm NONE"))?;
    let qr = enrolment::qr_terminal(&uri).map_err(|err| Failure::failed(err.to_string()))?;
    match otp_devices::create(store, instance, &device).await {
        Ok(_) => {}
        Err(StoreError::DeviceExists) => {
            return Err(Failure::failed(format!(
                "device '{}' already exists (a generated key never matches it)",
                device.id
            )));
        }
        Err(err) => return Err(not_found(format!("instance '{instance}'"))(err)),
    }
    let key = zeroize::Zeroizing::new(device.key.to_base32());
    println!("added device '{}' with a generated key", device.id);
    println!("key: {}", key.as_str());
    println!("uri: {}", uri.as_str());
    if device.algorithm.uses_price() {
        println!(
            "note: with-price codes (taler_algorithm={}) need a GNU Taler-aware device; generic authenticator apps cannot compute them",
            device.algorithm.as_int()
        );
    }
    println!("{}", qr.as_str());
    eprintln!(
        "warning: the key is shown only this once and cannot be read back; enrol the device or store the key safely now"
    );
    Ok(())
}

/// Opens the database and runs `f` on it, whatever the schema version (for `dbinit`).
async fn with_store<F, Fut>(settings: &Settings, f: F) -> Result<(), Failure>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let database = Database::open(settings)
        .await
        .map_err(|err| Failure::failed(err.to_string()))?;
    let store = Store::connect(&database.store_config).map_err(db_failure)?;
    let result = f(store.clone()).await;
    store.pool().close();
    database.close();
    result
}

/// Like `with_store`, but refuses to work on an out-of-date schema.
pub(super) async fn with_current_store<F, Fut>(settings: &Settings, f: F) -> Result<(), Failure>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    with_store(settings, |store| async move {
        let status = migrate::status(&store).await.map_err(db_failure)?;
        if status.current != status.latest {
            return Err(Failure::failed(format!(
                "database schema is at version {} but this binary needs version {}: run `taler-otp dbinit` first",
                status.current, status.latest
            )));
        }
        // A missing or wrong key-encryption key stops every command, as it stops `serve`.
        crate::keys_at_rest::check(&store, true)
            .await
            .map_err(|err| match err {
                err @ StoreError::KeyMismatch(_) => {
                    Failure::failed(crate::keys_at_rest::explain(&err))
                }
                err => db_failure(err),
            })?;
        f(store).await
    })
    .await
}

/// The device id `id` given as `arg`, or a usage failure naming `arg`.
fn device_arg(id: &str, arg: &str) -> Result<OtpDeviceId, Failure> {
    parse_device_id(id).map_err(|why| Failure::usage(format!("{arg}: {why}")))
}

/// The instance `instance`, or a failure saying it does not exist.
async fn existing_instance(store: &Store, instance: &InstanceId) -> Result<Instance, Failure> {
    instances::get(store, instance)
        .await
        .map_err(not_found(format!("instance '{instance}'")))
}

/// [`not_found`] for the device `id` of `instance`.
fn device_not_found(id: &OtpDeviceId, instance: &InstanceId) -> impl FnOnce(StoreError) -> Failure {
    not_found(format!("device '{id}' of instance '{instance}'"))
}

fn parse_instance(id: &str) -> Result<InstanceId, Failure> {
    InstanceId::parse(id).map_err(|err| Failure::usage(format!("instance id {id:?}: {err}")))
}

pub(super) fn instance_or_default(
    arg: &InstanceArg,
    settings: &Settings,
) -> Result<InstanceId, Failure> {
    match &arg.instance {
        Some(id) => parse_instance(id),
        None => Ok(settings.default_instance.clone()),
    }
}

pub(super) fn db_failure(err: StoreError) -> Failure {
    if err.is_unavailable() {
        Failure::failed(format!(
            "database unreachable (check [merchantdb-postgres] CONFIG): {}",
            error_chain(&err)
        ))
    } else {
        Failure::failed(format!("database error: {}", error_chain(&err)))
    }
}

/// Maps a store error of an operation on `what`: a missing record is named, anything else is a
/// database failure.
pub(super) fn not_found(what: String) -> impl FnOnce(StoreError) -> Failure {
    move |err| match err {
        StoreError::InstanceNotFound => {
            Failure::failed(format!("{what} not found (no such instance)"))
        }
        StoreError::DeviceNotFound | StoreError::TokenNotFound => {
            Failure::failed(format!("{what} not found"))
        }
        err => db_failure(err),
    }
}
