//! The operator credential package: the operator's first secret access key,
//! HPKE-sealed at genesis to the operator public key given to `kmsctl init`,
//! so it never crosses the host in the clear (not even to the automation
//! that runs `init`). `kmsctl` opens it locally.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::suite::{self, KEY_LEN, PrivateKey, PublicKey};
use crate::{DeploymentId, FORMAT_VERSION, FormatError, Versioned, bind, from_cbor, to_cbor};

/// HPKE `info` label (then the deployment id).
pub const OPERATOR_CREDENTIAL_INFO: &[u8] = b"keyward/v1/custody/operator-credential";
/// Associated-data label of the header.
pub const OPERATOR_CREDENTIAL_AAD: &[u8] = b"keyward/v1/custody/operator-credential-header";

/// The sealed operator credential. The access key id is public (header);
/// the secret access key is the HPKE plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCredentialPackage {
    pub format: u8,
    #[serde(with = "serde_bytes")]
    pub deployment_id: DeploymentId,
    pub access_key_id: String,
    pub operator_key: PublicKey,
    #[serde(with = "serde_bytes")]
    pub enc: [u8; KEY_LEN],
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

impl Versioned for OperatorCredentialPackage {
    fn format(&self) -> u8 {
        self.format
    }
}

impl OperatorCredentialPackage {
    pub fn seal(
        deployment_id: &DeploymentId,
        access_key_id: &str,
        secret_access_key: &[u8],
        operator_key: &PublicKey,
    ) -> Result<OperatorCredentialPackage, FormatError> {
        let mut package = OperatorCredentialPackage {
            format: FORMAT_VERSION,
            deployment_id: *deployment_id,
            access_key_id: access_key_id.to_owned(),
            operator_key: *operator_key,
            enc: [0; KEY_LEN],
            ciphertext: Vec::new(),
        };
        let sealed = suite::seal(
            operator_key,
            &package.info(),
            &package.aad(),
            secret_access_key,
            "operator credential",
        )?;
        package.enc = sealed.enc;
        package.ciphertext = sealed.ciphertext;
        Ok(package)
    }

    /// The secret access key (wiped when dropped).
    pub fn open(&self, key: &PrivateKey) -> Result<Zeroizing<Vec<u8>>, FormatError> {
        if key.public_key() != self.operator_key {
            return Err(FormatError::Undecryptable(
                "operator credential (sealed to another operator key)",
            ));
        }
        suite::open(
            key,
            &self.enc,
            &self.info(),
            &self.aad(),
            &self.ciphertext,
            "operator credential",
        )
    }

    fn info(&self) -> Vec<u8> {
        bind(OPERATOR_CREDENTIAL_INFO, &[&self.deployment_id])
    }

    fn aad(&self) -> Vec<u8> {
        bind(
            OPERATOR_CREDENTIAL_AAD,
            &[
                &self.deployment_id,
                self.access_key_id.as_bytes(),
                self.operator_key.as_bytes(),
            ],
        )
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        to_cbor(self, "operator credential")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<OperatorCredentialPackage, FormatError> {
        from_cbor(bytes, "operator credential")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_header_binding() {
        let operator = PrivateKey::generate();
        let package =
            OperatorCredentialPackage::seal(&[3; 16], "AKIAEXAMPLE", b"secret-secret", &operator.public_key())
                .expect("seals");
        let read = OperatorCredentialPackage::from_bytes(&package.to_bytes().expect("encodes")).expect("decodes");
        assert_eq!(read.open(&operator).expect("opens").as_slice(), b"secret-secret");
        assert!(
            !package
                .to_bytes()
                .expect("encodes")
                .windows(13)
                .any(|w| w == b"secret-secret")
        );
        let mut moved = package.clone();
        moved.access_key_id = "AKIAOTHER".into();
        assert!(moved.open(&operator).is_err());
        let mut other_deployment = package.clone();
        other_deployment.deployment_id = [4; 16];
        assert!(other_deployment.open(&operator).is_err());
        assert!(package.open(&PrivateKey::generate()).is_err());
    }
}
