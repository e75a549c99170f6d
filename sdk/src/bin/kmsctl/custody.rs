//! Root-key custody (docs/custody.md): `kmsctl custodian keygen`, `kmsctl init`, `kmsctl unseal`,
//! `kmsctl operator credential`, `kmsctl custodian reshare`. Only the last needs a credential (the
//! operator's, against a Ready service): key generation and opening the operator credential are
//! offline, and the sealed service answers genesis and unseal unauthenticated (their inputs
//! authenticate themselves).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use keyward_sdk::Client;
use keyward_sdk::attestation::TrustAnchor;
use keyward_sdk::custody::{
    CustodyError, CustodyKey, Freshness, InitCustodyRequest, Recorded, ReshareCustodyRequest, deployment_hex,
    fetch_and_record_checkpoint, operator_credential_pem, read_checkpoint, read_operator_credential, read_public_pem,
    read_share_package, share_package_pem, unseal_with_share_fresh_at, write_new_file, write_public_pem,
};

use crate::Failure;

/// How a custody failure ends kmsctl: unreadable files are usage errors (exit 2); a package that
/// does not open, a refused document and a refused call are failures (exit 1).
fn failure(e: CustodyError) -> Failure {
    match e {
        CustodyError::Service(e) => Failure::Service(e),
        e @ (CustodyError::Io { .. } | CustodyError::File { .. } | CustodyError::Exists(_)) => {
            Failure::Usage(e.to_string())
        }
        other => Failure::Refused(other.to_string()),
    }
}

/// `NAME` + `suffix` (NAME may itself contain dots).
fn with_suffix(name: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(name.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// `kmsctl custodian keygen --out NAME`.
pub(crate) fn keygen(out: &Path) -> Result<(), Failure> {
    let private = with_suffix(out, ".key");
    let public = with_suffix(out, ".pub");
    let key = CustodyKey::generate();
    key.write_private_pem(&private).map_err(failure)?;
    write_public_pem(&key.public_key(), &public).map_err(failure)?;
    println!(
        "private key  {} (mode 0600: keep it offline, never share it)",
        private.display()
    );
    println!(
        "public key   {} (give it to the operator for `kmsctl init`)",
        public.display()
    );
    println!("fingerprint  {}", hex::encode(key.public_key().as_bytes()));
    Ok(())
}

/// Which genesis `kmsctl init` asks for.
pub(crate) enum Genesis<'a> {
    /// `--custodian A.pub ... --threshold M`: an M-of-N Shamir custody.
    Shamir { custodians: &'a [PathBuf], threshold: u8 },
    /// `--key-service`: the enclave's custody key service (`--custody kms`) keeps the root.
    KeyService,
}

/// `kmsctl init --custodian A.pub ... --threshold M [--operator-key OP.pub] --out DIR`, or
/// `kmsctl init --key-service [--operator-key OP.pub] --out DIR`. Both write the operator
/// credential and the root commitment the same way (and the share packages of a Shamir genesis).
pub(crate) async fn init(
    client: &Client,
    genesis: Genesis<'_>,
    operator_key: Option<&Path>,
    out: &Path,
) -> Result<(), Failure> {
    let shamir = match genesis {
        Genesis::Shamir { custodians, threshold } => Some((custodian_keys(custodians, threshold)?, threshold)),
        Genesis::KeyService => None,
    };
    let custodian_count = shamir.as_ref().map_or(0, |(custodians, _)| custodians.len());
    let shamir_threshold = shamir.as_ref().map(|(_, threshold)| *threshold);
    let operator = operator_key.map(read_public_pem).transpose().map_err(failure)?;
    // Genesis cannot be repeated: make sure every file can be written before asking for it.
    std::fs::create_dir_all(out).map_err(|e| Failure::Usage(format!("{}: {e}", out.display())))?;
    let share_paths: Vec<PathBuf> = (1..=custodian_count)
        .map(|i| out.join(format!("custodian-{i}.share")))
        .collect();
    let operator_path = out.join("operator.credential");
    let commitment_path = out.join("root-commitment.pem");
    let targets = share_paths
        .iter()
        .chain(operator.is_some().then_some(&operator_path))
        .chain([&commitment_path]);
    for path in targets {
        if path.exists() {
            return Err(Failure::Usage(format!(
                "{} already exists; refusing to overwrite it (choose another --out)",
                path.display()
            )));
        }
    }
    // A mismatch with the enclave's custody (custodians for a `--custody kms` enclave, none for a
    // Shamir one) is refused by the enclave, saying which `kmsctl init` to run; nothing is written.
    let output = match shamir {
        Some((custodians, threshold)) => {
            client
                .init_custody(&InitCustodyRequest {
                    threshold,
                    custodians,
                    operator_key: operator,
                })
                .await?
        }
        None => client.init_key_service_custody(operator).await?,
    };
    let mut files = Vec::new();
    for (path, package) in share_paths.iter().zip(&output.share_packages) {
        files.push((path.clone(), share_package_pem(package).map_err(failure)?));
    }
    if let Some(package) = &output.operator_credential {
        files.push((operator_path, operator_credential_pem(package).map_err(failure)?));
    }
    files.push((commitment_path, root_commitment_pem(&output.root_commitment)));
    let mut unwritten = Vec::new();
    for (path, text) in &files {
        match write_new_file(path, text) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("kmsctl: {e}");
                unwritten.push((path, text));
            }
        }
    }
    println!("deployment       {}", deployment_hex(&output.deployment_id));
    println!(
        "root commitment  {} (the audit public key, SPKI DER, base64)",
        base64_of(&output.root_commitment)
    );
    match shamir_threshold {
        Some(threshold) => println!(
            "custody          Shamir {threshold} of {} (state {})",
            output.share_packages.len(),
            output.state
        ),
        None => println!(
            "custody          the custody key service (--custody kms): no shares; the enclave unseals \
             through it at every start (state {})",
            output.state
        ),
    }
    if !unwritten.is_empty() {
        // Genesis happened and cannot be repeated: print what could not be saved.
        for (path, text) in unwritten {
            println!("--- {} (could not be written) ---", path.display());
            print!("{text}");
        }
        return Err(Failure::Mismatch(
            "genesis succeeded but some files could not be written; their contents are printed above".into(),
        ));
    }
    Ok(())
}

/// Reads custodian public key files and checks `threshold` against their number (a usage error).
fn custodian_keys(files: &[PathBuf], threshold: u8) -> Result<Vec<keyward_sdk::custody::PublicKey>, Failure> {
    let custodians = files
        .iter()
        .map(|path| read_public_pem(path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(failure)?;
    if threshold == 0 || usize::from(threshold) > custodians.len() {
        return Err(Failure::Usage(format!(
            "--threshold {threshold}: must be between 1 and the number of custodians ({})",
            custodians.len()
        )));
    }
    Ok(custodians)
}

/// `DIR/custodian-<i>.share` for `n` custodians, none of which may exist yet.
fn new_share_paths(out: &Path, n: usize) -> Result<Vec<PathBuf>, Failure> {
    std::fs::create_dir_all(out).map_err(|e| Failure::Usage(format!("{}: {e}", out.display())))?;
    let paths: Vec<PathBuf> = (1..=n).map(|i| out.join(format!("custodian-{i}.share"))).collect();
    for path in &paths {
        if path.exists() {
            return Err(Failure::Usage(format!(
                "{} already exists; refusing to overwrite it (choose another --out)",
                path.display()
            )));
        }
    }
    Ok(paths)
}

/// `kmsctl custodian reshare --custodian A.pub ... --threshold M --out DIR [--expect-commitment FILE]`
/// (operator credentials, a Ready service).
pub(crate) async fn reshare(
    client: &Client,
    custodian_files: &[PathBuf],
    threshold: u8,
    out: &Path,
    expect_commitment: Option<&Path>,
) -> Result<(), Failure> {
    let custodians = custodian_keys(custodian_files, threshold)?;
    let expected = expect_commitment.map(crate::audit::read_pinned_key).transpose()?;
    // The old shares stop working once the service answers: make sure every file can be written first.
    let share_paths = new_share_paths(out, custodians.len())?;
    let output = client
        .reshare_custody(&ReshareCustodyRequest { threshold, custodians }, expected.as_deref())
        .await?;
    let mut unwritten = Vec::new();
    for (path, package) in share_paths.iter().zip(&output.share_packages) {
        let text = share_package_pem(package).map_err(failure)?;
        match write_new_file(path, &text) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("kmsctl: {e}");
                unwritten.push((path, text));
            }
        }
    }
    println!("deployment       {}", deployment_hex(&output.deployment_id));
    println!(
        "root commitment  {} (unchanged: the root is the same)",
        base64_of(&output.root_commitment)
    );
    println!(
        "custody          Shamir {threshold} of {}: the old shares no longer unseal this deployment",
        output.share_packages.len()
    );
    println!(
        "note             as many old shares as the old threshold still rebuild the root offline; if shares \
         may be compromised, move the keys to a new deployment (docs/custody.md)"
    );
    if !unwritten.is_empty() {
        for (path, text) in unwritten {
            println!("--- {} (could not be written) ---", path.display());
            print!("{text}");
        }
        return Err(Failure::Mismatch(
            "the re-share succeeded but some files could not be written; their contents are printed above".into(),
        ));
    }
    Ok(())
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The root commitment (an SPKI DER) as `PUBLIC KEY` PEM, what `kmsctl audit verify --public-key`
/// pins.
fn root_commitment_pem(der: &[u8]) -> String {
    let body = base64_of(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// `--expected-pcr INDEX=HEX` values.
pub(crate) fn expected_pcrs(values: &[String]) -> Result<BTreeMap<u8, Vec<u8>>, Failure> {
    let usage = |what: String| Failure::Usage(what);
    let mut pcrs = BTreeMap::new();
    for pcr in values {
        let (index, value) = pcr
            .split_once('=')
            .ok_or_else(|| usage(format!("--expected-pcr {pcr}: expected INDEX=HEX")))?;
        let index: u8 = index
            .parse()
            .map_err(|_| usage(format!("--expected-pcr {pcr}: the index is not a number")))?;
        let value = hex::decode(value).map_err(|_| usage(format!("--expected-pcr {pcr}: the value is not hex")))?;
        if value.is_empty() {
            return Err(usage(format!("--expected-pcr {pcr}: the value is empty")));
        }
        if pcrs.insert(index, value).is_some() {
            return Err(usage(format!("--expected-pcr: PCR{index} is given twice")));
        }
    }
    Ok(pcrs)
}

/// `--attestation-root PEM`, or the AWS Nitro Enclaves root.
pub(crate) fn anchor(attestation_root: Option<&Path>) -> Result<TrustAnchor, Failure> {
    let usage = |what: String| Failure::Usage(what);
    match attestation_root {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
            TrustAnchor::from_pem(&pem).map_err(|e| usage(format!("{}: {e}", path.display())))
        }
        None => TrustAnchor::aws_nitro_root().map_err(|e| usage(format!("the AWS Nitro root: {e}"))),
    }
}

/// `kmsctl unseal`'s `--state FILE` and `--accept-store-rollback`.
pub(crate) struct UnsealFreshness<'a> {
    pub(crate) state: Option<&'a Path>,
    pub(crate) accept_store_rollback: bool,
}

/// `kmsctl unseal --share FILE --key KEY --expected-pcr 0=HEX [--attestation-root PEM] [--state FILE]
/// [--accept-store-rollback]`.
pub(crate) async fn unseal(
    client: &Client,
    share: &Path,
    key: &Path,
    expected: &[String],
    attestation_root: Option<&Path>,
    freshness: UnsealFreshness<'_>,
) -> Result<(), Failure> {
    let pcrs = expected_pcrs(expected)?;
    let anchor = anchor(attestation_root)?;
    let package = read_share_package(share).map_err(failure)?;
    let key = CustodyKey::read_private_pem(key).map_err(failure)?;
    let checkpoint = match freshness.state {
        Some(path) => read_checkpoint(path, &package).map_err(failure)?,
        None => None,
    };
    match &checkpoint {
        Some(c) => println!(
            "sending this custodian's checkpoint: global epoch {}, {} tenant scopes",
            c.global,
            c.tenants.len()
        ),
        None if freshness.state.is_some() => {
            println!("no checkpoint recorded yet: the store's freshness is not checked")
        }
        None => {}
    }
    if freshness.accept_store_rollback {
        println!("--accept-store-rollback: the enclave becomes Ready even if its store is older (audited)");
    }
    let stated = Freshness {
        checkpoint,
        accept_store_rollback: freshness.accept_store_rollback,
    };
    let progress = unseal_with_share_fresh_at(client, &package, &key, &pcrs, anchor, &stated, SystemTime::now())
        .await
        .map_err(failure)?;
    println!(
        "custodian {}'s share accepted for deployment {}: {} of {} shares; state {}",
        package.custodian_index,
        deployment_hex(&package.deployment_id),
        progress.received,
        progress.threshold,
        progress.state
    );
    if progress.is_ready() {
        println!("the service is unsealed and ready");
        if let Some(path) = freshness.state {
            match fetch_and_record_checkpoint(client, &package, path, freshness.accept_store_rollback).await {
                Ok(recorded) => print_recorded(&recorded, path),
                Err(e) => println!(
                    "the new checkpoint was not recorded ({e}); run `kmsctl custodian checkpoint --share {} --state {}`",
                    share.display(),
                    path.display()
                ),
            }
        }
    }
    Ok(())
}

/// `kmsctl custodian checkpoint --share FILE --state FILE [--accept-store-rollback]`.
pub(crate) async fn checkpoint(
    client: &Client,
    share: &Path,
    state: &Path,
    accept_store_rollback: bool,
) -> Result<(), Failure> {
    let package = read_share_package(share).map_err(failure)?;
    let recorded = fetch_and_record_checkpoint(client, &package, state, accept_store_rollback)
        .await
        .map_err(failure)?;
    print_recorded(&recorded, state);
    Ok(())
}

fn print_recorded(recorded: &Recorded, path: &Path) {
    let c = recorded.checkpoint();
    let what = match recorded {
        Recorded::First(_) => "first checkpoint",
        Recorded::Newer(_) => "checkpoint",
        Recorded::RolledBack { .. } => "checkpoint (older: an accepted store rollback)",
    };
    println!(
        "{what} of deployment {} recorded in {}: global epoch {}, {} tenant scopes",
        deployment_hex(&c.deployment_id),
        path.display(),
        c.global,
        c.tenants.len()
    );
}

/// `kmsctl operator credential --package FILE --key OP.key`.
pub(crate) fn operator_credential(package: &Path, key: &Path) -> Result<(), Failure> {
    let package = read_operator_credential(package).map_err(failure)?;
    let key = CustodyKey::read_private_pem(key).map_err(failure)?;
    let (access_key_id, secret) = key.open_operator_credential(&package).map_err(failure)?;
    println!(
        "# operator credential of deployment {}",
        deployment_hex(&package.deployment_id)
    );
    println!("export AWS_ACCESS_KEY_ID={access_key_id}");
    println!("export AWS_SECRET_ACCESS_KEY={}", secret.expose());
    Ok(())
}
