//! Checking an instance's audit chain: every row's hash recomputed in Rust ([`entry_hash`]),
//! every link to the previous row, no gap, and the chain head at the last row.

use std::fmt;

use crate::error::StoreError;
use crate::ids::InstanceId;
use crate::store::Store;

use super::{AuditEntry, entry_hash, list};

/// Rows read per round trip while checking a chain.
const PAGE: u32 = 1000;

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
    /// The chain head names a row that is not the last one (rows at the end were deleted or
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
                "the chain head does not name the last row (rows at the end were deleted or added)",
            ),
        }
    }
}

/// The first row at which a chain is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    /// The row's seq (for [`Break::Head`]: the seq the head names).
    pub seq: i64,
    /// Why.
    pub reason: Break,
}

/// The outcome of [`verify_chain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// The rows read.
    pub rows: u64,
    /// The chain head: the last row's seq and hash as recorded (`None` before the first append).
    pub head: Option<(i64, [u8; 32])>,
    /// The first broken link, `None` when the chain is intact.
    pub first_broken: Option<BrokenLink>,
}

impl ChainReport {
    /// Whether the whole chain is intact.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

const HEAD: &str = "SELECT seq, hash FROM audit_heads WHERE instance_id = $1";

/// Checks `instance`'s audit chain from its first row to its head, reading it in pages, and
/// reports the first broken link. An instance without a trail has an intact, empty chain.
#[tracing::instrument(skip(store))]
pub async fn verify_chain(store: &Store, instance: &InstanceId) -> Result<ChainReport, StoreError> {
    let head = {
        let client = store.client().await?;
        let stmt = client.prepare_cached(HEAD).await?;
        match client.query_opt(&stmt, &[&instance.as_str()]).await? {
            Some(row) => Some((row.try_get::<_, i64>("seq")?, super::hash32(&row, "hash")?)),
            None => None,
        }
    };
    let mut walk = Walk::new(instance.as_str());
    loop {
        let page = list(store, instance, walk.last_seq, PAGE).await?;
        for entry in &page {
            walk.check(entry);
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    let mut first_broken = walk.first_broken;
    if first_broken.is_none() {
        let last = (walk.rows > 0).then_some((walk.last_seq, walk.prev));
        let head_ok = match (head, last) {
            (None, None) => true,
            // A head at 0 is a chain whose first append was rolled back.
            (Some((0, _)), None) => true,
            (Some(head), Some(last)) => head == last,
            _ => false,
        };
        if !head_ok {
            first_broken = Some(BrokenLink {
                seq: head.map_or(walk.last_seq, |(seq, _)| seq),
                reason: Break::Head,
            });
        }
    }
    Ok(ChainReport {
        rows: walk.rows,
        head,
        first_broken,
    })
}

/// The state of a walk along a chain.
struct Walk<'a> {
    instance: &'a str,
    rows: u64,
    last_seq: i64,
    prev: [u8; 32],
    first_broken: Option<BrokenLink>,
}

impl<'a> Walk<'a> {
    fn new(instance: &'a str) -> Walk<'a> {
        Walk {
            instance,
            rows: 0,
            last_seq: 0,
            prev: [0; 32],
            first_broken: None,
        }
    }

    /// Checks the next row read, keeping the first broken link.
    fn check(&mut self, entry: &AuditEntry) {
        let reason = if entry.seq != self.last_seq + 1 {
            Some(Break::Missing {
                from: self.last_seq + 1,
            })
        } else if entry.prev_hash != self.prev {
            Some(Break::Link)
        } else if entry_hash(self.instance, entry) != entry.hash {
            Some(Break::Hash)
        } else {
            None
        };
        if let (Some(reason), None) = (reason, self.first_broken) {
            self.first_broken = Some(BrokenLink {
                seq: entry.seq,
                reason,
            });
        }
        self.rows += 1;
        self.last_seq = entry.seq;
        self.prev = entry.hash;
    }
}
