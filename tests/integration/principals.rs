//! Shared by the multi-tenant tests (tenancy, roles, tamper, audit,
//! throttle): the operator and tenants as `keyward-sdk` clients, raw
//! SigV4-signed calls as any principal, and the table of key operations with
//! a valid request body for each.

use serde_json::{Value, json};

use crate::harness::{
    ACCOUNT, Creds, Keyward, REGION, REQUEST_TIMEOUT, RawResponse, api_headers, random_alnum, random_bytes,
    sign_headers,
};

pub use keyward_test_support::sigv4::target;
pub use keyward_test_support::{b64, unb64};

/// 12 random digits, never the bootstrap tenant.
pub fn random_tenant_id() -> String {
    loop {
        let digits: String = random_bytes(12).iter().map(|b| char::from(b'0' + b % 10)).collect();
        if digits != ACCOUNT {
            return digits;
        }
    }
}

/// A `keyward-sdk` client signing as `creds`.
pub fn sdk(kw: &Keyward, creds: &Creds) -> keyward_sdk::Client {
    keyward_sdk::Client::new(&kw.url, REGION, &creds.access_key_id, &creds.secret)
        .expect("keyward-sdk client")
        .with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(kw.ca_pem.clone()))
        .expect("the enclave CA")
        .with_timeout(REQUEST_TIMEOUT)
}

/// The `keyward-sdk` client of the operator.
pub fn operator(kw: &Keyward) -> keyward_sdk::Client {
    sdk(kw, &kw.operator)
}

/// An `aws-sdk-kms` client signing as `creds`.
pub fn kms(kw: &Keyward, creds: &Creds) -> aws_sdk_kms::Client {
    kw.client_with(&creds.access_key_id, &creds.secret)
}

/// A SigV4-signed `POST /` of `body` to operation `op`, signed as `creds`.
pub async fn call_as(kw: &Keyward, creds: &Creds, op: &str, body: &Value) -> RawResponse {
    let body = serde_json::to_vec(body).expect("JSON body");
    let mut headers = api_headers(&kw.addr, &target(op));
    sign_headers(&mut headers, &kw.addr, &body, creds, kw.now());
    kw.request("POST", "/", &headers, &body).await
}

/// The JSON of a 200 response (`{}` for an empty body); panics otherwise.
#[track_caller]
pub fn ok_json(what: &str, resp: &RawResponse) -> Value {
    assert_eq!(
        resp.status,
        200,
        "{what}: expected success, got: {}",
        String::from_utf8_lossy(&resp.body)
    );
    if resp.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        resp.json()
    }
}

/// The `x-amzn-RequestId` of a response (the audit record's `RequestId`).
pub fn request_id(resp: &RawResponse) -> Option<String> {
    resp.headers
        .iter()
        .find(|(k, _)| k == "x-amzn-requestid")
        .map(|(_, v)| v.clone())
}

/// `(status, __type)` of a response, for comparisons and messages.
pub fn outcome(resp: &RawResponse) -> (u16, String) {
    let kind = if resp.status == 200 {
        "success".to_string()
    } else {
        serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .and_then(|v| v.get("__type").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| format!("(no __type: {})", String::from_utf8_lossy(&resp.body)))
    };
    (resp.status, kind)
}

/// The error message of an AWS JSON error body ("" when none).
pub fn message(resp: &RawResponse) -> String {
    serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Asserts a `keyward-sdk` call failed with this AWS error type and status.
#[track_caller]
pub fn expect_sdk_error<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, keyward_sdk::Error>,
    status: u16,
    error_type: &str,
) {
    match result {
        Ok(v) => panic!("{what}: expected {error_type} ({status}), but the call succeeded: {v:?}"),
        Err(e) => assert_eq!(
            (e.status(), e.error_type()),
            (Some(status), Some(error_type)),
            "{what}: wrong error: {e}"
        ),
    }
}

/// Unwraps a `keyward-sdk` result.
#[track_caller]
pub fn sdk_ok<T>(what: &str, result: Result<T, keyward_sdk::Error>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

// ---------------------------------------------------------------- tenants

/// A tenant created by the operator, with its first (KeyAdmin) credential
/// and a KeyUser credential its KeyAdmin created.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub admin: Creds,
    pub user: Creds,
}

impl Tenant {
    pub fn key_arn(&self, key_id: &str) -> String {
        format!("arn:aws:kms:{REGION}:{}:key/{key_id}", self.id)
    }

    pub fn alias_arn(&self, alias_name: &str) -> String {
        format!("arn:aws:kms:{REGION}:{}:{alias_name}", self.id)
    }
}

/// The operator creates a tenant; its KeyAdmin creates a KeyUser access key.
pub async fn create_tenant(kw: &Keyward) -> Tenant {
    let id = random_tenant_id();
    let created = sdk_ok("Keyward.CreateTenant", operator(kw).create_tenant(&id).await);
    assert_eq!(created.tenant_id, id, "CreateTenant names the tenant it created");
    let admin = Creds {
        access_key_id: created.access_key_id.clone(),
        secret: created.secret_access_key.expose().to_string(),
    };
    let user = create_access_key(kw, &admin, keyward_sdk::Role::KeyUser).await;
    Tenant { id, admin, user }
}

/// `admin` creates an access key of its tenant with `role`.
pub async fn create_access_key(kw: &Keyward, admin: &Creds, role: keyward_sdk::Role) -> Creds {
    let created = sdk_ok("Keyward.CreateAccessKey", sdk(kw, admin).create_access_key(role).await);
    assert_eq!(
        created.role,
        role.as_str(),
        "CreateAccessKey answers the role it granted"
    );
    Creds {
        access_key_id: created.access_key_id.clone(),
        secret: created.secret_access_key.expose().to_string(),
    }
}

/// The KeyId (uuid) of a key `admin` creates with this KeySpec / KeyUsage.
pub async fn create_key_as(kw: &Keyward, admin: &Creds, spec: &str, usage: &str) -> String {
    let resp = call_as(
        kw,
        admin,
        "CreateKey",
        &json!({ "KeySpec": spec, "KeyUsage": usage, "Description": format!("{spec} {usage}") }),
    )
    .await;
    let out = ok_json(&format!("CreateKey {spec} {usage}"), &resp);
    out["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap_or_else(|| panic!("CreateKey answered without KeyMetadata.KeyId: {out}"))
        .to_string()
}

/// A fresh alias name (`alias/...`).
pub fn random_alias() -> String {
    format!("alias/it-{}", random_alnum(12))
}

// ---------------------------------------------------------------- operations

/// Which tenant role an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    KeyAdmin,
    KeyUser,
    /// Read-only: either role.
    Either,
}

/// Which of a tenant's keys an operation is meant for (when it should succeed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The symmetric ENCRYPT_DECRYPT key used for data.
    Symmetric,
    /// A symmetric key whose state and settings the table changes.
    Scratch,
    /// ECC_NIST_P256 SIGN_VERIFY.
    EccSign,
    /// ECC_NIST_P256 KEY_AGREEMENT.
    EccAgree,
    /// HMAC_256.
    Hmac,
}

/// An operation that names a key in its request.
#[derive(Debug, Clone, Copy)]
pub struct KeyOp {
    pub name: &'static str,
    pub need: Need,
    pub kind: KeyKind,
}

const fn op(name: &'static str, need: Need, kind: KeyKind) -> KeyOp {
    KeyOp { name, need, kind }
}

/// Every AWS KMS operation that takes a key reference, in an order in which
/// each succeeds when run once each by an allowed principal on a fresh
/// tenant's keys (see [`Fixture`]).
pub const KEY_OPS: &[KeyOp] = &[
    op("DescribeKey", Need::Either, KeyKind::Symmetric),
    op("Encrypt", Need::KeyUser, KeyKind::Symmetric),
    op("Decrypt", Need::KeyUser, KeyKind::Symmetric),
    op("ReEncrypt", Need::KeyUser, KeyKind::Symmetric),
    op("GenerateDataKey", Need::KeyUser, KeyKind::Symmetric),
    op("GenerateDataKeyWithoutPlaintext", Need::KeyUser, KeyKind::Symmetric),
    op("GenerateDataKeyPair", Need::KeyUser, KeyKind::Symmetric),
    op("GenerateDataKeyPairWithoutPlaintext", Need::KeyUser, KeyKind::Symmetric),
    op("Sign", Need::KeyUser, KeyKind::EccSign),
    op("Verify", Need::KeyUser, KeyKind::EccSign),
    op("GetPublicKey", Need::Either, KeyKind::EccSign),
    op("DeriveSharedSecret", Need::KeyUser, KeyKind::EccAgree),
    op("GenerateMac", Need::KeyUser, KeyKind::Hmac),
    op("VerifyMac", Need::KeyUser, KeyKind::Hmac),
    op("UpdateKeyDescription", Need::KeyAdmin, KeyKind::Scratch),
    op("EnableKeyRotation", Need::KeyAdmin, KeyKind::Scratch),
    op("GetKeyRotationStatus", Need::Either, KeyKind::Scratch),
    op("DisableKeyRotation", Need::KeyAdmin, KeyKind::Scratch),
    op("RotateKeyOnDemand", Need::KeyAdmin, KeyKind::Scratch),
    op("ListKeyRotations", Need::Either, KeyKind::Scratch),
    op("TagResource", Need::KeyAdmin, KeyKind::Scratch),
    op("ListResourceTags", Need::Either, KeyKind::Scratch),
    op("UntagResource", Need::KeyAdmin, KeyKind::Scratch),
    op("CreateAlias", Need::KeyAdmin, KeyKind::Scratch),
    op("UpdateAlias", Need::KeyAdmin, KeyKind::Scratch),
    op("ListAliases", Need::Either, KeyKind::Scratch),
    op("DisableKey", Need::KeyAdmin, KeyKind::Scratch),
    op("EnableKey", Need::KeyAdmin, KeyKind::Scratch),
    op("ScheduleKeyDeletion", Need::KeyAdmin, KeyKind::Scratch),
    op("CancelKeyDeletion", Need::KeyAdmin, KeyKind::Scratch),
];

/// The message every signature / MAC in the fixtures is over.
pub const MESSAGE: &[u8] = b"keyward multi-tenant test message";

/// Request data that makes each key operation's body valid.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// A ciphertext blob (base64), for Decrypt and ReEncrypt.
    pub ciphertext: String,
    /// An ECDSA_SHA_256 signature (base64 DER) of [`MESSAGE`].
    pub signature: String,
    /// An HMAC_SHA_256 (base64) of [`MESSAGE`].
    pub mac: String,
    /// A P-256 public key (base64 SPKI DER), the peer of DeriveSharedSecret.
    pub peer_public_key: String,
    /// An alias name that does not exist yet (CreateAlias).
    pub new_alias: String,
    /// An alias name of the caller that exists once CreateAlias ran (UpdateAlias).
    pub existing_alias: String,
}

/// A fresh P-256 public key, base64 SubjectPublicKeyInfo DER.
pub fn peer_public_key() -> String {
    use p256::pkcs8::EncodePublicKey as _;
    let secret = p256::SecretKey::random(&mut rand::thread_rng());
    let der = secret.public_key().to_public_key_der().expect("SPKI DER");
    b64(der.as_bytes())
}

/// The body of key operation `name` naming key `key` (any form).
pub fn key_op_body(name: &str, key: &str, fx: &Fixture) -> Value {
    let message = b64(MESSAGE);
    match name {
        "Encrypt" => json!({ "KeyId": key, "Plaintext": b64(b"multi-tenant plaintext") }),
        "Decrypt" => json!({ "KeyId": key, "CiphertextBlob": fx.ciphertext }),
        "ReEncrypt" => json!({ "CiphertextBlob": fx.ciphertext, "DestinationKeyId": key }),
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => json!({ "KeyId": key, "KeySpec": "AES_256" }),
        "GenerateDataKeyPair" | "GenerateDataKeyPairWithoutPlaintext" => {
            json!({ "KeyId": key, "KeyPairSpec": "ECC_NIST_P256" })
        }
        "Sign" => json!({
            "KeyId": key, "Message": message, "MessageType": "RAW", "SigningAlgorithm": "ECDSA_SHA_256"
        }),
        "Verify" => json!({
            "KeyId": key, "Message": message, "MessageType": "RAW", "SigningAlgorithm": "ECDSA_SHA_256",
            "Signature": fx.signature
        }),
        "DeriveSharedSecret" => json!({
            "KeyId": key, "KeyAgreementAlgorithm": "ECDH", "PublicKey": fx.peer_public_key
        }),
        "GenerateMac" => json!({ "KeyId": key, "Message": message, "MacAlgorithm": "HMAC_SHA_256" }),
        "VerifyMac" => json!({
            "KeyId": key, "Message": message, "MacAlgorithm": "HMAC_SHA_256", "Mac": fx.mac
        }),
        "UpdateKeyDescription" => json!({ "KeyId": key, "Description": "changed by the multi-tenant tests" }),
        "TagResource" => json!({ "KeyId": key, "Tags": [{ "TagKey": "team", "TagValue": "it" }] }),
        "UntagResource" => json!({ "KeyId": key, "TagKeys": ["team"] }),
        "CreateAlias" => json!({ "AliasName": fx.new_alias, "TargetKeyId": key }),
        "UpdateAlias" => json!({ "AliasName": fx.existing_alias, "TargetKeyId": key }),
        "ScheduleKeyDeletion" => json!({ "KeyId": key, "PendingWindowInDays": 7 }),
        "DescribeKey"
        | "GetPublicKey"
        | "EnableKeyRotation"
        | "GetKeyRotationStatus"
        | "DisableKeyRotation"
        | "RotateKeyOnDemand"
        | "ListKeyRotations"
        | "ListResourceTags"
        | "ListAliases"
        | "DisableKey"
        | "EnableKey"
        | "CancelKeyDeletion" => json!({ "KeyId": key }),
        other => panic!("no body for key operation {other}"),
    }
}

/// One tenant's keys (uuids) of every [`KeyKind`] and a [`Fixture`] made with
/// them by its KeyUser.
#[derive(Debug, Clone)]
pub struct TenantKeys {
    pub symmetric: String,
    pub scratch: String,
    pub ecc_sign: String,
    pub ecc_agree: String,
    pub hmac: String,
    pub fixture: Fixture,
}

impl TenantKeys {
    pub fn of(&self, kind: KeyKind) -> &str {
        match kind {
            KeyKind::Symmetric => &self.symmetric,
            KeyKind::Scratch => &self.scratch,
            KeyKind::EccSign => &self.ecc_sign,
            KeyKind::EccAgree => &self.ecc_agree,
            KeyKind::Hmac => &self.hmac,
        }
    }
}

/// The tenant's KeyAdmin creates one key of each kind; its KeyUser makes a
/// ciphertext, a signature and a MAC with them.
pub async fn create_tenant_keys(kw: &Keyward, tenant: &Tenant) -> TenantKeys {
    let admin = &tenant.admin;
    let symmetric = create_key_as(kw, admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    let scratch = create_key_as(kw, admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    let ecc_sign = create_key_as(kw, admin, "ECC_NIST_P256", "SIGN_VERIFY").await;
    let ecc_agree = create_key_as(kw, admin, "ECC_NIST_P256", "KEY_AGREEMENT").await;
    let hmac = create_key_as(kw, admin, "HMAC_256", "GENERATE_VERIFY_MAC").await;

    let user = &tenant.user;
    let message = b64(MESSAGE);
    let enc = call_as(
        kw,
        user,
        "Encrypt",
        &json!({ "KeyId": symmetric, "Plaintext": b64(b"fixture plaintext") }),
    )
    .await;
    let ciphertext = ok_json("fixture Encrypt", &enc)["CiphertextBlob"]
        .as_str()
        .expect("CiphertextBlob")
        .to_string();
    let sign = call_as(
        kw,
        user,
        "Sign",
        &json!({ "KeyId": ecc_sign, "Message": message, "MessageType": "RAW", "SigningAlgorithm": "ECDSA_SHA_256" }),
    )
    .await;
    let signature = ok_json("fixture Sign", &sign)["Signature"]
        .as_str()
        .expect("Signature")
        .to_string();
    let mac = call_as(
        kw,
        user,
        "GenerateMac",
        &json!({ "KeyId": hmac, "Message": message, "MacAlgorithm": "HMAC_SHA_256" }),
    )
    .await;
    let mac = ok_json("fixture GenerateMac", &mac)["Mac"]
        .as_str()
        .expect("Mac")
        .to_string();
    let new_alias = random_alias();
    TenantKeys {
        symmetric,
        scratch,
        ecc_sign,
        ecc_agree,
        hmac,
        fixture: Fixture {
            ciphertext,
            signature,
            mac,
            peer_public_key: peer_public_key(),
            existing_alias: new_alias.clone(),
            new_alias,
        },
    }
}
