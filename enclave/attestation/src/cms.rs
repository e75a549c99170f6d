//! Parsing `CiphertextForRecipient`: the CMS EnvelopedData (RFC 5652 §6)
//! AWS KMS — and Keyward, `keyward-enclave`'s `attestation::recipient` —
//! returns to an attested recipient: one KeyTransRecipientInfo with
//! RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label) and AES-256-CBC content,
//! BER with indefinite lengths as AWS lays it out, or DER. [`Envelope::parse`]
//! checks the structure and algorithms and returns the parts; decrypting
//! them (RSA-OAEP with the recipient's private key, then AES-256-CBC) is the
//! recipient's job: the enclave opens the root its custody key service
//! releases (`custody::kms`), and `keyward-sdk`'s `recipient` module opens
//! a workload's `CiphertextForRecipient` with this same parser.
//!
//! Trust: the input is attacker-controlled (the host relays it, and CMS
//! EnvelopedData is not authenticated); parsing is bounded
//! ([`MAX_CIPHERTEXT_LEN`]) and never panics. What the content decrypts to
//! must be checked by the recipient (the enclave checks the root commitment).

use std::cell::RefCell;

use yasna::models::ObjectIdentifier as Oid;
use yasna::tags::{TAG_INTEGER, TAG_SEQUENCE};
use yasna::{ASN1Error, ASN1ErrorKind, ASN1Result, BERReader, Tag};

/// `id-envelopedData` (RFC 5652 §6.1).
const ID_ENVELOPED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 3];
/// `id-data` (RFC 5652 §4).
const ID_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 1];
/// `id-RSAES-OAEP` (RFC 8017 Appendix A.2.1).
const ID_RSAES_OAEP: &[u64] = &[1, 2, 840, 113549, 1, 1, 7];
/// `id-mgf1` (RFC 8017 Appendix B.2.1).
const ID_MGF1: &[u64] = &[1, 2, 840, 113549, 1, 1, 8];
/// `id-pSpecified` (RFC 8017 Appendix A.2.1).
const ID_P_SPECIFIED: &[u64] = &[1, 2, 840, 113549, 1, 1, 9];
/// `id-sha256` (RFC 5754 §2.2).
const ID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
/// `aes256-CBC` (RFC 3565 §4.1).
const ID_AES256_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];

/// Largest `CiphertextForRecipient` [`Envelope::parse`] parses (far above
/// anything the service releases; a bound on work for hostile input).
pub const MAX_CIPHERTEXT_LEN: usize = 1 << 20;

/// AES-256 key length.
pub const CEK_LEN: usize = 32;
/// AES block and CBC IV length.
pub const BLOCK_LEN: usize = 16;

/// Why a `CiphertextForRecipient` could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmsError {
    /// Not the CMS EnvelopedData described in the [module
    /// documentation](self): not BER/DER, another content type, other than one
    /// key-transport recipient, other algorithms, or over
    /// [`MAX_CIPHERTEXT_LEN`].
    #[error("CiphertextForRecipient is not a supported CMS EnvelopedData: {0}")]
    Malformed(String),
    /// Well-formed, but it does not decrypt with this key: sealed to another
    /// key, or altered on the way. One error for every decryption failure.
    #[error("CiphertextForRecipient does not decrypt with this recipient key")]
    Decrypt,
}

/// The parts of a checked `CiphertextForRecipient` that decryption needs —
/// what the AWS Nitro Enclaves SDK's `aws_cms_parse_enveloped_data`
/// extracts: the RSA-OAEP-encrypted content-encryption key, the IV and the
/// AES-256-CBC ciphertext (segments joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    encrypted_key: Vec<u8>,
    iv: [u8; BLOCK_LEN],
    ciphertext: Vec<u8>,
}

/// `yasna`'s reader has no way to carry a reason: the first check that fails
/// notes its reason here and stops the parse.
#[derive(Default)]
struct Problem(RefCell<Option<String>>);

impl Problem {
    fn stop<T>(&self, reason: impl Into<String>) -> ASN1Result<T> {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(reason.into());
        }
        Err(ASN1Error::new(ASN1ErrorKind::Invalid))
    }
}

const OAEP_PROBLEM: &str = "key encryption is not RSAES-OAEP with SHA-256, MGF1-SHA-256 and an empty label";
const IV_PROBLEM: &str = "the AES-256-CBC parameter is not a 16-byte IV";

impl Envelope {
    /// Parses and checks a `CiphertextForRecipient` (BER or DER) without decrypting it.
    pub fn parse(ber: &[u8]) -> Result<Self, CmsError> {
        if ber.len() > MAX_CIPHERTEXT_LEN {
            return Err(CmsError::Malformed(format!(
                "{} bytes, over the {MAX_CIPHERTEXT_LEN}-byte limit",
                ber.len()
            )));
        }
        let problem = Problem::default();
        let parsed = yasna::parse_ber(ber, |r| content_info(r, &problem));
        match (problem.0.into_inner(), parsed) {
            (Some(reason), _) => Err(CmsError::Malformed(reason)),
            (None, Ok(envelope)) => Ok(envelope),
            (None, Err(e)) => Err(CmsError::Malformed(format!("not a BER or DER CMS EnvelopedData ({e})"))),
        }
    }

    /// The RSA-OAEP-SHA-256 encrypted content-encryption key.
    pub fn encrypted_key(&self) -> &[u8] {
        &self.encrypted_key
    }

    /// The AES-256-CBC initialisation vector.
    pub fn iv(&self) -> &[u8; BLOCK_LEN] {
        &self.iv
    }

    /// The AES-256-CBC ciphertext (all segments, in order).
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }
}

fn oid(components: &[u64]) -> Oid {
    Oid::from_slice(components)
}

/// ContentInfo { contentType id-envelopedData, content [0] EXPLICIT EnvelopedData }.
fn content_info(r: BERReader<'_, '_>, problem: &Problem) -> ASN1Result<Envelope> {
    r.read_sequence(|info| {
        let content_type = info.next().read_oid()?;
        if content_type != oid(ID_ENVELOPED_DATA) {
            return problem.stop(format!("content type {content_type} is not id-envelopedData"));
        }
        info.next().read_tagged(Tag::context(0), |r| enveloped_data(r, problem))
    })
}

/// EnvelopedData { version, recipientInfos, encryptedContentInfo } (no
/// originatorInfo, no unprotectedAttrs).
fn enveloped_data(r: BERReader<'_, '_>, problem: &Problem) -> ASN1Result<Envelope> {
    r.read_sequence(|data| {
        data.next().read_u64()?;
        if data.next().lookahead_tag()? == Tag::context(0) {
            return problem.stop("originatorInfo is not supported");
        }
        let mut recipients = Vec::new();
        data.next().read_set_of(|r| {
            if r.lookahead_tag()? != TAG_SEQUENCE {
                return problem.stop("the recipient is not a KeyTransRecipientInfo");
            }
            recipients.push(key_trans_recipient(r, problem)?);
            Ok(())
        })?;
        if recipients.len() != 1 {
            return problem.stop(format!("{} recipients, exactly one expected", recipients.len()));
        }
        let (iv, ciphertext) = encrypted_content_info(data.next(), problem)?;
        Ok(Envelope {
            encrypted_key: recipients.swap_remove(0),
            iv,
            ciphertext,
        })
    })
}

/// KeyTransRecipientInfo { version, rid, keyEncryptionAlgorithm, encryptedKey }:
/// the encrypted key, after checking the algorithm.
fn key_trans_recipient(r: BERReader<'_, '_>, problem: &Problem) -> ASN1Result<Vec<u8>> {
    r.read_sequence(|ktri| {
        ktri.next().read_u64()?;
        // rid: [0] IMPLICIT SubjectKeyIdentifier, or issuerAndSerialNumber.
        if ktri.next().lookahead_tag()? == Tag::context(0) {
            ktri.next().read_tagged_implicit(Tag::context(0), |r| r.read_bytes())?;
        } else {
            ktri.next().read_sequence(|ias| {
                // Name: SEQUENCE OF SET OF AttributeTypeAndValue (string values).
                ias.next().read_sequence_of(|rdn| {
                    rdn.read_set_of(|atv| {
                        atv.read_sequence(|atv| {
                            atv.next().read_oid()?;
                            let tag = atv.next().lookahead_tag()?;
                            atv.next().read_tagged_implicit(tag, |r| r.read_bytes())?;
                            Ok(())
                        })
                    })
                })?;
                ias.next().read_tagged_implicit(TAG_INTEGER, |r| r.read_bytes())?;
                Ok(())
            })?;
        }
        ktri.next().read_sequence(|alg| {
            if alg.next().read_oid()? != oid(ID_RSAES_OAEP) {
                return problem.stop(OAEP_PROBLEM);
            }
            match alg.read_optional(|r| oaep_sha256(r))? {
                Some(true) => Ok(()),
                _ => problem.stop(OAEP_PROBLEM),
            }
        })?;
        ktri.next().read_bytes()
    })
}

/// RSAES-OAEP-params of exactly SHA-256, MGF1 with SHA-256 and the empty
/// label (hash parameters NULL or absent, both legal per RFC 4055 §2.1; the
/// defaults — SHA-1 — are not SHA-256).
fn oaep_sha256(r: BERReader<'_, '_>) -> ASN1Result<bool> {
    r.read_sequence(|params| {
        let hash = params.read_optional(|r| r.read_tagged(Tag::context(0), is_sha256))?;
        let mgf = params.read_optional(|r| {
            r.read_tagged(Tag::context(1), |r| {
                r.read_sequence(|mgf| {
                    let is_mgf1 = mgf.next().read_oid()? == oid(ID_MGF1);
                    Ok(is_mgf1 && is_sha256(mgf.next())?)
                })
            })
        })?;
        let label_empty = params
            .read_optional(|r| {
                r.read_tagged(Tag::context(2), |r| {
                    r.read_sequence(|source| {
                        let specified = source.next().read_oid()? == oid(ID_P_SPECIFIED);
                        Ok(specified && source.next().read_bytes()?.is_empty())
                    })
                })
            })?
            .unwrap_or(true);
        Ok(hash == Some(true) && mgf == Some(true) && label_empty)
    })
}

/// An AlgorithmIdentifier that is id-sha256 with NULL or absent parameters.
fn is_sha256(r: BERReader<'_, '_>) -> ASN1Result<bool> {
    r.read_sequence(|alg| {
        let sha256 = alg.next().read_oid()? == oid(ID_SHA256);
        alg.read_optional(|r| r.read_null())?;
        Ok(sha256)
    })
}

/// EncryptedContentInfo { id-data, aes256-CBC with its IV, [0] IMPLICIT
/// OCTET STRING (primitive, or constructed of segments) }.
fn encrypted_content_info(r: BERReader<'_, '_>, problem: &Problem) -> ASN1Result<([u8; BLOCK_LEN], Vec<u8>)> {
    r.read_sequence(|info| {
        if info.next().read_oid()? != oid(ID_DATA) {
            return problem.stop("the encrypted content type is not id-data");
        }
        let iv = info.next().read_sequence(|alg| {
            if alg.next().read_oid()? != oid(ID_AES256_CBC) {
                return problem.stop("content encryption is not AES-256-CBC");
            }
            match alg.read_optional(|r| r.read_bytes())? {
                Some(iv) => match <[u8; BLOCK_LEN]>::try_from(iv.as_slice()) {
                    Ok(iv) => Ok(iv),
                    Err(_) => problem.stop(IV_PROBLEM),
                },
                None => problem.stop(IV_PROBLEM),
            }
        })?;
        let Some(ciphertext) = info.read_optional(|r| r.read_tagged_implicit(Tag::context(0), |r| r.read_bytes()))?
        else {
            return problem.stop("no encrypted content (detached)");
        };
        if ciphertext.is_empty() || ciphertext.len() % BLOCK_LEN != 0 {
            return problem.stop("the encrypted content is not a whole number of AES blocks");
        }
        Ok((iv, ciphertext))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_oversize_input_are_malformed_never_a_panic() {
        for input in [&b""[..], b"\x30\x80", b"\x30\x03\x06\x01\x00", b"not ber at all"] {
            assert!(
                matches!(Envelope::parse(input), Err(CmsError::Malformed(_))),
                "{input:?}"
            );
        }
        let big = vec![0x30; MAX_CIPHERTEXT_LEN + 1];
        assert!(matches!(Envelope::parse(&big), Err(CmsError::Malformed(r)) if r.contains("limit")));
    }
}
