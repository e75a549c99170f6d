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
    use keyward_sdk::attestation::TrustAnchor;
    use keyward_sdk::import::Expiry;
    let usage = |what: String| Failure::Usage(what);
    let material = zeroize::Zeroizing::new(std::fs::read(file).map_err(|e| usage(format!("{}: {e}", file.display())))?);
    let mut pcrs = std::collections::BTreeMap::new();
    for pcr in expected_pcrs {
        let (index, value) = pcr
            .split_once('=')
            .ok_or_else(|| usage(format!("--expected-pcr {pcr}: expected INDEX=HEX")))?;
        let index: u8 = index
            .parse()
            .map_err(|_| usage(format!("--expected-pcr {pcr}: the index is not a number")))?;
        let value = hex::decode(value).map_err(|_| usage(format!("--expected-pcr {pcr}: the value is not hex")))?;
        pcrs.insert(index, value);
    }
    let anchor = match attestation_root {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
            TrustAnchor::from_pem(&pem).map_err(|e| usage(format!("{}: {e}", path.display())))?
        }
        None => TrustAnchor::aws_nitro_root().map_err(|e| usage(format!("the AWS Nitro root: {e}")))?,
    };
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
