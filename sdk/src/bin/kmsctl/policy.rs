//! `kmsctl policy`: test a policy module in the enclave's sandbox, attach, fetch or detach a key's
//! module and the tenant's default module. Every ModuleSha256 the service reports is checked
//! against the module sent or received, since responses cross the untrusted host.

use std::path::Path;

use base64::Engine as _;
use keyward_sdk::{Client, Error};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::Failure;
use crate::args::{Expectation, PolicyCommand};
use crate::output::clean;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TestPolicyResponse {
    allow: bool,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    module_sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModuleResponse {
    #[serde(default)]
    key_id: Option<String>,
    module_sha256: String,
    /// Base64 (GetKeyPolicyModule only).
    #[serde(default)]
    module: Option<String>,
}

/// A policy module read from disk, with its SHA-256 (lowercase hex).
struct ModuleFile {
    base64: String,
    sha256: String,
}

/// Reads `path`; a missing or empty file is a usage error.
fn read_module(path: &Path) -> Result<ModuleFile, Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    if bytes.is_empty() {
        return Err(Failure::Usage(format!("{}: empty file", path.display())));
    }
    Ok(ModuleFile {
        base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        sha256: hex::encode(Sha256::digest(&bytes)),
    })
}

/// The service's ModuleSha256 must be that of the module sent: the response
/// crosses the untrusted host.
fn check_sha256(sent: &ModuleFile, reported: &str) -> Result<(), Failure> {
    if reported.eq_ignore_ascii_case(&sent.sha256) {
        Ok(())
    } else {
        Err(Failure::Mismatch(format!(
            "the service reports ModuleSha256 {} but the module's SHA-256 is {}",
            clean(reported),
            sent.sha256
        )))
    }
}

pub(crate) async fn policy(client: &Client, command: PolicyCommand) -> Result<(), Failure> {
    match command {
        PolicyCommand::Test {
            module,
            context,
            expect,
        } => {
            // Both files are read before any network call: a bad file is a usage error.
            let wasm = read_module(&module)?;
            let text =
                std::fs::read_to_string(&context).map_err(|e| Failure::Usage(format!("{}: {e}", context.display())))?;
            let context_json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Failure::Usage(format!("{}: not JSON: {e}", context.display())))?;
            if !context_json.is_object() {
                return Err(Failure::Usage(format!("{}: not a JSON object", context.display())));
            }
            let body = json!({ "Module": wasm.base64, "Context": context_json });
            let decision: TestPolicyResponse = client.call("Keyward.TestPolicy", &body).await?;
            println!("Allow           {}", decision.allow);
            println!("Reason          {}", clean(&decision.reason));
            if let Some(sha) = &decision.module_sha256 {
                println!("ModuleSha256    {}", clean(sha));
                check_sha256(&wasm, sha)?;
            }
            if let Some(expected) = expect
                && (expected == Expectation::Allow) != decision.allow
            {
                let (want, got) = if decision.allow {
                    ("deny", "allow")
                } else {
                    ("allow", "deny")
                };
                return Err(Failure::Mismatch(format!("expected {want}, the policy answered {got}")));
            }
        }
        PolicyCommand::Put { key_id, module } => {
            let wasm = read_module(&module)?;
            let body = json!({ "KeyId": key_id, "Module": wasm.base64 });
            let put: ModuleResponse = client.call("Keyward.PutKeyPolicyModule", &body).await?;
            if let Some(key) = &put.key_id {
                println!("KeyId           {}", clean(key));
            }
            println!("ModuleSha256    {}", clean(&put.module_sha256));
            check_sha256(&wasm, &put.module_sha256)?;
        }
        PolicyCommand::Get { key_id, output } => {
            let got: ModuleResponse = client
                .call("Keyward.GetKeyPolicyModule", &json!({ "KeyId": key_id }))
                .await?;
            if let Some(key) = &got.key_id {
                println!("KeyId           {}", clean(key));
            }
            println!("ModuleSha256    {}", clean(&got.module_sha256));
            if let Some(path) = output {
                let bytes = got
                    .module
                    .as_deref()
                    .map(|m| base64::engine::general_purpose::STANDARD.decode(m))
                    .transpose()
                    .map_err(|e| {
                        Failure::Service(Error::Decode {
                            operation: "Keyward.GetKeyPolicyModule".to_owned(),
                            reason: format!("Module is not base64: {e}"),
                        })
                    })?
                    .ok_or_else(|| {
                        Failure::Service(Error::Decode {
                            operation: "Keyward.GetKeyPolicyModule".to_owned(),
                            reason: "the response has no Module".to_owned(),
                        })
                    })?;
                let sha = hex::encode(Sha256::digest(&bytes));
                if !got.module_sha256.eq_ignore_ascii_case(&sha) {
                    return Err(Failure::Mismatch(format!(
                        "the module received has SHA-256 {sha}, not the ModuleSha256 reported; not saved"
                    )));
                }
                std::fs::write(&path, &bytes).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
                eprintln!("module saved to {}", path.display());
            }
        }
        PolicyCommand::Delete { key_id } => {
            let _: serde_json::Value = client
                .call("Keyward.DeleteKeyPolicyModule", &json!({ "KeyId": key_id }))
                .await?;
            println!("policy module of key {key_id} deleted");
        }
        PolicyCommand::PutTenant { module } => {
            let wasm = read_module(&module)?;
            let put: ModuleResponse = client
                .call("Keyward.PutTenantPolicyModule", &json!({ "Module": wasm.base64 }))
                .await?;
            println!("ModuleSha256    {}", clean(&put.module_sha256));
            check_sha256(&wasm, &put.module_sha256)?;
        }
        PolicyCommand::DeleteTenant => {
            let _: serde_json::Value = client.call("Keyward.DeleteTenantPolicyModule", &json!({})).await?;
            println!("tenant default policy module deleted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_files_are_read_and_hashed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.wasm");
        std::fs::write(&path, b"\0asm\x01\0\0\0")?;
        let Ok(module) = read_module(&path) else {
            panic!("readable module");
        };
        assert_eq!(module.base64, "AGFzbQEAAAA=");
        assert_eq!(
            module.sha256,
            "93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476"
        );
        assert!(check_sha256(&module, &module.sha256.to_uppercase()).is_ok());
        assert!(matches!(check_sha256(&module, "00"), Err(Failure::Mismatch(_))));
        std::fs::write(&path, b"")?;
        assert!(matches!(read_module(&path), Err(Failure::Usage(_))));
        assert!(matches!(
            read_module(&dir.path().join("missing.wasm")),
            Err(Failure::Usage(_))
        ));
        Ok(())
    }
}
