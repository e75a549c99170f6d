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
mod tests;
