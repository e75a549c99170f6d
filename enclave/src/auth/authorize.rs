//! Built-in authorization: which principal may run which operation. Decided
//! before any operation runs (and, later, before any policy module).

use super::Principal;
use super::credentials::Role;
use keyward_wire::Operation;

use crate::error::KmsError;

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Need {
    /// The operator only (tenant administration).
    Operator,
    /// A tenant KeyAdmin (key management, access keys).
    KeyAdmin,
    /// A tenant KeyUser (cryptographic use).
    KeyUser,
    /// Any tenant role (read-only operations).
    AnyTenantRole,
    /// Anyone authenticated (the audit log: each sees its own chain).
    Anyone,
}

/// The requirement of an operation (exhaustive: a new [`Operation`] does
/// not compile until it is placed here).
pub fn need(op: Operation) -> Need {
    use Operation as O;
    match op {
        O::CreateTenant | O::ListTenants | O::DisableTenant | O::EnableTenant => Need::Operator,
        O::GetTlsCertificateRequest | O::ImportTlsCertificate => Need::Operator,
        O::ExportBackup | O::ReshareCustody => Need::Operator,
        // Served before authentication (`api::custody`); never authorized here.
        O::InitCustody | O::GetUnsealDocument | O::Unseal | O::JoinCluster | O::GetCheckpoint => Need::Operator,
        O::GetAuditLog | O::GetAttestationDocument => Need::Anyone,
        O::UpdateKeyAttestationPolicy
        | O::UpdateTenantAttestationPolicy
        | O::LockKeyProtection
        | O::PutKeyPolicyModule
        | O::DeleteKeyPolicyModule
        | O::PutTenantPolicyModule
        | O::DeleteTenantPolicyModule => Need::KeyAdmin,
        O::GetKeyPolicyModule | O::TestPolicy => Need::AnyTenantRole,
        O::DescribeKeyAttestationPolicy | O::DescribeKeyProtection => Need::AnyTenantRole,
        O::CreateAccessKey | O::ListAccessKeys | O::DeleteAccessKey => Need::KeyAdmin,
        O::CreateKey
        | O::EnableKey
        | O::DisableKey
        | O::ScheduleKeyDeletion
        | O::CancelKeyDeletion
        | O::UpdateKeyDescription
        | O::EnableKeyRotation
        | O::DisableKeyRotation
        | O::RotateKeyOnDemand
        | O::CreateAlias
        | O::UpdateAlias
        | O::DeleteAlias
        | O::TagResource
        | O::UntagResource
        | O::GetParametersForImport
        | O::ImportKeyMaterial
        | O::DeleteImportedKeyMaterial => Need::KeyAdmin,
        O::Encrypt
        | O::Decrypt
        | O::ReEncrypt
        | O::GenerateDataKey
        | O::GenerateDataKeyWithoutPlaintext
        | O::GenerateDataKeyPair
        | O::GenerateDataKeyPairWithoutPlaintext
        | O::GenerateRandom
        | O::Sign
        | O::Verify
        | O::GenerateMac
        | O::VerifyMac
        | O::DeriveSharedSecret => Need::KeyUser,
        O::DescribeKey
        | O::ListKeys
        | O::ListAliases
        | O::ListResourceTags
        | O::GetKeyRotationStatus
        | O::ListKeyRotations
        | O::GetPublicKey => Need::AnyTenantRole,
    }
}

/// Allows or denies `principal` for an operation needing `need`.
pub fn authorize(principal: &Principal, op: Operation) -> Result<(), KmsError> {
    let need = need(op);
    let target = op.target();
    authorize_need(principal, need, target)
}

fn authorize_need(principal: &Principal, need: Need, target: &str) -> Result<(), KmsError> {
    let has = |role| principal.roles.contains(&role);
    let allowed = match need {
        Need::Operator => has(Role::Operator),
        Need::Anyone => true,
        _ if principal.is_operator() => false,
        Need::KeyAdmin => has(Role::KeyAdmin),
        Need::KeyUser => has(Role::KeyUser),
        Need::AnyTenantRole => has(Role::KeyAdmin) || has(Role::KeyUser),
    };
    if allowed {
        Ok(())
    } else {
        Err(KmsError::AccessDenied(format!(
            "User {} is not authorized to perform {} ({} only).",
            principal.access_key_id,
            target,
            match need {
                Need::Operator => "operator",
                Need::KeyAdmin => "KeyAdmin",
                Need::KeyUser => "KeyUser",
                _ => "tenant principals",
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: &[Role]) -> Principal {
        Principal {
            tenant: "111122223333".into(),
            access_key_id: "AKIATEST".into(),
            roles: roles.to_vec(),
        }
    }

    #[test]
    fn separation_of_duties() {
        let admin = principal(&[Role::KeyAdmin]);
        let user = principal(&[Role::KeyUser]);
        let operator = Principal {
            tenant: super::super::OPERATOR.into(),
            ..principal(&[Role::Operator])
        };
        let allowed = |p: &Principal, t: &str| Operation::from_target(t).is_some_and(|op| authorize(p, op).is_ok());
        assert!(allowed(&admin, "TrentService.CreateKey") && !allowed(&user, "TrentService.CreateKey"));
        assert!(allowed(&user, "TrentService.Decrypt") && !allowed(&admin, "TrentService.Decrypt"));
        assert!(allowed(&admin, "TrentService.DescribeKey") && allowed(&user, "TrentService.DescribeKey"));
        for t in [
            "TrentService.Decrypt",
            "TrentService.CreateKey",
            "TrentService.DescribeKey",
            "TrentService.ListKeys",
        ] {
            assert!(!allowed(&operator, t), "operator must not {t}");
        }
        assert!(allowed(&operator, "Keyward.CreateTenant") && !allowed(&admin, "Keyward.CreateTenant"));
        assert!(allowed(&admin, "Keyward.CreateAccessKey") && !allowed(&user, "Keyward.CreateAccessKey"));
        assert!(allowed(&operator, "Keyward.GetAuditLog") && allowed(&user, "Keyward.GetAuditLog"));
        assert!(!allowed(&admin, "TrentService.NoSuchThing"));
        let err = authorize(&operator, Operation::Decrypt).expect_err("denied");
        assert_eq!(err.aws_type(), "AccessDeniedException");
    }
}
