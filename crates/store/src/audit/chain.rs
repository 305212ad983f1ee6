//! Checking an instance's audit chains: every row's hash recomputed in Rust ([`entry_hash`]),
//! every link to the previous row of its chain, no gap, and each chain's head at its last row.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::ids::InstanceId;
use crate::store::Store;

use super::{AuditEntry, entry_hash, hash32, push_field};

/// Rows read per round trip while checking the chains.
const PAGE: i64 = 1000;

/// Why a chain is broken at a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Break {
    /// The row's hash does not match its content: the row was changed.
    Hash,
    /// The row's `prev_hash` is not the previous row's hash: the previous row was changed (and
    /// its hash recomputed), or this row's link was.
    Link,
    /// Rows are missing before this one, from seq `from` on: they were deleted.
    Missing {
        /// The first missing seq.
        from: i64,
    },
    /// The chain's head names a row that is not its last one (rows at the end were deleted or
    /// added past the head), or the head is missing.
    Head,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Hash => f.write_str("its hash does not match its content (the row was altered)"),
            Break::Link => f.write_str(
                "its prev_hash is not the previous row's hash (the previous row was altered)",
            ),
            Break::Missing { from } => {
                write!(f, "rows from seq {from} on are missing before it (deleted)")
            }
            Break::Head => f.write_str(
                "the chain's head does not name its last row (rows at the end were deleted or added)",
            ),
        }
    }
}

/// The first row at which an instance's chains are broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    /// The chain: a device's id, or `""` for the instance's own.
    pub chain: String,
    /// The row's seq in its chain (for [`Break::Head`]: the seq the head names).
    pub seq: i64,
    /// Why.
    pub reason: Break,
}

/// The head of one chain as recorded: its last row's seq and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// The chain: a device's id, or `""` for the instance's own.
    pub chain: String,
    /// The last row's seq (0 before the first append).
    pub seq: i64,
    /// The last row's hash.
    pub hash: [u8; 32],
}

/// The outcome of [`verify_chain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// The rows read, over all chains.
    pub rows: u64,
    /// The heads of the instance's chains as recorded, by chain.
    pub heads: Vec<ChainHead>,
    /// The first broken link (chains in byte order of their names), `None` when all are intact.
    pub first_broken: Option<BrokenLink>,
}

impl ChainReport {
    /// Whether every chain is intact.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }

    /// A digest of all heads, to record outside the database and compare later: SHA-256 over
    /// each head in chain order as three fields (chain, seq in decimal, hash), encoded as the
    /// row hash's fields are (`docs/audit.md` §5).
    pub fn anchor(&self) -> [u8; 32] {
        let mut bytes = Vec::new();
        for head in &self.heads {
            let seq = head.seq.to_string();
            push_field(&mut bytes, Some(head.chain.as_bytes()));
            push_field(&mut bytes, Some(seq.as_bytes()));
            push_field(&mut bytes, Some(&head.hash));
        }
        Sha256::digest(&bytes).into()
    }
}

const HEADS: &str = "
    SELECT chain, seq, hash FROM audit_heads WHERE instance_id = $1 ORDER BY chain";

const ROWS: &str = "
    SELECT serial, chain, seq, time, event, device_id, token_serial, client, details,
           prev_hash, hash
      FROM audit_log
     WHERE instance_id = $1
       AND (chain, seq) > ($2, $3)
     ORDER BY chain, seq
     LIMIT $4";

/// Checks all of `instance`'s audit chains from their first rows to their heads, reading them
/// in pages, and reports the first broken link. An instance without a trail is intact.
#[tracing::instrument(skip(store))]
pub async fn verify_chain(store: &Store, instance: &InstanceId) -> Result<ChainReport, StoreError> {
    let client = store.client().await?;
    let heads_stmt = client.prepare_cached(HEADS).await?;
    let heads = client
        .query(&heads_stmt, &[&instance.as_str()])
        .await?
        .iter()
        .map(|row| {
            Ok(ChainHead {
                chain: row.try_get("chain")?,
                seq: row.try_get("seq")?,
                hash: hash32(row, "hash")?,
            })
        })
        .collect::<Result<Vec<ChainHead>, StoreError>>()?;
    let rows_stmt = client.prepare_cached(ROWS).await?;
    let mut walk = Walk::new(instance.as_str(), &heads);
    let (mut after_chain, mut after_seq) = (String::new(), 0_i64);
    loop {
        let page = client
            .query(
                &rows_stmt,
                &[&instance.as_str(), &after_chain, &after_seq, &PAGE],
            )
            .await?;
        for row in &page {
            walk.check(&AuditEntry::from_row(row)?);
        }
        match walk.position() {
            Some((chain, seq)) if page.len() as i64 == PAGE => {
                after_chain = chain.to_owned();
                after_seq = seq;
            }
            _ => break,
        }
    }
    let first_broken = walk.finish();
    Ok(ChainReport {
        rows: walk.rows,
        heads,
        first_broken,
    })
}

/// The last row of a chain: its seq and hash.
type End = (i64, [u8; 32]);

/// The state of a walk along an instance's chains, in chain order.
struct Walk<'a> {
    instance: &'a str,
    heads: &'a [ChainHead],
    rows: u64,
    /// The chain being walked, its last seq and hash.
    current: Option<(String, i64, [u8; 32])>,
    /// The last row of every chain walked.
    ends: BTreeMap<String, End>,
    /// The first broken row found (the walk goes in chain order).
    first_broken: Option<BrokenLink>,
}

impl<'a> Walk<'a> {
    fn new(instance: &'a str, heads: &'a [ChainHead]) -> Walk<'a> {
        Walk {
            instance,
            heads,
            rows: 0,
            current: None,
            ends: BTreeMap::new(),
            first_broken: None,
        }
    }

    /// The last row read: its chain and seq.
    fn position(&self) -> Option<(&str, i64)> {
        self.current
            .as_ref()
            .map(|(chain, seq, _)| (chain.as_str(), *seq))
    }

    /// Checks the next row read, keeping the first broken link.
    fn check(&mut self, entry: &AuditEntry) {
        let (last_seq, prev) = match &self.current {
            Some((chain, seq, hash)) if *chain == entry.chain => (*seq, *hash),
            _ => (0, [0; 32]),
        };
        let reason = if entry.seq != last_seq + 1 {
            Some(Break::Missing { from: last_seq + 1 })
        } else if entry.prev_hash != prev {
            Some(Break::Link)
        } else if entry_hash(self.instance, entry) != entry.hash {
            Some(Break::Hash)
        } else {
            None
        };
        if let (Some(reason), None) = (reason, &self.first_broken) {
            self.first_broken = Some(BrokenLink {
                chain: entry.chain.clone(),
                seq: entry.seq,
                reason,
            });
        }
        self.rows += 1;
        self.ends
            .insert(entry.chain.clone(), (entry.seq, entry.hash));
        self.current = Some((entry.chain.clone(), entry.seq, entry.hash));
    }

    /// The first broken link in chain order: a broken row, or a head that does not name its
    /// chain's last row (checked after the chain's rows).
    fn finish(&self) -> Option<BrokenLink> {
        let mut chains: BTreeMap<&str, (Option<&ChainHead>, Option<End>)> = BTreeMap::new();
        for head in self.heads {
            chains.entry(head.chain.as_str()).or_default().0 = Some(head);
        }
        for (chain, end) in &self.ends {
            chains.entry(chain.as_str()).or_default().1 = Some(*end);
        }
        let head_break = chains.into_iter().find_map(|(chain, (head, end))| {
            let seq = match (head, end) {
                (Some(head), Some(end)) if end == (head.seq, head.hash) => return None,
                // A head at 0 without rows: the chain's first append was rolled back.
                (Some(head), None) if head.seq == 0 => return None,
                (Some(head), _) => head.seq,
                (None, Some((seq, _))) => seq,
                (None, None) => return None,
            };
            Some(BrokenLink {
                chain: chain.to_owned(),
                seq,
                reason: Break::Head,
            })
        });
        match (&self.first_broken, head_break) {
            (Some(row), Some(head)) if head.chain.as_bytes() < row.chain.as_bytes() => Some(head),
            (Some(row), _) => Some(row.clone()),
            (None, head) => head,
        }
    }
}
