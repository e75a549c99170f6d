//! The soak's load: tenants (the dev tenant plus tenants the operator
//! creates, each with a KeyAdmin and a KeyUser credential, a key guarded by
//! the allow-all policy module and a first ciphertext), and the workers that
//! send a mix of operations ([`SoakOp`]) as these tenants, recording every
//! acknowledged write ([`Acked`]: keys from CreateKey, ciphertexts from
//! Encrypt and GenerateDataKey with their plaintexts) and every request's
//! outcome ([`Event`]).

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use rand::Rng as _;
use serde_json::{Value, json};

use crate::client::{Conn, Endpoint, Prepared, Signer, connect, send};
use crate::soak::service::{EndpointSlot, current};

const ALLOW_ALL_WAT: &str = include_str!("../../../tests/data/policy_allow_all.wat");
/// A request not answered within this is counted as an error (`timeout`).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text).ok()
}

/// The operations of the mix, with their weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SoakOp {
    GenerateDataKey,
    Encrypt,
    Decrypt,
    DecryptPolicy,
    RecipientDecrypt,
    CreateKey,
}

impl SoakOp {
    pub(crate) const ALL: [SoakOp; 6] = [
        SoakOp::GenerateDataKey,
        SoakOp::Encrypt,
        SoakOp::Decrypt,
        SoakOp::DecryptPolicy,
        SoakOp::RecipientDecrypt,
        SoakOp::CreateKey,
    ];

    /// Out of 100.
    fn weight(self) -> u32 {
        match self {
            SoakOp::GenerateDataKey => 25,
            SoakOp::Encrypt => 20,
            SoakOp::Decrypt => 25,
            SoakOp::DecryptPolicy => 12,
            SoakOp::RecipientDecrypt => 12,
            SoakOp::CreateKey => 6,
        }
    }

    fn pick(roll: u32) -> SoakOp {
        let mut left = roll % 100;
        for op in SoakOp::ALL {
            if left < op.weight() {
                return op;
            }
            left -= op.weight();
        }
        SoakOp::Decrypt
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            SoakOp::GenerateDataKey => "generate-data-key",
            SoakOp::Encrypt => "encrypt",
            SoakOp::Decrypt => "decrypt",
            SoakOp::DecryptPolicy => "decrypt-policy",
            SoakOp::RecipientDecrypt => "recipient-decrypt",
            SoakOp::CreateKey => "create-key",
        }
    }
}

/// A ciphertext the service acknowledged, and what it must decrypt to.
pub(crate) struct AckedCiphertext {
    pub(crate) blob: String,
    pub(crate) plaintext: Vec<u8>,
    pub(crate) context: Value,
    /// The operation that produced it.
    pub(crate) from: SoakOp,
}

/// One tenant's credentials and what it has been acknowledged.
pub(crate) struct Tenant {
    pub(crate) id: String,
    /// KeyAdmin (CreateKey, DescribeKey, PutKeyPolicyModule).
    pub(crate) admin: Signer,
    /// KeyUser (the cryptographic operations).
    pub(crate) user: Signer,
    /// Keys acknowledged by CreateKey (the setup's included).
    pub(crate) keys: Mutex<Vec<String>>,
    /// The key guarded by the allow-all policy module.
    pub(crate) policy_key: String,
    /// Acknowledged ciphertexts under ordinary keys.
    pub(crate) ciphertexts: Mutex<Vec<Arc<AckedCiphertext>>>,
    /// Acknowledged ciphertexts under the policy key.
    pub(crate) policy_ciphertexts: Mutex<Vec<Arc<AckedCiphertext>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_of<T: Clone>(items: &Mutex<Vec<T>>) -> Option<T> {
    let items = lock(items);
    if items.is_empty() {
        return None;
    }
    Some(items[rand::thread_rng().gen_range(0..items.len())].clone())
}

impl Tenant {
    pub(crate) fn keys(&self) -> Vec<String> {
        lock(&self.keys).clone()
    }

    pub(crate) fn all_ciphertexts(&self) -> Vec<Arc<AckedCiphertext>> {
        let mut all = lock(&self.ciphertexts).clone();
        all.extend(lock(&self.policy_ciphertexts).iter().cloned());
        all
    }
}

/// One request's outcome.
pub(crate) struct Event {
    /// Since the start of the soak, when it was sent.
    pub(crate) at: Duration,
    pub(crate) op: SoakOp,
    pub(crate) latency: Duration,
    /// `None`: answered 200 (and, where checked, correct).
    pub(crate) error: Option<String>,
}

/// A call over one connection of the setup or the final check, with the
/// endpoint of the moment.
pub(crate) async fn call_json(
    conn: &mut Option<Conn>,
    slot: &EndpointSlot,
    signer: &Signer,
    target: &'static str,
    request: &Value,
) -> anyhow::Result<(u16, Value)> {
    let endpoint = current(slot);
    let (status, body) = request_once(conn, &endpoint, signer, target, request).await?;
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((status, value))
}

/// One request over `conn` (connected first if need be; dropped after a
/// transport error so that the next request connects again).
async fn request_once(
    conn: &mut Option<Conn>,
    endpoint: &Endpoint,
    signer: &Signer,
    target: &'static str,
    request: &Value,
) -> anyhow::Result<(u16, Bytes)> {
    let prepared = Prepared {
        endpoint: endpoint.clone(),
        target,
        body: Bytes::from(serde_json::to_vec(request)?),
    };
    let attempt = async {
        if conn.is_none() {
            *conn = Some(connect(endpoint).await?);
        }
        match conn.as_mut() {
            Some(c) => send(c, &prepared, signer).await,
            None => bail!("no connection"),
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => {
            *conn = None;
            Err(e)
        }
        Err(_) => {
            *conn = None;
            bail!("timeout")
        }
    }
}

/// A setup call that must succeed.
async fn must(
    conn: &mut Option<Conn>,
    slot: &EndpointSlot,
    signer: &Signer,
    target: &'static str,
    request: &Value,
) -> anyhow::Result<Value> {
    let (status, value) = call_json(conn, slot, signer, target, request).await?;
    if status != 200 {
        bail!("{target} answered {status}: {value}");
    }
    Ok(value)
}

fn str_field(value: &Value, path: &[&str]) -> anyhow::Result<String> {
    let mut v = value;
    for p in path {
        v = &v[*p];
    }
    v.as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {} in {value}", path.join(".")))
}

/// Creates the tenants (the dev tenant first) with their first keys and ciphertexts.
pub(crate) async fn setup_tenants(
    slot: &EndpointSlot,
    dev: &Signer,
    operator: &Signer,
    count: usize,
) -> anyhow::Result<Vec<Arc<Tenant>>> {
    let mut conn = None;
    let mut tenants = Vec::with_capacity(count);
    let module = wat::parse_str(ALLOW_ALL_WAT).context("allow-all WAT")?;
    for i in 0..count {
        let (id, admin, user) = if i == 0 {
            ("dev".to_owned(), dev.clone(), dev.clone())
        } else {
            let id: String = (0..12)
                .map(|_| char::from(b'0' + rand::thread_rng().gen_range(0..10u8)))
                .collect();
            let created = must(
                &mut conn,
                slot,
                operator,
                "Keyward.CreateTenant",
                &json!({ "TenantId": id }),
            )
            .await?;
            let admin = Signer {
                access_key_id: str_field(&created, &["AccessKeyId"])?,
                secret: str_field(&created, &["SecretAccessKey"])?,
                region: dev.region.clone(),
            };
            let user = must(
                &mut conn,
                slot,
                &admin,
                "Keyward.CreateAccessKey",
                &json!({ "Role": "KeyUser" }),
            )
            .await?;
            let user = Signer {
                access_key_id: str_field(&user, &["AccessKeyId"])?,
                secret: str_field(&user, &["SecretAccessKey"])?,
                region: dev.region.clone(),
            };
            (id, admin, user)
        };
        let create = |description: String| json!({ "Description": description });
        let key = str_field(
            &must(
                &mut conn,
                slot,
                &admin,
                "TrentService.CreateKey",
                &create(format!("soak {id}")),
            )
            .await?,
            &["KeyMetadata", "KeyId"],
        )?;
        let policy_key = str_field(
            &must(
                &mut conn,
                slot,
                &admin,
                "TrentService.CreateKey",
                &create(format!("soak {id}: policy")),
            )
            .await?,
            &["KeyMetadata", "KeyId"],
        )?;
        must(
            &mut conn,
            slot,
            &admin,
            "Keyward.PutKeyPolicyModule",
            &json!({ "KeyId": policy_key, "Module": b64(&module) }),
        )
        .await?;
        let tenant = Tenant {
            id,
            admin,
            user,
            keys: Mutex::new(vec![key.clone()]),
            policy_key: policy_key.clone(),
            ciphertexts: Mutex::new(Vec::new()),
            policy_ciphertexts: Mutex::new(Vec::new()),
        };
        for (key, pool) in [(&key, &tenant.ciphertexts), (&policy_key, &tenant.policy_ciphertexts)] {
            let plaintext = random_plaintext();
            let context = json!({ "soak": "setup" });
            let out = must(
                &mut conn,
                slot,
                &tenant.user,
                "TrentService.Encrypt",
                &json!({ "KeyId": key, "Plaintext": b64(&plaintext), "EncryptionContext": context }),
            )
            .await?;
            lock(pool).push(Arc::new(AckedCiphertext {
                blob: str_field(&out, &["CiphertextBlob"])?,
                plaintext,
                context,
                from: SoakOp::Encrypt,
            }));
        }
        tenants.push(Arc::new(tenant));
    }
    Ok(tenants)
}

fn random_plaintext() -> Vec<u8> {
    let mut rng = rand::thread_rng();
    let len = rng.gen_range(1..=256);
    (0..len).map(|_| rng.r#gen::<u8>()).collect()
}

/// The recipient of recipient-decrypt: its key, and a mock attestation
/// document for it, renewed before it goes stale.
pub(crate) struct Recipient {
    pub(crate) key: keyward_sdk::recipient::RecipientKey,
    pub(crate) document: RwLock<String>,
}

impl Recipient {
    pub(crate) fn new(mock_attestation_dir: &std::path::Path) -> anyhow::Result<Recipient> {
        let key = keyward_sdk::recipient::RecipientKey::generate();
        let document = RwLock::new(String::new());
        let recipient = Recipient { key, document };
        recipient.renew(mock_attestation_dir)?;
        Ok(recipient)
    }

    /// A fresh document (they are fresh for a few minutes).
    pub(crate) fn renew(&self, mock_attestation_dir: &std::path::Path) -> anyhow::Result<()> {
        let document = keyward_sdk::attestation::mock_document(
            mock_attestation_dir,
            keyward_sdk::attestation::DEFAULT_MODULE_ID,
            &keyward_sdk::attestation::default_pcrs(),
            self.key.public_key_der(),
            None,
        )?;
        *self.document.write().unwrap_or_else(PoisonError::into_inner) = b64(&document);
        Ok(())
    }

    fn document(&self) -> String {
        self.document.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// What every worker shares.
pub(crate) struct Shared {
    pub(crate) slot: EndpointSlot,
    pub(crate) recipient: Recipient,
    pub(crate) started: Instant,
    pub(crate) until: Instant,
    /// Seconds between two requests of one worker (`None`: back to back).
    pub(crate) interval: Option<Duration>,
}

/// One worker: requests of `tenant`, one at a time, until `shared.until`.
pub(crate) async fn worker(tenant: Arc<Tenant>, shared: Arc<Shared>) -> Vec<Event> {
    let mut events = Vec::new();
    let mut conn: Option<Conn> = None;
    let mut ticker = shared.interval.map(|every| {
        let mut t = tokio::time::interval_at(
            tokio::time::Instant::now() + every.mul_f64(rand::thread_rng().r#gen::<f64>()),
            every,
        );
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut serial = 0u64;
    loop {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let sent = Instant::now();
        if sent >= shared.until {
            break;
        }
        serial += 1;
        let op = SoakOp::pick(rand::thread_rng().gen_range(0..100));
        let error = one(op, &tenant, &shared, &mut conn, serial).await.err();
        events.push(Event {
            at: sent.duration_since(shared.started),
            op,
            latency: sent.elapsed(),
            error,
        });
    }
    events
}

/// The error kind of an answer that is not 200: `HTTP <status> <__type>`.
fn error_kind(status: u16, body: &[u8]) -> String {
    let kind = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v["__type"]
                .as_str()
                .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
        })
        .unwrap_or_else(|| "(no __type)".into());
    format!("HTTP {status} {kind}")
}

/// One operation; `Err` names the error kind.
async fn one(op: SoakOp, tenant: &Tenant, shared: &Shared, conn: &mut Option<Conn>, serial: u64) -> Result<(), String> {
    let endpoint = current(&shared.slot);
    let (signer, target, request, check): (&Signer, &'static str, Value, Check) = match op {
        SoakOp::CreateKey => (
            &tenant.admin,
            "TrentService.CreateKey",
            json!({ "Description": format!("soak {} #{serial}", tenant.id) }),
            Check::KeyCreated,
        ),
        SoakOp::GenerateDataKey | SoakOp::Encrypt => {
            let to_policy_key = op == SoakOp::Encrypt && serial.is_multiple_of(4);
            let key = if to_policy_key {
                tenant.policy_key.clone()
            } else {
                random_of(&tenant.keys).ok_or("no key")?
            };
            let context = json!({ "soak": format!("{}-{serial}", op.name()) });
            if op == SoakOp::Encrypt {
                let plaintext = random_plaintext();
                let request = json!({ "KeyId": key, "Plaintext": b64(&plaintext), "EncryptionContext": context });
                (
                    &tenant.user,
                    "TrentService.Encrypt",
                    request,
                    Check::Encrypted {
                        plaintext: Some(plaintext),
                        context,
                        to_policy_key,
                    },
                )
            } else {
                let request = json!({ "KeyId": key, "KeySpec": "AES_256", "EncryptionContext": context });
                (
                    &tenant.user,
                    "TrentService.GenerateDataKey",
                    request,
                    Check::Encrypted {
                        plaintext: None,
                        context,
                        to_policy_key,
                    },
                )
            }
        }
        SoakOp::Decrypt | SoakOp::DecryptPolicy | SoakOp::RecipientDecrypt => {
            let pool = if op == SoakOp::DecryptPolicy {
                &tenant.policy_ciphertexts
            } else {
                &tenant.ciphertexts
            };
            let acked = random_of(pool).ok_or("no ciphertext")?;
            let mut request = json!({ "CiphertextBlob": acked.blob, "EncryptionContext": acked.context });
            if op == SoakOp::RecipientDecrypt {
                request["Recipient"] = json!({
                    "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                    "AttestationDocument": shared.recipient.document(),
                });
            }
            (
                &tenant.user,
                "TrentService.Decrypt",
                request,
                Check::Decrypted {
                    acked,
                    recipient: op == SoakOp::RecipientDecrypt,
                },
            )
        }
    };
    let (status, body) = request_once(conn, &endpoint, signer, target, &request)
        .await
        .map_err(|e| {
            let text = format!("{e:#}");
            if text == "timeout" {
                text
            } else {
                "transport".to_owned()
            }
        })?;
    if status != 200 {
        return Err(error_kind(status, &body));
    }
    let out: Value = serde_json::from_slice(&body).map_err(|_| "200 without JSON".to_owned())?;
    check.apply(&out, tenant, &shared.recipient)
}

/// What a 200 must hold, and what it acknowledges.
enum Check {
    KeyCreated,
    Encrypted {
        /// `None`: GenerateDataKey (the plaintext is the answer's).
        plaintext: Option<Vec<u8>>,
        context: Value,
        to_policy_key: bool,
    },
    Decrypted {
        acked: Arc<AckedCiphertext>,
        recipient: bool,
    },
}

impl Check {
    fn apply(self, out: &Value, tenant: &Tenant, recipient: &Recipient) -> Result<(), String> {
        match self {
            Check::KeyCreated => {
                let id = out["KeyMetadata"]["KeyId"].as_str().ok_or("200 without KeyId")?;
                lock(&tenant.keys).push(id.to_owned());
            }
            Check::Encrypted {
                plaintext,
                context,
                to_policy_key,
            } => {
                let blob = out["CiphertextBlob"].as_str().ok_or("200 without CiphertextBlob")?;
                let (plaintext, from) = match plaintext {
                    Some(p) => (p, SoakOp::Encrypt),
                    None => (
                        out["Plaintext"]
                            .as_str()
                            .and_then(unb64)
                            .ok_or("200 without Plaintext")?,
                        SoakOp::GenerateDataKey,
                    ),
                };
                let pool = if to_policy_key {
                    &tenant.policy_ciphertexts
                } else {
                    &tenant.ciphertexts
                };
                lock(pool).push(Arc::new(AckedCiphertext {
                    blob: blob.to_owned(),
                    plaintext,
                    context,
                    from,
                }));
            }
            Check::Decrypted {
                acked,
                recipient: false,
            } => {
                let plaintext = out["Plaintext"]
                    .as_str()
                    .and_then(unb64)
                    .ok_or("200 without Plaintext")?;
                if plaintext != acked.plaintext {
                    return Err("WRONG PLAINTEXT".into());
                }
            }
            Check::Decrypted { acked, recipient: true } => {
                let envelope = out["CiphertextForRecipient"]
                    .as_str()
                    .and_then(unb64)
                    .ok_or("200 without CiphertextForRecipient")?;
                let opened = recipient
                    .key
                    .open(&envelope)
                    .map_err(|_| "CiphertextForRecipient does not open".to_owned())?;
                if opened.as_slice() != acked.plaintext.as_slice() {
                    return Err("WRONG PLAINTEXT (recipient)".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_covers_every_operation_by_its_weight() {
        assert_eq!(SoakOp::ALL.iter().map(|op| op.weight()).sum::<u32>(), 100);
        let mut counts = [0u32; 6];
        for roll in 0..100 {
            counts[SoakOp::pick(roll) as usize] += 1;
        }
        for op in SoakOp::ALL {
            assert_eq!(counts[op as usize], op.weight(), "{}", op.name());
        }
    }

    #[test]
    fn error_kinds_name_status_and_type() {
        let body = br#"{"__type":"com.amazonaws.kms#ThrottlingException","message":"slow down"}"#;
        assert_eq!(error_kind(400, body), "HTTP 400 ThrottlingException");
        assert_eq!(error_kind(502, b"bad gateway"), "HTTP 502 (no __type)");
    }
}
