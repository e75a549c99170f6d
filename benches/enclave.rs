//! Micro-benchmarks of the enclave's hot path, in process:
//! `cargo bench --bench enclave`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keyward_enclave::keys::blob::{self, BlobHeader};
use keyward_enclave::keys::context::EncryptionContext;
use keyward_enclave::seal::Sealer;
use keyward_enclave::secret::Key256;
use keyward_test_support::enclave::mock_enclave;
use keyward_test_support::policies::example_policy;
use keyward_wire::{ApiRequest, Frame};

fn ciphertext_blob(c: &mut Criterion) {
    let material = Key256::generate();
    let context = EncryptionContext::new([("purpose".to_string(), "bench".to_string())].into_iter().collect())
        .expect("valid context");
    let header = BlobHeader {
        key_id: uuid::Uuid::new_v4(),
        key_version: 1,
    };
    let mut group = c.benchmark_group("blob");
    for size in [32usize, 4096] {
        let plaintext = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |b, p| {
            b.iter(|| blob::seal(header, &material, &context, black_box(p)).expect("seals"))
        });
        let sealed = blob::seal(header, &material, &context, &plaintext).expect("seals");
        group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| blob::open(black_box(s), &material, &context).expect("opens"))
        });
    }
    group.finish();
}

fn record_sealing(c: &mut Criterion) {
    let sealer = Sealer::new(Arc::new(Key256::generate()));
    let record = vec![1u8; 512];
    let sealed = sealer.seal("key", "111122223333/0f8f", 1, &record).expect("seals");
    c.bench_function("seal/record-512B", |b| {
        b.iter(|| {
            sealer
                .seal("key", "111122223333/0f8f", 1, black_box(&record))
                .expect("seals")
        })
    });
    c.bench_function("open/record-512B", |b| {
        b.iter(|| {
            sealer
                .open("key", "111122223333/0f8f", 1, black_box(&sealed))
                .expect("opens")
        })
    });
}

/// The authenticated index (issue 19), through the public store layer
/// (`Records`): a read of one 512 B record, and a write of it, with and
/// without the index, in a tenant scope holding `RECORDS` records (about 4
/// per bucket), each time a new `Records` (as each request is) and without
/// the record cache. Over two stores: the in-memory one (`memory`: the
/// index's CPU cost alone: the bucket lookup and the SHA-256 of the sealed
/// bytes on a read, plus the scope root re-read every 500 ms; the bucket and
/// the 8 KiB root sealed into the batch on a write) and the embedded SQLite
/// store of `keyward dev` (`sqlite`: the same in a durable commit, where the
/// fsync dominates and the index adds bytes, not a round trip).
///
/// `write-512B` times only the write: the record is read (its version is
/// what the write compares and swaps) by the untimed setup of each iteration.
fn authenticated_index(c: &mut Criterion) {
    use keyward_enclave::bootstrap::Keyring;
    use keyward_enclave::store::{MemoryStore, StoreTransport};
    const RECORDS: usize = 1000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let key = format!("{BENCH_TENANT}/0500");
    for store_kind in ["memory", "sqlite"] {
        let mut group = c.benchmark_group(format!("index/{store_kind}"));
        if store_kind == "sqlite" {
            // A durable commit takes milliseconds.
            group.sample_size(20);
        }
        for indexed in [false, true] {
            let label = if indexed { "indexed" } else { "unindexed" };
            let store: Arc<dyn StoreTransport> = match store_kind {
                "memory" => MemoryStore::new(),
                _ => Arc::new(EmbeddedStore(
                    keyward_proxy::Store::embedded(&dir.path().join(label), None).expect("embedded store"),
                )),
            };
            let store = &*store;
            let keyring = Keyring::new(Key256::generate());
            runtime.block_on(async {
                for i in 0..RECORDS {
                    index_records(store, &keyring, indexed)
                        .put("key", &format!("{BENCH_TENANT}/{i:04}"), &vec![1u8; 512])
                        .await
                        .expect("put");
                }
            });
            // The indexed runs do maintain the tenant's index (one epoch per write).
            let epoch = keyring.index.scope_epoch(BENCH_TENANT);
            assert!(
                if indexed { epoch >= RECORDS as u64 } else { epoch == 0 },
                "{label}: index epoch {epoch}"
            );
            group.bench_function(format!("read-512B/{label}"), |b| {
                b.iter(|| {
                    runtime
                        .block_on(index_records(store, &keyring, indexed).get::<Vec<u8>>("key", black_box(&key)))
                        .expect("get")
                })
            });
            group.bench_function(format!("write-512B/{label}"), |b| {
                b.iter_batched(
                    || {
                        let records = index_records(store, &keyring, indexed);
                        let value: Vec<u8> = runtime
                            .block_on(records.get("key", &key))
                            .expect("get")
                            .expect("exists");
                        (records, value)
                    },
                    |(records, value)| runtime.block_on(records.put("key", &key, &value)).expect("put"),
                    BatchSize::PerIteration,
                )
            });
        }
        group.finish();
    }
}

/// The embedded SQLite store of the host, called in process (no wire).
struct EmbeddedStore(keyward_proxy::Store);

impl keyward_enclave::store::StoreTransport for EmbeddedStore {
    fn call(&self, op: keyward_wire::StoreOp) -> keyward_enclave::store::StoreFuture<'_> {
        let answer = self.0.call(op);
        Box::pin(async move { Ok(answer.await) })
    }
}

/// Records over `store`, checked against `keyring`'s index or not.
fn index_records<'a>(
    store: &'a dyn keyward_enclave::store::StoreTransport,
    keyring: &'a keyward_enclave::bootstrap::Keyring,
    indexed: bool,
) -> keyward_enclave::store::Records<'a> {
    let records = keyward_enclave::store::Records::new(store, &keyring.sealer);
    if indexed {
        records.with_index(&keyring.index)
    } else {
        records
    }
}

fn frame_codec(c: &mut Criterion) {
    let frame = Frame::Request {
        id: 42,
        request: ApiRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: (0..8)
                .map(|i| (format!("x-header-{i}"), serde_bytes::ByteBuf::from(vec![b'v'; 40])))
                .collect(),
            body: vec![b'{'; 256],
            client_addr: None,
        },
    };
    let encoded = keyward_wire::encode(&frame).expect("encodes");
    c.bench_function("wire/encode-request", |b| {
        b.iter(|| keyward_wire::encode(black_box(&frame)).expect("encodes"))
    });
    c.bench_function("wire/decode-request", |b| {
        b.iter(|| keyward_wire::decode(black_box(&encoded[4..])).expect("decodes"))
    });
}

/// A recipient's attestation document: cold (a fresh verifier checks the whole
/// chain: 3 certificate signatures + the document's) and cached (the chain is
/// known: one ES384 verification).
fn attestation(c: &mut Criterion) {
    use keyward_attestation::mock::{MockAttester, MockPki};
    use keyward_attestation::verify::{Expectations, TrustAnchor, Verifier};
    let pki = MockPki::ephemeral().expect("mock pki");
    let anchor = TrustAnchor::from_der(pki.root_der()).expect("anchor");
    let now = time::OffsetDateTime::now_utc();
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as u64;
    let recipient = keyward_sdk::recipient::RecipientKey::generate();
    let attester = MockAttester::new(pki);
    let document = attester
        .attest(None, None, Some(recipient.public_key_der()), now_ms)
        .expect("document");
    let expect = Expectations {
        max_age: None,
        ..Expectations::default()
    };
    c.bench_function("attestation/verify-cold", |b| {
        b.iter(|| {
            Verifier::new(anchor.clone())
                .verify(black_box(&document), now, &expect)
                .expect("verifies")
        })
    });
    let verifier = Verifier::new(anchor.clone());
    c.bench_function("attestation/verify-cached", |b| {
        b.iter(|| verifier.verify(black_box(&document), now, &expect).expect("verifies"))
    });
    let data_key = [7u8; 32];
    c.bench_function("recipient/cms-envelope-rsa2048", |b| {
        b.iter(|| {
            keyward_enclave::attestation::recipient::envelope(recipient.public_key_der(), black_box(&data_key))
                .expect("envelope")
        })
    });
}

/// Whole operations in the enclave, against an in-memory store: parameter
/// parsing, key lookup (unsealing the record, unwrapping the material), the
/// cryptography and the JSON answer — everything but SigV4, the audit append
/// and the two process hops.
fn operations(c: &mut Criterion) {
    use keyward_attestation::mock::{MockAttester, MockPki};
    use keyward_attestation::verify::{TrustAnchor, Verifier};
    use keyward_enclave::api::{crypto, keys};
    use keyward_enclave::store::MemoryStore;
    use serde_json::json;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pki = MockPki::ephemeral().expect("mock pki");
    let anchor = TrustAnchor::from_der(pki.root_der()).expect("anchor");
    let enclave = mock_enclave().with_verifier(Verifier::new(anchor));
    let store = MemoryStore::new();
    let ctx = bench_ctx(&runtime, &enclave, &store);
    let created = runtime.block_on(keys::create_key(&ctx, json!({}))).expect("key");
    let key_id = created["KeyMetadata"]["KeyId"].as_str().expect("id").to_owned();
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let encrypt = json!({ "KeyId": key_id, "Plaintext": b64(&[1u8; 32]) });
    let ciphertext = runtime.block_on(crypto::encrypt(&ctx, encrypt.clone())).expect("enc")["CiphertextBlob"].clone();
    let recipient = keyward_sdk::recipient::RecipientKey::generate();
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
    let document = MockAttester::new(pki)
        .attest(None, None, Some(recipient.public_key_der()), now_ms)
        .expect("doc");
    let with_recipient = json!({
        "CiphertextBlob": ciphertext,
        "Recipient": { "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b64(&document) },
    });

    c.bench_function("api/encrypt-32B", |b| {
        b.iter(|| runtime.block_on(crypto::encrypt(&ctx, encrypt.clone())))
    });
    c.bench_function("api/decrypt-32B", |b| {
        b.iter(|| runtime.block_on(crypto::decrypt(&ctx, json!({ "CiphertextBlob": ciphertext }))))
    });
    c.bench_function("api/generate-data-key", |b| {
        b.iter(|| {
            runtime.block_on(crypto::generate_data_key(
                &ctx,
                json!({ "KeyId": key_id, "KeySpec": "AES_256" }),
                true,
            ))
        })
    });
    c.bench_function("api/decrypt-recipient-cached-chain", |b| {
        b.iter(|| {
            runtime
                .block_on(crypto::decrypt(&ctx, with_recipient.clone()))
                .expect("decrypts")
        })
    });
}

/// More whole operations in the enclave (as in [`operations`]): 4 KiB
/// Encrypt/Decrypt, ReEncrypt, ECDSA P-256 Sign/Verify, HMAC GenerateMac.
fn operations_more(c: &mut Criterion) {
    use keyward_enclave::api::{asymmetric, crypto, keys, mac};
    use keyward_enclave::store::MemoryStore;
    use serde_json::json;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let enclave = mock_enclave();
    let store = MemoryStore::new();
    let ctx = bench_ctx(&runtime, &enclave, &store);
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let key = |body: serde_json::Value| -> String {
        let created = runtime.block_on(keys::create_key(&ctx, body)).expect("key");
        created["KeyMetadata"]["KeyId"].as_str().expect("id").to_owned()
    };
    let symmetric = key(json!({}));
    let other = key(json!({}));
    let ecc = key(json!({ "KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY" }));
    let hmac = key(json!({ "KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC" }));

    let mut group = c.benchmark_group("api");
    let encrypt_4k = json!({ "KeyId": symmetric, "Plaintext": b64(&[1u8; 4096]) });
    let blob_4k = runtime
        .block_on(crypto::encrypt(&ctx, encrypt_4k.clone()))
        .expect("enc")["CiphertextBlob"]
        .clone();
    group.bench_function("encrypt-4KiB", |b| {
        b.iter(|| {
            runtime
                .block_on(crypto::encrypt(&ctx, encrypt_4k.clone()))
                .expect("encrypts")
        })
    });
    group.bench_function("decrypt-4KiB", |b| {
        b.iter(|| {
            runtime
                .block_on(crypto::decrypt(&ctx, json!({ "CiphertextBlob": blob_4k })))
                .expect("decrypts")
        })
    });
    let blob_32 = runtime
        .block_on(crypto::encrypt(
            &ctx,
            json!({ "KeyId": symmetric, "Plaintext": b64(&[1u8; 32]) }),
        ))
        .expect("enc")["CiphertextBlob"]
        .clone();
    group.bench_function("re-encrypt-32B", |b| {
        b.iter(|| {
            runtime
                .block_on(crypto::re_encrypt(
                    &ctx,
                    json!({ "CiphertextBlob": blob_32, "DestinationKeyId": other }),
                ))
                .expect("re-encrypts")
        })
    });
    let message = b64(b"keyward benchmark message");
    let sign = json!({ "KeyId": ecc, "Message": message, "SigningAlgorithm": "ECDSA_SHA_256" });
    let signature = runtime.block_on(asymmetric::sign(&ctx, sign.clone())).expect("sign")["Signature"].clone();
    group.bench_function("sign-ecdsa-p256", |b| {
        b.iter(|| runtime.block_on(asymmetric::sign(&ctx, sign.clone())).expect("signs"))
    });
    let verify =
        json!({ "KeyId": ecc, "Message": message, "SigningAlgorithm": "ECDSA_SHA_256", "Signature": signature });
    group.bench_function("verify-ecdsa-p256", |b| {
        b.iter(|| {
            runtime
                .block_on(asymmetric::verify(&ctx, verify.clone()))
                .expect("verifies")
        })
    });
    let generate_mac = json!({ "KeyId": hmac, "Message": message, "MacAlgorithm": "HMAC_SHA_256" });
    group.bench_function("generate-mac-hmac256", |b| {
        b.iter(|| {
            runtime
                .block_on(mac::generate_mac(&ctx, generate_mac.clone()))
                .expect("macs")
        })
    });
    group.finish();
}

/// SigV4 verification of a GenerateDataKey request as `aws-sigv4` signs it:
/// parse + derive the signing key + verify (a cold credential), and parse +
/// verify with the day's signing key already derived (what the enclave's
/// cache gives a warm credential).
fn sigv4(c: &mut Criterion) {
    use keyward_enclave::auth::sigv4::{self, SignedRequest, SigningKey};

    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let body = br#"{"KeyId":"0f8f6a6e-1c84-4d86-9a37-3b8e6d1c2f10","KeySpec":"AES_256"}"#.to_vec();
    let creds = keyward_test_support::Creds {
        access_key_id: "AKIABENCHBENCHBENCH0".into(),
        secret: secret.into(),
    };
    let mut headers = keyward_test_support::sigv4::api_headers("127.0.0.1:7800", "TrentService.GenerateDataKey");
    keyward_test_support::sigv4::sign_headers(
        &mut headers,
        "127.0.0.1:7800",
        &body,
        &creds,
        std::time::SystemTime::now(),
    );
    let headers: Vec<(String, serde_bytes::ByteBuf)> = headers
        .into_iter()
        .map(|(n, v)| (n, serde_bytes::ByteBuf::from(v.into_bytes())))
        .collect();
    let request = SignedRequest {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: &body,
    };
    let now = time::OffsetDateTime::now_utc();
    let auth = sigv4::parse(&request).expect("parses");
    let key = SigningKey::derive(secret.as_bytes(), &auth.scope_date, "us-east-1", "kms");
    sigv4::verify(&request, &auth, &key, now, "us-east-1", "kms").expect("verifies");
    let mut group = c.benchmark_group("sigv4");
    group.bench_function("verify-cold-key", |b| {
        b.iter(|| {
            let auth = sigv4::parse(black_box(&request)).expect("parses");
            let key = SigningKey::derive(secret.as_bytes(), &auth.scope_date, "us-east-1", "kms");
            sigv4::verify(&request, &auth, &key, now, "us-east-1", "kms").expect("verifies")
        })
    });
    group.bench_function("verify-cached-key", |b| {
        b.iter(|| {
            let auth = sigv4::parse(black_box(&request)).expect("parses");
            sigv4::verify(&request, &auth, &key, now, "us-east-1", "kms").expect("verifies")
        })
    });
    group.finish();
}

const BENCH_TENANT: &str = keyward_test_support::ACCOUNT;

/// A KeyAdmin + KeyUser of the bench tenant.
/// A request context on `enclave` over `store`, as [`bench_principal`], now.
fn bench_ctx<'a>(
    runtime: &tokio::runtime::Runtime,
    enclave: &'a keyward_enclave::Enclave,
    store: &'a keyward_enclave::store::MemoryStore,
) -> keyward_enclave::api::Ctx<'a> {
    let keyring = runtime.block_on(enclave.ready_for_tests(store)).expect("keyring");
    keyward_enclave::api::Ctx::new(
        enclave,
        keyring,
        keyring.records(store),
        bench_principal(),
        time::OffsetDateTime::now_utc(),
    )
    // As the dispatcher sets it from the tenant's sealed record (the bench
    // tenant has none: a fixed generation).
    .with_tenant_generation(keyward_enclave::keys::hierarchy::TenantGeneration::from_bytes(
        [7; keyward_enclave::keys::hierarchy::GENERATION_LEN],
    ))
}

fn bench_principal() -> keyward_enclave::auth::Principal {
    use keyward_enclave::auth::credentials::Role;
    keyward_enclave::auth::Principal {
        tenant: BENCH_TENANT.into(),
        access_key_id: "AKIABENCHBENCHBENCH0".into(),
        roles: vec![Role::KeyAdmin, Role::KeyUser],
    }
}

/// Customer key policies (ABI v1).
///
/// * `policy/decision-fresh-instance/<module>`: one decision as the enclave
///   makes it, `PolicyEngine::evaluate`: a new store and instance in a warm
///   slot of the pooling allocator (stock wasmtime), `keyward_alloc`, the
///   context written, `keyward_evaluate`, the decision parsed, the store
///   dropped and the slot reset (production's setting: the `PAGEMAP_SCAN`
///   reset where the kernel has it, the blind reset elsewhere).
///
/// For the allow-all WAT module and the `context-tenant` example (Rust,
/// `keyward-policy`), on the 0.7 KiB sample context; then a whole Decrypt in
/// the enclave (as in [`operations`]) of a key without and with a policy
/// module (`context-tenant`, allowing; and allow-all), under the request facts
/// the dispatcher sets.
fn policy(c: &mut Criterion) {
    use keyward_enclave::api::{crypto, keys, policies};
    use keyward_enclave::policy::context::facts_of;
    use keyward_enclave::policy::sandbox::PolicyEngine;
    use keyward_enclave::store::MemoryStore;
    use keyward_wire::Operation;
    use serde_json::{Value, json};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let allow_all_wasm = wat::parse_file(root.join("tests/data/policy_allow_all.wat")).expect("allow-all WAT");
    let context_tenant_wasm = example_policy("context-tenant");
    // The sample context, compact as the enclave sends it (tenant "acme",
    // encryption context tenant "acme": context-tenant allows).
    let sample: Value =
        serde_json::from_slice(&std::fs::read(root.join("policies/contexts/decrypt.json")).expect("sample"))
            .expect("JSON");
    let context = serde_json::to_vec(&sample).expect("context");

    // `KEYWARD_BENCH_POLICY=name=path.wasm[,name=path.wasm…]` adds modules to
    // compare (an example built from another revision, say); each must allow
    // the sample context.
    let extra: Vec<(String, Vec<u8>)> = std::env::var("KEYWARD_BENCH_POLICY")
        .unwrap_or_default()
        .split(',')
        .filter(|spec| !spec.is_empty())
        .map(|spec| {
            let (name, path) = spec.split_once('=').expect("KEYWARD_BENCH_POLICY=name=path.wasm");
            (
                name.to_owned(),
                std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}")),
            )
        })
        .collect();
    let mut modules = vec![
        ("allow-all-wat".to_owned(), allow_all_wasm.clone()),
        ("context-tenant".to_owned(), context_tenant_wasm.clone()),
    ];
    modules.extend(extra);

    let engine = PolicyEngine::new().expect("policy engine");
    // Fuel on the largest contexts the enclave sends (policies/ABI.md §5):
    // printed, not benchmarked.
    let context_tenant = engine.compile(&context_tenant_wasm).expect("compiles");
    for (what, entries, value_len, tags) in [
        (
            "58 KiB: 1,150 encryption context entries with 40-byte values",
            1_150,
            40,
            0,
        ),
        (
            "50 KiB: 3,906 one- and two-character keys plus 50 maximal tags",
            3_906,
            0,
            50,
        ),
    ] {
        const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let key = |i: usize| -> String {
            if value_len > 0 {
                format!("k{i:04}")
            } else if i < ALNUM.len() {
                char::from(ALNUM[i]).to_string()
            } else {
                let j = i - ALNUM.len();
                format!(
                    "{}{}",
                    char::from(ALNUM[j / ALNUM.len()]),
                    char::from(ALNUM[j % ALNUM.len()])
                )
            }
        };
        let mut big = sample.clone();
        let mut ec: serde_json::Map<String, Value> =
            (0..entries).map(|i| (key(i), json!("x".repeat(value_len)))).collect();
        ec.insert("tenant".into(), json!("acme"));
        big["request"]["encryption_context"] = Value::Object(ec);
        big["resource"]["tags"] = (0..tags)
            .map(|i| (format!("{i:0>128}"), json!("v".repeat(256))))
            .collect();
        let big = serde_json::to_vec(&big).expect("JSON");
        let (decision, fuel) = engine.evaluate_metered(&context_tenant, &big);
        assert!(decision.allow, "{what}: {}", decision.reason);
        println!("policy/context-tenant: {fuel} fuel on {what} ({} bytes)", big.len());
    }
    let mut group = c.benchmark_group("policy");
    for (name, wasm) in &modules {
        let compiled = engine.compile(wasm).expect("compiles");
        let (decision, fuel) = engine.evaluate_metered(&compiled, &context);
        assert!(decision.allow, "{name}: {}", decision.reason);
        println!("policy/{name}: {fuel} fuel per decision on the sample context");
        group.bench_function(format!("decision-fresh-instance/{name}"), |b| {
            b.iter(|| engine.evaluate(&compiled, black_box(&context)))
        });
    }

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let enclave = mock_enclave();
    let store = MemoryStore::new();
    let ctx = bench_ctx(&runtime, &enclave, &store);
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let key = |description: &str| -> String {
        let created = runtime
            .block_on(keys::create_key(&ctx, json!({ "Description": description })))
            .expect("key");
        created["KeyMetadata"]["KeyId"].as_str().expect("id").to_owned()
    };
    let plain_key = key("no policy");
    let guarded_key = key("context-tenant");
    let allow_all_key = key("allow-all");
    for (key_id, wasm) in [(&guarded_key, &context_tenant_wasm), (&allow_all_key, &allow_all_wasm)] {
        runtime
            .block_on(policies::put_key_policy_module(
                &ctx,
                json!({ "KeyId": key_id, "Module": b64(wasm) }),
            ))
            .expect("policy attached");
    }
    let encryption_context = json!({ "tenant": BENCH_TENANT });
    let decrypt_body = |key_id: &str| -> Value {
        let encrypt = json!({ "KeyId": key_id, "Plaintext": b64(&[1u8; 32]), "EncryptionContext": encryption_context });
        *ctx.facts() = facts_of(Operation::Encrypt, &encrypt);
        let out = runtime
            .block_on(crypto::encrypt(&ctx, encrypt.clone()))
            .expect("encrypts");
        json!({ "CiphertextBlob": out["CiphertextBlob"], "EncryptionContext": encryption_context })
    };
    let plain_body = decrypt_body(&plain_key);
    let guarded_body = decrypt_body(&guarded_key);
    let allow_all_body = decrypt_body(&allow_all_key);
    // As the dispatcher runs an operation: under the request's facts.
    let decrypt = |body: &Value| {
        *ctx.facts() = facts_of(Operation::Decrypt, body);
        runtime.block_on(crypto::decrypt(&ctx, body.clone()))
    };
    // The policy really runs: another tenant in the context is denied by it.
    let mut foreign = guarded_body.clone();
    foreign["EncryptionContext"] = json!({ "tenant": "444455556666" });
    match decrypt(&foreign) {
        Err(e) => assert_eq!(e.aws_type(), "AccessDeniedException", "{}", e.message()),
        Ok(_) => panic!("the context-tenant policy did not deny"),
    }
    group.bench_function("api/decrypt-32B/no-policy", |b| {
        b.iter(|| decrypt(black_box(&plain_body)).expect("decrypts"))
    });
    group.bench_function("api/decrypt-32B/key-policy", |b| {
        b.iter(|| decrypt(black_box(&guarded_body)).expect("decrypts"))
    });
    // The same with the trivial module: what enforcement costs besides the
    // policy's own work (context JSON, module lookup, the fresh instance).
    group.bench_function("api/decrypt-32B/key-policy-allow-all-wat", |b| {
        b.iter(|| decrypt(black_box(&allow_all_body)).expect("decrypts"))
    });
    group.finish();
}

criterion_group!(
    benches,
    ciphertext_blob,
    record_sealing,
    authenticated_index,
    frame_codec,
    attestation,
    operations,
    operations_more,
    sigv4,
    policy
);
criterion_main!(benches);
