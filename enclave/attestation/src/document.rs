//! AWS Nitro Enclaves attestation documents: the COSE_Sign1 envelope and the
//! CBOR payload, decoded and checked against every structural rule of AWS's
//! "Verifying the root of trust" specification. Nothing here is trusted yet:
//! signatures and the certificate chain are checked by [`super::verify`].
//!
//! Decoding uses `serde_cbor` (which accepts both definite- and
//! indefinite-length maps, as real NSMs write both) through strict visitors:
//! byte strings must be CBOR byte strings, text must be CBOR text, duplicate
//! map keys are refused, and every collection is bounded.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_cbor::Value;

pub use super::verify::AttestationError;

/// Largest COSE_Sign1 document accepted, checked before any parsing.
pub const MAX_DOCUMENT_LEN: usize = 16 * 1024;
/// COSE algorithm identifier of ES384 (ECDSA P-384 with SHA-384).
pub const COSE_ALG_ES384: i64 = -35;
/// Length of a raw ES384 signature (r ‖ s, 48 bytes each).
pub const ES384_SIGNATURE_LEN: usize = 96;
/// Most `cabundle` entries accepted (real documents carry 4).
pub const MAX_CABUNDLE_LEN: usize = 16;
/// Most PCRs a document may carry (indexes 0–31).
pub const MAX_PCRS: usize = 32;
/// Longest `certificate`, `cabundle` entry and `public_key`.
pub const MAX_CERT_OR_KEY_LEN: usize = 1024;
/// Longest `user_data` and `nonce`.
pub const MAX_USER_DATA_LEN: usize = 512;

/// CBOR tag 18 (COSE_Sign1) in its one-byte form.
const COSE_SIGN1_TAG: u8 = 0xd2;
/// The protected header `{1: -35}` every Nitro document carries.
const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];
/// Bound on the entries of any map decoded here.
const MAX_MAP_ENTRIES: usize = 64;

/// The payload of a Nitro attestation document, structurally valid but not
/// yet authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationDocument {
    /// Issuing enclave's module id (non-empty).
    pub module_id: String,
    /// Always `"SHA384"`.
    pub digest: String,
    /// Milliseconds since the Unix epoch, as stamped by the NSM (> 0).
    pub timestamp_ms: u64,
    /// PCR index (0–31) → value (32, 48 or 64 bytes); 1–32 entries.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// The leaf certificate (DER) whose key signs the document.
    pub certificate: Vec<u8>,
    /// CA certificates (DER), `[root, …, issuer of the leaf]`.
    pub cabundle: Vec<Vec<u8>>,
    /// Optional public key (1–1024 bytes); `None` when absent or null.
    pub public_key: Option<Vec<u8>>,
    /// Optional user data (≤ 512 bytes); `None` when absent or null.
    pub user_data: Option<Vec<u8>>,
    /// Optional nonce (≤ 512 bytes); `None` when absent or null.
    pub nonce: Option<Vec<u8>>,
}

impl AttestationDocument {
    /// Debug-mode enclaves report PCR0, PCR1 and PCR2 as all zeros. A PCR
    /// that is missing counts as zero (it measures nothing).
    pub fn is_debug_mode(&self) -> bool {
        (0u8..=2).all(|i| self.pcrs.get(&i).is_none_or(|v| v.iter().all(|&b| b == 0)))
    }
}

/// A decoded COSE_Sign1 structure (RFC 9052 §4.2): the raw protected header
/// and payload byte strings (exactly as signed) and the raw ES384 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoseSign1 {
    /// Serialized protected header; decodes to `{1: -35}`.
    pub protected: Vec<u8>,
    /// Serialized attestation payload (see [`parse_payload`]).
    pub payload: Vec<u8>,
    /// Raw `r ‖ s`, 96 bytes.
    pub signature: Vec<u8>,
}

/// Decodes a COSE_Sign1 document: an untagged 4-element array or one under
/// tag 18, with a protected header of exactly `{1: -35}` (ES384), an
/// unprotected header map, an attached payload and a 96-byte signature.
pub fn parse_cose(bytes: &[u8]) -> Result<CoseSign1, AttestationError> {
    if bytes.len() > MAX_DOCUMENT_LEN {
        return Err(AttestationError::Oversized);
    }
    let body = match bytes.split_first() {
        None => return Err(malformed("empty document")),
        Some((&COSE_SIGN1_TAG, rest)) => rest,
        Some(_) => bytes,
    };
    // serde_cbor skips tags silently; refuse any other tag on the envelope.
    if matches!(body.first(), Some(0xc0..=0xdf)) {
        return Err(malformed("unexpected CBOR tag on COSE_Sign1"));
    }
    let raw: RawCoseSign1 = serde_cbor::from_slice(body).map_err(|e| malformed(format!("COSE_Sign1: {e}")))?;
    check_protected(&raw.protected)?;
    if raw.signature.len() != ES384_SIGNATURE_LEN {
        return Err(malformed(format!(
            "signature is {} bytes, expected {ES384_SIGNATURE_LEN}",
            raw.signature.len()
        )));
    }
    Ok(CoseSign1 {
        protected: raw.protected,
        payload: raw.payload,
        signature: raw.signature,
    })
}

/// Decodes and structurally validates an attestation payload (definite- or
/// indefinite-length map). Unknown keys are ignored; duplicate keys refused.
pub fn parse_payload(payload: &[u8]) -> Result<AttestationDocument, AttestationError> {
    if payload.len() > MAX_DOCUMENT_LEN {
        return Err(AttestationError::Oversized);
    }
    let raw: RawPayload = serde_cbor::from_slice(payload).map_err(|e| malformed(format!("payload: {e}")))?;

    let module_id = raw.module_id.ok_or(AttestationError::MissingField("module_id"))?.0;
    if module_id.is_empty() {
        return Err(malformed("module_id is empty"));
    }
    let digest = raw.digest.ok_or(AttestationError::MissingField("digest"))?.0;
    if digest != "SHA384" {
        return Err(AttestationError::UnsupportedAlgorithm);
    }
    let timestamp_ms = raw.timestamp.ok_or(AttestationError::MissingField("timestamp"))?;
    if timestamp_ms == 0 {
        return Err(malformed("timestamp is zero"));
    }

    let raw_pcrs = raw.pcrs.ok_or(AttestationError::MissingField("pcrs"))?.0;
    if raw_pcrs.is_empty() || raw_pcrs.len() > MAX_PCRS {
        return Err(malformed(format!(
            "pcrs has {} entries, expected 1–{MAX_PCRS}",
            raw_pcrs.len()
        )));
    }
    let mut pcrs = BTreeMap::new();
    for (index, value) in raw_pcrs {
        let index = u8::try_from(index)
            .ok()
            .filter(|i| usize::from(*i) < MAX_PCRS)
            .ok_or_else(|| malformed(format!("PCR index {index} out of range")))?;
        if !matches!(value.0.len(), 32 | 48 | 64) {
            return Err(malformed(format!("PCR{index} is {} bytes", value.0.len())));
        }
        pcrs.insert(index, value.0);
    }

    let certificate = raw.certificate.ok_or(AttestationError::MissingField("certificate"))?.0;
    check_len("certificate", &certificate, 1, MAX_CERT_OR_KEY_LEN)?;
    let cabundle: Vec<Vec<u8>> = raw
        .cabundle
        .ok_or(AttestationError::MissingField("cabundle"))?
        .0
        .into_iter()
        .map(|b| b.0)
        .collect();
    if cabundle.is_empty() {
        return Err(malformed("cabundle is empty"));
    }
    for entry in &cabundle {
        check_len("cabundle entry", entry, 1, MAX_CERT_OR_KEY_LEN)?;
    }

    let public_key = raw.public_key.flatten().map(|b| b.0);
    if let Some(key) = &public_key {
        check_len("public_key", key, 1, MAX_CERT_OR_KEY_LEN)?;
    }
    let user_data = raw.user_data.flatten().map(|b| b.0);
    if let Some(data) = &user_data {
        check_len("user_data", data, 0, MAX_USER_DATA_LEN)?;
    }
    let nonce = raw.nonce.flatten().map(|b| b.0);
    if let Some(nonce) = &nonce {
        check_len("nonce", nonce, 0, MAX_USER_DATA_LEN)?;
    }

    Ok(AttestationDocument {
        module_id,
        digest,
        timestamp_ms,
        pcrs,
        certificate,
        cabundle,
        public_key,
        user_data,
        nonce,
    })
}

/// The COSE Sig_structure for a COSE_Sign1 without external data:
/// CBOR `["Signature1", protected, h'', payload]`.
pub fn sig_structure(cose: &CoseSign1) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + cose.protected.len() + cose.payload.len());
    push_head(&mut out, MAJOR_ARRAY, 4);
    push_text(&mut out, "Signature1");
    push_bytes(&mut out, &cose.protected);
    push_bytes(&mut out, &[]);
    push_bytes(&mut out, &cose.payload);
    out
}

/// The serialized protected header `{1: -35}` (ES384).
pub fn protected_es384() -> Vec<u8> {
    PROTECTED_ES384.to_vec()
}

/// Encodes an untagged COSE_Sign1 `[protected, {}, payload, signature]`, the
/// shape the NSM emits. The inverse of [`parse_cose`].
pub fn encode_cose(cose: &CoseSign1) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + cose.protected.len() + cose.payload.len() + cose.signature.len());
    push_head(&mut out, MAJOR_ARRAY, 4);
    push_bytes(&mut out, &cose.protected);
    push_head(&mut out, MAJOR_MAP, 0);
    push_bytes(&mut out, &cose.payload);
    push_bytes(&mut out, &cose.signature);
    out
}

/// Encodes a payload as a definite-length map in the NSM's key order, with
/// absent optional fields written as CBOR null. The inverse of
/// [`parse_payload`] (for documents that satisfy its rules).
pub fn encode_payload(doc: &AttestationDocument) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + doc.certificate.len() + doc.cabundle.iter().map(Vec::len).sum::<usize>());
    push_head(&mut out, MAJOR_MAP, 9);
    push_text(&mut out, "module_id");
    push_text(&mut out, &doc.module_id);
    push_text(&mut out, "digest");
    push_text(&mut out, &doc.digest);
    push_text(&mut out, "timestamp");
    push_head(&mut out, MAJOR_UINT, doc.timestamp_ms);
    push_text(&mut out, "pcrs");
    push_head(&mut out, MAJOR_MAP, doc.pcrs.len() as u64);
    for (index, value) in &doc.pcrs {
        push_head(&mut out, MAJOR_UINT, u64::from(*index));
        push_bytes(&mut out, value);
    }
    push_text(&mut out, "certificate");
    push_bytes(&mut out, &doc.certificate);
    push_text(&mut out, "cabundle");
    push_head(&mut out, MAJOR_ARRAY, doc.cabundle.len() as u64);
    for cert in &doc.cabundle {
        push_bytes(&mut out, cert);
    }
    for (name, value) in [
        ("public_key", &doc.public_key),
        ("user_data", &doc.user_data),
        ("nonce", &doc.nonce),
    ] {
        push_text(&mut out, name);
        match value {
            Some(bytes) => push_bytes(&mut out, bytes),
            None => out.push(CBOR_NULL),
        }
    }
    out
}

fn malformed(message: impl Into<String>) -> AttestationError {
    AttestationError::Malformed(message.into())
}

fn check_len(field: &str, value: &[u8], min: usize, max: usize) -> Result<(), AttestationError> {
    if (min..=max).contains(&value.len()) {
        Ok(())
    } else {
        Err(malformed(format!(
            "{field} is {} bytes, expected {min}–{max}",
            value.len()
        )))
    }
}

/// The protected header must be exactly `{1: -35}`.
fn check_protected(protected: &[u8]) -> Result<(), AttestationError> {
    let entries: Entries<Value, Value> =
        serde_cbor::from_slice(protected).map_err(|e| malformed(format!("protected header: {e}")))?;
    let alg = entries
        .0
        .iter()
        .find(|(k, _)| *k == Value::Integer(1))
        .map(|(_, v)| v)
        .ok_or_else(|| malformed("protected header has no alg"))?;
    if *alg != Value::Integer(i128::from(COSE_ALG_ES384)) {
        return Err(AttestationError::UnsupportedAlgorithm);
    }
    if entries.0.len() != 1 {
        return Err(malformed("unexpected entries in the protected header"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// CBOR encoding heads (RFC 8949 §3): infallible, used for the Sig_structure.

const MAJOR_UINT: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const CBOR_NULL: u8 = 0xf6;

fn push_head(out: &mut Vec<u8>, major: u8, value: u64) {
    let major = major << 5;
    if let Ok(small) = u8::try_from(value) {
        if small < 24 {
            out.push(major | small);
        } else {
            out.push(major | 24);
            out.push(small);
        }
    } else if let Ok(v) = u16::try_from(value) {
        out.push(major | 25);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(value) {
        out.push(major | 26);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    push_head(out, MAJOR_BYTES, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn push_text(out: &mut Vec<u8>, text: &str) {
    push_head(out, MAJOR_TEXT, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

// ---------------------------------------------------------------------------
// Strict serde types for serde_cbor.

/// A CBOR byte string (major type 2) only: serde's own byte types also accept
/// arrays of integers and text.
struct CborBytes(Vec<u8>);

impl<'de> Deserialize<'de> for CborBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = CborBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<CborBytes, E> {
                Ok(CborBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<CborBytes, E> {
                Ok(CborBytes(v))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// A CBOR text string (major type 3) only: serde's `String` also accepts
/// UTF-8 byte strings.
struct CborText(String);

impl<'de> Deserialize<'de> for CborText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = CborText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CborText, E> {
                Ok(CborText(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<CborText, E> {
                Ok(CborText(v))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A map as its entries in order, refusing duplicate keys and more than
/// [`MAX_MAP_ENTRIES`] entries.
struct Entries<K, V>(Vec<(K, V)>);

impl<'de, K: Deserialize<'de> + PartialEq, V: Deserialize<'de>> Deserialize<'de> for Entries<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de> + PartialEq, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<K, V> {
            type Value = Entries<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<K, V>, A::Error> {
                let mut entries: Vec<(K, V)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<K, V>()? {
                    if entries.len() >= MAX_MAP_ENTRIES {
                        return Err(de::Error::custom("too many map entries"));
                    }
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom("duplicate map key"));
                    }
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// An array of at most [`MAX_CABUNDLE_LEN`] items.
struct BoundedSeq<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for BoundedSeq<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
            type Value = BoundedSeq<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BoundedSeq<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    if items.len() >= MAX_CABUNDLE_LEN {
                        return Err(de::Error::custom("too many array items"));
                    }
                    items.push(item);
                }
                Ok(BoundedSeq(items))
            }
        }
        deserializer.deserialize_seq(SeqVisitor(PhantomData))
    }
}

/// The unprotected header: any map, contents ignored.
struct AnyMap;

impl<'de> Deserialize<'de> for AnyMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyMapVisitor;
        impl<'de> Visitor<'de> for AnyMapVisitor {
            type Value = AnyMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyMap, A::Error> {
                let mut count = 0usize;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    count += 1;
                    if count > MAX_MAP_ENTRIES {
                        return Err(de::Error::custom("too many map entries"));
                    }
                }
                Ok(AnyMap)
            }
        }
        deserializer.deserialize_map(AnyMapVisitor)
    }
}

struct RawCoseSign1 {
    protected: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl<'de> Deserialize<'de> for RawCoseSign1 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CoseVisitor;
        impl<'de> Visitor<'de> for CoseVisitor {
            type Value = RawCoseSign1;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a COSE_Sign1 array [protected, unprotected, payload, signature]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCoseSign1, A::Error> {
                let protected: CborBytes = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let _: AnyMap = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let payload: CborBytes = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(2, &self))?;
                let signature: CborBytes = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(3, &self))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(5, &self));
                }
                Ok(RawCoseSign1 {
                    protected: protected.0,
                    payload: payload.0,
                    signature: signature.0,
                })
            }
        }
        deserializer.deserialize_seq(CoseVisitor)
    }
}

/// The payload map as decoded, before the semantic checks of [`parse_payload`].
/// Optional fields are `Some(None)` when present as null.
#[derive(Default)]
struct RawPayload {
    module_id: Option<CborText>,
    digest: Option<CborText>,
    timestamp: Option<u64>,
    pcrs: Option<Entries<u64, CborBytes>>,
    certificate: Option<CborBytes>,
    cabundle: Option<BoundedSeq<CborBytes>>,
    public_key: Option<Option<CborBytes>>,
    user_data: Option<Option<CborBytes>>,
    nonce: Option<Option<CborBytes>>,
}

impl<'de> Deserialize<'de> for RawPayload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;

        fn set<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
            map: &mut A,
            slot: &mut Option<T>,
            key: &str,
        ) -> Result<(), A::Error> {
            if slot.is_some() {
                return Err(de::Error::custom(format!("duplicate key {key}")));
            }
            *slot = Some(map.next_value()?);
            Ok(())
        }

        impl<'de> Visitor<'de> for PayloadVisitor {
            type Value = RawPayload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attestation document map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPayload, A::Error> {
                let mut raw = RawPayload::default();
                let mut seen: Vec<String> = Vec::new();
                while let Some(CborText(key)) = map.next_key()? {
                    if seen.len() >= MAX_MAP_ENTRIES {
                        return Err(de::Error::custom("too many map entries"));
                    }
                    if seen.contains(&key) {
                        return Err(de::Error::custom(format!("duplicate key {key}")));
                    }
                    match key.as_str() {
                        "module_id" => set(&mut map, &mut raw.module_id, &key)?,
                        "digest" => set(&mut map, &mut raw.digest, &key)?,
                        "timestamp" => set(&mut map, &mut raw.timestamp, &key)?,
                        "pcrs" => set(&mut map, &mut raw.pcrs, &key)?,
                        "certificate" => set(&mut map, &mut raw.certificate, &key)?,
                        "cabundle" => set(&mut map, &mut raw.cabundle, &key)?,
                        "public_key" => set(&mut map, &mut raw.public_key, &key)?,
                        "user_data" => set(&mut map, &mut raw.user_data, &key)?,
                        "nonce" => set(&mut map, &mut raw.nonce, &key)?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                    seen.push(key);
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(PayloadVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DOC1: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/nitro_real_production_definite_map.cbor"
    ));
    const DOC2: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/nitro_real_production_indefinite_map_nonce.cbor"
    ));
    const DOC3: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/nitro_real_debug_mode_long_nonce.cbor"
    ));

    fn doc(bytes: &[u8]) -> AttestationDocument {
        let cose = parse_cose(bytes).expect("cose");
        parse_payload(&cose.payload).expect("payload")
    }

    fn is_malformed<T: fmt::Debug>(r: Result<T, AttestationError>) -> bool {
        matches!(r, Err(AttestationError::Malformed(_)))
    }

    /// A hand-built payload map from (key, already-encoded value) pairs.
    fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        push_head(&mut out, MAJOR_MAP, entries.len() as u64);
        for (k, v) in entries {
            push_text(&mut out, k);
            out.extend_from_slice(v);
        }
        out
    }

    fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
        serde_cbor::to_vec(value).expect("encode")
    }

    fn bstr(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_bytes(&mut out, bytes);
        out
    }

    fn pcrs_map(entries: &[(u64, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        push_head(&mut out, MAJOR_MAP, entries.len() as u64);
        for (i, len) in entries {
            push_head(&mut out, MAJOR_UINT, *i);
            push_bytes(&mut out, &vec![7u8; *len]);
        }
        out
    }

    /// A valid synthetic payload's entries; tests edit them.
    fn base_entries() -> Vec<(&'static str, Vec<u8>)> {
        let mut cabundle = Vec::new();
        push_head(&mut cabundle, MAJOR_ARRAY, 1);
        push_bytes(&mut cabundle, &[1, 2, 3]);
        vec![
            ("module_id", cbor(&"i-0123-enc0123")),
            ("digest", cbor(&"SHA384")),
            ("timestamp", cbor(&1_700_000_000_000u64)),
            ("pcrs", pcrs_map(&[(0, 48), (1, 48), (2, 48)])),
            ("certificate", bstr(&[4, 5, 6])),
            ("cabundle", cabundle),
            ("public_key", vec![CBOR_NULL]),
            ("user_data", bstr(b"hello")),
            ("nonce", vec![CBOR_NULL]),
        ]
    }

    fn with(key: &str, value: Vec<u8>) -> Vec<u8> {
        let mut entries = base_entries();
        for entry in &mut entries {
            if entry.0 == key {
                entry.1 = value.clone();
            }
        }
        map(&entries)
    }

    fn without(key: &str) -> Vec<u8> {
        let entries: Vec<_> = base_entries().into_iter().filter(|(k, _)| *k != key).collect();
        map(&entries)
    }

    #[test]
    fn real_documents_decode() {
        let d1 = doc(DOC1);
        assert_eq!(d1.module_id, "i-0de38b2b6853cc9e8-enc0193685e7fee7d85");
        assert_eq!(d1.digest, "SHA384");
        assert_eq!(d1.timestamp_ms, 1_732_983_768_387);
        assert_eq!(d1.pcrs.len(), 16);
        assert_eq!(
            hex::encode(&d1.pcrs[&0]),
            "ec74bfbe7f7445a6c7610e152935e028276f638042b74797b119648e13f7a3675796b721034c320f140ea001b41aeae2"
        );
        assert_eq!(d1.cabundle.len(), 4);
        assert_eq!(d1.public_key.as_ref().map(Vec::len), Some(65));
        assert_eq!(d1.user_data, None);
        assert_eq!(d1.nonce, None);
        assert!(!d1.is_debug_mode());

        let cose2 = parse_cose(DOC2).expect("cose");
        assert_eq!(cose2.payload.first(), Some(&0xbf), "doc 2 has an indefinite-length map");
        let d2 = parse_payload(&cose2.payload).expect("indefinite map");
        assert_eq!(d2.timestamp_ms, 1_770_918_962_724);
        assert_eq!(d2.public_key.as_deref(), Some(&b"dummy"[..]));
        assert_eq!(d2.user_data.as_ref().map(Vec::len), Some(68));
        assert_eq!(
            hex::encode(d2.nonce.as_deref().expect("nonce")),
            "0123456789abcdef0123456789abcdef01234567"
        );

        let d3 = doc(DOC3);
        assert_eq!(d3.timestamp_ms, 1_695_049_410_860);
        assert_eq!(d3.public_key, None);
        assert_eq!(d3.user_data.as_ref().map(Vec::len), Some(91));
        assert_eq!(d3.nonce.as_ref().map(Vec::len), Some(256));
        assert!(d3.is_debug_mode());
    }

    #[test]
    fn cose_shape() {
        for bytes in [DOC1, DOC2, DOC3] {
            let cose = parse_cose(bytes).expect("cose");
            assert_eq!(cose.protected, PROTECTED_ES384);
            assert_eq!(cose.signature.len(), 96);
            // Re-encoding reproduces the NSM's bytes exactly.
            assert_eq!(encode_cose(&cose), bytes);
            // Tag 18 is accepted and changes nothing.
            let mut tagged = vec![0xd2];
            tagged.extend_from_slice(bytes);
            assert_eq!(parse_cose(&tagged).expect("tagged"), cose);
        }
        // Two tags, or another tag, are refused.
        let mut twice = vec![0xd2, 0xd2];
        twice.extend_from_slice(DOC1);
        assert!(is_malformed(parse_cose(&twice)));
        let mut other = vec![0xd8, 0x12];
        other.extend_from_slice(DOC1);
        assert!(is_malformed(parse_cose(&other)));
    }

    #[test]
    fn encode_payload_round_trips() {
        let d1 = doc(DOC1);
        let cose = parse_cose(DOC1).expect("cose");
        // Document 1 is a definite map in NSM order with null optionals.
        assert_eq!(encode_payload(&d1), cose.payload);
        for bytes in [DOC2, DOC3] {
            let d = doc(bytes);
            assert_eq!(parse_payload(&encode_payload(&d)).expect("round trip"), d);
        }
    }

    #[test]
    fn sig_structure_matches_library_encoding() {
        for bytes in [DOC1, DOC2, DOC3] {
            let cose = parse_cose(bytes).expect("cose");
            let expected = cbor(&(
                "Signature1",
                serde_bytes::Bytes::new(&cose.protected),
                serde_bytes::Bytes::new(&[]),
                serde_bytes::Bytes::new(&cose.payload),
            ));
            let ours = sig_structure(&cose);
            assert_eq!(ours, expected);
            assert!(ours.starts_with(b"\x84\x6aSignature1\x44\xa1\x01\x38\x22\x40\x59"));
        }
    }

    #[test]
    fn push_head_matches_library_for_all_widths() {
        for n in [
            0u64,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            push_head(&mut ours, MAJOR_UINT, n);
            assert_eq!(ours, cbor(&n), "{n}");
        }
    }

    #[test]
    fn truncations_fail_cleanly() {
        for bytes in [DOC1, DOC2, DOC3] {
            for cut in [1, 2, 50, 97, 500, bytes.len() - 1] {
                let r = parse_cose(&bytes[..bytes.len() - cut]);
                assert!(is_malformed(r), "cut {cut}");
            }
        }
        assert!(is_malformed(parse_cose(&[])));
        let mut trailing = DOC1.to_vec();
        trailing.push(0);
        assert!(is_malformed(parse_cose(&trailing)));
    }

    #[test]
    fn oversized_documents_are_refused_before_parsing() {
        let big = vec![0u8; MAX_DOCUMENT_LEN + 1];
        assert_eq!(parse_cose(&big), Err(AttestationError::Oversized));
        assert_eq!(parse_payload(&big), Err(AttestationError::Oversized));
    }

    fn cose_with(protected: &[u8], unprotected: &[u8], signature_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        push_head(&mut out, MAJOR_ARRAY, 4);
        push_bytes(&mut out, protected);
        out.extend_from_slice(unprotected);
        push_bytes(&mut out, &map(&base_entries()));
        push_bytes(&mut out, &vec![1u8; signature_len]);
        out
    }

    #[test]
    fn cose_header_rules() {
        assert!(parse_cose(&cose_with(&PROTECTED_ES384, &[0xa0], 96)).is_ok());
        // ES256 (-7) is refused.
        assert_eq!(
            parse_cose(&cose_with(&[0xa1, 0x01, 0x26], &[0xa0], 96)),
            Err(AttestationError::UnsupportedAlgorithm)
        );
        // No alg, extra headers, a duplicate alg, not a map.
        assert!(is_malformed(parse_cose(&cose_with(&[0xa0], &[0xa0], 96))));
        assert!(is_malformed(parse_cose(&cose_with(
            &[0xa2, 0x01, 0x38, 0x22, 0x04, 0x41, 0x00],
            &[0xa0],
            96
        ))));
        assert!(is_malformed(parse_cose(&cose_with(
            &[0xa2, 0x01, 0x38, 0x22, 0x01, 0x38, 0x22],
            &[0xa0],
            96
        ))));
        assert!(is_malformed(parse_cose(&cose_with(&[0x80], &[0xa0], 96))));
        assert!(is_malformed(parse_cose(&cose_with(&[], &[0xa0], 96))));
        // Unprotected must be a map.
        assert!(is_malformed(parse_cose(&cose_with(&PROTECTED_ES384, &[0x80], 96))));
        assert!(parse_cose(&cose_with(&PROTECTED_ES384, &[0xa1, 0x04, 0x41, 0x00], 96)).is_ok());
        // Signature length.
        assert!(is_malformed(parse_cose(&cose_with(&PROTECTED_ES384, &[0xa0], 95))));
        assert!(is_malformed(parse_cose(&cose_with(&PROTECTED_ES384, &[0xa0], 97))));
        // Detached payload (null), 3 or 5 elements, a map instead of an array.
        let mut detached = Vec::new();
        push_head(&mut detached, MAJOR_ARRAY, 4);
        push_bytes(&mut detached, &PROTECTED_ES384);
        detached.extend_from_slice(&[0xa0, CBOR_NULL]);
        push_bytes(&mut detached, &[1u8; 96]);
        assert!(is_malformed(parse_cose(&detached)));
        let mut five = cose_with(&PROTECTED_ES384, &[0xa0], 96);
        five[0] = 0x85;
        five.push(0x00);
        assert!(is_malformed(parse_cose(&five)));
        let mut three = Vec::new();
        push_head(&mut three, MAJOR_ARRAY, 3);
        push_bytes(&mut three, &PROTECTED_ES384);
        three.push(0xa0);
        push_bytes(&mut three, b"x");
        assert!(is_malformed(parse_cose(&three)));
        assert!(is_malformed(parse_cose(&[0xa0])));
    }

    #[test]
    fn synthetic_payload_base_is_valid() {
        let d = parse_payload(&map(&base_entries())).expect("base");
        assert_eq!(d.user_data.as_deref(), Some(&b"hello"[..]));
        assert_eq!(d.public_key, None);
    }

    #[test]
    fn missing_required_fields() {
        for (key, name) in [
            ("module_id", "module_id"),
            ("digest", "digest"),
            ("timestamp", "timestamp"),
            ("pcrs", "pcrs"),
            ("certificate", "certificate"),
            ("cabundle", "cabundle"),
        ] {
            assert_eq!(parse_payload(&without(key)), Err(AttestationError::MissingField(name)));
        }
        // Optional fields may be absent.
        for key in ["public_key", "user_data", "nonce"] {
            assert!(parse_payload(&without(key)).is_ok(), "{key}");
        }
    }

    #[test]
    fn field_value_rules() {
        // module_id: non-empty text, not bytes.
        assert!(is_malformed(parse_payload(&with("module_id", cbor(&"")))));
        assert!(is_malformed(parse_payload(&with("module_id", bstr(b"i-0123")))));
        // digest.
        assert_eq!(
            parse_payload(&with("digest", cbor(&"SHA256"))),
            Err(AttestationError::UnsupportedAlgorithm)
        );
        assert!(is_malformed(parse_payload(&with("digest", bstr(b"SHA384")))));
        // timestamp: positive unsigned integer.
        assert!(is_malformed(parse_payload(&with("timestamp", cbor(&0u64)))));
        assert!(is_malformed(parse_payload(&with("timestamp", cbor(&-5i64)))));
        assert!(is_malformed(parse_payload(&with("timestamp", cbor(&1.5f64)))));
        assert!(is_malformed(parse_payload(&with("timestamp", cbor(&"1700000000000")))));
        // pcrs.
        assert!(parse_payload(&with("pcrs", pcrs_map(&[(31, 32), (5, 64)]))).is_ok());
        assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[])))));
        assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[(32, 48)])))));
        assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[(256, 48)])))));
        assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[(0, 47)])))));
        assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[(0, 0)])))));
        assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[(0, 96)])))));
        assert!(is_malformed(parse_payload(&with(
            "pcrs",
            pcrs_map(&[(0, 48), (0, 48)])
        ))));
        let all: Vec<(u64, usize)> = (0..32).map(|i| (i, 32)).collect();
        assert!(parse_payload(&with("pcrs", pcrs_map(&all))).is_ok());
        let mut too_many = all.clone();
        too_many.push((0, 32));
        assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&too_many)))));
        let mut negative_key = Vec::new();
        push_head(&mut negative_key, MAJOR_MAP, 1);
        negative_key.push(0x20); // -1
        push_bytes(&mut negative_key, &[0u8; 48]);
        assert!(is_malformed(parse_payload(&with("pcrs", negative_key))));
        // certificate: 1..=1024 bytes.
        assert!(is_malformed(parse_payload(&with("certificate", bstr(&[])))));
        assert!(parse_payload(&with("certificate", bstr(&[1u8; 1024]))).is_ok());
        assert!(is_malformed(parse_payload(&with("certificate", bstr(&[1u8; 1025])))));
        assert!(is_malformed(parse_payload(&with(
            "certificate",
            cbor(&vec![1u8, 2, 3])
        ))));
        // cabundle: 1+ entries of 1..=1024 bytes, bounded count.
        let bundle = |entries: &[usize]| {
            let mut out = Vec::new();
            push_head(&mut out, MAJOR_ARRAY, entries.len() as u64);
            for len in entries {
                push_bytes(&mut out, &vec![1u8; *len]);
            }
            out
        };
        assert!(is_malformed(parse_payload(&with("cabundle", bundle(&[])))));
        assert!(is_malformed(parse_payload(&with("cabundle", bundle(&[10, 0])))));
        assert!(is_malformed(parse_payload(&with("cabundle", bundle(&[10, 1025])))));
        assert!(parse_payload(&with("cabundle", bundle(&[1024; MAX_CABUNDLE_LEN - 4]))).is_ok());
        assert!(is_malformed(parse_payload(&with(
            "cabundle",
            bundle(&[1; MAX_CABUNDLE_LEN + 1])
        ))));
        assert!(is_malformed(parse_payload(&with("cabundle", bstr(&[1]))))); // not an array
        // public_key: null, absent or 1..=1024 bytes.
        assert!(is_malformed(parse_payload(&with("public_key", bstr(&[])))));
        assert!(parse_payload(&with("public_key", bstr(&[1u8; 1024]))).is_ok());
        assert!(is_malformed(parse_payload(&with("public_key", bstr(&[1u8; 1025])))));
        assert!(is_malformed(parse_payload(&with("public_key", vec![0xf7])))); // undefined
        assert!(is_malformed(parse_payload(&with("public_key", cbor(&"key")))));
        // user_data and nonce: null, absent or 0..=512 bytes.
        for key in ["user_data", "nonce"] {
            let d = parse_payload(&with(key, bstr(&[]))).expect("empty allowed");
            let value = if key == "nonce" { d.nonce } else { d.user_data };
            assert_eq!(value, Some(Vec::new()));
            assert!(parse_payload(&with(key, bstr(&[1u8; 512]))).is_ok());
            assert!(is_malformed(parse_payload(&with(key, bstr(&[1u8; 513])))), "{key}");
            assert!(is_malformed(parse_payload(&with(key, cbor(&0u8)))), "{key}");
        }
    }

    #[test]
    fn map_level_rules() {
        // Duplicate keys (even when the value is the same).
        let mut entries = base_entries();
        entries.push(("nonce", vec![CBOR_NULL]));
        assert!(is_malformed(parse_payload(&map(&entries))));
        let mut entries = base_entries();
        entries.push(("extra", cbor(&1u8)));
        entries.push(("extra", cbor(&1u8)));
        assert!(is_malformed(parse_payload(&map(&entries))));
        // Unknown keys are ignored.
        let mut entries = base_entries();
        entries.push(("future_field", cbor(&vec![1u8, 2])));
        assert!(parse_payload(&map(&entries)).is_ok());
        // Non-text keys, non-map payloads, trailing bytes.
        let mut int_key = map(&base_entries());
        int_key[0] += 1;
        int_key.extend_from_slice(&[0x01, 0x01]);
        assert!(is_malformed(parse_payload(&int_key)));
        assert!(is_malformed(parse_payload(&[0x80])));
        assert!(is_malformed(parse_payload(&[])));
        let mut trailing = map(&base_entries());
        trailing.push(0x00);
        assert!(is_malformed(parse_payload(&trailing)));
        // Indefinite-length form of the same map.
        let mut indefinite = map(&base_entries());
        indefinite[0] = 0xbf;
        indefinite.push(0xff);
        assert_eq!(parse_payload(&indefinite), parse_payload(&map(&base_entries())));
        // Deep nesting in an ignored value fails without overflowing the stack.
        let mut entries = base_entries();
        entries.push(("deep", vec![0x81; 10_000].into_iter().chain([0x00]).collect()));
        assert!(is_malformed(parse_payload(&map(&entries))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_cose(&bytes);
            let _ = parse_payload(&bytes);
        }

        #[test]
        fn mutated_documents_never_panic(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in 0usize..64,
        ) {
            let mut bytes = [DOC1, DOC2, DOC3][which].to_vec();
            for (at, value) in edits {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            bytes.truncate(bytes.len() - cut);
            if let Ok(cose) = parse_cose(&bytes) {
                let _ = parse_payload(&cose.payload);
                let _ = sig_structure(&cose);
            }
        }

        #[test]
        fn mutated_payloads_never_panic(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = map(&base_entries());
            for (at, value) in edits {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            let _ = parse_payload(&bytes);
        }
    }
}
