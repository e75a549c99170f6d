//! The wire's store calls, validated and mapped onto a [`Backend`]: reads to
//! `get`/`list`, every kind of write (the unconditional `Put`, `PutBatch`,
//! `Delete` and the versioned `CasPut`, `Batch`) to one `commit`.

use std::collections::HashSet;
use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use keyward_wire::{Expected, StoreOp, StoreResult, StoreWrite, VersionedEntry};
use serde_bytes::ByteBuf;

use super::{Backend, CommitError, Expect, MAX_BATCH, MAX_LIST, Write, check_key, check_namespace};

/// How a commit's outcome is answered.
enum Reply {
    /// The pre-versioning writes: `Done`.
    Done,
    /// `CasPut` and `Batch`: `Committed` or `Conflict`.
    Versions,
}

/// Serves `op` on `backend`. Invalid input is answered with an error
/// without reaching the backend.
pub(super) fn serve(backend: Arc<dyn Backend>, op: StoreOp) -> BoxFuture<'static, StoreResult> {
    match plan(op) {
        Ok(Plan::Get {
            namespace,
            key,
            versioned,
        }) => backend
            .get(namespace, key)
            .map(move |r| match r {
                Ok(stored) if versioned => StoreResult::Versioned {
                    version: stored.version,
                    value: stored.value.map(ByteBuf::from),
                },
                Ok(stored) => StoreResult::Value(stored.value.map(ByteBuf::from)),
                Err(e) => failed(e),
            })
            .boxed(),
        Ok(Plan::List {
            namespace,
            prefix,
            start_after,
            limit,
            versioned,
        }) => backend
            .list(namespace, prefix, start_after, limit)
            .map(move |r| match r {
                Ok((entries, _)) if !versioned => {
                    StoreResult::Entries(entries.into_iter().map(|(k, _, v)| (k, ByteBuf::from(v))).collect())
                }
                Ok((entries, more)) => {
                    let next = if more {
                        entries.last().map(|(k, _, _)| k.clone())
                    } else {
                        None
                    };
                    StoreResult::Records {
                        entries: entries
                            .into_iter()
                            .map(|(key, version, value)| VersionedEntry {
                                key,
                                version,
                                value: ByteBuf::from(value),
                            })
                            .collect(),
                        next,
                    }
                }
                Err(e) => failed(e),
            })
            .boxed(),
        Ok(Plan::Commit { writes, reply }) if writes.is_empty() => futures::future::ready(match reply {
            Reply::Done => StoreResult::Done,
            Reply::Versions => StoreResult::Committed(Vec::new()),
        })
        .boxed(),
        Ok(Plan::Commit { writes, reply }) => backend
            .commit(writes)
            .map(move |r| match (r, reply) {
                (Ok(_), Reply::Done) => StoreResult::Done,
                (Ok(versions), Reply::Versions) => StoreResult::Committed(versions),
                (Err(CommitError::Conflict { index, current }), Reply::Versions) => StoreResult::Conflict {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    version: current.version,
                    exists: current.value.is_some(),
                },
                // Unconditional writes cannot conflict; a backend that says
                // so anyway has failed.
                (Err(CommitError::Conflict { .. }), Reply::Done) => failed("unexpected conflict".into()),
                (Err(CommitError::Failed(e)), _) => failed(e),
            })
            .boxed(),
        Err(e) => futures::future::ready(StoreResult::Error(e)).boxed(),
    }
}

fn failed(e: String) -> StoreResult {
    tracing::error!(error = %e, "store operation failed");
    StoreResult::Error(e)
}

enum Plan {
    Get {
        namespace: String,
        key: String,
        versioned: bool,
    },
    List {
        namespace: String,
        prefix: String,
        start_after: Option<String>,
        limit: usize,
        versioned: bool,
    },
    Commit {
        writes: Vec<Write>,
        reply: Reply,
    },
}

fn plan(op: StoreOp) -> Result<Plan, String> {
    let plan = match op {
        StoreOp::Get { namespace, key } => get(namespace, key, false)?,
        StoreOp::GetVersioned { namespace, key } => get(namespace, key, true)?,
        StoreOp::List {
            namespace,
            prefix,
            start_after,
            limit,
        } => list(namespace, prefix, start_after, limit, false)?,
        StoreOp::ListVersioned {
            namespace,
            prefix,
            start_after,
            limit,
        } => list(namespace, prefix, start_after, limit, true)?,
        StoreOp::Put { namespace, key, value } => Plan::Commit {
            writes: vec![write(namespace, key, Expect::Any, Some(value))?],
            reply: Reply::Done,
        },
        StoreOp::Delete { namespace, key } => Plan::Commit {
            writes: vec![write(namespace, key, Expect::Any, None)?],
            reply: Reply::Done,
        },
        StoreOp::PutBatch { namespace, entries } => {
            // Unconditional: a key given twice keeps its last value, as sled did.
            let mut last = std::collections::BTreeMap::new();
            for (key, value) in entries {
                last.insert(key, value.into_vec());
            }
            Plan::Commit {
                writes: last
                    .into_iter()
                    .map(|(key, value)| write(namespace.clone(), key, Expect::Any, Some(value)))
                    .collect::<Result<_, _>>()?,
                reply: Reply::Done,
            }
        }
        StoreOp::CasPut {
            namespace,
            key,
            expected,
            value,
        } => Plan::Commit {
            writes: vec![write(namespace, key, expect(expected)?, Some(value))?],
            reply: Reply::Versions,
        },
        StoreOp::Batch { writes } => {
            let writes = writes
                .into_iter()
                .map(|w| match w {
                    StoreWrite::Put {
                        namespace,
                        key,
                        expected,
                        value,
                    } => write(namespace, key, expect(expected)?, Some(value)),
                    StoreWrite::Delete {
                        namespace,
                        key,
                        expected,
                    } => write(namespace, key, Expect::Version(expected), None),
                    _ => Err("unsupported batch write".into()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut seen = HashSet::new();
            if !writes
                .iter()
                .all(|w| seen.insert((w.namespace.as_str(), w.key.as_str())))
            {
                return Err("a batch names one record twice".into());
            }
            Plan::Commit {
                writes,
                reply: Reply::Versions,
            }
        }
        _ => return Err("unsupported store operation".into()),
    };
    if let Plan::Commit { writes, .. } = &plan
        && writes.len() > MAX_BATCH
    {
        return Err(format!("more than {MAX_BATCH} writes in one call"));
    }
    Ok(plan)
}

fn expect(expected: Expected) -> Result<Expect, String> {
    match expected {
        Expected::Absent => Ok(Expect::Absent),
        Expected::Version(v) => Ok(Expect::Version(v)),
        _ => Err("unsupported expectation".into()),
    }
}

fn get(namespace: String, key: String, versioned: bool) -> Result<Plan, String> {
    check_namespace(&namespace)?;
    check_key(&key)?;
    Ok(Plan::Get {
        namespace,
        key,
        versioned,
    })
}

fn list(
    namespace: String,
    prefix: String,
    start_after: Option<String>,
    limit: u32,
    versioned: bool,
) -> Result<Plan, String> {
    check_namespace(&namespace)?;
    check_key(&prefix)?;
    if let Some(after) = &start_after {
        check_key(after)?;
    }
    Ok(Plan::List {
        namespace,
        prefix,
        start_after,
        limit: limit.min(MAX_LIST) as usize,
        versioned,
    })
}

fn write(namespace: String, key: String, expect: Expect, value: Option<Vec<u8>>) -> Result<Write, String> {
    check_namespace(&namespace)?;
    check_key(&key)?;
    Ok(Write {
        namespace,
        key,
        expect,
        value,
    })
}
