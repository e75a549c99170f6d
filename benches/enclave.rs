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

criterion_group!(benches, ciphertext_blob, record_sealing, frame_codec, attestation);
criterion_main!(benches);
