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
//!
//! **Format 2** (issue 19, freshness across restarts) adds what the
//! custodian last saw of the store — a [`Checkpoint`] — and an explicit
//! *accept a store rollback* flag; both are in the associated data (under a
//! label of their own, [`UNSEAL_MESSAGE_AAD_V2`]), so the host can neither
//! change nor strip them, nor turn a format-2 message into a format-1 one.
//! Format 1 (no checkpoint, no flag: what `kmsctl` sent before) is still
//! read.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::checkpoint::Checkpoint;
use crate::share::ShareSecret;
use crate::suite::{self, KEY_LEN, PrivateKey, PublicKey};
use crate::{DEPLOYMENT_ID_LEN, DeploymentId, FORMAT_VERSION, FormatError, bind, to_cbor};

/// The prefix of an unseal session's attestation `user_data`.
pub const UNSEAL_BINDING_PREFIX: &[u8] = b"keyward/v1/unseal:";
/// Length of the whole binding.
pub const UNSEAL_BINDING_LEN: usize = UNSEAL_BINDING_PREFIX.len() + DEPLOYMENT_ID_LEN + 32;
/// HPKE `info` label of an unseal message (then deployment id and session id).
pub const UNSEAL_MESSAGE_INFO: &[u8] = b"keyward/v1/custody/unseal-message";
/// Associated-data label of an unseal message's header.
pub const UNSEAL_MESSAGE_AAD: &[u8] = b"keyward/v1/custody/unseal-message-header";

/// Associated-data label of a format-2 unseal message's header (then the
/// deployment, session, index, checkpoint and rollback flag).
pub const UNSEAL_MESSAGE_AAD_V2: &[u8] = b"keyward/v2/custody/unseal-message-header";
/// The unseal message format that carries a checkpoint.
pub const UNSEAL_MESSAGE_FORMAT: u8 = 2;

/// What a custodian states about freshness in its unseal message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Freshness {
    /// The newest checkpoint this custodian verified (none yet: `None`).
    pub checkpoint: Option<Checkpoint>,
    /// `kmsctl unseal --accept-store-rollback`: become Ready even if the
    /// store is older than a checkpoint (audited by the enclave).
    pub accept_store_rollback: bool,
}

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
    /// Format 2: the encoded [`Checkpoint`] the custodian last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<serde_bytes::ByteBuf>,
    /// Format 2: accept a store older than the checkpoint (audited).
    #[serde(default, skip_serializing_if = "is_false")]
    pub accept_store_rollback: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl UnsealMessage {
    /// Seals `share` to the session key (its deployment and index go in the
    /// header as the share says), format 2 without a checkpoint.
    pub fn seal(share: &ShareSecret, session_key: &PublicKey) -> Result<UnsealMessage, FormatError> {
        Self::seal_with(share, session_key, &Freshness::default())
    }

    /// Seals `share` with what the custodian states about freshness
    /// (format 2). A checkpoint of another deployment is refused.
    pub fn seal_with(
        share: &ShareSecret,
        session_key: &PublicKey,
        freshness: &Freshness,
    ) -> Result<UnsealMessage, FormatError> {
        let checkpoint = match &freshness.checkpoint {
            Some(c) if &c.deployment_id != share.deployment_id() => {
                return Err(FormatError::Malformed(
                    "unseal message (a checkpoint of another deployment)",
                ));
            }
            Some(c) => Some(serde_bytes::ByteBuf::from(c.to_bytes()?)),
            None => None,
        };
        Self::seal_format(
            UNSEAL_MESSAGE_FORMAT,
            share,
            session_key,
            checkpoint,
            freshness.accept_store_rollback,
        )
    }

    /// A format-1 message (what `kmsctl` sent before checkpoints): no
    /// checkpoint, no rollback flag.
    pub fn seal_format1(share: &ShareSecret, session_key: &PublicKey) -> Result<UnsealMessage, FormatError> {
        Self::seal_format(FORMAT_VERSION, share, session_key, None, false)
    }

    fn seal_format(
        format: u8,
        share: &ShareSecret,
        session_key: &PublicKey,
        checkpoint: Option<serde_bytes::ByteBuf>,
        accept_store_rollback: bool,
    ) -> Result<UnsealMessage, FormatError> {
        let mut message = UnsealMessage {
            format,
            deployment_id: *share.deployment_id(),
            session_id: session_id(session_key),
            custodian_index: share.index(),
            enc: [0; KEY_LEN],
            ciphertext: Vec::new(),
            checkpoint,
            accept_store_rollback,
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
        if self.format == FORMAT_VERSION {
            return bind(
                UNSEAL_MESSAGE_AAD,
                &[&self.deployment_id, &self.session_id, &[self.custodian_index]],
            );
        }
        let (present, checkpoint): (u8, &[u8]) = match &self.checkpoint {
            Some(c) => (1, c.as_slice()),
            None => (0, &[]),
        };
        bind(
            UNSEAL_MESSAGE_AAD_V2,
            &[
                &[self.format],
                &self.deployment_id,
                &self.session_id,
                &[self.custodian_index],
                &[present],
                checkpoint,
                &[u8::from(self.accept_store_rollback)],
            ],
        )
    }

    /// What the message states about freshness (format 1: nothing). Only
    /// meaningful once [`UnsealMessage::open`] succeeded: the header is
    /// authenticated by the decryption.
    pub fn freshness(&self) -> Result<Freshness, FormatError> {
        let checkpoint = self
            .checkpoint
            .as_deref()
            .map(|c| Checkpoint::from_bytes(c))
            .transpose()?;
        Ok(Freshness {
            checkpoint,
            accept_store_rollback: self.accept_store_rollback,
        })
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        to_cbor(self, "unseal message")
    }

    /// Reads format 2, or format 1 (which carries no checkpoint and no
    /// flag). A checkpoint that does not decode, or names another
    /// deployment than the header, is refused here.
    pub fn from_bytes(bytes: &[u8]) -> Result<UnsealMessage, FormatError> {
        let message: UnsealMessage =
            serde_cbor::from_slice(bytes).map_err(|_| FormatError::Malformed("unseal message"))?;
        match message.format {
            FORMAT_VERSION if message.checkpoint.is_none() && !message.accept_store_rollback => {}
            FORMAT_VERSION => return Err(FormatError::Malformed("unseal message (format 1 with format-2 fields)")),
            UNSEAL_MESSAGE_FORMAT => {
                if let Some(checkpoint) = message.freshness()?.checkpoint
                    && checkpoint.deployment_id != message.deployment_id
                {
                    return Err(FormatError::Malformed(
                        "unseal message (a checkpoint of another deployment)",
                    ));
                }
            }
            found => {
                return Err(FormatError::Version {
                    what: "unseal message",
                    found,
                });
            }
        }
        Ok(message)
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

    fn checkpoint() -> Checkpoint {
        Checkpoint::new([4; 16], 12, [("111122223333".to_owned(), 5)].into_iter().collect())
    }

    #[test]
    fn format_2_carries_an_authenticated_checkpoint_and_flag() {
        let session = PrivateKey::generate();
        let freshness = Freshness {
            checkpoint: Some(checkpoint()),
            accept_store_rollback: true,
        };
        let message = UnsealMessage::seal_with(&share(), &session.public_key(), &freshness).expect("seals");
        assert_eq!(message.format, UNSEAL_MESSAGE_FORMAT);
        let read = UnsealMessage::from_bytes(&message.to_bytes().expect("encodes")).expect("decodes");
        assert!(read.open(&session).is_ok());
        assert_eq!(read.freshness().expect("reads"), freshness);
        // The host strips the flag, the checkpoint, or turns it into format 1.
        let mut no_flag = read.clone();
        no_flag.accept_store_rollback = false;
        assert!(matches!(no_flag.open(&session), Err(FormatError::Undecryptable(_))));
        let mut no_checkpoint = read.clone();
        no_checkpoint.checkpoint = None;
        assert!(no_checkpoint.open(&session).is_err());
        let mut older = read.clone();
        let mut lower = checkpoint();
        lower.global = 1;
        older.checkpoint = Some(serde_bytes::ByteBuf::from(lower.to_bytes().expect("encodes")));
        assert!(older.open(&session).is_err());
        let mut v1 = read.clone();
        v1.format = FORMAT_VERSION;
        v1.checkpoint = None;
        v1.accept_store_rollback = false;
        assert!(v1.open(&session).is_err());
    }

    #[test]
    fn format_1_is_still_read_and_refuses_format_2_fields() {
        let session = PrivateKey::generate();
        let v1 = UnsealMessage::seal_format1(&share(), &session.public_key()).expect("seals");
        let bytes = v1.to_bytes().expect("encodes");
        let read = UnsealMessage::from_bytes(&bytes).expect("a format-1 message decodes");
        assert_eq!(read.format, 1);
        assert!(read.open(&session).is_ok());
        assert_eq!(read.freshness().expect("reads"), Freshness::default());
        let mut mixed = v1.clone();
        mixed.accept_store_rollback = true;
        assert!(UnsealMessage::from_bytes(&mixed.to_bytes().expect("encodes")).is_err());
        let mut future = v1;
        future.format = 3;
        assert!(matches!(
            UnsealMessage::from_bytes(&future.to_bytes().expect("encodes")),
            Err(FormatError::Version { found: 3, .. })
        ));
    }

    #[test]
    fn a_checkpoint_of_another_deployment_is_refused() {
        let session = PrivateKey::generate();
        let mut foreign = checkpoint();
        foreign.deployment_id = [5; 16];
        let freshness = Freshness {
            checkpoint: Some(foreign.clone()),
            accept_store_rollback: false,
        };
        assert!(UnsealMessage::seal_with(&share(), &session.public_key(), &freshness).is_err());
        let mut message = UnsealMessage::seal(&share(), &session.public_key()).expect("seals");
        message.checkpoint = Some(serde_bytes::ByteBuf::from(foreign.to_bytes().expect("encodes")));
        assert!(UnsealMessage::from_bytes(&message.to_bytes().expect("encodes")).is_err());
    }
}
