//! HMAC keys: GenerateMac and VerifyMac (request layer; the MACs are made
//! and checked in `keystore::mac`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::crypto::render;
use super::error::KmsError;
use super::params::{self, b64, blob, length, parse, required};
use crate::context::Ctx;
use crate::keystore::mac::{self as domain, MacAlgorithm};
use crate::keystore::recipient::Released;

/// AWS KMS: a MAC is at most 6144 bytes.
pub const MAX_MAC: usize = 6144;

/// A MAC algorithm AWS knows (checked before the key is looked up).
fn mac_algorithm(value: Option<String>) -> Result<MacAlgorithm, KmsError> {
    let name = required("macAlgorithm", value)?;
    MacAlgorithm::parse(&name).ok_or_else(|| {
        KmsError::validation(
            "macAlgorithm",
            "Member must satisfy enum value set: [HMAC_SHA_384, HMAC_SHA_256, HMAC_SHA_224, HMAC_SHA_512]",
        )
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateMacRequest {
    key_id: Option<String>,
    message: Option<String>,
    mac_algorithm: Option<String>,
    grant_tokens: Option<Vec<String>>,
    /// Keyward extension: release the MAC only to this attested recipient
    /// (what a key under an attestation policy requires).
    recipient: Option<Value>,
    /// Accepted for compatibility; not honoured (the operation runs).
    #[serde(rename = "DryRun")]
    _dry_run: Option<bool>,
}

/// `Mac`, or — for an attested recipient — only `CiphertextForRecipient`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateMacResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(rename = "CiphertextForRecipient", skip_serializing_if = "Option::is_none")]
    for_recipient: Option<String>,
    mac_algorithm: &'static str,
    key_id: String,
}

pub async fn generate_mac(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GenerateMacRequest = parse(body)?;
    let message = params::message(req.message)?;
    let algorithm = mac_algorithm(req.mac_algorithm)?;
    params::check_grant_tokens(req.grant_tokens.as_deref())?;
    let key_id = required("keyId", req.key_id)?;
    let recipient = super::recipient::verify_for(ctx, req.recipient, super::recipient::Named::Key(&key_id)).await?;
    let generated = domain::generate_mac(ctx, &key_id, algorithm, &message, recipient.as_ref()).await?;
    let (mac, for_recipient) = match generated.mac {
        Released::Plaintext(mac) => (Some(b64(mac.expose())), None),
        Released::ForRecipient(cms) => (None, Some(b64(&cms))),
    };
    render(GenerateMacResponse {
        mac,
        for_recipient,
        mac_algorithm: algorithm.as_str(),
        key_id: generated.key_arn,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyMacRequest {
    key_id: Option<String>,
    message: Option<String>,
    mac_algorithm: Option<String>,
    mac: Option<String>,
    grant_tokens: Option<Vec<String>>,
    /// Accepted for compatibility; not honoured (the operation runs).
    #[serde(rename = "DryRun")]
    _dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyMacResponse {
    key_id: String,
    mac_valid: bool,
    mac_algorithm: &'static str,
}

/// Checks a MAC; AWS never answers `MacValid: false`, a MAC that does not
/// match is `KMSInvalidMacException`.
pub async fn verify_mac(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: VerifyMacRequest = parse(body)?;
    let message = params::message(req.message)?;
    let algorithm = mac_algorithm(req.mac_algorithm)?;
    let tag = blob("mac", &required("mac", req.mac)?)?;
    length("mac", tag.len(), 1, MAX_MAC)?;
    params::check_grant_tokens(req.grant_tokens.as_deref())?;
    let key_id = required("keyId", req.key_id)?;
    let key_arn = domain::verify_mac(ctx, &key_id, algorithm, &message, &tag).await?;
    render(VerifyMacResponse {
        key_id: key_arn,
        mac_valid: true,
        mac_algorithm: algorithm.as_str(),
    })
}

#[cfg(test)]
mod tests {

    use hmac::{Hmac, Mac};
    use serde_json::{Value, json};
    use sha2::{Sha224, Sha256, Sha384, Sha512};

    use super::super::error::KmsError;
    use super::super::{Ctx, lifecycle};

    use crate::store::MemoryStore;

    use super::super::tests::{TENANT, aws_type, b64, create, ctx, enclave, unb64};

    async fn generate(ctx: &Ctx<'_>, key_id: &str, message: &[u8], algorithm: &str) -> Result<Value, KmsError> {
        super::generate_mac(
            ctx,
            json!({ "KeyId": key_id, "Message": b64(message), "MacAlgorithm": algorithm }),
        )
        .await
    }

    async fn verify(
        ctx: &Ctx<'_>,
        key_id: &str,
        message: &[u8],
        algorithm: &str,
        mac: &[u8],
    ) -> Result<Value, KmsError> {
        super::verify_mac(
            ctx,
            json!({ "KeyId": key_id, "Message": b64(message), "MacAlgorithm": algorithm, "Mac": b64(mac) }),
        )
        .await
    }

    /// The key's material, read the way only a test may (to check the MAC
    /// against an independent HMAC implementation run).
    async fn material(ctx: &Ctx<'_>, key_id: &str) -> Vec<u8> {
        let rec = crate::keystore::keys::resolve_key(ctx, key_id).await.expect("key");
        let kek = ctx.tenant_kek(TENANT).expect("kek");
        rec.material(&kek, 1).expect("unwraps").expose().to_vec()
    }

    fn independent<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("any HMAC key length");
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }

    #[tokio::test]
    async fn every_hmac_spec_round_trips_and_matches_an_independent_hmac() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let message = b"message to authenticate";
        type Reference = fn(&[u8], &[u8]) -> Vec<u8>;
        let specs: [(&str, &str, usize, usize, Reference); 4] = [
            ("HMAC_224", "HMAC_SHA_224", 28, 28, independent::<Hmac<Sha224>>),
            ("HMAC_256", "HMAC_SHA_256", 32, 32, independent::<Hmac<Sha256>>),
            ("HMAC_384", "HMAC_SHA_384", 48, 48, independent::<Hmac<Sha384>>),
            ("HMAC_512", "HMAC_SHA_512", 64, 64, independent::<Hmac<Sha512>>),
        ];
        for (spec, algorithm, key_len, mac_len, reference) in specs {
            let (key_id, arn) = create(&ctx, spec, "GENERATE_VERIFY_MAC").await;
            let generated = generate(&ctx, &key_id, message, algorithm).await.expect("generates");
            assert_eq!(generated["KeyId"], arn.as_str());
            assert_eq!(generated["MacAlgorithm"], algorithm);
            let mac = unb64(&generated, "Mac");
            assert_eq!(mac.len(), mac_len, "{spec}");
            let key = material(&ctx, &key_id).await;
            assert_eq!(key.len(), key_len, "{spec}");
            assert_eq!(mac, reference(&key, message), "{spec}");
            // Deterministic, and through the ARN too.
            let again = generate(&ctx, &arn, message, algorithm).await.expect("generates");
            assert_eq!(unb64(&again, "Mac"), mac);

            let verified = verify(&ctx, &arn, message, algorithm, &mac).await.expect("verifies");
            assert_eq!(verified["MacValid"], true);
            assert_eq!(verified["KeyId"], arn.as_str());
            assert_eq!(verified["MacAlgorithm"], algorithm);
        }
    }

    #[tokio::test]
    async fn a_mac_that_does_not_match_is_kms_invalid_mac_exception() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (key_id, _) = create(&ctx, "HMAC_256", "GENERATE_VERIFY_MAC").await;
        let (other, _) = create(&ctx, "HMAC_256", "GENERATE_VERIFY_MAC").await;
        let message = b"the original message";
        let mac = unb64(
            &generate(&ctx, &key_id, message, "HMAC_SHA_256")
                .await
                .expect("generates"),
            "Mac",
        );
        let mut tampered = mac.clone();
        tampered[0] ^= 0x80;
        let mut extended = mac.clone();
        extended.push(0);
        for bad in [&tampered[..], &mac[..16], &mac[..31], &extended[..], &[0u8; 32][..]] {
            assert_eq!(
                aws_type(verify(&ctx, &key_id, message, "HMAC_SHA_256", bad).await),
                "KMSInvalidMacException"
            );
        }
        assert_eq!(
            aws_type(verify(&ctx, &key_id, b"the original messagE", "HMAC_SHA_256", &mac).await),
            "KMSInvalidMacException"
        );
        assert_eq!(
            aws_type(verify(&ctx, &other, message, "HMAC_SHA_256", &mac).await),
            "KMSInvalidMacException"
        );
        // Empty and oversized MACs are request validation errors.
        assert_eq!(
            aws_type(verify(&ctx, &key_id, message, "HMAC_SHA_256", &[]).await),
            "ValidationException"
        );
        assert_eq!(
            aws_type(verify(&ctx, &key_id, message, "HMAC_SHA_256", &[0u8; 6145]).await),
            "ValidationException"
        );
    }

    #[tokio::test]
    async fn algorithms_usages_and_parameters_are_checked_like_aws() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (hmac_256, _) = create(&ctx, "HMAC_256", "GENERATE_VERIFY_MAC").await;
        let (hmac_512, _) = create(&ctx, "HMAC_512", "GENERATE_VERIFY_MAC").await;
        let (symmetric, _) = create(&ctx, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
        let (signing, _) = create(&ctx, "ECC_NIST_P256", "SIGN_VERIFY").await;
        let mac_512 = unb64(
            &generate(&ctx, &hmac_512, b"m", "HMAC_SHA_512")
                .await
                .expect("HMAC_512 with HMAC_SHA_512"),
            "Mac",
        );

        // A valid algorithm other than the key's own.
        for algorithm in ["HMAC_SHA_224", "HMAC_SHA_384", "HMAC_SHA_512"] {
            assert_eq!(
                aws_type(generate(&ctx, &hmac_256, b"m", algorithm).await),
                "InvalidKeyUsageException"
            );
        }
        assert_eq!(
            aws_type(verify(&ctx, &hmac_512, b"m", "HMAC_SHA_256", &mac_512).await),
            "InvalidKeyUsageException"
        );
        // Keys that are not HMAC keys.
        for key_id in [&symmetric, &signing] {
            assert_eq!(
                aws_type(generate(&ctx, key_id, b"m", "HMAC_SHA_256").await),
                "InvalidKeyUsageException"
            );
            assert_eq!(
                aws_type(verify(&ctx, key_id, b"m", "HMAC_SHA_256", &mac_512).await),
                "InvalidKeyUsageException"
            );
        }
        // Unknown or missing algorithms, bad messages.
        let cases = [
            (
                json!({ "KeyId": hmac_256, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_1" }),
                "ValidationException",
            ),
            (
                json!({ "KeyId": hmac_256, "Message": b64(b"m") }),
                "ValidationException",
            ),
            (
                json!({ "KeyId": hmac_256, "MacAlgorithm": "HMAC_SHA_256" }),
                "ValidationException",
            ),
            (
                json!({ "KeyId": hmac_256, "Message": "", "MacAlgorithm": "HMAC_SHA_256" }),
                "ValidationException",
            ),
            (
                json!({ "KeyId": hmac_256, "Message": b64(&[0; 4097]), "MacAlgorithm": "HMAC_SHA_256" }),
                "ValidationException",
            ),
            (
                json!({ "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256" }),
                "ValidationException",
            ),
            (
                json!({ "KeyId": hmac_256, "Message": "%%%", "MacAlgorithm": "HMAC_SHA_256" }),
                "SerializationException",
            ),
            (
                json!({ "KeyId": hmac_256, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256", "GrantTokens": [""] }),
                "ValidationException",
            ),
            (
                json!({ "KeyId": "alias/none", "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256" }),
                "NotFoundException",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                aws_type(super::generate_mac(&ctx, body.clone()).await),
                expected,
                "{body}"
            );
        }
        assert_eq!(
            aws_type(
                super::verify_mac(
                    &ctx,
                    json!({ "KeyId": hmac_512, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_512" })
                )
                .await
            ),
            "ValidationException"
        );
        // The limit itself is fine; grant tokens and DryRun are accepted.
        generate(&ctx, &hmac_256, &[0; 4096], "HMAC_SHA_256")
            .await
            .expect("4096 bytes");
        super::generate_mac(
            &ctx,
            json!({
                "KeyId": hmac_256,
                "Message": b64(b"m"),
                "MacAlgorithm": "HMAC_SHA_256",
                "GrantTokens": ["token"],
                "DryRun": false,
            }),
        )
        .await
        .expect("accepted");
    }

    #[tokio::test]
    async fn disabled_and_pending_deletion_keys_are_refused() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (key_id, _) = create(&ctx, "HMAC_384", "GENERATE_VERIFY_MAC").await;
        let mac = unb64(
            &generate(&ctx, &key_id, b"m", "HMAC_SHA_384").await.expect("generates"),
            "Mac",
        );
        lifecycle::disable_key(&ctx, json!({ "KeyId": key_id }))
            .await
            .expect("disabled");
        assert_eq!(
            aws_type(generate(&ctx, &key_id, b"m", "HMAC_SHA_384").await),
            "DisabledException"
        );
        assert_eq!(
            aws_type(verify(&ctx, &key_id, b"m", "HMAC_SHA_384", &mac).await),
            "DisabledException"
        );
        lifecycle::enable_key(&ctx, json!({ "KeyId": key_id }))
            .await
            .expect("enabled");
        verify(&ctx, &key_id, b"m", "HMAC_SHA_384", &mac)
            .await
            .expect("verifies again");
        lifecycle::schedule_key_deletion(&ctx, json!({ "KeyId": key_id, "PendingWindowInDays": 7 }))
            .await
            .expect("scheduled");
        assert_eq!(
            aws_type(generate(&ctx, &key_id, b"m", "HMAC_SHA_384").await),
            "KMSInvalidStateException"
        );
        assert_eq!(
            aws_type(verify(&ctx, &key_id, b"m", "HMAC_SHA_384", &mac).await),
            "KMSInvalidStateException"
        );
    }
}
