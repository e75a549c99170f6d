//! [`Operation`]: the one list of the operations Keyward serves.
//!
//! Every table keyed by operation (the enclave's dispatch and authorization,
//! the audit record, the policy context's action, the proxy's metrics labels)
//! is derived from this enum, so an operation is added in exactly one list
//! and every `match` on it is exhaustive.

macro_rules! operations {
    ($( $service:literal, $prefix:literal => [ $( $op:ident ),* $(,)? ] ),* $(,)?) => {
        /// An operation Keyward serves, named by its `X-Amz-Target`
        /// (`TrentService.<Name>` for AWS KMS, `Keyward.<Name>` for extensions).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Operation {
            $( $( $op, )* )*
        }

        impl Operation {
            /// Every operation, AWS KMS ones first.
            pub const ALL: &'static [Operation] = &[ $( $( Operation::$op, )* )* ];

            /// The full `X-Amz-Target` value, e.g. `TrentService.Decrypt`.
            pub const fn target(self) -> &'static str {
                match self {
                    $( $( Operation::$op => concat!($service, ".", stringify!($op)), )* )*
                }
            }

            /// The operation's name without its service, e.g. `Decrypt`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $( Operation::$op => stringify!($op), )* )*
                }
            }

            /// The action policy modules see, e.g. `kms:Decrypt` or
            /// `keyward:CreateTenant` (`policies/ABI.md` §3).
            pub const fn action(self) -> &'static str {
                match self {
                    $( $( Operation::$op => concat!($prefix, ":", stringify!($op)), )* )*
                }
            }
        }
    };
}

operations! {
    "TrentService", "kms" => [
        CreateKey, DescribeKey, ListKeys,
        Encrypt, Decrypt, ReEncrypt,
        GenerateDataKey, GenerateDataKeyWithoutPlaintext,
        GenerateDataKeyPair, GenerateDataKeyPairWithoutPlaintext, GenerateRandom,
        EnableKey, DisableKey, ScheduleKeyDeletion, CancelKeyDeletion, UpdateKeyDescription,
        EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand, ListKeyRotations,
        CreateAlias, UpdateAlias, DeleteAlias, ListAliases,
        TagResource, UntagResource, ListResourceTags,
        Sign, Verify, GetPublicKey, DeriveSharedSecret,
        GenerateMac, VerifyMac,
        GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial,
    ],
    "Keyward", "keyward" => [
        CreateTenant, ListTenants, DisableTenant, EnableTenant,
        CreateAccessKey, ListAccessKeys, DeleteAccessKey,
        GetAuditLog,
        UpdateKeyAttestationPolicy, DescribeKeyAttestationPolicy, GetAttestationDocument,
        UpdateTenantAttestationPolicy, LockKeyProtection, DescribeKeyProtection,
        PutKeyPolicyModule, GetKeyPolicyModule, DeleteKeyPolicyModule,
        PutTenantPolicyModule, DeleteTenantPolicyModule, TestPolicy,
        GetTlsCertificateRequest, ImportTlsCertificate,
        InitCustody, GetUnsealDocument, Unseal, ExportBackup, JoinCluster,
        ReshareCustody, GetCheckpoint,
    ],
}

/// Policy actions that are not operations of their own (`policies/ABI.md` §3).
pub mod actions {
    /// ReEncrypt as its source key's policy sees it (with the source context).
    pub const RE_ENCRYPT_FROM: &str = "kms:ReEncryptFrom";
    /// ReEncrypt as its destination key's policy sees it (with the destination context).
    pub const RE_ENCRYPT_TO: &str = "kms:ReEncryptTo";
    /// A locked key's module asked whether it may be replaced by another
    /// (`request.policy_update` names both modules).
    pub const POLICY_UPDATE: &str = "keyward:policy.update";
}

impl Operation {
    /// The operation an `X-Amz-Target` names (exact, case-sensitive match).
    pub fn from_target(target: &str) -> Option<Operation> {
        Operation::ALL.iter().copied().find(|op| op.target() == target)
    }

    /// [`Operation::from_target`] for raw header bytes.
    pub fn from_target_bytes(target: &[u8]) -> Option<Operation> {
        Operation::ALL
            .iter()
            .copied()
            .find(|op| op.target().as_bytes() == target)
    }

    /// A custody operation (genesis and unseal, docs/custody.md): answered
    /// while the enclave is sealed, and unauthenticated (their inputs
    /// authenticate themselves; `GetCheckpoint`'s answer is signed by the
    /// root commitment, and states only what the host already sees).
    pub fn is_custody(self) -> bool {
        matches!(
            self,
            Operation::InitCustody
                | Operation::GetUnsealDocument
                | Operation::Unseal
                | Operation::JoinCluster
                | Operation::GetCheckpoint
        )
    }

    /// An AWS KMS operation (`TrentService.*`) rather than a Keyward extension.
    pub fn is_aws(self) -> bool {
        self.target().starts_with("TrentService.")
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.target())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_complete_and_round_trips() {
        assert_eq!(Operation::ALL.iter().filter(|op| op.is_aws()).count(), 37);
        assert_eq!(Operation::ALL.iter().filter(|op| !op.is_aws()).count(), 29);
        assert_eq!(Operation::ALL.iter().filter(|op| op.is_custody()).count(), 5);
        assert_eq!(Operation::GetCheckpoint.target(), "Keyward.GetCheckpoint");
        assert_eq!(Operation::JoinCluster.target(), "Keyward.JoinCluster");
        assert_eq!(Operation::Unseal.target(), "Keyward.Unseal");
        for op in Operation::ALL {
            assert_eq!(Operation::from_target(op.target()), Some(*op));
            assert_eq!(Operation::from_target_bytes(op.target().as_bytes()), Some(*op));
            assert!(op.target().ends_with(&format!(".{}", op.name())));
        }
        assert_eq!(Operation::Decrypt.target(), "TrentService.Decrypt");
        assert_eq!(Operation::Decrypt.action(), "kms:Decrypt");
        assert_eq!(Operation::CreateTenant.target(), "Keyward.CreateTenant");
        assert_eq!(Operation::CreateTenant.action(), "keyward:CreateTenant");
        assert_eq!(Operation::from_target("TrentService.decrypt"), None);
        assert_eq!(Operation::from_target("Keyward.Decrypt"), None);
        assert_eq!(Operation::from_target(""), None);
    }
}
