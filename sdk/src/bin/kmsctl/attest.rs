//! `--attest-pcr0 HEX`: before any other request, verify that the endpoint is
//! the measured enclave and that the TLS connection ends in it
//! ([`keyward_sdk::Client::verify_enclave_channel`]); every later request
//! goes over connections pinned to the attested key. An endpoint that fails
//! gets nothing else: kmsctl stops with exit 1.

use std::collections::BTreeMap;
use std::path::Path;

use keyward_sdk::Client;
use keyward_sdk::attestation::{AttestationError, TrustAnchor};

use crate::Failure;

/// A PCR is a SHA-384 value.
const PCR_LEN: usize = 48;

/// What the endpoint must attest: the expected PCRs and the anchor.
pub(crate) struct Expected {
    pcrs: BTreeMap<u8, Vec<u8>>,
    anchor: TrustAnchor,
}

/// Reads `--attest-pcr0` and `--attest-root` before any network call, so a
/// bad value is a usage error. `None` without `--attest-pcr0`.
pub(crate) fn expected(pcr0: Option<&str>, root: Option<&Path>) -> Result<Option<Expected>, Failure> {
    let Some(pcr0) = pcr0 else {
        return match root {
            Some(_) => Err(Failure::Usage("--attest-root needs --attest-pcr0".into())),
            None => Ok(None),
        };
    };
    let value = hex::decode(pcr0.trim()).map_err(|_| Failure::Usage(format!("--attest-pcr0 {pcr0}: not hex")))?;
    if value.len() != PCR_LEN {
        return Err(Failure::Usage(format!(
            "--attest-pcr0: a PCR is {PCR_LEN} bytes ({} hex digits), got {}",
            PCR_LEN * 2,
            value.len()
        )));
    }
    let anchor = match root {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
            TrustAnchor::from_pem(&pem).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?
        }
        None => TrustAnchor::aws_nitro_root().map_err(|e| Failure::Usage(format!("the AWS Nitro root: {e}")))?,
    };
    Ok(Some(Expected {
        pcrs: BTreeMap::from([(0, value)]),
        anchor,
    }))
}

/// The client to send the command with: pinned to the attested TLS key, or
/// a failure naming why the endpoint was refused (nothing else is sent).
pub(crate) async fn attested(client: &Client, expected: Expected) -> Result<Client, Failure> {
    let mut nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    match client
        .verify_enclave_channel(expected.anchor, &nonce, &expected.pcrs)
        .await
    {
        Ok(channel) => {
            eprintln!(
                "attested: {} (PCR0 as expected, TLS key {})",
                client.endpoint(),
                hex::encode(channel.identity.tls_spki_sha256)
            );
            Ok(channel.client)
        }
        Err(AttestationError::Client(e)) => Err(Failure::Refused(format!(
            "refusing to send anything to {}: its attestation could not be fetched: {e}",
            client.endpoint()
        ))),
        Err(e) => Err(Failure::Refused(format!(
            "refusing to send anything to {}: {e}",
            client.endpoint()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(result: Result<Option<Expected>, Failure>) -> String {
        match result {
            Err(Failure::Usage(message)) => message,
            Err(_) => "another failure".into(),
            Ok(_) => "accepted".into(),
        }
    }

    #[test]
    fn pcr0_is_48_bytes_of_hex_and_the_root_needs_it() {
        assert!(matches!(expected(None, None), Ok(None)));
        assert!(usage(expected(None, Some(Path::new("root.pem")))).contains("needs --attest-pcr0"));
        assert!(usage(expected(Some("zz"), None)).contains("not hex"));
        assert!(usage(expected(Some(&"ab".repeat(32)), None)).contains("48 bytes"));
        let missing = usage(expected(
            Some(&"ab".repeat(48)),
            Some(Path::new("/nonexistent/root.pem")),
        ));
        assert!(missing.starts_with("/nonexistent/root.pem"), "{missing}");
        // The AWS Nitro root by default.
        let expected = expected(Some(&"AB".repeat(48)), None);
        assert!(
            matches!(&expected, Ok(Some(e)) if e.pcrs == BTreeMap::from([(0, vec![0xab; 48])])
                && e.anchor.fingerprint() == TrustAnchor::aws_nitro_root().map(|a| a.fingerprint()).unwrap_or_default()),
        );
    }
}
