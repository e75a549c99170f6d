//! The unseal session's attestation binding and the unseal message.
//!
//! At every unseal the enclave makes a fresh ephemeral HPKE key pair (the
//! *session key*) and asks its NSM for an attestation document with
//! `public_key` = the session public key (32 bytes) and
//! `user_data` = [`session_binding`]:
//!
//! ```text
//! "keyward/v1/unseal:" ‖ deployment id (16 bytes) ‖ SHA-256(session public key) (32 bytes)
//! ```
//!
//! A custodian's `kmsctl` verifies the document (anchor, PCRs, its fresh
//! nonce), checks this binding names its share's deployment and the
//! document's key, and sends an [`UnsealMessage`]: its share HPKE-sealed
//! to the session key, with the deployment, the session id
//! (SHA-256 of the session public key) and its index in a public header
//! that is also the associated data.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::share::ShareSecret;
use crate::suite::{self, KEY_LEN, PrivateKey, PublicKey};
use crate::{DEPLOYMENT_ID_LEN, DeploymentId, FORMAT_VERSION, FormatError, Versioned, bind, from_cbor, to_cbor};

/// The prefix of an unseal session's attestation `user_data`.
pub const UNSEAL_BINDING_PREFIX: &[u8] = b"keyward/v1/unseal:";
/// Length of the whole binding.
pub const UNSEAL_BINDING_LEN: usize = UNSEAL_BINDING_PREFIX.len() + DEPLOYMENT_ID_LEN + 32;
/// HPKE `info` label of an unseal message (then deployment id and session id).
pub const UNSEAL_MESSAGE_INFO: &[u8] = b"keyward/v1/custody/unseal-message";
/// Associated-data label of an unseal message's header.
pub const UNSEAL_MESSAGE_AAD: &[u8] = b"keyward/v1/custody/unseal-message-header";

/// A session's id: SHA-256 of its public key.
pub type SessionId = [u8; 32];

/// SHA-256 of the session public key.
pub fn session_id(session_key: &PublicKey) -> SessionId {
    Sha256::digest(session_key.as_bytes()).into()
}

/// The `user_data` of the session's attestation document.
pub fn session_binding(deployment_id: &DeploymentId, session_key: &PublicKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(UNSEAL_BINDING_LEN);
    out.extend_from_slice(UNSEAL_BINDING_PREFIX);
    out.extend_from_slice(deployment_id);
    out.extend_from_slice(&session_id(session_key));
    out
}

/// Reads a [`session_binding`]: the deployment and session id it names.
pub fn parse_session_binding(user_data: &[u8]) -> Option<(DeploymentId, SessionId)> {
    let rest = user_data.strip_prefix(UNSEAL_BINDING_PREFIX)?;
    if rest.len() != DEPLOYMENT_ID_LEN + 32 {
        return None;
    }
    let (deployment, session) = rest.split_at(DEPLOYMENT_ID_LEN);
    Some((deployment.try_into().ok()?, session.try_into().ok()?))
}

/// One share on its way to an unseal session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsealMessage {
    pub format: u8,
    #[serde(with = "serde_bytes")]
    pub deployment_id: DeploymentId,
    #[serde(with = "serde_bytes")]
    pub session_id: SessionId,
    pub custodian_index: u8,
    #[serde(with = "serde_bytes")]
    pub enc: [u8; KEY_LEN],
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

impl Versioned for UnsealMessage {
    fn format(&self) -> u8 {
        self.format
    }
}

impl UnsealMessage {
    /// Seals `share` to the session key (its deployment and index go in the
    /// header as the share says).
    pub fn seal(share: &ShareSecret, session_key: &PublicKey) -> Result<UnsealMessage, FormatError> {
        let mut message = UnsealMessage {
            format: FORMAT_VERSION,
            deployment_id: *share.deployment_id(),
            session_id: session_id(session_key),
            custodian_index: share.index(),
            enc: [0; KEY_LEN],
            ciphertext: Vec::new(),
        };
        let sealed = suite::seal(
            session_key,
            &message.info(),
            &message.aad(),
            &share.encode()?,
            "unseal message",
        )?;
        message.enc = sealed.enc;
        message.ciphertext = sealed.ciphertext;
        Ok(message)
    }

    /// Opens the message with the session's private key. Only decryption:
    /// the enclave's session checks the header and the share against its
    /// own deployment, session and boot record.
    pub fn open(&self, session_key: &PrivateKey) -> Result<ShareSecret, FormatError> {
        let plain = suite::open(
            session_key,
            &self.enc,
            &self.info(),
            &self.aad(),
            &self.ciphertext,
            "unseal message",
        )?;
        ShareSecret::decode(&plain)
    }

    fn info(&self) -> Vec<u8> {
        bind(UNSEAL_MESSAGE_INFO, &[&self.deployment_id, &self.session_id])
    }

    fn aad(&self) -> Vec<u8> {
        bind(
            UNSEAL_MESSAGE_AAD,
            &[&self.deployment_id, &self.session_id, &[self.custodian_index]],
        )
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        to_cbor(self, "unseal message")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<UnsealMessage, FormatError> {
        from_cbor(bytes, "unseal message")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share() -> ShareSecret {
        let mut value = vec![1];
        value.extend_from_slice(&[9; 32]);
        ShareSecret::new([4; 16], 1, value).expect("share")
    }

    #[test]
    fn binding_round_trip() {
        let key = PrivateKey::generate().public_key();
        let binding = session_binding(&[4; 16], &key);
        assert_eq!(binding.len(), UNSEAL_BINDING_LEN);
        assert_eq!(parse_session_binding(&binding), Some(([4; 16], session_id(&key))));
        assert_eq!(parse_session_binding(&binding[1..]), None);
        assert_eq!(parse_session_binding(&binding[..binding.len() - 1]), None);
        assert_eq!(parse_session_binding(b"keyward/v1/audit-key-sha256:"), None);
    }

    #[test]
    fn message_round_trip_and_header_is_authenticated() {
        let session = PrivateKey::generate();
        let message = UnsealMessage::seal(&share(), &session.public_key()).expect("seals");
        let read = UnsealMessage::from_bytes(&message.to_bytes().expect("encodes")).expect("decodes");
        assert_eq!(read.open(&session).expect("opens").digest(), share().digest());
        let mut other_index = message.clone();
        other_index.custodian_index = 2;
        assert!(matches!(other_index.open(&session), Err(FormatError::Undecryptable(_))));
        let mut other_session = message.clone();
        other_session.session_id[0] ^= 1;
        assert!(other_session.open(&session).is_err());
        assert!(message.open(&PrivateKey::generate()).is_err());
        assert!(UnsealMessage::from_bytes(b"\xa0").is_err());
    }
}
