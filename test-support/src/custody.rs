//! Custody of in-process deployments (docs/custody.md): genesis and unseal
//! as `kmsctl init` / `kmsctl unseal` do them, through the enclave's
//! unauthenticated custody operations and the custodian's library
//! (`keyward_sdk::custody::seal_share_for`).
//!
//! [`crate::inprocess::Service::start`] runs genesis 1-of-1 with a custodian
//! key it generates and keeps ([`Custodian`]); `restart` and `peer` unseal
//! with it, so a test that does not care about custody never sees it.

use std::collections::BTreeMap;

use keyward_custody::share::{SharePackage, ShareSecret};
use keyward_custody::suite::PublicKey;
use keyward_sdk::custody::CustodyKey;
use serde_json::{Value, json};

use crate::b64::{b64, unb64};
use crate::inprocess::Service;
use crate::raw::RawResponse;

/// A custodian: its key pair and (after genesis) its share package.
pub struct Custodian {
    pub key: CustodyKey,
    pub package: SharePackage,
}

impl std::fmt::Debug for Custodian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Custodian")
            .field("index", &self.package.custodian_index)
            .finish_non_exhaustive()
    }
}

/// What `Keyward.InitCustody` answered, decoded.
#[derive(Debug)]
pub struct Genesis {
    pub deployment_id: String,
    pub packages: Vec<SharePackage>,
    pub root_commitment: Vec<u8>,
    pub operator_credential: Option<Vec<u8>>,
}

/// The body of `Keyward.InitCustody`.
pub fn init_custody_body(threshold: usize, custodians: &[PublicKey], operator: Option<&PublicKey>) -> Value {
    let mut body = json!({
        "Threshold": threshold,
        "CustodianPublicKeys": custodians.iter().map(|key| b64(key.as_bytes())).collect::<Vec<_>>(),
    });
    if let Some(operator) = operator {
        body["OperatorPublicKey"] = json!(b64(operator.as_bytes()));
    }
    body
}

/// The PCRs a custodian of an in-process (mock) enclave expects: PCR0 of
/// the mock attester's defaults.
pub fn expected_pcrs() -> BTreeMap<u8, Vec<u8>> {
    let defaults = keyward_enclave::attestation::mock::default_pcrs();
    BTreeMap::from([(0, defaults.get(&0).cloned().unwrap_or_default())])
}

impl Service {
    /// An unsigned custody request (`Keyward.InitCustody`,
    /// `Keyward.GetUnsealDocument`, `Keyward.Unseal`: `op` without the
    /// service prefix), as `kmsctl` sends it.
    pub async fn custody_call(&self, op: &str, body: &Value) -> RawResponse {
        self.unsigned_call(&format!("Keyward.{op}"), body.to_string().as_bytes())
            .await
    }

    /// Genesis: `Keyward.InitCustody` M-of-N for `custodians`; panics
    /// unless it succeeds.
    pub async fn init_custody(
        &self,
        threshold: usize,
        custodians: &[PublicKey],
        operator: Option<&PublicKey>,
    ) -> Genesis {
        let response = self
            .custody_call("InitCustody", &init_custody_body(threshold, custodians, operator))
            .await;
        assert_eq!(
            response.status,
            200,
            "InitCustody: {}",
            String::from_utf8_lossy(&response.body)
        );
        let body = response.json();
        let field = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} in {body}"))
                .to_owned()
        };
        assert_eq!(field("State"), "Ready");
        let packages = body["SharePackages"]
            .as_array()
            .expect("SharePackages")
            .iter()
            .map(|p| SharePackage::from_bytes(&unb64(p.as_str().expect("base64"))).expect("a share package"))
            .collect();
        Genesis {
            deployment_id: field("DeploymentId"),
            packages,
            root_commitment: unb64(&field("RootCommitment")),
            operator_credential: body["OperatorCredential"].as_str().map(unb64),
        }
    }

    /// The unseal message `custodian` would send now: a fresh nonce, the
    /// current session's document (`Keyward.GetUnsealDocument`), verified
    /// against this enclave's mock root and PCR0 and bound to the share
    /// (`seal_share_for`, as of the enclave's clock). `Err` with the reason when the document or the
    /// share is refused on the custodian's side.
    pub async fn unseal_message(&self, package: &SharePackage, key: &CustodyKey) -> Result<Vec<u8>, String> {
        let share = key.open_share(package).map_err(|e| e.to_string())?;
        self.unseal_message_of(&share).await
    }

    /// [`Service::unseal_message`] stating `freshness` (a checkpoint, the
    /// rollback override): a format-2 message as `kmsctl unseal --state`
    /// sends it.
    pub async fn unseal_message_fresh(
        &self,
        custodian: &Custodian,
        freshness: &keyward_custody::unseal::Freshness,
    ) -> Result<Vec<u8>, String> {
        let share = custodian
            .key
            .open_share(&custodian.package)
            .map_err(|e| e.to_string())?;
        self.unseal_message_with(&share, freshness).await
    }

    /// [`Service::unseal_message`] for a share given as is (a forged or
    /// foreign one, for tests of refusals).
    pub async fn unseal_message_of(&self, share: &ShareSecret) -> Result<Vec<u8>, String> {
        self.unseal_message_with(share, &keyward_custody::unseal::Freshness::default())
            .await
    }

    async fn unseal_message_with(
        &self,
        share: &ShareSecret,
        freshness: &keyward_custody::unseal::Freshness,
    ) -> Result<Vec<u8>, String> {
        let nonce = crate::random_bytes(32);
        let response = self
            .custody_call("GetUnsealDocument", &json!({ "Nonce": b64(&nonce) }))
            .await;
        if response.status != 200 {
            return Err(format!(
                "GetUnsealDocument answered {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ));
        }
        let body = response.json();
        let document = unb64(body["Document"].as_str().ok_or("no Document")?);
        // As of the enclave's (possibly shifted) clock, which dates its documents.
        let message = keyward_sdk::custody::seal_share_fresh_for_at(
            &document,
            self.anchor(),
            &nonce,
            &expected_pcrs(),
            share,
            freshness,
            self.now(),
        )
        .map_err(|e| e.to_string())?;
        message.to_bytes().map_err(|e| e.to_string())
    }

    /// The current unseal session's public key, read from its document
    /// without verifying it (the test owns the enclave): for messages the
    /// custodian's library would refuse to make.
    pub async fn unseal_session_key(&self) -> PublicKey {
        let response = self
            .custody_call("GetUnsealDocument", &json!({ "Nonce": b64(&[7u8; 16]) }))
            .await;
        assert_eq!(
            response.status,
            200,
            "GetUnsealDocument: {}",
            String::from_utf8_lossy(&response.body)
        );
        let document = unb64(response.json()["Document"].as_str().expect("Document"));
        let cose = keyward_enclave::attestation::document::parse_cose(&document).expect("COSE_Sign1");
        let payload = keyward_enclave::attestation::document::parse_payload(&cose.payload).expect("a document");
        PublicKey::from_slice(&payload.public_key.expect("public_key")).expect("an X25519 key")
    }

    /// `Keyward.Unseal` of an encoded message.
    pub async fn send_unseal(&self, message: &[u8]) -> RawResponse {
        self.custody_call("Unseal", &json!({ "Message": b64(message) })).await
    }

    /// `custodian`'s whole turn at `kmsctl unseal`: document, message, Unseal.
    pub async fn unseal_with(&self, custodian: &Custodian) -> RawResponse {
        let message = self
            .unseal_message(&custodian.package, &custodian.key)
            .await
            .expect("the custodian accepts the unseal document");
        self.send_unseal(&message).await
    }

    /// The mock attestation root custodians of this enclave pin.
    pub fn anchor(&self) -> keyward_sdk::attestation::TrustAnchor {
        keyward_sdk::attestation::TrustAnchor::from_der(self.pki.root_der()).expect("the mock root")
    }
}
