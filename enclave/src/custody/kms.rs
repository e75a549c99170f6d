//! Custody by an AWS-KMS-compatible key service (`--custody kms`): the root
//! is the plaintext of a data key the service generated under the custody
//! key; the boot record keeps only its `CiphertextBlob`.
//!
//! - **Genesis** ([`genesis`]): a fresh deployment id; a fresh RSA-2048
//!   recipient key whose public half goes into an attestation document
//!   (`public_key`; `user_data` = [`binding`] of the deployment);
//!   `GenerateDataKey` (AES_256) on the custody key with that document as
//!   `Recipient` and the encryption context [`encryption_context`] naming the
//!   deployment. The service answers `CiphertextBlob` and
//!   `CiphertextForRecipient` (CMS EnvelopedData to the recipient key, no
//!   `Plaintext`); the enclave opens it itself, and the root is its 32 bytes.
//! - **Unseal** ([`unseal`]): a new recipient key and document, `Decrypt` of
//!   the boot record's `CiphertextBlob` with the same context and the
//!   Recipient, open, then the root must match the boot record's commitment.
//!
//! The service releases the root only to a document its key policy accepts
//! (AWS: `kms:RecipientAttestation:ImageSha384`/`PCR0` conditions;
//! Keyward: the key's attestation policy): docs/custody.md. The recipient
//! key lives for one call and never leaves the enclave; the calls go out
//! over TLS that ends in the enclave ([`crate::outbound`]).
//!
//! Domain layer: no JSON or HTTP here; the calls are a [`KeyService`]
//! (`outbound::kms::KmsClient` in the enclave, anything in tests).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use aes::Aes256;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use keyward_attestation::cms::{CEK_LEN, Envelope};
use keyward_custody::suite::PublicKey;
use zeroize::Zeroizing;

use super::genesis::{GenesisOutcome, grant_operator};
use super::record::{BootRecord, CustodyMethod, RECORD_FORMAT, RootCommitment};
use super::{CustodyError, DeploymentId, deployment_hex};
use crate::nsm::Nsm;
use crate::secret::Key256;

/// Prefix of the attestation `user_data` of a custody call.
pub const BINDING_PREFIX: &[u8] = b"keyward/v1/custody/kms:";
/// The encryption context key that names the deployment.
pub const CONTEXT_KEY: &str = "keyward:deployment";
/// The data key spec asked for: 32 bytes, the root.
pub const KEY_SPEC: &str = "AES_256";

/// `user_data` of the recipient document: the prefix and the deployment id.
pub fn binding(deployment: &DeploymentId) -> Vec<u8> {
    let mut out = BINDING_PREFIX.to_vec();
    out.extend_from_slice(deployment);
    out
}

/// The encryption context of every custody call of `deployment`.
pub fn encryption_context(deployment: &DeploymentId) -> BTreeMap<String, String> {
    BTreeMap::from([(CONTEXT_KEY.to_string(), deployment_hex(deployment))])
}

/// `GenerateDataKey` with a Recipient.
#[derive(Debug, Clone)]
pub struct DataKeyRequest {
    pub key_id: String,
    pub encryption_context: BTreeMap<String, String>,
    /// The enclave's attestation document (COSE_Sign1) binding the recipient key.
    pub attestation_document: Vec<u8>,
}

/// Its answer: the blob to keep, and the data key for the recipient.
#[derive(Debug, Clone)]
pub struct DataKeyAnswer {
    pub ciphertext_blob: Vec<u8>,
    pub ciphertext_for_recipient: Vec<u8>,
}

/// `Decrypt` with a Recipient.
#[derive(Debug, Clone)]
pub struct DecryptRequest {
    pub key_id: String,
    pub ciphertext_blob: Vec<u8>,
    pub encryption_context: BTreeMap<String, String>,
    pub attestation_document: Vec<u8>,
}

/// A refusal or failure of the key service, as it said it (for the log
/// and the sealed reason; never secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ServiceError(pub String);

/// The future of a [`KeyService`] call.
pub type ServiceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ServiceError>> + Send + 'a>>;

/// The custody key service's two calls.
pub trait KeyService: Send + Sync {
    fn generate_data_key<'a>(&'a self, request: &'a DataKeyRequest) -> ServiceFuture<'a, DataKeyAnswer>;
    /// Answers the `CiphertextForRecipient`.
    fn decrypt<'a>(&'a self, request: &'a DecryptRequest) -> ServiceFuture<'a, Vec<u8>>;
}

/// A one-call RSA-2048 recipient key (aws-lc-rs: constant-time RSA-OAEP
/// decryption). The private key never leaves it; it is freed (and cleared
/// by aws-lc) when dropped.
pub struct RecipientKey {
    key: OaepPrivateDecryptingKey,
    public_key_der: Vec<u8>,
}

impl RecipientKey {
    pub fn generate() -> Result<RecipientKey, CustodyError> {
        let failed = |what: &str| CustodyError::Recipient(format!("cannot make the recipient key: {what}"));
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|_| failed("generation"))?;
        let public_key_der = private
            .public_key()
            .as_der()
            .map_err(|_| failed("public key encoding"))?
            .as_ref()
            .to_vec();
        let key = OaepPrivateDecryptingKey::new(private).map_err(|_| failed("OAEP"))?;
        Ok(RecipientKey { key, public_key_der })
    }

    /// The SubjectPublicKeyInfo DER that goes into the document's `public_key`.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// The attestation document binding this key for `deployment`.
    pub fn document(&self, nsm: &dyn Nsm, deployment: &DeploymentId) -> Result<Vec<u8>, CustodyError> {
        Ok(nsm.attest(Some(&binding(deployment)), None, Some(&self.public_key_der))?)
    }

    /// Opens a `CiphertextForRecipient` sealed to this key: RSA-OAEP-SHA-256
    /// for the content key, then AES-256-CBC. The plaintext is wiped on drop.
    pub fn open(&self, ciphertext_for_recipient: &[u8]) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        let envelope = Envelope::parse(ciphertext_for_recipient).map_err(|e| CustodyError::Recipient(e.to_string()))?;
        let undecryptable = || {
            CustodyError::Recipient(
                "the CiphertextForRecipient does not decrypt with this enclave's recipient key (sealed to another key, or altered)"
                    .into(),
            )
        };
        let mut cek = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let len = self
            .key
            .decrypt(&OAEP_SHA256_MGF1SHA256, envelope.encrypted_key(), &mut cek, None)
            .map_err(|_| undecryptable())?
            .len();
        if len != CEK_LEN {
            return Err(undecryptable());
        }
        let decryptor =
            cbc::Decryptor::<Aes256>::new_from_slices(&cek[..len], envelope.iv()).map_err(|_| undecryptable())?;
        let mut buffer = Zeroizing::new(envelope.ciphertext().to_vec());
        let len = decryptor
            .decrypt_padded_mut::<Pkcs7>(buffer.as_mut_slice())
            .map_err(|_| undecryptable())?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }
}

/// The root inside an opened data key: exactly 32 bytes.
fn root_of(plaintext: &[u8]) -> Result<Key256, CustodyError> {
    Key256::from_slice(plaintext).ok_or_else(|| {
        CustodyError::Recipient(format!(
            "the custody key service released {} bytes, not a 32-byte root",
            plaintext.len()
        ))
    })
}

/// What `--custody kms` genesis needs.
#[derive(Debug, Clone)]
pub struct KmsGenesis {
    /// The custody key (ARN or id) at the service.
    pub key_arn: String,
    /// The service's endpoint URL, recorded in the boot record.
    pub endpoint: String,
    /// The operator's public key (the first operator credential is sealed to it).
    pub operator_key: Option<PublicKey>,
}

/// Genesis with the key service: a new deployment whose root the service
/// generated and released to this enclave only. Writes nothing; the caller
/// stores the record (and the operator's credential) and moves to Ready.
pub async fn genesis(
    request: &KmsGenesis,
    service: &dyn KeyService,
    nsm: &dyn Nsm,
    now: i64,
) -> Result<GenesisOutcome, CustodyError> {
    if request.key_arn.is_empty() || request.endpoint.is_empty() {
        return Err(CustodyError::Record("KMS custody needs a key and an endpoint".into()));
    }
    let mut deployment_id: DeploymentId = [0; 16];
    nsm.fill_random(&mut deployment_id)?;
    let recipient = RecipientKey::generate()?;
    let answer = service
        .generate_data_key(&DataKeyRequest {
            key_id: request.key_arn.clone(),
            encryption_context: encryption_context(&deployment_id),
            attestation_document: recipient.document(nsm, &deployment_id)?,
        })
        .await
        .map_err(|e| CustodyError::CustodyService(e.0))?;
    let root = root_of(&recipient.open(&answer.ciphertext_for_recipient)?)?;
    drop(recipient);
    let record = BootRecord {
        format: RECORD_FORMAT,
        deployment_id,
        created: now,
        custody: CustodyMethod::Kms {
            key_arn: request.key_arn.clone(),
            endpoint: request.endpoint.clone(),
            ciphertext_blob: answer.ciphertext_blob,
        },
        commitment: RootCommitment::of(&root)?,
    };
    record.check()?;
    let operator = match &request.operator_key {
        Some(key) => Some(grant_operator(&deployment_id, key)?),
        None => None,
    };
    tracing::info!(
        deployment = %deployment_hex(&deployment_id),
        key = %request.key_arn,
        "custody genesis: new root generated by the custody key service"
    );
    Ok(GenesisOutcome {
        root,
        record,
        packages: Vec::new(),
        operator,
    })
}

/// Unseal with the key service: `Decrypt` of the boot record's blob to a
/// fresh recipient key, then the commitment check. A refusal of the
/// service or an unreachable service is [`CustodyError::CustodyService`].
pub async fn unseal(record: &BootRecord, service: &dyn KeyService, nsm: &dyn Nsm) -> Result<Key256, CustodyError> {
    let CustodyMethod::Kms {
        key_arn,
        ciphertext_blob,
        ..
    } = &record.custody
    else {
        return Err(CustodyError::CustodyMethod {
            found: record.custody.name(),
            needed: "kms",
        });
    };
    let recipient = RecipientKey::generate()?;
    let ciphertext_for_recipient = service
        .decrypt(&DecryptRequest {
            key_id: key_arn.clone(),
            ciphertext_blob: ciphertext_blob.clone(),
            encryption_context: encryption_context(&record.deployment_id),
            attestation_document: recipient.document(nsm, &record.deployment_id)?,
        })
        .await
        .map_err(|e| CustodyError::CustodyService(e.0))?;
    let root = root_of(&recipient.open(&ciphertext_for_recipient)?)?;
    record.commitment.verify(&root)?;
    tracing::info!(
        deployment = %deployment_hex(&record.deployment_id),
        "custody: the custody key service released the root; it matches the commitment"
    );
    Ok(root)
}
