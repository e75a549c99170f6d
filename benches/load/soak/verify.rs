//! The final check: every key CreateKey acknowledged is described (and
//! Enabled), every ciphertext Encrypt or GenerateDataKey acknowledged
//! decrypts to its plaintext. An answer that is not 200 is retried while it is
//! transient (transport errors, throttling, 5xx); a definitive refusal
//! (NotFoundException, InvalidCiphertextException, ...) or a wrong plaintext
//! is a lost write.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::client::Conn;
use crate::soak::service::EndpointSlot;
use crate::soak::workload::{AckedCiphertext, Tenant, call_json, unb64};

/// Attempts per item while the answers are transient.
const ATTEMPTS: usize = 20;
/// Connections of the check.
const CONNECTIONS: usize = 16;

enum Item {
    Key {
        tenant: Arc<Tenant>,
        key_id: String,
    },
    Ciphertext {
        tenant: Arc<Tenant>,
        acked: Arc<AckedCiphertext>,
    },
}

/// What the check found.
#[derive(Default)]
pub(crate) struct Verdict {
    pub(crate) keys: usize,
    pub(crate) ciphertexts: usize,
    /// Items definitively missing or wrong, with why (the first few).
    pub(crate) lost: Vec<String>,
    pub(crate) lost_count: usize,
    /// Items still answered transiently after every attempt.
    pub(crate) unverified: Vec<String>,
    pub(crate) unverified_count: usize,
}

enum Outcome {
    Ok,
    Lost(String),
    Transient(String),
}

fn transient(status: u16, body: &Value) -> bool {
    let kind = body["__type"].as_str().unwrap_or_default();
    status >= 500 || kind.ends_with("ThrottlingException") || kind.ends_with("KMSInternalException")
}

async fn check(item: &Item, conn: &mut Option<Conn>, slot: &EndpointSlot) -> Outcome {
    let answered = match item {
        Item::Key { tenant, key_id } => {
            call_json(
                conn,
                slot,
                &tenant.admin,
                "TrentService.DescribeKey",
                &json!({ "KeyId": key_id }),
            )
            .await
        }
        Item::Ciphertext { tenant, acked } => {
            call_json(
                conn,
                slot,
                &tenant.user,
                "TrentService.Decrypt",
                &json!({ "CiphertextBlob": acked.blob, "EncryptionContext": acked.context }),
            )
            .await
        }
    };
    let (status, body) = match answered {
        Ok(answer) => answer,
        Err(e) => return Outcome::Transient(format!("{e:#}")),
    };
    if status != 200 {
        let what = format!("HTTP {status} {body}");
        return if transient(status, &body) {
            Outcome::Transient(what)
        } else {
            Outcome::Lost(what)
        };
    }
    match item {
        Item::Key { key_id, .. } => match body["KeyMetadata"]["KeyState"].as_str() {
            Some("Enabled") => Outcome::Ok,
            other => Outcome::Lost(format!("key {key_id} is {other:?}")),
        },
        Item::Ciphertext { acked, .. } => match body["Plaintext"].as_str().and_then(unb64) {
            Some(p) if p == acked.plaintext => Outcome::Ok,
            _ => Outcome::Lost(format!(
                "a ciphertext from {} does not decrypt to its plaintext",
                acked.from.name()
            )),
        },
    }
}

fn describe(item: &Item) -> String {
    match item {
        Item::Key { tenant, key_id } => format!("key {key_id} of tenant {}", tenant.id),
        Item::Ciphertext { tenant, acked } => format!("ciphertext from {} of tenant {}", acked.from.name(), tenant.id),
    }
}

pub(crate) async fn verify(tenants: &[Arc<Tenant>], slot: &EndpointSlot) -> Verdict {
    let mut items = Vec::new();
    let mut verdict = Verdict::default();
    for tenant in tenants {
        for key_id in tenant.keys() {
            verdict.keys += 1;
            items.push(Item::Key {
                tenant: Arc::clone(tenant),
                key_id,
            });
        }
        items.push(Item::Key {
            tenant: Arc::clone(tenant),
            key_id: tenant.policy_key.clone(),
        });
        verdict.keys += 1;
        for acked in tenant.all_ciphertexts() {
            verdict.ciphertexts += 1;
            items.push(Item::Ciphertext {
                tenant: Arc::clone(tenant),
                acked,
            });
        }
    }
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let verdict = Arc::new(Mutex::new(verdict));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (items, next, verdict, slot) = (
            Arc::clone(&items),
            Arc::clone(&next),
            Arc::clone(&verdict),
            Arc::clone(slot),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let mut last = String::new();
                let mut outcome = None;
                for attempt in 0..ATTEMPTS {
                    match check(item, &mut conn, &slot).await {
                        Outcome::Ok => {
                            outcome = Some(Ok(()));
                            break;
                        }
                        Outcome::Lost(why) => {
                            outcome = Some(Err(why));
                            break;
                        }
                        Outcome::Transient(why) => {
                            last = why;
                            // Back off (a load tool, not a test's synchronisation).
                            tokio::time::sleep(Duration::from_millis(100 * (attempt as u64 + 1))).await;
                        }
                    }
                }
                let mut v = verdict.lock().await;
                match outcome {
                    Some(Ok(())) => {}
                    Some(Err(why)) => {
                        v.lost_count += 1;
                        if v.lost.len() < 20 {
                            v.lost.push(format!("{}: {why}", describe(item)));
                        }
                    }
                    None => {
                        v.unverified_count += 1;
                        if v.unverified.len() < 20 {
                            v.unverified.push(format!("{}: {last}", describe(item)));
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    match Arc::try_unwrap(verdict) {
        Ok(v) => v.into_inner(),
        Err(shared) => std::mem::take(&mut *shared.lock().await),
    }
}
