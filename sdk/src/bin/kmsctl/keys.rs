//! `kmsctl key import`: bring your own key material. The wrapping key's attestation is verified
//! against the expected PCRs before anything is sent.

use std::path::Path;

use keyward_sdk::Client;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Failure;
use crate::args::KeyCommand;

pub(crate) async fn key(client: &Client, command: KeyCommand) -> Result<(), Failure> {
    match command {
        KeyCommand::Import {
            key_id,
            file,
            expected_pcrs,
            attestation_root,
            valid_to,
        } => {
            import_key(
                client,
                &key_id,
                &file,
                &expected_pcrs,
                attestation_root.as_deref(),
                valid_to.as_deref(),
            )
            .await?
        }
    }
    Ok(())
}

async fn import_key(
    client: &Client,
    key_id: &str,
    file: &Path,
    expected_pcrs: &[String],
    attestation_root: Option<&Path>,
    valid_to: Option<&str>,
) -> Result<(), Failure> {
    use keyward_sdk::import::Expiry;
    let usage = |what: String| Failure::Usage(what);
    let material = zeroize::Zeroizing::new(std::fs::read(file).map_err(|e| usage(format!("{}: {e}", file.display())))?);
    let pcrs = crate::custody::expected_pcrs(expected_pcrs)?;
    let anchor = crate::custody::anchor(attestation_root)?;
    let expiry = match valid_to {
        None => Expiry::Never,
        Some(text) => {
            let at = OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|e| usage(format!("--valid-to {text}: not RFC 3339: {e}")))?;
            Expiry::At(at.unix_timestamp())
        }
    };
    let arn = client
        .import_key(key_id, &material, anchor, &pcrs, expiry)
        .await
        .map_err(|e| match e {
            keyward_sdk::import::ImportError::Client(e) => Failure::Service(e),
            other => Failure::Mismatch(other.to_string()),
        })?;
    println!("key material imported into {arn} (wrapping key attested by the enclave)");
    Ok(())
}
