//! Decrypt only inside an allow-listed enclave image.
//!
//! `kms:Decrypt` is allowed only when the request carries a verified
//! attestation document (a `Recipient`) whose PCR0 — the SHA-384 of the
//! enclave image — is in [`ALLOWED_PCR0`]. Every other action is allowed
//! (built-in authorization still applies).

use keyward_policy::{Context, Decision};

/// Enclave images that may decrypt: PCR0 in lowercase hex (96 digits, as
/// `nitro-cli describe-eif` prints it). Add your release images here.
pub const ALLOWED_PCR0: &[&str] = &[
    // Keyward's mock attester (development only: its documents chain to the
    // mock root, which a Nitro-mode Keyward never trusts).
    "732c671617355c84ec2d96d503503278cba82a34f4377ae04133757e62856d463eacc5f8033417f8a514a0bd5a29a406",
];

pub fn decide(ctx: &Context) -> Decision {
    if !ctx.action_is("kms:Decrypt") {
        return Decision::allow(format!("{} is not restricted by attested-pcr0", ctx.action));
    }
    let Some(attestation) = &ctx.principal.attestation else {
        return Decision::deny(
            "kms:Decrypt denied: the caller is not attested (send a Recipient attestation document)",
        );
    };
    let Some(pcr0) = attestation.pcr(0) else {
        return Decision::deny("kms:Decrypt denied: the attestation document has no PCR0");
    };
    if pcr0.bytes().all(|b| b == b'0') {
        return Decision::deny("kms:Decrypt denied: PCR0 is zero (a debug-mode enclave)");
    }
    if ALLOWED_PCR0.iter().any(|allowed| attestation.pcr_is(0, allowed)) {
        Decision::allow(format!("kms:Decrypt allowed: PCR0 {pcr0} is allow-listed"))
    } else {
        Decision::deny(format!("kms:Decrypt denied: PCR0 {pcr0} is not allow-listed"))
    }
}

keyward_policy::export!(decide);

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_policy::Attestation;

    fn attested(action: &str, pcr0: Option<&str>) -> Context {
        let mut ctx = Context::sample();
        ctx.action = action.to_owned();
        ctx.request.recipient = true;
        ctx.principal.attestation = Some(Attestation {
            module_id: "i-0123456789abcdef0-enc0123456789abcdef".to_owned(),
            pcrs: pcr0.map(|v| (0, v.to_owned())).into_iter().collect(),
            timestamp: ctx.environment.time_ms - 1000,
        });
        ctx
    }

    #[test]
    fn an_allow_listed_enclave_decrypts() {
        let decision = decide(&attested("kms:Decrypt", Some(ALLOWED_PCR0[0])));
        assert!(decision.is_allowed(), "{}", decision.reason());
        assert!(decision.reason().contains("is allow-listed"));
        let upper = ALLOWED_PCR0[0].to_ascii_uppercase();
        assert!(decide(&attested("kms:Decrypt", Some(&upper))).is_allowed());
    }

    #[test]
    fn other_enclaves_do_not() {
        let other = "ab".repeat(48);
        let decision = decide(&attested("kms:Decrypt", Some(&other)));
        assert!(!decision.is_allowed());
        assert!(decision.reason().contains("not allow-listed"), "{}", decision.reason());
        assert!(!decide(&attested("kms:Decrypt", Some(&"0".repeat(96)))).is_allowed());
        assert!(!decide(&attested("kms:Decrypt", None)).is_allowed());
    }

    #[test]
    fn unattested_callers_do_not() {
        let decision = decide(&Context::sample());
        assert!(!decision.is_allowed());
        assert!(decision.reason().contains("not attested"), "{}", decision.reason());
    }

    #[test]
    fn other_actions_are_allowed() {
        let mut ctx = Context::sample();
        ctx.action = "kms:Encrypt".to_owned();
        assert!(decide(&ctx).is_allowed());
        assert!(decide(&attested("kms:GenerateDataKey", Some(&"cd".repeat(48)))).is_allowed());
    }
}
