//! Mock attestation documents: [`attest_with`] builds the NSM-shaped payload and signs it as
//! COSE_Sign1 with a [`MockPki`]'s leaf; [`MockAttester`] is one mock enclave's identity (module
//! id, PCRs) over that function; [`parse_pcr_arg`] reads the `--mock-pcr` flag.

use std::collections::BTreeMap;

use aws_nitro_enclaves_nsm_api::api::{AttestationDoc, Digest};
use p384::ecdsa::Signature;
use p384::ecdsa::signature::Signer as _;
use serde_bytes::{ByteBuf, Bytes};
use sha2::Digest as _;

use super::{
    DEFAULT_MODULE_ID, MAX_NONCE_LEN, MAX_PCR_INDEX, MAX_PUBLIC_KEY_LEN, MAX_USER_DATA_LEN, MockError, MockPki,
    PCR_COUNT, PCR_LEN, PROTECTED_HEADER, enc_err,
};

/// The PCRs a [`MockAttester`] reports by default: PCR0, 1 and 2 are the
/// SHA-384 of fixed mock strings (so the mock is not mistaken for a
/// debug-mode enclave, whose PCR0-2 are zero); PCR3-15 are zero.
pub fn default_pcrs() -> BTreeMap<u8, Vec<u8>> {
    (0..PCR_COUNT)
        .map(|i| {
            let value = match i {
                0..=2 => sha2::Sha384::digest(format!("Keyward MOCK enclave image PCR{i}").as_bytes()).to_vec(),
                _ => vec![0; PCR_LEN],
            };
            (i, value)
        })
        .collect()
}

fn check_len(field: &'static str, value: Option<&[u8]>, max: usize) -> Result<Option<ByteBuf>, MockError> {
    match value {
        Some(v) if v.len() > max => Err(MockError::InputTooLarge {
            field,
            len: v.len(),
            max,
        }),
        other => Ok(other.map(|v| ByteBuf::from(v.to_vec()))),
    }
}

/// Issues a genuine Nitro-shaped attestation document under `pki`, as the
/// enclave `module_id` with `pcrs` (PCR0-15 always present, zero unless
/// given; any given index up to 31 included), signed by the PKI's leaf.
/// Returns the untagged COSE_Sign1 bytes.
pub fn attest_with(
    pki: &MockPki,
    module_id: &str,
    pcrs: &BTreeMap<u8, Vec<u8>>,
    user_data: Option<&[u8]>,
    nonce: Option<&[u8]>,
    public_key: Option<&[u8]>,
    timestamp_ms: u64,
) -> Result<Vec<u8>, MockError> {
    let user_data = check_len("user_data", user_data, MAX_USER_DATA_LEN)?;
    let nonce = check_len("nonce", nonce, MAX_NONCE_LEN)?;
    let public_key = check_len("public_key", public_key, MAX_PUBLIC_KEY_LEN)?;

    let mut all_pcrs: BTreeMap<usize, ByteBuf> = (0..usize::from(PCR_COUNT))
        .map(|i| (i, ByteBuf::from(vec![0u8; PCR_LEN])))
        .collect();
    for (&index, value) in pcrs {
        if index > MAX_PCR_INDEX {
            return Err(MockError::BadPcrIndex(index));
        }
        if value.len() != PCR_LEN {
            return Err(MockError::BadPcrLength {
                index,
                len: value.len(),
            });
        }
        all_pcrs.insert(usize::from(index), ByteBuf::from(value.clone()));
    }

    let leaf = pki.leaf_for(timestamp_ms)?;
    let doc = AttestationDoc {
        module_id: module_id.to_owned(),
        digest: Digest::SHA384,
        timestamp: timestamp_ms,
        pcrs: all_pcrs,
        certificate: ByteBuf::from(leaf.der),
        cabundle: vec![
            ByteBuf::from(pki.root_der.clone()),
            ByteBuf::from(pki.intermediate_der.clone()),
        ],
        public_key,
        user_data,
        nonce,
    };
    let payload = serde_cbor::to_vec(&doc).map_err(enc_err)?;

    // Sig_structure = ["Signature1", protected, external_aad = h'', payload] (RFC 9052 §4.4).
    let sig_structure = serde_cbor::to_vec(&(
        "Signature1",
        Bytes::new(&PROTECTED_HEADER),
        Bytes::new(&[]),
        Bytes::new(&payload),
    ))
    .map_err(enc_err)?;
    let signature: Signature = leaf.key.try_sign(&sig_structure).map_err(enc_err)?;
    let signature = signature.to_bytes();

    // COSE_Sign1 = [protected, unprotected = {}, payload, signature], untagged like the NSM's.
    serde_cbor::to_vec(&(
        Bytes::new(&PROTECTED_HEADER),
        BTreeMap::<u8, u8>::new(),
        Bytes::new(&payload),
        Bytes::new(&signature),
    ))
    .map_err(enc_err)
}

/// The mock NSM's attestation: one enclave's identity (module id, PCRs)
/// under a mock PKI.
#[derive(Debug)]
pub struct MockAttester {
    pki: MockPki,
    module_id: String,
    pcrs: BTreeMap<u8, Vec<u8>>,
}

impl MockAttester {
    /// An attester with [`DEFAULT_MODULE_ID`] and [`default_pcrs`].
    pub fn new(pki: MockPki) -> MockAttester {
        MockAttester {
            pki,
            module_id: DEFAULT_MODULE_ID.to_owned(),
            pcrs: default_pcrs(),
        }
    }

    pub fn with_module_id(mut self, module_id: impl Into<String>) -> MockAttester {
        self.module_id = module_id.into();
        self
    }

    /// Sets one PCR (index 0-31, 48 bytes), e.g. from `--mock-pcr`.
    pub fn with_pcr(mut self, index: u8, value: Vec<u8>) -> Result<MockAttester, MockError> {
        if index > MAX_PCR_INDEX {
            return Err(MockError::BadPcrIndex(index));
        }
        if value.len() != PCR_LEN {
            return Err(MockError::BadPcrLength {
                index,
                len: value.len(),
            });
        }
        self.pcrs.insert(index, value);
        Ok(self)
    }

    pub fn pki(&self) -> &MockPki {
        &self.pki
    }

    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    pub fn pcrs(&self) -> &BTreeMap<u8, Vec<u8>> {
        &self.pcrs
    }

    /// A signed document stamped `timestamp_ms` (ms since the Unix epoch).
    pub fn attest(
        &self,
        user_data: Option<&[u8]>,
        nonce: Option<&[u8]>,
        public_key: Option<&[u8]>,
        timestamp_ms: u64,
    ) -> Result<Vec<u8>, MockError> {
        attest_with(
            &self.pki,
            &self.module_id,
            &self.pcrs,
            user_data,
            nonce,
            public_key,
            timestamp_ms,
        )
    }
}

/// Parses `INDEX=HEX` (the `--mock-pcr` flag): an index 0-31 and a 48-byte
/// value in hex.
pub fn parse_pcr_arg(s: &str) -> Result<(u8, Vec<u8>), String> {
    let (index, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected INDEX=HEX, got {s:?}"))?;
    let index: u8 = index
        .trim()
        .parse()
        .map_err(|_| format!("PCR index must be a number 0-{MAX_PCR_INDEX}, got {:?}", index.trim()))?;
    if index > MAX_PCR_INDEX {
        return Err(format!("PCR index must be 0-{MAX_PCR_INDEX}, got {index}"));
    }
    let value = value.trim();
    let value = hex::decode(value.strip_prefix("0x").unwrap_or(value))
        .map_err(|e| format!("PCR{index} value is not hex: {e}"))?;
    if value.len() != PCR_LEN {
        return Err(format!(
            "PCR{index} value must be {PCR_LEN} bytes ({} hex digits), got {}",
            PCR_LEN * 2,
            value.len()
        ));
    }
    Ok((index, value))
}
