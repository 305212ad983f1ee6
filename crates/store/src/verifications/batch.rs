//! Running attempts through `otp_verify_batch`: alone, or several in one statement.
//!
//! Attempts that arrive together share a statement ([`crate::batch`]): `otp_verify_batch`
//! decides them one after the other, in the order of (instance id, device id, arrival), so each
//! is decided as if alone against the state the previous ones left, and every batch takes the
//! devices' locks in the same order (no two batches deadlock). If the statement fails for a
//! reason an attempt alone might not meet, each attempt is run again alone: the failed
//! statement changed nothing.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{Attempt, Candidates, Outcome, RecordedOutcome, VerifyPolicy};
use crate::batch;
use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};
use crate::store::Store;

/// `otp_verify` kinds.
const KIND_TOTP: i16 = 1;
const KIND_HOTP: i16 = 2;

// The attempts of a batch through `otp_verify_batch` (migration 0016): one call decides them
// all in the order of (instance id, device id, position), records them and appends them to
// their audit chains. One element per attempt in each array; the matches and offsets of an
// attempt are an array literal each (`{1,2}`), since SQL arrays of arrays must all have one
// length. `ord` is the attempt's position in the arrays, from 1.
const VERIFY_BATCH: &str = r#"
    SELECT v.ord::bigint AS ord, v.outcome, v.retry_after_s, v.matched_ctr, v.matched_offset,
           v.replay_reference, v.stored_ctr, v.locked
      FROM otp_verify_batch($1::text[], $2::text[], $3::timestamptz[], $4::smallint[],
                            $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[],
                            $10::text[], $11::text[], $12::bigint[], $13::integer[],
                            $14::integer[], $15::integer[]) v"#;

/// An attempt waiting for its batch: everything `otp_verify` is called with.
pub(crate) struct Attempted {
    instance: InstanceId,
    id: OtpDeviceId,
    now: DateTime<Utc>,
    kind: i16,
    amount: String,
    matches: Vec<i64>,
    offsets: Vec<i32>,
    range: (i64, i64),
    reference: Option<String>,
    client: String,
    token_serial: Option<i64>,
    limits: [i32; 3],
}

impl Attempted {
    /// The call for an attempt; `OutOfRange` if a step, counter or range end is above
    /// 2^63 - 1.
    pub(crate) fn new(
        instance: &InstanceId,
        id: &OtpDeviceId,
        now: DateTime<Utc>,
        candidates: &Candidates,
        attempt: &Attempt<'_>,
        policy: &VerifyPolicy,
    ) -> Result<Attempted, StoreError> {
        let (kind, amount, matches, offsets, range) = match candidates {
            Candidates::Totp { amount, steps } => {
                let matches = steps
                    .iter()
                    .map(|(step, _)| bigint(*step, "TOTP step above 2^63 - 1"))
                    .collect::<Result<Vec<i64>, _>>()?;
                let offsets = steps.iter().map(|(_, offset)| *offset).collect();
                let amount = amount.clone().unwrap_or_default();
                (KIND_TOTP, amount, matches, offsets, (0, 0))
            }
            Candidates::Hotp { counters, range } => {
                let matches = counters
                    .iter()
                    .map(|counter| bigint(*counter, "counter above 2^63 - 1"))
                    .collect::<Result<Vec<i64>, _>>()?;
                let range = (
                    bigint(range.0, "counter above 2^63 - 1")?,
                    bigint(range.1, "counter above 2^63 - 1")?,
                );
                (KIND_HOTP, String::new(), matches, Vec::new(), range)
            }
        };
        Ok(Attempted {
            instance: instance.clone(),
            id: id.clone(),
            now,
            kind,
            amount,
            matches,
            offsets,
            range,
            reference: attempt.reference.map(str::to_owned),
            client: attempt.client.to_owned(),
            token_serial: attempt.token_serial,
            limits: [
                positive(policy.max_failures),
                positive(policy.daily_failures),
                i32::try_from(policy.hotp_lookahead).unwrap_or(i32::MAX),
            ],
        })
    }
}

/// Runs a batch of attempts ([`crate::batch::RunBatch`]).
pub(crate) fn run_batch(store: Store, items: Vec<Attempted>) -> batch::BatchFuture<Outcome> {
    Box::pin(async move {
        if items.len() > 1 {
            match verify_together(&store, &items).await {
                Ok(outcomes) => return outcomes,
                Err(err) if batch::fails_alone(&err) => {
                    return batch::shared_failure(err, items.len());
                }
                // The statement changed nothing: each attempt alone meets the failure or not.
                Err(err) => {
                    tracing::warn!(error = %err, count = items.len(), "a batch of verifications failed: each runs alone");
                }
            }
        }
        let mut outcomes = Vec::with_capacity(items.len());
        for item in &items {
            outcomes.push(verify_alone(&store, item).await);
        }
        outcomes
    })
}

/// One attempt in a statement of its own.
async fn verify_alone(store: &Store, item: &Attempted) -> Result<Outcome, StoreError> {
    verify_together(store, std::slice::from_ref(item))
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(StoreError::Corrupt("otp_verify: no outcome".into())))
}

/// All of `items` in one statement: the outcomes in the order of `items`. An `Err` stands for
/// the whole statement, which then decided nothing; an attempt's own error (its device is
/// missing) is its `Err` in the list.
async fn verify_together(
    store: &Store,
    items: &[Attempted],
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    fn column<'a, T: 'a>(items: &'a [Attempted], f: impl Fn(&'a Attempted) -> T) -> Vec<T> {
        items.iter().map(f).collect()
    }
    let literal = |values: &[String]| format!("{{{}}}", values.join(","));
    let matches = column(items, |i| {
        literal(&i.matches.iter().map(i64::to_string).collect::<Vec<_>>())
    });
    let offsets = column(items, |i| {
        literal(&i.offsets.iter().map(i32::to_string).collect::<Vec<_>>())
    });
    let instances = column(items, |i| i.instance.as_str());
    let ids = column(items, |i| i.id.as_str());
    let nows = column(items, |i| i.now);
    let kinds = column(items, |i| i.kind);
    let amounts = column(items, |i| i.amount.as_str());
    let range_lo = column(items, |i| i.range.0);
    let range_hi = column(items, |i| i.range.1);
    let references = column(items, |i| i.reference.as_deref());
    let clients = column(items, |i| i.client.as_str());
    let tokens = column(items, |i| i.token_serial);
    let max_failures = column(items, |i| i.limits[0]);
    let daily_failures = column(items, |i| i.limits[1]);
    let lookaheads = column(items, |i| i.limits[2]);
    let params: [&(dyn ToSql + Sync); 15] = [
        &instances,
        &ids,
        &nows,
        &kinds,
        &amounts,
        &matches,
        &offsets,
        &range_lo,
        &range_hi,
        &references,
        &clients,
        &tokens,
        &max_failures,
        &daily_failures,
        &lookaheads,
    ];
    let client = store.client().await?;
    let stmt = client.prepare_cached(VERIFY_BATCH).await?;
    let rows = client.query(&stmt, &params).await?;
    // Decided and committed: from here on no failure may send an attempt round again.
    let mut outcomes: Vec<Option<Result<Outcome, StoreError>>> =
        std::iter::repeat_with(|| None).take(items.len()).collect();
    for row in &rows {
        let index = row
            .try_get::<_, i64>("ord")
            .ok()
            .and_then(|ord| usize::try_from(ord - 1).ok());
        if let Some(slot) = index.and_then(|index| outcomes.get_mut(index)) {
            *slot = Some(outcome_of(store, row));
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| {
                Err(StoreError::Corrupt(
                    "otp_verify: an attempt's outcome went missing".into(),
                ))
            })
        })
        .collect())
}

/// The outcome in a row of `otp_verify_batch`, reported to the store's observer.
fn outcome_of(store: &Store, row: &Row) -> Result<Outcome, StoreError> {
    let outcome: String = row.try_get("outcome")?;
    if let Some(observer) = store.observer() {
        if RecordedOutcome::parse(&outcome).is_some() {
            observer.verification(&outcome, row.try_get("locked")?);
        }
    }
    Ok(match outcome.as_str() {
        "verified" => Outcome::Verified {
            otp_ctr: unsigned(row, "matched_ctr")?,
            matched_offset: row.try_get("matched_offset")?,
        },
        "mismatch" => Outcome::Mismatch,
        "replayed" => Outcome::Replayed {
            reference: row.try_get("replay_reference")?,
        },
        "locked" => Outcome::Locked {
            retry_after_s: retry_after(row)?,
        },
        "daily_limit" => Outcome::DailyLimit {
            retry_after_s: retry_after(row)?,
        },
        "stale" => Outcome::Stale {
            stored_counter: unsigned(row, "stored_ctr")?
                .ok_or_else(|| StoreError::Corrupt("otp_verify: stale without a counter".into()))?,
        },
        "no_device" => return Err(StoreError::DeviceNotFound),
        other => {
            return Err(StoreError::Corrupt(format!(
                "otp_verify: unknown outcome {other:?}"
            )));
        }
    })
}

/// `value` as a SQL `bigint`, or `OutOfRange(what)`.
pub(super) fn bigint(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange(what))
}

/// A limit as a positive SQL `integer`.
fn positive(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX).max(1)
}

/// The non-negative `bigint` `column` of `row`, if not NULL.
pub(super) fn unsigned(row: &Row, column: &str) -> Result<Option<u64>, StoreError> {
    row.try_get::<_, Option<i64>>(column)?
        .map(|value| {
            u64::try_from(value)
                .map_err(|_| StoreError::Corrupt(format!("negative {column} from otp_verify")))
        })
        .transpose()
}

fn retry_after(row: &Row) -> Result<u32, StoreError> {
    let seconds: Option<i32> = row.try_get("retry_after_s")?;
    Ok(seconds.map_or(1, |seconds| u32::try_from(seconds).unwrap_or(0).max(1)))
}
