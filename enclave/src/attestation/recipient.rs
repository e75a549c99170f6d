//! `CiphertextForRecipient`: CMS EnvelopedData (RFC 5652 §6) to the RSA key
//! of an attested recipient, laid out byte for byte as AWS KMS returns it when
//! a request carries `Recipient { KeyEncryptionAlgorithm: "RSAES_OAEP_SHA_256", … }`.
//!
//! [`envelope`] produces this BER (`∞` = indefinite length, closed by an
//! end-of-contents `00 00`; every other element definite-length DER):
//!
//! ```text
//! ContentInfo ∞ {
//!   contentType  id-envelopedData (1.2.840.113549.1.7.3)
//!   content [0] ∞  EnvelopedData ∞ {
//!     version         2                   (RFC 5652 §6.1: a v2 RecipientInfo)
//!     recipientInfos  SET OF exactly one (definite, DER)
//!       KeyTransRecipientInfo {
//!         version                 2       (rid is a subjectKeyIdentifier)
//!         rid                     [0] subjectKeyIdentifier: 32 bytes, SHA-256 over the
//!                                 subjectPublicKey BIT STRING value of the recipient's key
//!                                 (RFC 7093 §2 method 1, untruncated)
//!         keyEncryptionAlgorithm  id-RSAES-OAEP (1.2.840.113549.1.1.7) with
//!                                 RSAES-OAEP-params { [0] sha256 (NULL params),
//!                                 [1] mgf1 with sha256, pSource default (empty label) }
//!         encryptedKey            RSA-OAEP-SHA-256(recipient key, CEK)
//!       }
//!     encryptedContentInfo ∞ {
//!       contentType                 id-data
//!       contentEncryptionAlgorithm  aes256-CBC (2.16.840.1.101.3.4.1.42), parameters:
//!                                   the 16-byte IV as an OCTET STRING (definite, DER)
//!       encryptedContent [0] ∞      constructed: AES-256-CBC(CEK, IV, PKCS#7-padded
//!                                   plaintext) as OCTET STRING segments of at most
//!                                   1000 bytes each
//!     }
//!   }
//! }
//! ```
//!
//! Why exactly this layout: the CMS parser of the AWS Nitro Enclaves SDK
//! (`aws_cms_parse_enveloped_data` in aws-nitro-enclaves-sdk-c `source/cms.c`,
//! used by kmstool-enclave-cli and every workload built on that SDK) reads
//! the ContentInfo, its `[0]`, the EnvelopedData and the EncryptedContentInfo
//! *header first* with AWS-LC's `CBS_get_any_ber_asn1_element`, which returns
//! only the header of an indefinite-length element but swallows a definite
//! one whole, so the next read fails; and it reads recipientInfos and the
//! algorithm identifiers with `CBS_get_asn1`, which refuses indefinite
//! lengths. So DER — although valid BER — does not open there: those four
//! structures must be indefinite-length and the rest definite. This is the
//! layout of AWS KMS's captured responses (`input_ber` in the SDK's
//! `tests/kmstool-enclaves/cms_test.c`, copied to `tests/data/aws-kms-cms/`),
//! including the 32-byte subjectKeyIdentifier and the constructed
//! encryptedContent. The 1000-byte segments are CER's rule (X.690 §9.2) and
//! the default of the Bouncy Castle streaming generator whose output the
//! captured responses match; those responses are too short to show more than
//! one segment. What AWS hashes into its 32-byte identifier is not
//! documented; recipients do not compare it (`openssl cms -decrypt -inkey`
//! without `-recip`, the Nitro Enclaves SDK, `keyward-sdk`), they try their key.
//!
//! The content-encryption key (CEK) is a fresh random AES-256 key per call,
//! the IV a fresh random 16 bytes; both come from the OS RNG. There is no
//! originatorInfo and there are no unprotectedAttrs. The recipient has no
//! certificate, so `issuerAndSerialNumber` is impossible; the
//! subjectKeyIdentifier `rid` is what AWS KMS uses too (version 2 throughout,
//! as the AWS Nitro Enclaves SDK requires).
//!
//! Only public-key operations happen here: RSA-OAEP *encryption* to the
//! recipient's key (the `rsa` crate's private-key timing side channel does
//! not apply). Recipient keys must be RSA with a modulus of 2048 to 4096 bits,
//! the sizes AWS KMS accepts. CMS EnvelopedData is not authenticated (with
//! AWS KMS neither): the untrusted host relaying the response can alter it,
//! and recipients cannot detect every alteration.
//!
//! Every definite element is DER from the `cms` and `der` crates' ASN.1
//! types; only the four indefinite-length headers, their end-of-contents
//! octets and the segment framing are written here ([`Ber`]). Not cms'
//! `EnvelopedDataBuilder`: cms 0.2's `KeyTransRecipientInfoBuilder` only does
//! RSAES-PKCS1-v1_5, it writes DER only, and assembling the structure here
//! keeps the CEK in one zeroizing buffer. (The AES key schedule inside the
//! `cbc` encryptor is only wiped on drop when the `aes` crate's `zeroize`
//! feature is enabled.)

use aes::Aes256;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use cms::content_info::CmsVersion;
use cms::enveloped_data::{KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos};
use der::asn1::{ObjectIdentifier, OctetString, OctetStringRef, SetOfVec};
use der::{Any, Decode, Encode, Tag};
use rand::RngCore;
use rsa::pkcs1::RsaOaepParams;
use rsa::{BigUint, Oaep, RsaPublicKey};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoRef};
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use zeroize::Zeroizing;

/// `id-envelopedData` (RFC 5652 §6.1).
pub const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
/// `id-data` (RFC 5652 §4).
pub const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `rsaEncryption` (RFC 8017 Appendix C): the SPKI algorithm of an RSA public key.
pub const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-RSAES-OAEP` (RFC 8017 Appendix A.2.1, RFC 3560 for CMS).
pub const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
/// `aes256-CBC` (RFC 3565 §4.1).
pub const ID_AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

/// Smallest accepted RSA modulus, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest accepted RSA modulus, in bits.
pub const MAX_RSA_BITS: usize = 4096;

/// Length of the subjectKeyIdentifier (`rid`): 32 bytes, as in AWS KMS's responses.
pub const KEY_IDENTIFIER_LEN: usize = 32;
/// Largest segment of the constructed encryptedContent (CER, X.690 §9.2).
pub const CONTENT_SEGMENT_LEN: usize = 1000;
/// AES-256 key length.
const CEK_LEN: usize = 32;
/// AES block and CBC IV length.
const IV_LEN: usize = 16;

/// Why a recipient envelope could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecipientError {
    /// The recipient's public key is not a parsable DER SubjectPublicKeyInfo
    /// (or its RSA key inside is not a parsable RSAPublicKey).
    #[error("malformed public key: {0}")]
    Malformed(String),
    /// A well-formed key that cannot be used: not RSA, a modulus outside
    /// 2048–4096 bits, or RSA parameters that are not a valid public key.
    #[error("unsupported public key: {0}")]
    UnsupportedKey(String),
    /// Randomness, encryption or encoding failed (not expected with a key
    /// that passed the checks).
    #[error("cannot build the envelope: {0}")]
    Internal(&'static str),
}

/// Checks that `recipient_spki_der` is a key [`envelope`] can seal to (an
/// RSA key of 2048–4096 bits), before anything is computed for it.
pub fn check_public_key(recipient_spki_der: &[u8]) -> Result<(), RecipientError> {
    let spki = SubjectPublicKeyInfoRef::from_der(recipient_spki_der)
        .map_err(|e| RecipientError::Malformed(format!("not a DER SubjectPublicKeyInfo ({e})")))?;
    rsa_public_key(&spki).map(drop)
}

/// Seals `plaintext` to the RSA key `recipient_spki_der` (a DER
/// SubjectPublicKeyInfo, as in an attestation document's `public_key`):
/// returns the CMS ContentInfo (id-envelopedData) in the BER layout of AWS
/// KMS described in the module documentation, ready for `CiphertextForRecipient`.
pub fn envelope(recipient_spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, RecipientError> {
    let spki = SubjectPublicKeyInfoRef::from_der(recipient_spki_der)
        .map_err(|e| RecipientError::Malformed(format!("not a DER SubjectPublicKeyInfo ({e})")))?;
    let public_key = rsa_public_key(&spki)?;
    let rid = subject_key_identifier(&spki)?;

    let mut cek = Zeroizing::new([0u8; CEK_LEN]);
    let mut iv = [0u8; IV_LEN];
    let mut rng = rand::rngs::OsRng;
    rng.try_fill_bytes(cek.as_mut_slice())
        .map_err(|_| RecipientError::Internal("the OS RNG failed"))?;
    rng.try_fill_bytes(&mut iv)
        .map_err(|_| RecipientError::Internal("the OS RNG failed"))?;

    let encrypted_key = public_key
        .encrypt(&mut rng, Oaep::new::<Sha256>(), cek.as_slice())
        .map_err(|_| RecipientError::Internal("RSA-OAEP encryption failed"))?;
    let encrypted_content = cbc::Encryptor::<Aes256>::new_from_slices(cek.as_slice(), &iv)
        .map_err(|_| RecipientError::Internal("AES-256-CBC key or IV size"))?
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    drop(cek);

    let ktri = KeyTransRecipientInfo {
        version: CmsVersion::V2,
        rid: RecipientIdentifier::SubjectKeyIdentifier(SubjectKeyIdentifier(octets(rid.to_vec())?)),
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: ID_RSAES_OAEP,
            parameters: Some(Any::encode_from(&RsaOaepParams::new::<Sha256>()).map_err(encoding)?),
        },
        enc_key: octets(encrypted_key)?,
    };
    let mut recipients = SetOfVec::new();
    recipients.insert(RecipientInfo::Ktri(ktri)).map_err(encoding)?;
    let content_enc_alg = AlgorithmIdentifierOwned {
        oid: ID_AES256_CBC,
        parameters: Some(Any::new(Tag::OctetString, iv.to_vec()).map_err(encoding)?),
    };

    let mut out = Ber(Vec::with_capacity(encrypted_content.len() + 512));
    out.open(Tag::Sequence)?; // ContentInfo
    out.der(&ID_ENVELOPED_DATA)?;
    out.open(context_constructed(0))?; // content [0] EXPLICIT
    out.open(Tag::Sequence)?; // EnvelopedData
    out.der(&CmsVersion::V2)?;
    out.der(&RecipientInfos(recipients))?;
    out.open(Tag::Sequence)?; // EncryptedContentInfo
    out.der(&ID_DATA)?;
    out.der(&content_enc_alg)?;
    out.open(context_constructed(0))?; // encryptedContent [0] IMPLICIT OCTET STRING, constructed
    for segment in encrypted_content.chunks(CONTENT_SEGMENT_LEN) {
        out.der(&OctetStringRef::new(segment).map_err(encoding)?)?;
    }
    for _ in 0..5 {
        out.close(); // encryptedContent, EncryptedContentInfo, EnvelopedData, [0], ContentInfo
    }
    Ok(out.0)
}

/// `[n]`, context-specific and constructed.
fn context_constructed(number: u8) -> Tag {
    Tag::ContextSpecific {
        constructed: true,
        number: der::TagNumber::new(number),
    }
}

/// The BER the envelope needs beyond DER: indefinite-length headers
/// (X.690 §8.1.3.6) and their end-of-contents octets; everything between
/// them is a DER element.
struct Ber(Vec<u8>);

impl Ber {
    /// The identifier octet of `tag` and the indefinite length `0x80`.
    fn open(&mut self, tag: Tag) -> Result<(), RecipientError> {
        let mut identifier = Vec::with_capacity(1);
        tag.encode_to_vec(&mut identifier).map_err(encoding)?;
        self.0.extend_from_slice(&identifier);
        self.0.push(0x80);
        Ok(())
    }

    /// The end-of-contents octets of the innermost open element.
    fn close(&mut self) {
        self.0.extend_from_slice(&[0, 0]);
    }

    /// A complete DER element.
    fn der(&mut self, value: &impl Encode) -> Result<(), RecipientError> {
        value.encode_to_vec(&mut self.0).map_err(encoding)?;
        Ok(())
    }
}

/// The RSA public key in `spki`, if it is one of the accepted sizes.
fn rsa_public_key(spki: &SubjectPublicKeyInfoRef<'_>) -> Result<RsaPublicKey, RecipientError> {
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(RecipientError::UnsupportedKey(format!(
            "not an RSA key (algorithm {}); RSA keys of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are supported",
            spki.algorithm.oid
        )));
    }
    // RFC 3279 §2.3.1: the parameters of rsaEncryption are NULL (absent is
    // tolerated, as most parsers do).
    if spki.algorithm.parameters.is_some_and(|p| !p.is_null()) {
        return Err(RecipientError::Malformed(
            "rsaEncryption with parameters other than NULL".into(),
        ));
    }
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| RecipientError::Malformed("subjectPublicKey is not a whole number of bytes".into()))?;
    let key = rsa::pkcs1::RsaPublicKey::from_der(bits)
        .map_err(|e| RecipientError::Malformed(format!("subjectPublicKey is not a DER RSAPublicKey ({e})")))?;
    let modulus = BigUint::from_bytes_be(key.modulus.as_bytes());
    let size = modulus.bits();
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&size) {
        return Err(RecipientError::UnsupportedKey(format!(
            "an RSA modulus of {size} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are supported"
        )));
    }
    RsaPublicKey::new(modulus, BigUint::from_bytes_be(key.public_exponent.as_bytes()))
        .map_err(|e| RecipientError::UnsupportedKey(format!("not a valid RSA public key ({e})")))
}

/// SHA-256 over the value of the subjectPublicKey BIT STRING (RFC 7093 §2
/// method 1 without the truncation to 160 bits): 32 bytes, the length AWS
/// KMS's identifiers have.
fn subject_key_identifier(spki: &SubjectPublicKeyInfoRef<'_>) -> Result<[u8; KEY_IDENTIFIER_LEN], RecipientError> {
    let digest = Sha256::digest(spki.subject_public_key.raw_bytes());
    let mut id = [0u8; KEY_IDENTIFIER_LEN];
    id.copy_from_slice(
        digest
            .get(..KEY_IDENTIFIER_LEN)
            .ok_or(RecipientError::Internal("short digest"))?,
    );
    Ok(id)
}

fn octets(bytes: Vec<u8>) -> Result<OctetString, RecipientError> {
    OctetString::new(bytes).map_err(encoding)
}

fn encoding(_: der::Error) -> RecipientError {
    RecipientError::Internal("encoding failed")
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::OnceLock;

    use cbc::cipher::BlockDecryptMut;
    use cms::enveloped_data::RecipientInfos;
    use der::asn1::{AnyRef, BitString};
    use rsa::RsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
    use rsa::traits::PublicKeyParts;
    use spki::SubjectPublicKeyInfoOwned;

    use super::*;

    const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
    const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
    const ID_P_SPECIFIED: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.9");

    /// One RSA-2048 key for the whole module (key generation is slow in
    /// debug builds).
    fn key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA-2048 key generation"))
    }

    fn spki_der(key: &RsaPrivateKey) -> Vec<u8> {
        key.to_public_key()
            .to_public_key_der()
            .expect("SPKI encoding")
            .into_vec()
    }

    /// The parsed envelope, checked field by field against the format in the
    /// module documentation.
    struct Parsed {
        rid: Vec<u8>,
        encrypted_key: Vec<u8>,
        iv: Vec<u8>,
        ciphertext: Vec<u8>,
    }

    /// Takes the next DER element of type `T` off `rest`, returning it and
    /// its encoding (so the encoding can be checked to be exactly DER).
    fn take_der<'a, T: Decode<'a> + Encode>(rest: &mut &'a [u8]) -> (T, &'a [u8]) {
        use der::Reader as _;
        let mut reader = der::SliceReader::new(rest).expect("reader");
        let value = T::decode(&mut reader).expect("a DER element");
        let len = usize::try_from(reader.position()).expect("len");
        let (encoding, tail) = rest.split_at(len);
        assert_eq!(value.to_der().expect("re-encode"), encoding, "not DER");
        *rest = tail;
        (value, encoding)
    }

    /// Takes `expected` off `rest`.
    #[track_caller]
    fn take_bytes(rest: &mut &[u8], expected: &[u8], what: &str) {
        assert!(
            rest.starts_with(expected),
            "{what}: expected {expected:02x?}, found {:02x?}",
            &rest[..rest.len().min(8)]
        );
        *rest = &rest[expected.len()..];
    }

    /// The envelope, walked byte by byte against AWS KMS's layout (module
    /// documentation): the four indefinite-length headers, the definite DER
    /// elements between them, the 1000-byte segments and the five
    /// end-of-contents; every field checked.
    fn parse(envelope: &[u8]) -> Parsed {
        let mut rest = envelope;
        take_bytes(&mut rest, &[0x30, 0x80], "ContentInfo, indefinite");
        let (content_type, _) = take_der::<ObjectIdentifier>(&mut rest);
        assert_eq!(content_type, ID_ENVELOPED_DATA);
        take_bytes(&mut rest, &[0xa0, 0x80], "content [0], indefinite");
        take_bytes(&mut rest, &[0x30, 0x80], "EnvelopedData, indefinite");
        let (version, _) = take_der::<CmsVersion>(&mut rest);
        assert_eq!(version, CmsVersion::V2);
        let (recipients, encoding) = take_der::<RecipientInfos>(&mut rest);
        assert_eq!(encoding[0], 0x31, "recipientInfos is a definite SET");
        assert_eq!(recipients.0.len(), 1);
        let Some(RecipientInfo::Ktri(ktri)) = recipients.0.iter().next() else {
            panic!("not a KeyTransRecipientInfo")
        };
        assert_eq!(ktri.version, CmsVersion::V2);
        let RecipientIdentifier::SubjectKeyIdentifier(ski) = &ktri.rid else {
            panic!("rid is not a subjectKeyIdentifier")
        };
        assert_eq!(ski.0.as_bytes().len(), 32, "AWS's identifier length");

        assert_eq!(ktri.key_enc_alg.oid, ID_RSAES_OAEP);
        let params_der = ktri
            .key_enc_alg
            .parameters
            .as_ref()
            .expect("OAEP parameters present")
            .to_der()
            .expect("der");
        let params = RsaOaepParams::from_der(&params_der).expect("RSAES-OAEP-params");
        assert_eq!(params.hash.oid, ID_SHA256);
        assert_eq!(params.mask_gen.oid, ID_MGF1);
        let mgf_hash = params.mask_gen.parameters.expect("MGF1 hash");
        assert_eq!(mgf_hash.oid, ID_SHA256);
        assert_eq!(params.p_source.oid, ID_P_SPECIFIED);
        assert_eq!(
            params.p_source.parameters.map(AnyRef::value),
            Some(&[][..]),
            "empty OAEP label"
        );
        // The OAEP parameters byte for byte as in AWS's responses.
        assert_eq!(
            hex::encode(&params_der),
            "302fa00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500"
        );

        take_bytes(&mut rest, &[0x30, 0x80], "EncryptedContentInfo, indefinite");
        let (content_type, _) = take_der::<ObjectIdentifier>(&mut rest);
        assert_eq!(content_type, ID_DATA);
        let (alg, _) = take_der::<AlgorithmIdentifierOwned>(&mut rest);
        assert_eq!(alg.oid, ID_AES256_CBC);
        let iv: OctetString = alg.parameters.as_ref().expect("IV").decode_as().expect("IV octets");
        assert_eq!(iv.as_bytes().len(), 16);
        take_bytes(
            &mut rest,
            &[0xa0, 0x80],
            "encryptedContent [0], constructed, indefinite",
        );
        let mut ciphertext = Vec::new();
        while rest.first() == Some(&0x04) {
            let (segment, _) = take_der::<OctetString>(&mut rest);
            let len = segment.as_bytes().len();
            assert!(len > 0 && len <= CONTENT_SEGMENT_LEN, "segment of {len} bytes");
            if !rest.starts_with(&[0x04]) {
                assert!(
                    ciphertext.len() % CONTENT_SEGMENT_LEN == 0,
                    "only the last segment is short"
                );
            } else {
                assert_eq!(len, CONTENT_SEGMENT_LEN, "segments before the last are full");
            }
            ciphertext.extend_from_slice(segment.as_bytes());
        }
        take_bytes(&mut rest, &[0; 10], "five end-of-contents");
        assert!(rest.is_empty(), "{} bytes after the envelope", rest.len());
        Parsed {
            rid: ski.0.as_bytes().to_vec(),
            encrypted_key: ktri.enc_key.as_bytes().to_vec(),
            iv: iv.as_bytes().to_vec(),
            ciphertext,
        }
    }

    /// What a recipient does: RSA-OAEP-SHA-256 for the CEK, then AES-256-CBC.
    fn open(key: &RsaPrivateKey, envelope_der: &[u8]) -> Vec<u8> {
        let parsed = parse(envelope_der);
        let cek = key
            .decrypt(Oaep::new::<Sha256>(), &parsed.encrypted_key)
            .expect("RSA-OAEP decryption");
        assert_eq!(cek.len(), 32);
        cbc::Decryptor::<Aes256>::new_from_slices(&cek, &parsed.iv)
            .expect("key and IV sizes")
            .decrypt_padded_vec_mut::<Pkcs7>(&parsed.ciphertext)
            .expect("AES-256-CBC decryption")
    }

    fn plaintext(len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        bytes
    }

    #[test]
    fn round_trip_for_the_sizes_kms_releases() {
        let spki = spki_der(key());
        // Empty, block boundaries, a data key, a 4 KiB Decrypt result, an RSA-4096 PKCS#8 key.
        for len in [0, 1, 15, 16, 17, 32, 64, 1024, 4096, 2400, 8192] {
            let data = plaintext(len);
            let env = envelope(&spki, &data).expect("envelope");
            let parsed = parse(&env);
            assert_eq!(
                parsed.ciphertext.len(),
                (len / 16 + 1) * 16,
                "PKCS#7 padding of {len} bytes"
            );
            assert_eq!(open(key(), &env), data, "{len} bytes");
        }
    }

    #[test]
    fn rid_is_the_untruncated_rfc7093_key_identifier() {
        let spki = spki_der(key());
        let parsed = parse(&envelope(&spki, b"k").expect("envelope"));
        let info = SubjectPublicKeyInfoOwned::from_der(&spki).expect("spki");
        let expected = Sha256::digest(info.subject_public_key.raw_bytes());
        assert_eq!(parsed.rid, expected[..]);
    }

    #[test]
    fn every_envelope_has_a_fresh_key_and_iv() {
        let spki = spki_der(key());
        let a = parse(&envelope(&spki, &[7; 32]).expect("envelope"));
        let b = parse(&envelope(&spki, &[7; 32]).expect("envelope"));
        assert_ne!(a.iv, b.iv);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_ne!(a.encrypted_key, b.encrypted_key);
        assert_eq!(a.encrypted_key.len(), 256);
    }

    #[test]
    fn another_key_cannot_open_it() {
        let env = envelope(&spki_der(key()), b"secret").expect("envelope");
        let other = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("keygen");
        let parsed = parse(&env);
        assert!(other.decrypt(Oaep::new::<Sha256>(), &parsed.encrypted_key).is_err());
    }

    /// An SPKI with an RSA public key of exactly `bits` bits (not a real key:
    /// only the public-key checks and the encryption look at it).
    fn synthetic_rsa_spki(bits: usize, exponent: &[u8]) -> Vec<u8> {
        let mut modulus = vec![0x5au8; bits.div_ceil(8)];
        let top = bits % 8;
        modulus[0] = if top == 0 {
            0x80 | 0x5a
        } else {
            (1u8 << (top - 1)) | (0x5a & ((1u8 << (top - 1)) - 1))
        };
        if let Some(last) = modulus.last_mut() {
            *last |= 1;
        }
        let key = rsa::pkcs1::RsaPublicKey {
            modulus: rsa::pkcs1::UintRef::new(&modulus).expect("modulus"),
            public_exponent: rsa::pkcs1::UintRef::new(exponent).expect("exponent"),
        };
        SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            subject_public_key: BitString::from_bytes(&key.to_der().expect("RSAPublicKey")).expect("bits"),
        }
        .to_der()
        .expect("SPKI")
    }

    fn rsa_spki_with_key_bits(bits: &[u8]) -> Vec<u8> {
        SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            subject_public_key: BitString::from_bytes(bits).expect("bits"),
        }
        .to_der()
        .expect("SPKI")
    }

    #[test]
    fn accepts_rsa_2048_to_4096() {
        for bits in [2048, 3072, 4096] {
            let spki = synthetic_rsa_spki(bits, &[1, 0, 1]);
            let key = RsaPublicKey::from_public_key_der(&spki).expect("rsa");
            assert_eq!(key.n().bits(), bits);
            let parsed = parse(&envelope(&spki, b"x").expect("envelope"));
            assert_eq!(parsed.encrypted_key.len(), bits / 8);
        }
    }

    #[test]
    fn rejects_rsa_keys_outside_2048_to_4096() {
        for bits in [512, 1024, 2047, 4097, 8192] {
            let spki = synthetic_rsa_spki(bits, &[1, 0, 1]);
            let err = envelope(&spki, b"x").expect_err("size outside the range");
            assert!(matches!(err, RecipientError::UnsupportedKey(_)), "{bits}: {err:?}");
            assert!(err.to_string().contains(&format!("{bits} bits")), "{err}");
        }
    }

    #[test]
    fn rejects_invalid_rsa_parameters() {
        // Even exponent, exponent 1.
        for exponent in [&[2u8][..], &[1]] {
            let err = envelope(&synthetic_rsa_spki(2048, exponent), b"x").expect_err("bad exponent");
            assert!(matches!(err, RecipientError::UnsupportedKey(_)), "{err:?}");
        }
    }

    #[test]
    fn rejects_non_rsa_keys() {
        let p256 = p256::SecretKey::random(&mut rand::rngs::OsRng)
            .public_key()
            .to_public_key_der()
            .expect("spki");
        let err = envelope(p256.as_bytes(), b"x").expect_err("EC key");
        assert!(matches!(err, RecipientError::UnsupportedKey(_)), "{err:?}");
        assert!(err.to_string().contains("not an RSA key"), "{err}");
    }

    #[test]
    fn rejects_garbage_as_malformed() {
        let spki = spki_der(key());
        let mut trailing = spki.clone();
        trailing.push(0);
        // An EC point where the RSAPublicKey belongs: rsaEncryption, unparsable key.
        let ec_point = p256::SecretKey::random(&mut rand::rngs::OsRng)
            .public_key()
            .to_sec1_bytes();
        let rsa_ec = rsa_spki_with_key_bits(&ec_point);
        let mut rsa_params = SubjectPublicKeyInfoOwned::from_der(&spki).expect("spki");
        rsa_params.algorithm.parameters = Some(Any::new(Tag::OctetString, vec![1]).expect("any"));
        let cases: [(&str, Vec<u8>); 9] = [
            ("empty", vec![]),
            ("garbage", b"not a key at all".to_vec()),
            ("truncated", spki[..spki.len() - 1].to_vec()),
            ("trailing byte", trailing),
            (
                "PEM instead of DER",
                key()
                    .to_public_key()
                    .to_public_key_pem(Default::default())
                    .expect("pem")
                    .into(),
            ),
            ("RSAPublicKey garbage", rsa_spki_with_key_bits(b"garbage")),
            ("RSAPublicKey empty", rsa_spki_with_key_bits(&[])),
            ("EC point as RSAPublicKey", rsa_ec),
            ("rsaEncryption parameters not NULL", rsa_params.to_der().expect("der")),
        ];
        for (what, der) in cases {
            let err = envelope(&der, b"x").expect_err(what);
            assert!(matches!(err, RecipientError::Malformed(_)), "{what}: {err:?}");
        }
    }

    /// What each kind of [`RecipientError`] may say: the phrases that name the problem, one per
    /// check in `envelope`. `Internal` names no input problem, so no input may produce it.
    const MALFORMED_PHRASES: [&str; 4] = [
        "not a DER SubjectPublicKeyInfo",
        "rsaEncryption with parameters other than NULL",
        "subjectPublicKey is not a whole number of bytes",
        "subjectPublicKey is not a DER RSAPublicKey",
    ];
    const UNSUPPORTED_PHRASES: [&str; 3] = ["not an RSA key", "an RSA modulus of", "not a valid RSA public key"];

    /// Checks that `err` is of the kind its message belongs to and that the message (as the
    /// client sees it, with the kind's prefix) names one of that kind's problems.
    fn assert_names_the_problem(err: &RecipientError) -> Result<(), String> {
        let message = err.to_string();
        let (prefix, phrases): (&str, &[&str]) = match err {
            RecipientError::Malformed(_) => ("malformed public key: ", &MALFORMED_PHRASES),
            RecipientError::UnsupportedKey(_) => ("unsupported public key: ", &UNSUPPORTED_PHRASES),
            RecipientError::Internal(_) => return Err(format!("an input problem reported as internal: {err:?}")),
        };
        let Some(reason) = message.strip_prefix(prefix) else {
            return Err(format!("{message:?} does not start with {prefix:?}"));
        };
        if !phrases.iter().any(|phrase| reason.starts_with(phrase)) {
            return Err(format!("{message:?} names none of {phrases:?}"));
        }
        Ok(())
    }

    #[test]
    fn errors_say_what_is_wrong_without_panicking_on_any_input() {
        use proptest::prelude::*;

        let spki = spki_der(key());
        let mut trailing = spki.clone();
        trailing.push(0);
        let ec_point = p256::SecretKey::random(&mut rand::rngs::OsRng)
            .public_key()
            .to_sec1_bytes();
        let p256_spki = p256::SecretKey::random(&mut rand::rngs::OsRng)
            .public_key()
            .to_public_key_der()
            .expect("spki");
        let mut rsa_params = SubjectPublicKeyInfoOwned::from_der(&spki).expect("spki");
        rsa_params.algorithm.parameters = Some(Any::new(Tag::OctetString, vec![1]).expect("any"));
        let mut partial_byte = SubjectPublicKeyInfoOwned::from_der(&spki).expect("spki");
        let key_bits = partial_byte.subject_public_key.raw_bytes().to_vec();
        partial_byte.subject_public_key = BitString::new(4, key_bits).expect("bits");
        let pem: Vec<u8> = key()
            .to_public_key()
            .to_public_key_pem(Default::default())
            .expect("pem")
            .into();

        // (input, what is wrong, expected kind, what the message must say)
        let malformed = |e: &RecipientError| matches!(e, RecipientError::Malformed(_));
        let unsupported = |e: &RecipientError| matches!(e, RecipientError::UnsupportedKey(_));
        type Kind = fn(&RecipientError) -> bool;
        let cases: Vec<(Vec<u8>, &str, Kind, Vec<String>)> = vec![
            (
                vec![],
                "empty",
                malformed,
                vec!["malformed public key: not a DER SubjectPublicKeyInfo".into()],
            ),
            (
                b"not a key at all".to_vec(),
                "garbage",
                malformed,
                vec!["malformed public key: not a DER SubjectPublicKeyInfo".into()],
            ),
            (
                spki[..spki.len() - 1].to_vec(),
                "truncated",
                malformed,
                vec!["malformed public key: not a DER SubjectPublicKeyInfo".into()],
            ),
            (
                trailing,
                "trailing byte",
                malformed,
                vec!["malformed public key: not a DER SubjectPublicKeyInfo".into()],
            ),
            (
                pem,
                "PEM instead of DER",
                malformed,
                vec!["malformed public key: not a DER SubjectPublicKeyInfo".into()],
            ),
            (
                rsa_params.to_der().expect("der"),
                "rsaEncryption parameters not NULL",
                malformed,
                vec!["malformed public key: rsaEncryption with parameters other than NULL".into()],
            ),
            (
                partial_byte.to_der().expect("der"),
                "subjectPublicKey with unused bits",
                malformed,
                vec!["malformed public key: subjectPublicKey is not a whole number of bytes".into()],
            ),
            (
                rsa_spki_with_key_bits(b"garbage"),
                "RSAPublicKey garbage",
                malformed,
                vec!["malformed public key: subjectPublicKey is not a DER RSAPublicKey".into()],
            ),
            (
                rsa_spki_with_key_bits(&ec_point),
                "EC point as RSAPublicKey",
                malformed,
                vec!["malformed public key: subjectPublicKey is not a DER RSAPublicKey".into()],
            ),
            (
                p256_spki.as_bytes().to_vec(),
                "P-256 key",
                unsupported,
                vec![
                    "unsupported public key: not an RSA key".into(),
                    "algorithm 1.2.840.10045.2.1".into(),
                    "RSA keys of 2048 to 4096 bits are supported".into(),
                ],
            ),
            (
                synthetic_rsa_spki(1024, &[1, 0, 1]),
                "RSA-1024",
                unsupported,
                vec![
                    "unsupported public key: an RSA modulus of 1024 bits".into(),
                    "2048 to 4096 bits are supported".into(),
                ],
            ),
            (
                synthetic_rsa_spki(8192, &[1, 0, 1]),
                "RSA-8192",
                unsupported,
                vec!["unsupported public key: an RSA modulus of 8192 bits".into()],
            ),
            (
                synthetic_rsa_spki(2048, &[2]),
                "even public exponent",
                unsupported,
                vec!["unsupported public key: not a valid RSA public key".into()],
            ),
        ];
        for (input, what, kind, says) in &cases {
            let err = envelope(input, b"x").expect_err(what);
            assert!(kind(&err), "{what}: wrong kind {err:?}");
            let message = err.to_string();
            for phrase in says {
                assert!(
                    message.contains(phrase.as_str()),
                    "{what}: {message:?} does not say {phrase:?}"
                );
            }
            assert_names_the_problem(&err).unwrap_or_else(|e| panic!("{what}: {e}"));
        }

        // Arbitrary bytes: never a panic, never an envelope, and an input that is not DER SPKI
        // is reported as exactly that.
        proptest!(ProptestConfig::with_cases(512), |(bytes in proptest::collection::vec(any::<u8>(), 0..600))| {
            let Err(err) = envelope(&bytes, b"x") else {
                return Err(TestCaseError::fail(format!("an envelope for {} arbitrary bytes", bytes.len())));
            };
            if SubjectPublicKeyInfoRef::from_der(&bytes).is_err() {
                prop_assert!(malformed(&err), "{err:?}");
                prop_assert!(err.to_string().starts_with("malformed public key: not a DER SubjectPublicKeyInfo"), "{err}");
            }
            assert_names_the_problem(&err).map_err(TestCaseError::fail)?;
        });

        // A valid key with one byte overwritten or cut short: either still a usable key, or an
        // error that names the problem, never a panic.
        let cases = (0..spki.len(), any::<u8>(), any::<bool>());
        proptest!(ProptestConfig::with_cases(512), |((at, byte, truncate) in cases)| {
            let mut input = spki.clone();
            if truncate {
                input.truncate(at);
            } else {
                input[at] = byte;
            }
            if let Err(err) = envelope(&input, b"x") {
                assert_names_the_problem(&err).map_err(TestCaseError::fail)?;
            }
        });
    }

    // --- independent check: OpenSSL's CMS implementation opens the envelope ---

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            let mut tag = [0u8; 8];
            rand::rngs::OsRng.fill_bytes(&mut tag);
            let dir =
                std::env::temp_dir().join(format!("keyward-recipient-{}-{}", std::process::id(), hex::encode(tag)));
            std::fs::create_dir(&dir).expect("scratch dir");
            Scratch(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Whether the `openssl` binary runs. Absent: a failure under CI (`CI`
    /// set), a skip notice elsewhere.
    fn openssl_available() -> bool {
        match Command::new("openssl").arg("version").output() {
            Ok(out) if out.status.success() => {
                eprintln!("independent check with {}", String::from_utf8_lossy(&out.stdout).trim());
                true
            }
            other => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "the openssl binary is required under CI for the independent CMS check: {other:?}"
                );
                eprintln!("SKIPPED: no usable openssl binary ({other:?}); the independent CMS check did not run");
                false
            }
        }
    }

    fn run_openssl(args: &[&str]) {
        let out = Command::new("openssl").args(args).output().expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An RSA key generated by OpenSSL: (PKCS#8 PEM path, SPKI DER).
    fn openssl_key(scratch: &Scratch, bits: usize) -> (PathBuf, Vec<u8>) {
        let key = scratch.path(&format!("key{bits}.pem"));
        let public = scratch.path(&format!("pub{bits}.der"));
        let key_s = key.to_str().expect("utf-8 path");
        let bits_opt = format!("rsa_keygen_bits:{bits}");
        run_openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", &bits_opt, "-out", key_s]);
        run_openssl(&[
            "pkey",
            "-in",
            key_s,
            "-pubout",
            "-outform",
            "DER",
            "-out",
            public.to_str().expect("utf-8"),
        ]);
        (key, std::fs::read(&public).expect("public key"))
    }

    /// `openssl cms -decrypt -inform DER -inkey <key> -binary` on `envelope`.
    fn openssl_decrypt(scratch: &Scratch, key: &Path, envelope: &[u8]) -> std::process::Output {
        let input = scratch.path("envelope.der");
        std::fs::write(&input, envelope).expect("write envelope");
        Command::new("openssl")
            .args(["cms", "-decrypt", "-inform", "DER", "-binary", "-in"])
            .arg(&input)
            .arg("-inkey")
            .arg(key)
            .output()
            .expect("run openssl cms")
    }

    #[test]
    fn openssl_cms_decrypts_the_envelope() {
        if !openssl_available() {
            return;
        }
        let scratch = Scratch::new();
        for bits in [2048, 4096] {
            let (key_pem, spki) = openssl_key(&scratch, bits);
            for len in [0, 1, 16, 32, 1000, 4096] {
                let data = plaintext(len);
                let env = envelope(&spki, &data).expect("envelope");
                let out = openssl_decrypt(&scratch, &key_pem, &env);
                assert!(
                    out.status.success(),
                    "openssl cms -decrypt failed for RSA-{bits}, {len} bytes: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(out.stdout, data, "openssl disagrees for RSA-{bits}, {len} bytes");

                // The same key also opens it with this module's reference logic.
                let pem = std::fs::read_to_string(&key_pem).expect("key");
                let key = RsaPrivateKey::from_pkcs8_pem(&pem).expect("OpenSSL's PKCS#8 key");
                if len == 32 {
                    assert_eq!(open(&key, &env), data);
                }
            }
        }
    }

    #[test]
    fn openssl_cms_refuses_the_wrong_key() {
        if !openssl_available() {
            return;
        }
        let scratch = Scratch::new();
        let (_, spki) = openssl_key(&scratch, 2048);
        let (other_key, _) = openssl_key(&scratch, 3072);
        let data = plaintext(32);
        let out = openssl_decrypt(&scratch, &other_key, &envelope(&spki, &data).expect("envelope"));
        assert!(
            !out.status.success() || out.stdout != data,
            "another key must not recover the plaintext"
        );
    }
}
