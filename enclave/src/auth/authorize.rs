//! Built-in authorization: which principal may run which operation. Decided
//! before any operation runs (and, later, before any policy module).

use super::Principal;
use super::credentials::Role;
use crate::api::error::KmsError;

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

/// The requirement of an operation (`X-Amz-Target`), `None` when unknown.
pub fn need(target: &str) -> Option<Need> {
    let need = match target {
        "Keyward.CreateTenant" | "Keyward.ListTenants" | "Keyward.DisableTenant" | "Keyward.EnableTenant" => {
            Need::Operator
        }
        "Keyward.GetAuditLog" | "Keyward.GetAttestationDocument" => Need::Anyone,
        "Keyward.UpdateKeyAttestationPolicy"
        | "Keyward.PutKeyPolicyModule"
        | "Keyward.DeleteKeyPolicyModule"
        | "Keyward.PutTenantPolicyModule"
        | "Keyward.DeleteTenantPolicyModule" => Need::KeyAdmin,
        "Keyward.GetKeyPolicyModule" | "Keyward.TestPolicy" => Need::AnyTenantRole,
        "Keyward.DescribeKeyAttestationPolicy" => Need::AnyTenantRole,
        "Keyward.CreateAccessKey" | "Keyward.ListAccessKeys" | "Keyward.DeleteAccessKey" => Need::KeyAdmin,
        "TrentService.CreateKey"
        | "TrentService.EnableKey"
        | "TrentService.DisableKey"
        | "TrentService.ScheduleKeyDeletion"
        | "TrentService.CancelKeyDeletion"
        | "TrentService.UpdateKeyDescription"
        | "TrentService.EnableKeyRotation"
        | "TrentService.DisableKeyRotation"
        | "TrentService.RotateKeyOnDemand"
        | "TrentService.CreateAlias"
        | "TrentService.UpdateAlias"
        | "TrentService.DeleteAlias"
        | "TrentService.TagResource"
        | "TrentService.UntagResource"
        | "TrentService.GetParametersForImport"
        | "TrentService.ImportKeyMaterial"
        | "TrentService.DeleteImportedKeyMaterial" => Need::KeyAdmin,
        "TrentService.Encrypt"
        | "TrentService.Decrypt"
        | "TrentService.ReEncrypt"
        | "TrentService.GenerateDataKey"
        | "TrentService.GenerateDataKeyWithoutPlaintext"
        | "TrentService.GenerateDataKeyPair"
        | "TrentService.GenerateDataKeyPairWithoutPlaintext"
        | "TrentService.GenerateRandom"
        | "TrentService.Sign"
        | "TrentService.Verify"
        | "TrentService.GenerateMac"
        | "TrentService.VerifyMac"
        | "TrentService.DeriveSharedSecret" => Need::KeyUser,
        "TrentService.DescribeKey"
        | "TrentService.ListKeys"
        | "TrentService.ListAliases"
        | "TrentService.ListResourceTags"
        | "TrentService.GetKeyRotationStatus"
        | "TrentService.ListKeyRotations"
        | "TrentService.GetPublicKey" => Need::AnyTenantRole,
        _ => return None,
    };
    Some(need)
}

/// Allows or denies `principal` for an operation needing `need`.
pub fn authorize(principal: &Principal, need: Need, target: &str) -> Result<(), KmsError> {
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
        let allowed = |p: &Principal, t: &str| need(t).is_some_and(|n| authorize(p, n, t).is_ok());
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
        assert_eq!(need("TrentService.NoSuchThing"), None);
        let err = authorize(&operator, Need::KeyUser, "TrentService.Decrypt").expect_err("denied");
        assert_eq!(err.aws_type(), "AccessDeniedException");
    }
}
