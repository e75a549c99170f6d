//! The request context a policy decides on: ABI v1's input document.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::json::{self, JsonError};

/// The context version this crate reads (`"version": 1`).
pub const CONTEXT_VERSION: u32 = 1;

/// One request, as the enclave describes it to the policy: who asks
/// ([`Principal`]), for what (`action`), on which key ([`Resource`]), with
/// which parameters ([`Request`]), and when ([`Environment`]).
///
/// Every member is required except `principal.attestation`; members this
/// version does not know are ignored (the host may add members within v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Always [`CONTEXT_VERSION`]: [`Context::from_json`] refuses others.
    pub version: u32,
    pub principal: Principal,
    /// `kms:` and the AWS KMS operation (`kms:Decrypt`, `kms:GenerateDataKey`,
    /// `kms:ScheduleKeyDeletion`, …), or `keyward:` and the operation for
    /// Keyward extensions that act on a key. `kms:ReEncrypt` is evaluated
    /// for its source key and again for its destination key.
    pub action: String,
    pub resource: Resource,
    pub request: Request,
    pub environment: Environment,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The caller's tenant (the account id in key ARNs).
    pub tenant: String,
    /// The access key that signed the request.
    pub access_key_id: String,
    /// The access key's roles: `KeyAdmin`, `KeyUser`.
    pub roles: Vec<String>,
    /// The verified attestation document's claims, when the request carried
    /// one (a `Recipient`); `None` (JSON `null`) otherwise.
    #[serde(default)]
    pub attestation: Option<Attestation>,
}

/// Claims of a verified Nitro attestation document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The enclave image's module id.
    pub module_id: String,
    /// PCR index → value, lowercase hex (SHA-384: 96 digits). JSON object
    /// keys are the decimal indices: `{"0": "…", "1": "…"}`.
    pub pcrs: BTreeMap<u32, String>,
    /// When the document was issued, milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// The key the action applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub key_id: String,
    /// `arn:aws:kms:<region>:<tenant>:key/<key_id>`.
    pub arn: String,
    /// `SYMMETRIC_DEFAULT`, `ECC_NIST_P256`, `HMAC_256`, …
    pub key_spec: String,
    /// `ENCRYPT_DECRYPT`, `SIGN_VERIFY`, `GENERATE_VERIFY_MAC`, `KEY_AGREEMENT`.
    pub key_usage: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, `PendingImport`.
    pub key_state: String,
    /// The key's tags.
    #[serde(deserialize_with = "string_map")]
    pub tags: BTreeMap<String, String>,
}

/// Parameters of the request that a policy may constrain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The request's encryption context (empty when it has none); for
    /// `kms:ReEncryptFrom` the source encryption context, for
    /// `kms:ReEncryptTo` the destination encryption context.
    #[serde(deserialize_with = "string_map")]
    pub encryption_context: BTreeMap<String, String>,
    /// Whether the request carries a `Recipient` (the claims of its verified
    /// attestation document are in `principal.attestation`).
    pub recipient: bool,
    /// The request's grant tokens.
    pub grant_tokens: Vec<String>,
    /// Only for the action `keyward:policy.update`: a locked key's module
    /// (this one) is asked whether another may replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_update: Option<PolicyUpdate>,
}

/// `request.policy_update` (`keyward:policy.update`, ABI v1 revision 6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyUpdate {
    /// The key's current module: the one deciding.
    pub current_module_sha256: String,
    /// The module that would replace it.
    pub new_module_sha256: String,
}

/// Facts about the evaluation itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// The enclave's clock, milliseconds since the Unix epoch (UTC).
    pub time_ms: u64,
}

/// A JSON object of strings, built in one go: the entries are collected and
/// the map is built from them (`BTreeMap`'s bulk build: a sort, linear for
/// the sorted keys the host sends), where inserting them one by one would
/// search the map for each. A key given twice is an error (so a deny), not a
/// silent choice of one value.
fn string_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct StringMap;

    impl<'de> Visitor<'de> for StringMap {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries: Vec<(String, String)> = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
            while let Some(entry) = map.next_entry()? {
                entries.push(entry);
            }
            let count = entries.len();
            let map: BTreeMap<String, String> = entries.into_iter().collect();
            if map.len() != count {
                return Err(de::Error::custom("duplicate key"));
            }
            Ok(map)
        }
    }

    deserializer.deserialize_map(StringMap)
}

/// Why bytes are not a v1 request context.
#[derive(Debug)]
pub enum ContextError {
    /// Not UTF-8 JSON of the v1 shape.
    Json(JsonError),
    /// A `version` other than [`CONTEXT_VERSION`].
    Version(u32),
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextError::Json(e) => write!(f, "{e}"),
            ContextError::Version(v) => write!(f, "context version {v} is not {CONTEXT_VERSION}"),
        }
    }
}

impl std::error::Error for ContextError {}

impl Context {
    /// Parses a v1 request context (UTF-8 JSON).
    ///
    /// Accepts what `serde_json` with this type's `Deserialize` accepts
    /// (unknown members are skipped, every other member is required except
    /// `principal.attestation`), with a dedicated parser that costs a module
    /// several times less fuel; a key given twice in any object is an error.
    pub fn from_json(json: &[u8]) -> Result<Context, ContextError> {
        let context = json::context(json).map_err(ContextError::Json)?;
        if context.version != CONTEXT_VERSION {
            return Err(ContextError::Version(context.version));
        }
        Ok(context)
    }

    /// The context as JSON, as the host sends it.
    pub fn to_json(&self) -> String {
        // Maps with string or integer keys and plain structs always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether the action is exactly `action` (`"kms:Decrypt"`).
    pub fn action_is(&self, action: &str) -> bool {
        self.action == action
    }

    /// Whether the action matches `pattern`: exact, or a prefix when the
    /// pattern ends in `*` (`"kms:GenerateDataKey*"`, `"kms:ReEncrypt*"`).
    pub fn action_matches(&self, pattern: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => self.action.starts_with(prefix),
            None => self.action == pattern,
        }
    }

    /// Whether the action matches any of `patterns` (see [`Self::action_matches`]).
    pub fn action_in(&self, patterns: &[&str]) -> bool {
        patterns.iter().any(|p| self.action_matches(p))
    }
}

impl Principal {
    /// Whether the access key has `role` (`"KeyAdmin"`, `"KeyUser"`).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl Attestation {
    /// PCR `index` as hex, if the document has it.
    pub fn pcr(&self, index: u32) -> Option<&str> {
        self.pcrs.get(&index).map(String::as_str)
    }

    /// Whether PCR `index` is present and equals `hex` (case-insensitive).
    pub fn pcr_is(&self, index: u32, hex: &str) -> bool {
        self.pcr(index).is_some_and(|v| v.eq_ignore_ascii_case(hex))
    }
}

impl Resource {
    /// The value of tag `key`, if the key has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

impl Request {
    /// For `keyward:policy.update`: whether the module that would replace
    /// the deciding one has this SHA-256 (hex, any case).
    pub fn replaces_with(&self, sha256_hex: &str) -> bool {
        self.policy_update
            .as_ref()
            .is_some_and(|u| u.new_module_sha256.eq_ignore_ascii_case(sha256_hex))
    }

    /// The encryption context's value for `key`, if present.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.encryption_context.get(key).map(String::as_str)
    }
}

impl Environment {
    /// Seconds since the Unix epoch.
    pub fn time_seconds(&self) -> u64 {
        self.time_ms / 1000
    }

    /// Seconds since 00:00 UTC today (0–86399).
    pub fn utc_seconds_of_day(&self) -> u32 {
        // < 86_400: always fits.
        (self.time_seconds() % 86_400) as u32
    }
}

impl Context {
    /// A well-formed sample context to start tests from: tenant `acme`'s
    /// `KeyUser` key `AKIAEXAMPLE` calls `kms:Decrypt` on an enabled
    /// symmetric key, without attestation, with an empty encryption context,
    /// at 2024-01-01T12:00:00Z.
    pub fn sample() -> Context {
        Context {
            version: CONTEXT_VERSION,
            principal: Principal {
                tenant: "acme".to_owned(),
                access_key_id: "AKIAEXAMPLE".to_owned(),
                roles: vec!["KeyUser".to_owned()],
                attestation: None,
            },
            action: "kms:Decrypt".to_owned(),
            resource: Resource {
                key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".to_owned(),
                arn: "arn:aws:kms:us-east-1:acme:key/1234abcd-12ab-34cd-56ef-1234567890ab".to_owned(),
                key_spec: "SYMMETRIC_DEFAULT".to_owned(),
                key_usage: "ENCRYPT_DECRYPT".to_owned(),
                key_state: "Enabled".to_owned(),
                tags: BTreeMap::new(),
            },
            request: Request::default(),
            environment: Environment {
                time_ms: 1_704_110_400_000,
            },
        }
    }
}
