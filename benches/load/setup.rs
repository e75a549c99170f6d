//! What the runs need from the service before they start, created through its API (over one
//! connection of the load client itself, so that HTTPS or `--plain-http` holds for the setup as
//! for the runs): the keys (one guarded by a policy module for decrypt-policy), ciphertexts, a
//! mock attestation document for recipient-decrypt, and the request body of each operation; and
//! `--keys` extra keys.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::args::{Args, Op};
use crate::client::{Conn, Endpoint, Prepared, Signer, call, connect, send};

const ALLOW_ALL_WAT: &str = include_str!("../../tests/data/policy_allow_all.wat");

/// Keys and bodies for each operation, created through the API.
pub(crate) struct Setup {
    key_id: String,
    plaintext: Vec<u8>,
    ciphertext: Option<String>,
    policy_ciphertext: Option<String>,
    recipient_document: Option<String>,
    /// The encryption context of every Decrypt (with --policy-module).
    encryption_context: Option<Value>,
    size: usize,
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

impl Setup {
    pub(crate) async fn prepare(
        endpoint: &Endpoint,
        signer: &Signer,
        attestation_dir: Option<&Path>,
        ops: &[Op],
        args: &Args,
    ) -> anyhow::Result<Setup> {
        let mut client = Client {
            conn: connect(endpoint).await?,
            endpoint,
            signer,
        };
        let key_id = client.create_key("keyward-load").await?;
        let plaintext = vec![0x5a; args.size];
        let encryption_context = match &args.policy_module {
            Some(_) => {
                let described = client
                    .call("TrentService.DescribeKey", &json!({"KeyId": key_id}))
                    .await?;
                let tenant = described["KeyMetadata"]["AWSAccountId"]
                    .as_str()
                    .context("DescribeKey returned no AWSAccountId")?;
                Some(json!({ "tenant": tenant }))
            }
            None => None,
        };
        let needs_ciphertext = ops
            .iter()
            .any(|o| matches!(o, Op::Decrypt | Op::RecipientDecrypt | Op::Mixed));
        let ciphertext = if needs_ciphertext {
            Some(client.encrypt(&key_id, &plaintext, encryption_context.as_ref()).await?)
        } else {
            None
        };
        let policy_ciphertext = if ops.contains(&Op::DecryptPolicy) {
            let guarded = client.create_key("keyward-load: policy").await?;
            let module = match &args.policy_module {
                Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                None => wat::parse_str(ALLOW_ALL_WAT).context("allow-all WAT")?,
            };
            client
                .call(
                    "Keyward.PutKeyPolicyModule",
                    &json!({"KeyId": guarded, "Module": b64(&module)}),
                )
                .await?;
            Some(
                client
                    .encrypt(&guarded, &plaintext, encryption_context.as_ref())
                    .await?,
            )
        } else {
            None
        };
        let recipient_document = if ops.contains(&Op::RecipientDecrypt) {
            let dir = attestation_dir.context("recipient-decrypt needs --mock-attestation-dir (or --spawn)")?;
            let workload = keyward_sdk::recipient::RecipientKey::generate();
            let document = keyward_sdk::attestation::mock_document(
                dir,
                keyward_sdk::attestation::DEFAULT_MODULE_ID,
                &keyward_sdk::attestation::default_pcrs(),
                workload.public_key_der(),
                None,
            )?;
            if args.duration + args.warmup > 240.0 {
                eprintln!("note: recipient-decrypt runs longer than 4 minutes outlive the document's freshness");
            }
            Some(b64(&document))
        } else {
            None
        };
        Ok(Setup {
            key_id,
            plaintext,
            ciphertext,
            policy_ciphertext,
            recipient_document,
            encryption_context,
            size: args.size,
        })
    }

    pub(crate) fn body(&self, op: Op) -> anyhow::Result<Bytes> {
        let missing = || anyhow::anyhow!("no setup for {}", op.name());
        let value = match op {
            Op::GenerateDataKey => json!({"KeyId": self.key_id, "KeySpec": "AES_256"}),
            Op::CreateKey => json!({"Description": "keyward-load"}),
            Op::Mixed => anyhow::bail!("mixed has a body per part (Op::parts)"),
            Op::Encrypt => json!({"KeyId": self.key_id, "Plaintext": b64(&self.plaintext)}),
            Op::Decrypt => json!({"CiphertextBlob": self.ciphertext.as_ref().ok_or_else(missing)?}),
            Op::DecryptPolicy => json!({"CiphertextBlob": self.policy_ciphertext.as_ref().ok_or_else(missing)?}),
            Op::RecipientDecrypt => json!({
                "CiphertextBlob": self.ciphertext.as_ref().ok_or_else(missing)?,
                "Recipient": {
                    "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                    "AttestationDocument": self.recipient_document.as_ref().ok_or_else(missing)?,
                },
            }),
        };
        let _ = self.size;
        let mut value = value;
        if let (Some(context), Op::Decrypt | Op::DecryptPolicy | Op::RecipientDecrypt) = (&self.encryption_context, op)
        {
            value["EncryptionContext"] = context.clone();
        }
        Ok(Bytes::from(serde_json::to_vec(&value)?))
    }

    /// Bodies of the same sizes when only the baseline runs.
    pub(crate) fn standalone_body(op: Op, size: usize) -> Bytes {
        let key = "0f8f6a6e-1c84-4d86-9a37-3b8e6d1c2f10";
        // A ciphertext blob is 1 + 16 + 4 + 12 + size + 16 bytes.
        let blob = b64(&vec![1u8; 49 + size]);
        let value = match op {
            Op::GenerateDataKey | Op::Mixed => json!({"KeyId": key, "KeySpec": "AES_256"}),
            Op::CreateKey => json!({"Description": "keyward-load"}),
            Op::Encrypt => json!({"KeyId": key, "Plaintext": b64(&vec![0x5a; size])}),
            Op::Decrypt | Op::DecryptPolicy => json!({"CiphertextBlob": blob}),
            Op::RecipientDecrypt => json!({
                "CiphertextBlob": blob,
                "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b64(&[0u8; 4600])},
            }),
        };
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }
}

/// The setup's one connection to the service.
struct Client<'a> {
    conn: Conn,
    endpoint: &'a Endpoint,
    signer: &'a Signer,
}

impl Client<'_> {
    async fn call(&mut self, target: &'static str, request: &Value) -> anyhow::Result<Value> {
        call(&mut self.conn, self.endpoint, self.signer, target, request).await
    }

    async fn create_key(&mut self, description: &str) -> anyhow::Result<String> {
        let out = self
            .call("TrentService.CreateKey", &json!({"Description": description}))
            .await?;
        out["KeyMetadata"]["KeyId"]
            .as_str()
            .map(str::to_owned)
            .context("CreateKey returned no KeyId")
    }

    async fn encrypt(&mut self, key: &str, plaintext: &[u8], context: Option<&Value>) -> anyhow::Result<String> {
        let mut request = json!({"KeyId": key, "Plaintext": b64(plaintext)});
        if let Some(context) = context {
            request["EncryptionContext"] = context.clone();
        }
        let out = self.call("TrentService.Encrypt", &request).await?;
        out["CiphertextBlob"]
            .as_str()
            .map(str::to_owned)
            .context("Encrypt returned no CiphertextBlob")
    }
}

/// Creates `n` keys over 32 connections.
pub(crate) async fn populate(endpoint: &Endpoint, signer: &Signer, n: usize) -> anyhow::Result<()> {
    let prepared = Arc::new(Prepared {
        endpoint: endpoint.clone(),
        target: "TrentService.CreateKey",
        body: Bytes::from_static(b"{}"),
    });
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (prepared, signer, next) = (Arc::clone(&prepared), signer.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&prepared.endpoint).await?;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let (status, body) = send(&mut conn, &prepared, &signer).await?;
                if status != 200 {
                    bail!("CreateKey answered {status}: {}", String::from_utf8_lossy(&body));
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "created {n} keys in {:.1} s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
