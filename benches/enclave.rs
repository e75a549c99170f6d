//! Micro-benchmarks of the enclave's hot path, in process:
//! `cargo bench --bench enclave`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keyward_enclave::keys::blob::{self, BlobHeader};
use keyward_enclave::keys::context::EncryptionContext;
use keyward_enclave::seal::Sealer;
use keyward_enclave::secret::Key256;
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
            b.iter(|| blob::seal(header, &material, &context, black_box(p)))
        });
        let sealed = blob::seal(header, &material, &context, &plaintext);
        group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| blob::open(black_box(s), &material, &context).expect("opens"))
        });
    }
    group.finish();
}

fn record_sealing(c: &mut Criterion) {
    let sealer = Sealer::new(Arc::new(Key256::generate()));
    let record = vec![1u8; 512];
    let sealed = sealer.seal("key", "111122223333/0f8f", &record);
    c.bench_function("seal/record-512B", |b| {
        b.iter(|| sealer.seal("key", "111122223333/0f8f", black_box(&record)))
    });
    c.bench_function("open/record-512B", |b| {
        b.iter(|| {
            sealer
                .open("key", "111122223333/0f8f", black_box(&sealed))
                .expect("opens")
        })
    });
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
    use keyward_enclave::api::{Ctx, crypto, keys};
    use keyward_enclave::auth::{Principal, credentials::Role};
    use keyward_enclave::store::{MemoryStore, Records};
    use serde_json::json;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pki = MockPki::ephemeral().expect("mock pki");
    let anchor = TrustAnchor::from_der(pki.root_der()).expect("anchor");
    let args = keyward_enclave::Args {
        mode: keyward_enclave::Mode::Mock,
        socket: Some("/unused".into()),
        vsock_port: 5000,
        region: "us-east-1".into(),
        dev_tenant: "111122223333".into(),
        mock_clock_offset: 0,
        tenant_rate_limit: 10_000,
        data_dir: None,
        mock_pcrs: Vec::new(),
        allow_debug_attestation: false,
        exit_on_stdin_close: false,
    };
    let config = args.validate(|_| None).expect("config");
    let enclave = keyward_enclave::Enclave::new(
        config,
        Box::new(keyward_enclave::nsm::MockNsm),
        Arc::new(keyward_enclave::clock::SystemClock),
    )
    .with_verifier(Verifier::new(anchor));
    let store = MemoryStore::new();
    let keyring = runtime.block_on(enclave.keyring(&*store)).expect("keyring");
    let ctx = Ctx {
        enclave: &enclave,
        keyring,
        records: Records::new(&*store, &keyring.sealer),
        principal: Principal {
            tenant: "111122223333".into(),
            access_key_id: "AKIABENCHBENCHBENCH0".into(),
            roles: vec![Role::KeyAdmin, Role::KeyUser],
        },
        now: time::OffsetDateTime::now_utc(),
    };
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

criterion_group!(
    benches,
    ciphertext_blob,
    record_sealing,
    frame_codec,
    attestation,
    operations
);
criterion_main!(benches);
