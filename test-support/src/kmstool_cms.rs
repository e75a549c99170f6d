//! A re-enactment, in Rust, of how the AWS Nitro Enclaves SDK reads a
//! `CiphertextForRecipient`: `aws_cms_parse_enveloped_data` in
//! aws-nitro-enclaves-sdk-c `source/cms.c` (a copy with its licence is in
//! `/work/shared/nitro/kmstool-cms/`), the parser of kmstool-enclave-cli and
//! of every workload built on that SDK.
//!
//! It is a walk, not a parser of ours: the same calls in the same order, each
//! with the semantics of AWS-LC's `CBS` functions it names, so an envelope
//! passes here exactly when it passes there. The two that matter:
//!
//! - `CBS_get_any_ber_asn1_element` accepts BER. For an **indefinite-length**
//!   constructed element it returns and consumes **only the header**; for a
//!   definite-length element it returns and consumes the **whole element**.
//!   `cms.c` uses it on the ContentInfo, its `[0]`, the EnvelopedData, the
//!   EncryptedContentInfo (expecting to descend into them: they must be
//!   indefinite) and on recipientInfos and the content-encryption
//!   AlgorithmIdentifier (expecting the whole element: they must be definite).
//! - `CBS_get_asn1` and friends read DER-style definite elements only (an
//!   indefinite length fails), returning the contents.
//!
//! Checked against AWS KMS's captured responses (`tests/data/aws-kms-cms/`),
//! which it must read to the values `cms_test.c` expects.

/// What `aws_cms_parse_enveloped_data` outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmstoolParts {
    pub encrypted_key: Vec<u8>,
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// AWS-LC's tag representation (`CBS_ASN1_TAG`): class and constructed bits
/// in the top byte, the number below.
type Tag = u32;
const CONSTRUCTED: Tag = 0x20 << 24;
const CONTEXT_SPECIFIC: Tag = 0x80 << 24;
const INTEGER: Tag = 0x02;
const OCTET_STRING: Tag = 0x04;
const OBJECT: Tag = 0x06;
const SEQUENCE: Tag = 0x10 | CONSTRUCTED;
const SET: Tag = 0x11 | CONSTRUCTED;

/// DER contents of the OIDs `cms.c` compares with `OBJ_cbs2nid`.
const NID_PKCS7_ENVELOPED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const NID_PKCS7_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const NID_AES_256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

/// A `CBS`: a cursor over bytes.
#[derive(Clone, Copy)]
struct Cbs<'a>(&'a [u8]);

/// One element as `cbs_get_any_asn1_element` sees it.
struct Element<'a> {
    tag: Tag,
    header_len: usize,
    /// The bytes consumed: the header only (indefinite) or the whole element.
    bytes: &'a [u8],
}

impl<'a> Cbs<'a> {
    /// `parse_asn1_tag`.
    fn parse_tag(&self) -> Option<(Tag, usize)> {
        let first = *self.0.first()?;
        let mut number = Tag::from(first & 0x1f);
        let mut len = 1;
        if number == 0x1f {
            number = 0;
            loop {
                let b = *self.0.get(len)?;
                len += 1;
                if number >> (29 - 7) != 0 || (number == 0 && b == 0x80) {
                    return None; // overflow, or a non-minimal encoding
                }
                number = (number << 7) | Tag::from(b & 0x7f);
                if b & 0x80 == 0 {
                    break;
                }
            }
            if number < 0x1f {
                return None;
            }
        }
        let tag = (Tag::from(first & 0xe0) << 24) | number;
        // [UNIVERSAL 0] (end-of-contents) is rejected.
        if tag & !CONSTRUCTED == 0 {
            return None;
        }
        Some((tag, len))
    }

    /// `cbs_get_any_asn1_element(cbs, …, ber_ok)`.
    fn get_any_element(&mut self, ber_ok: bool) -> Option<Element<'a>> {
        let (tag, tag_len) = self.parse_tag()?;
        let length_byte = *self.0.get(tag_len)?;
        let mut header_len = tag_len + 1;
        let len = if length_byte & 0x80 == 0 {
            usize::from(length_byte) + header_len
        } else {
            let num_bytes = usize::from(length_byte & 0x7f);
            if num_bytes == 0 {
                // Indefinite length: BER only, constructed only; only the header.
                if !ber_ok || tag & CONSTRUCTED == 0 {
                    return None;
                }
                let (bytes, rest) = self.0.split_at(header_len);
                self.0 = rest;
                return Some(Element { tag, header_len, bytes });
            }
            if num_bytes > 4 {
                return None;
            }
            let mut value: usize = 0;
            for i in 0..num_bytes {
                value = (value << 8) | usize::from(*self.0.get(header_len + i)?);
            }
            if !ber_ok && (value < 128 || (value >> ((num_bytes - 1) * 8)) == 0) {
                return None; // DER: minimal length encoding
            }
            header_len += num_bytes;
            value.checked_add(header_len)?
        };
        if len > self.0.len() {
            return None;
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(Element { tag, header_len, bytes })
    }

    /// `CBS_get_any_ber_asn1_element`.
    fn get_any_ber_element(&mut self) -> Option<Element<'a>> {
        self.get_any_element(true)
    }

    /// `CBS_get_any_asn1_element`: DER, whole element.
    fn get_any_der_element(&mut self) -> Option<Element<'a>> {
        self.get_any_element(false)
    }

    /// `CBS_get_any_asn1`: DER, the contents.
    fn get_any_asn1(&mut self) -> Option<(Tag, Cbs<'a>)> {
        let e = self.get_any_der_element()?;
        Some((e.tag, Cbs(&e.bytes[e.header_len..])))
    }

    /// `CBS_get_asn1`: DER, the contents of an element of type `tag`.
    fn get_asn1(&mut self, tag: Tag) -> Option<Cbs<'a>> {
        let saved = *self;
        match self.get_any_asn1() {
            Some((t, contents)) if t == tag => Some(contents),
            _ => {
                *self = saved;
                None
            }
        }
    }

    /// `CBS_peek_asn1_tag`.
    fn peek_tag(&self, tag: Tag) -> bool {
        self.parse_tag().is_some_and(|(t, _)| t == tag)
    }

    /// `CBS_get_optional_asn1`: `Some(present)`, or `None` on a parse error.
    fn get_optional_asn1(&mut self, tag: Tag) -> Option<bool> {
        if self.peek_tag(tag) {
            self.get_asn1(tag).map(|_| true)
        } else {
            Some(false)
        }
    }

    /// `CBS_get_asn1_uint64`: a minimal, non-negative INTEGER of at most 64 bits.
    fn get_asn1_uint64(&mut self) -> Option<u64> {
        let bytes = self.get_asn1(INTEGER)?.0;
        let (&first, _) = bytes.split_first()?;
        if first & 0x80 != 0 || (first == 0 && bytes.len() > 1 && bytes[1] & 0x80 == 0) {
            return None;
        }
        let bytes = if first == 0 && bytes.len() > 1 {
            &bytes[1..]
        } else {
            bytes
        };
        if bytes.len() > 8 {
            return None;
        }
        Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// `CBS_skip`.
    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }

    /// `CBS_get_u8`.
    fn get_u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// Walks `input` as `aws_cms_parse_enveloped_data` does; `Err` names the
/// step of `cms.c` that fails.
pub fn parse_enveloped_data(input: &[u8]) -> Result<KmstoolParts, &'static str> {
    let mut cms = Cbs(input);

    // ContentInfo header, contentType.
    let e = cms.get_any_ber_element().ok_or("ContentInfo: no element")?;
    if e.tag != SEQUENCE {
        return Err("ContentInfo: not a SEQUENCE");
    }
    let content_type = cms.get_asn1(OBJECT).ok_or("ContentInfo: no contentType OID")?;
    if content_type.0 != NID_PKCS7_ENVELOPED {
        return Err("ContentInfo: contentType is not pkcs7-envelopedData");
    }

    // [0] header, EnvelopedData header, version.
    cms.get_any_ber_element().ok_or("content [0]: no element")?;
    let e = cms.get_any_ber_element().ok_or("EnvelopedData: no element")?;
    if e.tag != SEQUENCE {
        return Err("EnvelopedData: not a SEQUENCE");
    }
    let mut version = cms.get_asn1(INTEGER).ok_or("EnvelopedData: no version INTEGER")?;
    if version.get_u8() != Some(2) {
        return Err("EnvelopedData: version is not 2");
    }

    // recipientInfos: the whole SET.
    let e = cms.get_any_ber_element().ok_or("recipientInfos: no element")?;
    if e.tag != SET {
        return Err("recipientInfos: not a SET");
    }
    let mut enveloped_data = Cbs(e.bytes);
    enveloped_data
        .get_optional_asn1(SEQUENCE)
        .ok_or("originatorInfo: malformed")?;
    let mut recipient_infos = enveloped_data
        .get_asn1(SET)
        .ok_or("recipientInfos: not a definite-length SET")?;
    let mut recipient_info = recipient_infos
        .get_asn1(SEQUENCE)
        .ok_or("KeyTransRecipientInfo: not a definite-length SEQUENCE")?;
    if recipient_info.get_asn1_uint64() != Some(2) {
        return Err("KeyTransRecipientInfo: version is not 2");
    }
    recipient_info
        .get_any_der_element()
        .ok_or("KeyTransRecipientInfo: no rid")?;
    recipient_info
        .get_asn1(SEQUENCE)
        .ok_or("KeyTransRecipientInfo: no keyEncryptionAlgorithm SEQUENCE")?;
    let encrypted_key = recipient_info
        .get_asn1(OCTET_STRING)
        .ok_or("KeyTransRecipientInfo: no encryptedKey OCTET STRING")?
        .0
        .to_vec();

    // EncryptedContentInfo header, contentType.
    let e = cms.get_any_ber_element().ok_or("EncryptedContentInfo: no element")?;
    if e.tag != SEQUENCE {
        return Err("EncryptedContentInfo: not a SEQUENCE");
    }
    let content_type = cms.get_asn1(OBJECT).ok_or("EncryptedContentInfo: no contentType OID")?;
    if content_type.0 != NID_PKCS7_DATA {
        return Err("EncryptedContentInfo: contentType is not pkcs7-data");
    }

    // contentEncryptionAlgorithm: the whole element, its header skipped.
    let e = cms
        .get_any_ber_element()
        .ok_or("contentEncryptionAlgorithm: no element")?;
    if e.tag != SEQUENCE {
        return Err("contentEncryptionAlgorithm: not a SEQUENCE");
    }
    let mut algorithm = Cbs(e.bytes);
    algorithm
        .skip(e.header_len)
        .ok_or("contentEncryptionAlgorithm: short")?;
    let algo = algorithm.get_asn1(OBJECT).ok_or("contentEncryptionAlgorithm: no OID")?;
    let iv = algorithm
        .get_asn1(OCTET_STRING)
        .ok_or("contentEncryptionAlgorithm: no IV OCTET STRING")?
        .0
        .to_vec();
    if algo.0 != NID_AES_256_CBC {
        return Err("contentEncryptionAlgorithm: not aes-256-cbc");
    }

    // encryptedContent.
    let mut ciphertext = Vec::new();
    if cms.peek_tag(CONTEXT_SPECIFIC) {
        // Primitive [0] IMPLICIT OCTET STRING: every following element's contents.
        while let Some((_, contents)) = cms.get_any_asn1() {
            ciphertext.extend_from_slice(contents.0);
        }
    } else {
        cms.get_any_ber_element().ok_or("encryptedContent: no element")?;
        while let Some(e) = cms.get_any_ber_element() {
            if e.tag != OCTET_STRING {
                break;
            }
            let part = Cbs(e.bytes)
                .get_asn1(OCTET_STRING)
                .ok_or("encryptedContent: a segment is not a definite OCTET STRING")?;
            ciphertext.extend_from_slice(part.0);
        }
    }
    Ok(KmstoolParts {
        encrypted_key,
        iv,
        ciphertext,
    })
}

/// Keyward's envelope (AWS's BER layout) re-encoded as the DER that
/// Keyward emitted before: the same fields, every length definite, the
/// encryptedContent one primitive `[0]`. For showing that the walk above
/// refuses it.
pub fn reencode_as_der(ber: &[u8]) -> Vec<u8> {
    use cms::content_info::{CmsVersion, ContentInfo};
    use cms::enveloped_data::{EncryptedContentInfo, EnvelopedData, RecipientInfos};
    use der::asn1::{ObjectIdentifier, OctetString};
    use der::{Any, Decode, Encode, Reader as _, SliceReader};
    use spki::AlgorithmIdentifierOwned;

    fn take<'a, T: Decode<'a>>(rest: &mut &'a [u8]) -> T {
        let mut reader = SliceReader::new(rest).expect("reader");
        let value = T::decode(&mut reader).expect("a DER element");
        let len = usize::try_from(reader.position()).expect("length");
        *rest = &rest[len..];
        value
    }
    fn skip(rest: &mut &[u8], header: &[u8]) {
        assert!(rest.starts_with(header), "not Keyward's layout");
        *rest = &rest[header.len()..];
    }

    let mut rest = ber;
    skip(&mut rest, &[0x30, 0x80]);
    let content_type: ObjectIdentifier = take(&mut rest);
    skip(&mut rest, &[0xa0, 0x80, 0x30, 0x80]);
    let version: CmsVersion = take(&mut rest);
    let recip_infos: RecipientInfos = take(&mut rest);
    skip(&mut rest, &[0x30, 0x80]);
    let data_type: ObjectIdentifier = take(&mut rest);
    let content_enc_alg: AlgorithmIdentifierOwned = take(&mut rest);
    skip(&mut rest, &[0xa0, 0x80]);
    let mut ciphertext = Vec::new();
    while rest.first() == Some(&0x04) {
        let segment: OctetString = take(&mut rest);
        ciphertext.extend_from_slice(segment.as_bytes());
    }
    assert_eq!(rest, [0; 10], "five end-of-contents");
    let enveloped = EnvelopedData {
        version,
        originator_info: None,
        recip_infos,
        encrypted_content: EncryptedContentInfo {
            content_type: data_type,
            content_enc_alg,
            encrypted_content: Some(OctetString::new(ciphertext).expect("octets")),
        },
        unprotected_attrs: None,
    };
    ContentInfo {
        content_type,
        content: Any::encode_from(&enveloped).expect("EnvelopedData"),
    }
    .to_der()
    .expect("DER")
}
