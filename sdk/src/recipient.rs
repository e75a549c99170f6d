//! Recipient keys for attested workloads: open `CiphertextForRecipient`.
//!
//! A workload in an enclave that calls `Decrypt`, `GenerateDataKey`,
//! `GenerateRandom`, … with `Recipient { KeyEncryptionAlgorithm:
//! "RSAES_OAEP_SHA_256", AttestationDocument }` does not get `Plaintext`
//! back: the service seals it to the RSA public key inside the attestation
//! document and returns `CiphertextForRecipient` instead. This module holds
//! that key pair on the workload's side:
//!
//! ```no_run
//! use keyward_sdk::recipient::RecipientKey;
//! # fn request_attestation(public_key: &[u8]) -> Vec<u8> { unimplemented!() }
//! # fn call_decrypt(document: &[u8]) -> Vec<u8> { unimplemented!() }
//! let key = RecipientKey::generate();
//! // The NSM puts the SPKI into the signed attestation document (`public_key`).
//! let document = request_attestation(key.public_key_der());
//! // Decrypt with Recipient { KeyEncryptionAlgorithm: "RSAES_OAEP_SHA_256", AttestationDocument: document }.
//! let ciphertext_for_recipient = call_decrypt(&document);
//! let plaintext = key.open(&ciphertext_for_recipient)?; // wiped when dropped
//! # Ok::<(), keyward_sdk::recipient::OpenError>(())
//! ```
//!
//! ## Format
//!
//! [`RecipientKey::open`] accepts a CMS (RFC 5652) ContentInfo of type
//! id-envelopedData in BER or DER — what AWS KMS returns (BER, with
//! indefinite lengths and a constructed, segmented encryptedContent) and
//! what Keyward's enclave returns (the same layout), as well as DER (older
//! Keyward releases, OpenSSL) — holding exactly one KeyTransRecipientInfo
//! whose key encryption is id-RSAES-OAEP with SHA-256 and MGF1-SHA-256
//! (empty label), and an EncryptedContentInfo of type id-data encrypted with
//! aes256-CBC (16-byte IV as the parameter, PKCS#7 padding). The
//! content-encryption key must be 32 bytes. The recipient identifier
//! (subjectKeyIdentifier or issuerAndSerialNumber) is not compared with this
//! key (AWS does not document how it derives it); a ciphertext for another
//! key fails to decrypt instead. originatorInfo and unprotectedAttrs are
//! refused. [`Envelope::parse`] exposes the parsed parts without decrypting.
//!
//! The BER is read (by `keyward-attestation`'s `cms` module, which the
//! enclave shares) with `yasna` (the ASN.1 reader rcgen uses): bounded
//! nesting, every length checked against its enclosing element, and only the
//! elements above are read, each with its expected tag; nothing is skipped
//! blindly.
//!
//! ## Security notes
//!
//! Opening is a **client-side operation on the client's own private key**;
//! the service never sees that key. It uses the RustCrypto `rsa` crate,
//! whose private-key operations are not constant time (the "Marvin" timing
//! side channel, RUSTSEC-2023-0071; decryption is blinded, which reduces but
//! does not remove the leak). Whoever can submit many chosen ciphertexts to
//! [`RecipientKey::open`] and time it precisely could, in principle, learn
//! what one RSA ciphertext decrypts to. Keep the key ephemeral (generate one
//! per enclave boot or per request) and do not expose `open` as a service
//! to untrusted callers.
//!
//! CMS EnvelopedData is not authenticated: the untrusted host relaying the
//! response can alter it. Altered envelopes mostly fail with
//! [`OpenError::Decrypt`], but an alteration can also yield a different
//! plaintext. Every decryption failure (RSA-OAEP, key length, CBC padding) is
//! the same [`OpenError::Decrypt`], so the error value does not tell them
//! apart (timing might: another reason not to make `open` an oracle).
//!
//! The private key is zeroized on drop (by `rsa`'s `RsaPrivateKey`) and never
//! printed by `Debug`; the plaintext and the content-encryption key are held
//! in [`Zeroizing`] buffers.

use std::fmt;

use aes::Aes256;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use keyward_attestation::cms::CEK_LEN;
use rsa::pkcs8::EncodePublicKey;
use rsa::{Oaep, RsaPrivateKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The parser is `keyward-attestation`'s, shared with the enclave (which
/// opens the root its custody key service releases the same way).
pub use keyward_attestation::cms::{CmsError as OpenError, Envelope, MAX_CIPHERTEXT_LEN};

/// A workload's RSA-2048 key pair for `Recipient` requests.
///
/// The private key never leaves the value: there is no export. It is
/// zeroized on drop, and `Debug` shows only a fingerprint of the public key.
pub struct RecipientKey {
    key: RsaPrivateKey,
    public_key_der: Vec<u8>,
}

impl RecipientKey {
    /// Modulus size of generated keys, in bits.
    pub const BITS: usize = 2048;

    /// Generates a fresh key pair from the OS RNG (slow-ish: tens of
    /// milliseconds in release builds, seconds in debug builds).
    ///
    /// # Panics
    ///
    /// Only if the OS RNG fails, as [`rand::rngs::OsRng`] does.
    pub fn generate() -> Self {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, Self::BITS)
            .expect("RSA-2048 key generation with fixed, valid parameters");
        Self::from_private_key(key)
    }

    fn from_private_key(key: RsaPrivateKey) -> Self {
        let public_key_der = key
            .to_public_key()
            .to_public_key_der()
            .expect("an RSA public key always encodes as SPKI")
            .into_vec();
        RecipientKey { key, public_key_der }
    }

    /// The public key as a DER SubjectPublicKeyInfo: what goes into the
    /// attestation document's `public_key`.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// Decrypts a `CiphertextForRecipient` (the raw bytes, base64-decoded
    /// from the JSON response) sealed to this key: RSA-OAEP-SHA-256 for the
    /// content-encryption key, then AES-256-CBC for the content. The
    /// plaintext is wiped when the returned buffer drops.
    pub fn open(&self, ciphertext_for_recipient: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let envelope = Envelope::parse(ciphertext_for_recipient)?;

        let cek = Zeroizing::new(
            self.key
                .decrypt_blinded(&mut rand::rngs::OsRng, Oaep::new::<Sha256>(), envelope.encrypted_key())
                .map_err(|_| OpenError::Decrypt)?,
        );
        if cek.len() != CEK_LEN {
            return Err(OpenError::Decrypt);
        }
        let decryptor =
            cbc::Decryptor::<Aes256>::new_from_slices(&cek, envelope.iv()).map_err(|_| OpenError::Decrypt)?;
        // Decrypt in place in a zeroizing buffer, so no copy of the plaintext
        // (or of a badly padded one) is left behind.
        let mut buffer = Zeroizing::new(envelope.ciphertext().to_vec());
        let len = decryptor
            .decrypt_padded_mut::<Pkcs7>(buffer.as_mut_slice())
            .map_err(|_| OpenError::Decrypt)?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }
}

impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprint = Sha256::digest(&self.public_key_der);
        f.debug_struct("RecipientKey")
            .field("bits", &Self::BITS)
            .field("public_key_sha256", &hex::encode(fingerprint))
            .field("private_key", &format_args!("<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use cms::builder::{
        ContentEncryptionAlgorithm, EnvelopedDataBuilder, KeyEncryptionInfo, KeyTransRecipientInfoBuilder,
        RecipientInfoBuilder, RecipientInfoType,
    };
    use cms::cert::x509::ext::pkix::SubjectKeyIdentifier;
    use cms::content_info::{CmsVersion, ContentInfo};
    use cms::enveloped_data::{EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo};
    use der::asn1::{ObjectIdentifier, OctetString};
    use der::{Any, Decode, Encode};
    use proptest::prelude::*;
    use rsa::RsaPublicKey;
    use rsa::pkcs1::RsaOaepParams;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::pkcs8::spki::AlgorithmIdentifierOwned;
    use rsa::traits::PublicKeyParts;

    use super::*;

    const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
    const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");

    /// Key generation is slow in debug builds: two keys for the module.
    fn key() -> &'static RecipientKey {
        static KEY: OnceLock<RecipientKey> = OnceLock::new();
        KEY.get_or_init(RecipientKey::generate)
    }

    fn other_key() -> &'static RecipientKey {
        static KEY: OnceLock<RecipientKey> = OnceLock::new();
        KEY.get_or_init(RecipientKey::generate)
    }

    /// Which RSAES-OAEP parameters the test recipient encodes.
    #[derive(Clone, Copy)]
    enum Oaep256 {
        /// SHA-256 / MGF1-SHA-256, hash parameters NULL (what Keyward emits).
        Null,
        /// RSAES-OAEP-params all defaults: SHA-1 (must be refused).
        Sha1Defaults,
    }

    /// A `KeyTransRecipientInfo` with RSA-OAEP for cms' `EnvelopedDataBuilder`
    /// (its own KTRI builder only does PKCS#1 v1.5): an envelope assembled by
    /// the cms crate rather than by Keyward's enclave code.
    struct OaepRecipient {
        key: RsaPublicKey,
        params: Oaep256,
    }

    impl RecipientInfoBuilder for OaepRecipient {
        fn recipient_info_type(&self) -> RecipientInfoType {
            RecipientInfoType::Ktri
        }

        fn recipient_info_version(&self) -> CmsVersion {
            CmsVersion::V2
        }

        fn build(&mut self, cek: &[u8]) -> Result<RecipientInfo, cms::builder::Error> {
            let (params, encrypted) = match self.params {
                Oaep256::Null => (
                    RsaOaepParams::new::<Sha256>(),
                    self.key.encrypt(&mut rand::rngs::OsRng, Oaep::new::<Sha256>(), cek),
                ),
                // The parameters say SHA-1; the parser refuses on them alone.
                Oaep256::Sha1Defaults => (
                    RsaOaepParams::default(),
                    self.key.encrypt(&mut rand::rngs::OsRng, Oaep::new::<Sha256>(), cek),
                ),
            };
            let encrypted = encrypted.map_err(|e| cms::builder::Error::Builder(e.to_string()))?;
            Ok(RecipientInfo::Ktri(KeyTransRecipientInfo {
                version: CmsVersion::V2,
                rid: RecipientIdentifier::SubjectKeyIdentifier(SubjectKeyIdentifier(OctetString::new(vec![0xab; 20])?)),
                key_enc_alg: AlgorithmIdentifierOwned {
                    oid: ID_RSAES_OAEP,
                    parameters: Some(Any::encode_from(&params)?),
                },
                enc_key: OctetString::new(encrypted)?,
            }))
        }
    }

    fn content_info(data: &EnvelopedData) -> Vec<u8> {
        ContentInfo {
            content_type: ID_ENVELOPED_DATA,
            content: Any::encode_from(data).expect("any"),
        }
        .to_der()
        .expect("der")
    }

    /// An envelope built with cms' `EnvelopedDataBuilder` to `to`.
    fn seal_with(to: &RecipientKey, plaintext: &[u8], params: Oaep256, cipher: ContentEncryptionAlgorithm) -> Vec<u8> {
        let key = RsaPublicKey::from_public_key_der(to.public_key_der()).expect("spki");
        let mut builder = EnvelopedDataBuilder::new(None, plaintext, cipher, None).expect("builder");
        builder
            .add_recipient_info(OaepRecipient { key, params })
            .expect("recipient");
        content_info(&builder.build_with_rng(&mut rand::rngs::OsRng).expect("build"))
    }

    fn seal(to: &RecipientKey, plaintext: &[u8]) -> Vec<u8> {
        seal_with(to, plaintext, Oaep256::Null, ContentEncryptionAlgorithm::Aes256Cbc)
    }

    fn malformed(result: Result<Zeroizing<Vec<u8>>, OpenError>) -> String {
        match result {
            Err(OpenError::Malformed(reason)) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn public_key_is_an_rsa_2048_spki_and_debug_is_redacted() {
        let public = RsaPublicKey::from_public_key_der(key().public_key_der()).expect("SPKI");
        assert_eq!(public.n().bits(), RecipientKey::BITS);
        let shown = format!("{:?}", key());
        assert!(
            shown.contains("<redacted>") && shown.contains("public_key_sha256"),
            "{shown}"
        );
        let d = hex::encode(rsa::traits::PrivateKeyParts::d(&key().key).to_bytes_be());
        assert!(!shown.contains(&d[..16]), "{shown}");
        fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroized_on_drop::<RsaPrivateKey>();
    }

    #[test]
    fn opens_what_the_cms_builder_seals() {
        for len in [0, 1, 15, 16, 17, 32, 64, 1024, 2400, 4096] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            assert_eq!(
                key().open(&seal(key(), &data)).expect("open").as_slice(),
                data,
                "{len} bytes"
            );
        }
    }

    #[test]
    fn another_key_fails_cleanly() {
        let env = seal(key(), b"for key() only");
        assert_eq!(other_key().open(&env), Err(OpenError::Decrypt));
    }

    #[test]
    fn altered_key_or_padding_fails_with_decrypt() {
        let env = seal(key(), &[9; 40]);
        let data: EnvelopedData = ContentInfo::from_der(&env)
            .expect("ci")
            .content
            .decode_as()
            .expect("ed");

        let mut bad_key = data.clone();
        let Some(RecipientInfo::Ktri(ktri)) = bad_key.recip_infos.0.iter().next().cloned() else {
            panic!("ktri")
        };
        let mut enc = ktri.enc_key.as_bytes().to_vec();
        enc[100] ^= 1;
        let mut ktri = ktri;
        ktri.enc_key = OctetString::new(enc).expect("octets");
        bad_key.recip_infos.0 = der::asn1::SetOfVec::try_from(vec![RecipientInfo::Ktri(ktri)]).expect("set");
        assert_eq!(key().open(&content_info(&bad_key)), Err(OpenError::Decrypt));

        // Replace the last block by a block that fails PKCS#7 with
        // overwhelming probability once decrypted under the real key.
        let mut bad_padding = data;
        let mut ct = bad_padding
            .encrypted_content
            .encrypted_content
            .clone()
            .expect("ct")
            .as_bytes()
            .to_vec();
        let n = ct.len();
        ct[n - 16..].copy_from_slice(&[0x42; 16]);
        bad_padding.encrypted_content.encrypted_content = Some(OctetString::new(ct).expect("octets"));
        let result = key().open(&content_info(&bad_padding));
        assert!(
            result.is_err() || result.as_ref().is_ok_and(|p| p.as_slice() != [9; 40]),
            "{result:?}"
        );
    }

    #[test]
    fn refuses_other_algorithms() {
        let pkcs1v15 = {
            let public = RsaPublicKey::from_public_key_der(key().public_key_der()).expect("spki");
            let mut rng = rand::rngs::OsRng;
            let recipient = KeyTransRecipientInfoBuilder::new(
                RecipientIdentifier::SubjectKeyIdentifier(SubjectKeyIdentifier(
                    OctetString::new(vec![1; 20]).expect("ski"),
                )),
                KeyEncryptionInfo::Rsa(public),
                &mut rng,
            )
            .expect("ktri");
            let mut builder =
                EnvelopedDataBuilder::new(None, b"x", ContentEncryptionAlgorithm::Aes256Cbc, None).expect("builder");
            builder.add_recipient_info(recipient).expect("recipient");
            content_info(&builder.build_with_rng(&mut rand::rngs::OsRng).expect("build"))
        };
        assert!(malformed(key().open(&pkcs1v15)).contains("RSAES-OAEP"));

        let sha1 = seal_with(
            key(),
            b"x",
            Oaep256::Sha1Defaults,
            ContentEncryptionAlgorithm::Aes256Cbc,
        );
        assert!(malformed(key().open(&sha1)).contains("SHA-256"));

        let aes128 = seal_with(key(), b"x", Oaep256::Null, ContentEncryptionAlgorithm::Aes128Cbc);
        assert!(malformed(key().open(&aes128)).contains("AES-256-CBC"));
    }

    #[test]
    fn refuses_other_structures() {
        let env = seal(key(), b"x");
        let data: EnvelopedData = ContentInfo::from_der(&env)
            .expect("ci")
            .content
            .decode_as()
            .expect("ed");

        let signed = ContentInfo {
            content_type: ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2"),
            content: Any::encode_from(&data).expect("any"),
        };
        assert!(malformed(key().open(&signed.to_der().expect("der"))).contains("id-envelopedData"));

        let mut two = data.clone();
        let Some(first) = two.recip_infos.0.iter().next().cloned() else {
            panic!("ktri")
        };
        let RecipientInfo::Ktri(mut second) = first.clone() else {
            panic!("ktri")
        };
        second.enc_key = OctetString::new(vec![0; 256]).expect("octets");
        two.recip_infos.0 = der::asn1::SetOfVec::try_from(vec![first, RecipientInfo::Ktri(second)]).expect("set");
        assert!(malformed(key().open(&content_info(&two))).contains("2 recipients"));

        let mut other_type = data.clone();
        other_type.encrypted_content.content_type = ID_ENVELOPED_DATA;
        assert!(malformed(key().open(&content_info(&other_type))).contains("id-data"));

        let mut detached = data.clone();
        detached.encrypted_content.encrypted_content = None;
        assert!(malformed(key().open(&content_info(&detached))).contains("detached"));

        let mut no_iv = data.clone();
        no_iv.encrypted_content.content_enc_alg.parameters = None;
        assert!(malformed(key().open(&content_info(&no_iv))).contains("IV"));

        let mut short_iv = data.clone();
        short_iv.encrypted_content.content_enc_alg.parameters =
            Some(Any::encode_from(&OctetString::new(vec![0; 8]).expect("iv")).expect("any"));
        assert!(malformed(key().open(&content_info(&short_iv))).contains("IV"));

        let mut ragged = data;
        ragged.encrypted_content.encrypted_content = Some(OctetString::new(vec![0; 17]).expect("octets"));
        assert!(malformed(key().open(&content_info(&ragged))).contains("AES blocks"));

        let mut trailing = env.clone();
        trailing.push(0);
        malformed(key().open(&trailing));
        malformed(key().open(&env[..env.len() - 1]));
        malformed(key().open(&[]));
        malformed(key().open(&vec![0x30; MAX_CIPHERTEXT_LEN + 1]));
    }

    /// A vector of `tests/data/aws-kms-cms/` (hex, whitespace ignored).
    fn aws_vector(name: &str) -> Vec<u8> {
        let path = format!("{}/../tests/data/aws-kms-cms/{name}.hex", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        hex::decode(text.split_whitespace().collect::<String>()).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// AWS KMS's own responses (BER, indefinite lengths; one with a segmented,
    /// one with a primitive encryptedContent) parse to exactly what the AWS
    /// Nitro Enclaves SDK's `cms_test.c` expects.
    #[test]
    fn parses_aws_kms_responses_as_the_nitro_sdk_does() {
        for name in ["input_ber", "input_ber_w_ctx"] {
            let input = aws_vector(name);
            assert_eq!(&input[..2], [0x30, 0x80], "{name} is indefinite-length BER");
            let envelope = Envelope::parse(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                envelope.encrypted_key(),
                aws_vector(&format!("{name}.encrypted_key")),
                "{name}"
            );
            assert_eq!(envelope.iv().as_slice(), aws_vector(&format!("{name}.iv")), "{name}");
            assert_eq!(
                envelope.ciphertext(),
                aws_vector(&format!("{name}.ciphertext")),
                "{name}"
            );
            // Sealed to a key we do not have: well-formed, but it does not decrypt.
            assert_eq!(key().open(&input), Err(OpenError::Decrypt), "{name}");
            // Cut anywhere, it is refused.
            for cut in [1, 2, 14, 40, input.len() / 2, input.len() - 2, input.len() - 1] {
                malformed(key().open(&input[..cut]));
            }
        }
    }

    /// An envelope the cms crate encodes as DER, re-encoded in AWS's BER
    /// layout: indefinite ContentInfo, [0], EnvelopedData and
    /// EncryptedContentInfo, encryptedContent in `segment`-byte segments.
    fn as_aws_ber(der: &[u8], segment: usize) -> Vec<u8> {
        let data: EnvelopedData = ContentInfo::from_der(der).expect("ci").content.decode_as().expect("ed");
        let eci = &data.encrypted_content;
        let ciphertext = eci.encrypted_content.as_ref().expect("ct").as_bytes();
        let mut out = vec![0x30, 0x80];
        out.extend(ID_ENVELOPED_DATA.to_der().expect("oid"));
        out.extend([0xa0, 0x80, 0x30, 0x80]);
        out.extend(data.version.to_der().expect("version"));
        out.extend(data.recip_infos.to_der().expect("recipients"));
        out.extend([0x30, 0x80]);
        out.extend(eci.content_type.to_der().expect("oid"));
        out.extend(eci.content_enc_alg.to_der().expect("alg"));
        out.extend([0xa0, 0x80]);
        for chunk in ciphertext.chunks(segment) {
            out.extend(OctetString::new(chunk).expect("octets").to_der().expect("segment"));
        }
        out.extend([0; 10]);
        out
    }

    #[test]
    fn opens_ber_and_der_alike() {
        for len in [0, 15, 16, 999, 1000, 1001, 2400, 4096] {
            let data: Vec<u8> = (0..len).map(|i| (i * 11 % 253) as u8).collect();
            let der = seal(key(), &data);
            assert_eq!(key().open(&der).expect("DER").as_slice(), data, "{len} bytes, DER");
            for segment in [16, 1000] {
                let ber = as_aws_ber(&der, segment);
                assert_ne!(ber, der);
                assert_eq!(
                    key().open(&ber).expect("BER").as_slice(),
                    data,
                    "{len} bytes, BER in {segment}-byte segments"
                );
                assert_eq!(Envelope::parse(&ber), Envelope::parse(&der));
            }
        }
    }

    #[test]
    fn refuses_broken_ber() {
        let ber = as_aws_ber(&seal(key(), b"x"), 1000);
        // One end-of-contents missing, one too many, or garbage after them.
        malformed(key().open(&ber[..ber.len() - 2]));
        let mut extra = ber.clone();
        extra.extend([0, 0]);
        malformed(key().open(&extra));
        // An indefinite length on a primitive element (the version INTEGER at offset 17).
        let mut primitive = ber.clone();
        assert_eq!(&primitive[17..20], [0x02, 0x01, 0x02]);
        primitive[18] = 0x80;
        malformed(key().open(&primitive));
        // A length far past the end (would overflow a naive `pos + len`).
        let mut huge = ber[..19].to_vec();
        huge[18] = 0x88;
        huge.extend([0xff; 8]);
        malformed(key().open(&huge));
        // Deep nesting of indefinite lengths stops, without exhausting the stack.
        let mut deep = vec![0x30, 0x80];
        deep.extend(ID_ENVELOPED_DATA.to_der().expect("oid"));
        for _ in 0..100_000 {
            deep.extend([0xa0, 0x80]);
        }
        malformed(key().open(&deep));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(key().open(&bytes).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// BER mutations (AWS's responses with bytes changed, inserted, cut):
        /// the parser never panics, and what it accepts is well-formed.
        #[test]
        fn altered_ber_never_panics(
            which in any::<bool>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        ) {
            let mut bytes = aws_vector(if which { "input_ber" } else { "input_ber_w_ctx" });
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => bytes.truncate(i.max(1)),
                }
            }
            if let Ok(envelope) = Envelope::parse(&bytes) {
                prop_assert!(!envelope.ciphertext().is_empty() && envelope.ciphertext().len() % 16 == 0);
            }
        }
    }

    proptest! {
        // Mutations that still parse reach the (slow in debug) RSA decryption.
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn altered_envelopes_never_panic(
            position in any::<prop::sample::Index>(),
            xor in 1u8..,
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            static ENVELOPE: OnceLock<Vec<u8>> = OnceLock::new();
            let env = ENVELOPE.get_or_init(|| seal(key(), b"a data key of 32 bytes, exactly."));
            let mut bytes = env.clone();
            bytes[position.index(env.len())] ^= xor;
            if truncate {
                bytes.truncate(cut.index(env.len()));
            }
            // Either refused or decrypted to something: never a panic.
            let _ = key().open(&bytes);
        }
    }

    // --- independent check: an envelope made by OpenSSL's CMS ---

    /// Whether the `openssl` binary runs. Absent: a failure under CI (`CI`
    /// set), a skip notice elsewhere.
    fn openssl_available() -> bool {
        match std::process::Command::new("openssl").arg("version").output() {
            Ok(out) if out.status.success() => true,
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

    fn run_openssl(args: &[&std::ffi::OsStr]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn opens_what_openssl_cms_encrypts() {
        use rsa::pkcs8::EncodePrivateKey;
        if !openssl_available() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).into_os_string();
        let pem = key().key.to_pkcs8_pem(Default::default()).expect("pkcs8");
        std::fs::write(dir.path().join("key.pem"), pem.as_bytes()).expect("write key");
        run_openssl(&[
            "req".as_ref(),
            "-x509".as_ref(),
            "-new".as_ref(),
            "-key".as_ref(),
            &path("key.pem"),
            "-subj".as_ref(),
            "/CN=keyward recipient test".as_ref(),
            "-days".as_ref(),
            "1".as_ref(),
            "-out".as_ref(),
            &path("cert.pem"),
        ]);
        for (len, rid) in [(0, "-keyid"), (32, "-keyid"), (4096, "-keyid"), (100, "")] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 256) as u8).collect();
            std::fs::write(dir.path().join("data.bin"), &data).expect("write data");
            let mut args: Vec<std::ffi::OsString> = ["cms", "-encrypt", "-binary", "-aes256", "-outform", "DER"]
                .iter()
                .map(Into::into)
                .collect();
            if !rid.is_empty() {
                args.push(rid.into());
            }
            for (flag, value) in [
                ("-in", path("data.bin")),
                ("-out", path("env.der")),
                ("-recip", path("cert.pem")),
            ] {
                args.push(flag.into());
                args.push(value);
            }
            for opt in ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256", "rsa_mgf1_md:sha256"] {
                args.push("-keyopt".into());
                args.push(opt.into());
            }
            run_openssl(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
            let env = std::fs::read(dir.path().join("env.der")).expect("read envelope");
            let opened = key()
                .open(&env)
                .unwrap_or_else(|e| panic!("OpenSSL's envelope ({len} bytes, {rid:?}): {e}"));
            assert_eq!(opened.as_slice(), data, "{len} bytes, {rid:?}");
        }
    }
}
