//! Nothing secret is written to disk in the clear: after a clean stop, no
//! file under the data dir contains a plaintext or a data key (raw, base64 or
//! hex), and neither process logs one, nor the credential's secret.

use aws_sdk_kms::types::DataKeySpec;
use base64::Engine;

use crate::harness::{Sandbox, create_key, encrypt, files_under, random_alnum, random_bytes};

/// Indices of the needles that occur in `haystack` as byte substrings. One
/// pass over `haystack` (its windows of the shortest needle's length),
/// bucketing needles by first byte, so multi-megabyte store files stay cheap
/// in a debug build.
fn find_needles(haystack: &[u8], needles: &[(String, Vec<u8>)]) -> Vec<usize> {
    let shortest = needles.iter().map(|(_, n)| n.len()).min().unwrap_or(1).max(1);
    let mut by_first: Vec<Vec<usize>> = vec![Vec::new(); 256];
    for (i, (_, needle)) in needles.iter().enumerate() {
        by_first[usize::from(needle[0])].push(i);
    }
    let mut hits = vec![false; needles.len()];
    for (pos, window) in haystack.windows(shortest).enumerate() {
        for &i in &by_first[usize::from(window[0])] {
            let needle = &needles[i].1;
            if !hits[i] && haystack[pos..].starts_with(needle) {
                hits[i] = true;
            }
        }
    }
    (0..needles.len()).filter(|&i| hits[i]).collect()
}

#[test]
fn find_needles_finds_and_misses() {
    let needles = vec![
        ("a".to_string(), b"secret".to_vec()),
        ("b".to_string(), b"absent!".to_vec()),
    ];
    assert_eq!(find_needles(b"xx secret yy", &needles), vec![0]);
    assert_eq!(find_needles(b"secre", &needles), Vec::<usize>::new());
    assert_eq!(find_needles(b"absent!secret", &needles), vec![0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_or_data_key_on_disk() {
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let client = kw.client();
    let key_a = create_key(&client, "at rest a").await;
    let key_b = create_key(&client, "at rest b").await;

    // (label, secret bytes)
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..4 {
        let plaintext = random_bytes(64);
        encrypt(&client, if i % 2 == 0 { &key_a } else { &key_b }, &plaintext, None).await;
        secrets.push((format!("plaintext #{i}"), plaintext));
    }
    let marker = format!("KEYWARD-AT-REST-MARKER-{}", random_alnum(24)).into_bytes();
    encrypt(&client, &key_a, &marker, None).await;
    secrets.push(("ASCII marker".into(), marker));

    for (i, spec) in [
        DataKeySpec::Aes256,
        DataKeySpec::Aes256,
        DataKeySpec::Aes128,
        DataKeySpec::Aes256,
    ]
    .into_iter()
    .enumerate()
    {
        let out = client
            .generate_data_key()
            .key_id(if i % 2 == 0 { &key_b } else { &key_a })
            .key_spec(spec)
            .send()
            .await
            .expect("GenerateDataKey");
        secrets.push((
            format!("data key #{i}"),
            out.plaintext().expect("Plaintext").as_ref().to_vec(),
        ));
    }
    let out = client
        .generate_data_key()
        .key_id(&key_a)
        .number_of_bytes(48)
        .send()
        .await
        .expect("GenerateDataKey");
    secrets.push((
        "48-byte data key".into(),
        out.plaintext().expect("Plaintext").as_ref().to_vec(),
    ));

    let status = kw.stop();
    assert_eq!(status.code(), Some(0), "keyward must exit 0 on SIGTERM, got {status}");

    // Each secret as raw bytes, standard base64 (with and without padding)
    // and lower/upper-case hex.
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (label, bytes) in &secrets {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let b64_nopad = b64.trim_end_matches('=').to_string();
        let b64_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let hex_lower: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        needles.push((format!("{label} (raw)"), bytes.clone()));
        needles.push((format!("{label} (base64)"), b64.into_bytes()));
        needles.push((format!("{label} (base64, unpadded)"), b64_nopad.into_bytes()));
        needles.push((format!("{label} (base64url)"), b64_url.into_bytes()));
        needles.push((format!("{label} (hex)"), hex_lower.clone().into_bytes()));
        needles.push((format!("{label} (HEX)"), hex_lower.to_ascii_uppercase().into_bytes()));
    }

    let data_dir = sb.data_dir();
    assert!(
        data_dir.join("store").is_dir(),
        "no embedded store at {}",
        data_dir.join("store").display()
    );
    let files = files_under(&data_dir);
    let mut scanned = 0usize;
    let mut found = Vec::new();
    for file in &files {
        let content = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        scanned += content.len();
        for i in find_needles(&content, &needles) {
            found.push(format!("{} in {}", needles[i].0, file.display()));
        }
    }
    assert!(
        files.iter().any(|f| f.starts_with(data_dir.join("store"))) && scanned > 0,
        "nothing was scanned under {} ({} files, {scanned} bytes)",
        data_dir.display(),
        files.len()
    );
    assert!(
        found.is_empty(),
        "secrets found on disk ({} files, {scanned} bytes scanned):\n{found:#?}",
        files.len()
    );

    // Nor in the logs of either process, which also must not carry the
    // credential's secret.
    needles.push(("secret access key".into(), sb.creds.secret.clone().into_bytes()));
    let logs = sb.log_files();
    let mut logged = 0usize;
    for log in &logs {
        let content = std::fs::read(log).unwrap_or_else(|e| panic!("read {}: {e}", log.display()));
        logged += content.len();
        for i in find_needles(&content, &needles) {
            found.push(format!("{} in {}", needles[i].0, log.display()));
        }
    }
    assert!(logged > 0, "the service wrote no log lines to scan");
    assert!(found.is_empty(), "secrets found in the logs:\n{found:#?}");
}
