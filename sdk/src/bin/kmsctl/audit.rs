//! `kmsctl audit`: list the caller's audit records, one escaped line each, or fetch the whole chain
//! and verify it, against a pinned audit public key when one is given, and with `--state FILE`
//! against the head remembered there from earlier verifications (`audit::HeadMemory`: a rollback
//! or a fork exits 1 and leaves the file as it was).

use std::borrow::Cow;
use std::path::Path;

use keyward_sdk::Client;
use keyward_sdk::audit::{self, AuditRecord, FreshnessError, HeadMemory, Observation, Verified};

use crate::Failure;
use crate::args::AuditCommand;
use crate::output::{clean, epoch_millis};

/// Reads the `--public-key` file (SPKI, DER or PEM); a bad file is a usage error.
pub(crate) fn read_pinned_key(path: &Path) -> Result<Vec<u8>, Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    audit::public_key_spki_der(&bytes).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

/// Opens the `--state` head memory; an unreadable or corrupt file is a usage error.
pub(crate) fn open_memory(path: &Path) -> Result<HeadMemory, Failure> {
    HeadMemory::open(path).map_err(|e| Failure::Usage(e.to_string()))
}

pub(crate) async fn audit(
    client: &Client,
    command: AuditCommand,
    pinned_key: Option<Vec<u8>>,
    memory: Option<HeadMemory>,
) -> Result<(), Failure> {
    match command {
        AuditCommand::List { start, end } => {
            for record in client.audit_records(start, end).await? {
                println!("{}", record_line(&record));
            }
        }
        AuditCommand::Verify { .. } => {
            let chain = client.fetch_audit_chain().await?;
            let key = match pinned_key {
                Some(pinned) => {
                    if pinned != chain.audit_public_key {
                        eprintln!("note: the service reports an AuditPublicKey other than --public-key");
                    }
                    pinned
                }
                None => {
                    eprintln!(
                        "note: no --public-key given: verifying against the AuditPublicKey in the service's \
                         response, which the host relays; pin the key with --public-key to also detect a host \
                         that replaces key and chain together"
                    );
                    chain.audit_public_key.clone()
                }
            };
            let Some(mut memory) = memory else {
                let verified = chain.verify_with(&key).map_err(Failure::Invalid)?;
                print_ok(&verified);
                eprintln!(
                    "note: no --state given: the head is not remembered, so a host serving an older signed head \
                     (a rolled-back store) cannot be told apart; remember heads with --state FILE"
                );
                return Ok(());
            };
            let (verified, observation) = match memory.verify_chain(&chain.records, &chain.head, &key) {
                Ok(done) => done,
                Err(FreshnessError::Chain(e)) => return Err(Failure::Invalid(e)),
                Err(e @ (FreshnessError::Rollback { .. } | FreshnessError::Fork { .. })) => {
                    return Err(Failure::Stale(format!(
                        "{} (the head verified before is remembered in {}; it was left unchanged)",
                        clean(&e.to_string()),
                        memory.path().display()
                    )));
                }
                Err(e) => return Err(Failure::Stale(format!("kmsctl: {}", clean(&e.to_string())))),
            };
            print_ok(&verified);
            let path = memory.path().display();
            match observation {
                Observation::First => println!("head remembered in {path} (first seen for this chain and key)"),
                Observation::Unchanged => println!("head unchanged since last seen ({path})"),
                Observation::Extended { from } => {
                    println!("head extends the one last seen at sequence {from}; remembered in {path}")
                }
                other => println!("head remembered in {path} ({other:?})"),
            }
        }
    }
    Ok(())
}

fn print_ok(verified: &Verified) {
    println!(
        "audit chain OK: {} {} records, head {}",
        clean(&verified.chain),
        verified.records,
        verified.head_hash
    );
}

/// One tab-separated line: sequence, time, chain, decision, operation,
/// access key, role, key ARN, policy module, reason, what was attested
/// (`<module id> pcr<i>=<hex>…`) and the encryption context
/// (`keys=<JSON array> hash=<hex>`, ReEncrypt's source first as
/// `source keys=… hash=…; `) (`-` when empty).
fn record_line(r: &AuditRecord) -> String {
    if r.corrupt {
        return format!("{}\tCORRUPT", r.sequence);
    }
    fn field(s: &str) -> Cow<'_, str> {
        if s.is_empty() { Cow::Borrowed("-") } else { clean(s) }
    }
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        r.sequence,
        epoch_millis(r.time),
        field(&r.chain),
        field(&r.decision),
        field(&r.operation),
        field(&r.access_key_id),
        field(&r.role),
        field(&r.key_arn),
        field(&r.policy_module),
        field(&r.reason),
        field(&attested(r)),
        field(&context(r)),
    )
}

/// `<module id> pcr0=<hex> pcr8=<hex>`, or empty without a verified recipient.
fn attested(r: &AuditRecord) -> String {
    let mut out = r.recipient_module_id.clone();
    for (index, value) in &r.recipient_pcrs {
        out.push_str(&format!(" pcr{index}={value}"));
    }
    out.trim_start().to_owned()
}

/// `keys=["a","b"] hash=<hex>` (ReEncrypt: `source keys=… hash=…; keys=… hash=…`),
/// or empty for an operation without an encryption context.
fn context(r: &AuditRecord) -> String {
    let one =
        |keys: &[String], hash: &str| format!("keys={} hash={hash}", serde_json::to_string(keys).unwrap_or_default());
    let mut out = String::new();
    if !r.source_encryption_context_keys.is_empty() || !r.source_encryption_context_hash.is_empty() {
        out.push_str("source ");
        out.push_str(&one(
            &r.source_encryption_context_keys,
            &r.source_encryption_context_hash,
        ));
        out.push_str("; ");
    }
    if !r.encryption_context_keys.is_empty() || !r.encryption_context_hash.is_empty() {
        out.push_str(&one(&r.encryption_context_keys, &r.encryption_context_hash));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_escape_what_the_host_could_inject() {
        let record = AuditRecord {
            sequence: 3,
            time: 1_700_000_000_123,
            chain: "t".to_owned(),
            decision: "Deny".to_owned(),
            operation: "TrentService.Encrypt".to_owned(),
            reason: "AccessDeniedException: a\tb\n\u{1b}[31mred".to_owned(),
            ..AuditRecord::default()
        };
        let line = record_line(&record);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert_eq!(line.matches('\t').count(), 11, "{line}");
        assert!(line.ends_with("\t-\t-"), "nothing attested, no context: {line}");
        assert!(
            line.starts_with("3\t2023-11-14T22:13:20.123Z\tt\tDeny\tTrentService.Encrypt\t-\t"),
            "{line}"
        );
        // What was attested and the context, with a key that tries to inject.
        let attested = AuditRecord {
            recipient_module_id: "i-0-enc0".to_owned(),
            recipient_pcrs: [(0, "aa".to_owned()), (8, "bb".to_owned())].into_iter().collect(),
            encryption_context_keys: vec!["purpose".to_owned(), "x\ty\n".to_owned()],
            encryption_context_hash: "cc".to_owned(),
            source_encryption_context_keys: vec!["s".to_owned()],
            source_encryption_context_hash: "dd".to_owned(),
            ..record
        };
        let line = record_line(&attested);
        assert_eq!(line.matches('\t').count(), 11, "{line}");
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.ends_with(
                "\ti-0-enc0 pcr0=aa pcr8=bb\tsource keys=[\"s\"] hash=dd; keys=[\"purpose\",\"x\\ty\\n\"] hash=cc"
            ),
            "{line}"
        );

        let corrupt = AuditRecord {
            sequence: 4,
            corrupt: true,
            ..AuditRecord::default()
        };
        assert_eq!(record_line(&corrupt), "4\tCORRUPT");
    }
}
