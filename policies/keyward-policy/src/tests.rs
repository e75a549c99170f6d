use super::*;

/// The ABI.md example context, verbatim in shape.
const FULL: &str = r#"{
  "version": 1,
  "principal": {
    "tenant": "acme",
    "access_key_id": "AKIAEXAMPLE",
    "roles": ["KeyUser"],
    "attestation": {
      "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
      "pcrs": {"0": "AB01", "1": "cd02", "2": "ef03"},
      "timestamp": 1704110399000
    }
  },
  "action": "kms:Decrypt",
  "resource": {
    "key_id": "1234abcd-12ab-34cd-56ef-1234567890ab",
    "arn": "arn:aws:kms:us-east-1:acme:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "key_spec": "SYMMETRIC_DEFAULT",
    "key_usage": "ENCRYPT_DECRYPT",
    "key_state": "Enabled",
    "tags": {"team": "payments"}
  },
  "request": {
    "encryption_context": {"tenant": "acme"},
    "recipient": true,
    "grant_tokens": []
  },
  "environment": {"time_ms": 1704110400000},
  "added_in_a_later_v1_host": {"ignored": true}
}"#;

fn allow_all(_: &Context) -> Decision {
    Decision::allow("all")
}

#[test]
fn a_full_context_parses() -> Result<(), ContextError> {
    let ctx = Context::from_json(FULL.as_bytes())?;
    assert_eq!(ctx.principal.tenant, "acme");
    assert!(ctx.principal.has_role("KeyUser"));
    assert!(!ctx.principal.has_role("KeyAdmin"));
    let attestation = ctx.principal.attestation.as_ref().expect("attested");
    assert_eq!(attestation.pcr(1), Some("cd02"));
    assert!(attestation.pcr_is(0, "ab01"));
    assert!(!attestation.pcr_is(3, ""));
    assert_eq!(attestation.timestamp, 1_704_110_399_000);
    assert_eq!(ctx.resource.tag("team"), Some("payments"));
    assert_eq!(ctx.request.context_value("tenant"), Some("acme"));
    assert!(ctx.request.recipient);
    assert_eq!(ctx.environment.utc_seconds_of_day(), 12 * 3600);
    Ok(())
}

#[test]
fn string_maps_accept_any_key_order() -> Result<(), ContextError> {
    let json = Context::sample().to_json().replace(
        r#""encryption_context":{}"#,
        r#""encryption_context":{"b":"2","a":"1","c":"\u00e9"}"#,
    );
    let ctx = Context::from_json(json.as_bytes())?;
    let entries: Vec<(&str, &str)> = ctx
        .request
        .encryption_context
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(entries, [("a", "1"), ("b", "2"), ("c", "é")]);
    Ok(())
}

#[test]
fn the_sample_round_trips() -> Result<(), ContextError> {
    let sample = Context::sample();
    let json = sample.to_json();
    assert!(json.contains(r#""attestation":null"#), "{json}");
    assert_eq!(Context::from_json(json.as_bytes())?, sample);
    Ok(())
}

#[test]
fn attestation_may_be_null_or_absent() -> Result<(), ContextError> {
    let json = Context::sample().to_json().replace(r#","attestation":null"#, "");
    assert!(!json.contains("attestation"), "{json}");
    assert_eq!(Context::from_json(json.as_bytes())?.principal.attestation, None);
    Ok(())
}

#[test]
fn anything_but_a_v1_context_is_denied() {
    let sample = Context::sample().to_json();
    let cases = [
        String::new(),
        "null".to_owned(),
        "{}".to_owned(),
        "[1]".to_owned(),
        sample.replace(r#""version":1"#, r#""version":2"#),
        sample.replace(r#""tags":{}"#, r#""tags":{"a":1}"#),
        sample.replace(r#","grant_tokens":[]"#, ""),
        sample.replace(r#""tags":{}"#, r#""tags":{"a":"1","b":"2","a":"3"}"#),
        sample.replace(r#""encryption_context":{}"#, r#""encryption_context":[]"#),
        sample.replace(r#""time_ms":1704110400000"#, r#""time_ms":-1"#),
        sample[..sample.len() - 1].to_owned(),
    ];
    for case in cases {
        let decision = evaluate_json(allow_all, case.as_bytes());
        assert!(!decision.is_allowed(), "{case}");
        assert!(
            decision.reason().starts_with("keyward-policy: "),
            "{}",
            decision.reason()
        );
    }
    let not_utf8 = evaluate_json(allow_all, b"{\"version\":1,\"action\":\"\xff\"}");
    assert!(!not_utf8.is_allowed());
    assert!(evaluate_json(allow_all, sample.as_bytes()).is_allowed());
}

#[test]
fn a_replacement_names_both_modules() -> Result<(), ContextError> {
    let json = Context::sample()
        .to_json()
        .replace(r#""kms:Decrypt""#, r#""keyward:policy.update""#)
        .replace(
            r#""grant_tokens":[]"#,
            r#""grant_tokens":[],"policy_update":{"current_module_sha256":"aa","new_module_sha256":"BB"}"#,
        );
    let ctx = Context::from_json(json.as_bytes())?;
    assert!(ctx.action_is("keyward:policy.update"));
    assert!(ctx.request.replaces_with("bb"));
    assert!(!ctx.request.replaces_with("aa"));
    assert!(!Context::sample().request.replaces_with("bb"));
    assert_eq!(Context::from_json(ctx.to_json().as_bytes())?, ctx);
    Ok(())
}

#[test]
fn actions_match_exactly_or_by_prefix() {
    let mut ctx = Context::sample();
    ctx.action = "kms:GenerateDataKeyWithoutPlaintext".to_owned();
    assert!(ctx.action_matches("kms:GenerateDataKey*"));
    assert!(!ctx.action_matches("kms:GenerateDataKey"));
    assert!(!ctx.action_is("kms:GenerateDataKey"));
    assert!(ctx.action_in(&["kms:Decrypt", "kms:GenerateDataKey*"]));
    assert!(!ctx.action_in(&["kms:Decrypt", "kms:Encrypt"]));
    assert!(ctx.action_matches("*"));
}

#[test]
fn decisions_encode_as_the_abi_says() {
    assert_eq!(Decision::allow("fine").to_json(), r#"{"allow":true,"reason":"fine"}"#);
    assert_eq!(
        Decision::deny("no \"way\"").to_json(),
        r#"{"allow":false,"reason":"no \"way\""}"#
    );
    assert_eq!(Decision::deny("a\nb\tc\u{1b}[0m").reason(), "a b c [0m");
}

#[test]
fn long_reasons_are_cut_to_fit_the_decision_limit() {
    let long = Decision::deny("é".repeat(MAX_REASON_BYTES));
    assert!(long.reason().len() <= MAX_REASON_BYTES && long.reason().len() > MAX_REASON_BYTES - 2);
    // The worst case: every byte escaped.
    let escaped = Decision::allow("\\".repeat(10 * MAX_REASON_BYTES)).to_json();
    assert!(escaped.len() <= 4096, "{}", escaped.len());
}

#[test]
fn the_buffers_work_as_the_host_uses_them() {
    for _ in 0..3 {
        let json = Context::sample().to_json().into_bytes();
        let ptr = __private::alloc(json.len());
        // SAFETY: `alloc` returned a buffer of `json.len()` bytes, as the
        // host's memory write would fill it.
        unsafe { std::ptr::copy_nonoverlapping(json.as_ptr(), ptr, json.len()) };
        let (out, len) = __private::evaluate(ptr, json.len(), |ctx| Decision::allow(ctx.principal.tenant.clone()));
        // SAFETY: the decision stays valid until the next alloc.
        let decision = unsafe { std::slice::from_raw_parts(out, len) };
        assert_eq!(decision, br#"{"allow":true,"reason":"acme"}"#);
    }
}

#[test]
fn a_buffer_not_from_alloc_is_denied() {
    let ptr = __private::alloc(16);
    let (out, len) = __private::evaluate(ptr.wrapping_add(1), 8, allow_all);
    // SAFETY: as above.
    let decision = unsafe { std::slice::from_raw_parts(out, len) };
    assert!(decision.starts_with(br#"{"allow":false,"#));
    // Too long for the buffer.
    let ptr = __private::alloc(16);
    let (out, len) = __private::evaluate(ptr, 17, allow_all);
    // SAFETY: as above.
    assert!(unsafe { std::slice::from_raw_parts(out, len) }.starts_with(br#"{"allow":false,"#));
    // Evaluate twice: the buffer is consumed by the first call.
    let json = Context::sample().to_json().into_bytes();
    let ptr = __private::alloc(json.len());
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(json.as_ptr(), ptr, json.len()) };
    let (out, len) = __private::evaluate(ptr, json.len(), allow_all);
    // SAFETY: as above.
    assert!(unsafe { std::slice::from_raw_parts(out, len) }.starts_with(br#"{"allow":true,"#));
    let (out, len) = __private::evaluate(ptr, json.len(), allow_all);
    // SAFETY: as above.
    assert!(unsafe { std::slice::from_raw_parts(out, len) }.starts_with(br#"{"allow":false,"#));
}

export!(allow_all);

#[test]
fn the_sample_context_files_are_v1_contexts() -> Result<(), ContextError> {
    for (name, json) in [
        ("decrypt.json", include_str!("../../contexts/decrypt.json")),
        (
            "decrypt-attested.json",
            include_str!("../../contexts/decrypt-attested.json"),
        ),
        (
            "decrypt-night-other-tenant.json",
            include_str!("../../contexts/decrypt-night-other-tenant.json"),
        ),
        (
            "schedule-deletion.json",
            include_str!("../../contexts/schedule-deletion.json"),
        ),
    ] {
        let ctx = Context::from_json(json.as_bytes()).map_err(|e| {
            eprintln!("{name}: {e}");
            e
        })?;
        assert_eq!(ctx.principal.tenant, "acme", "{name}");
    }
    Ok(())
}

/// What `serde_json` (with the derived `Deserialize`) makes of `json`: the
/// reference the context reader is checked against.
fn reference(json: &[u8]) -> Option<Context> {
    serde_json::from_slice::<Context>(json)
        .ok()
        .filter(|c| c.version == CONTEXT_VERSION)
}

/// The reader agrees with the reference, except that it also refuses a PCR
/// index given twice (the reference keeps the last).
fn agrees(json: &[u8]) -> Result<(), String> {
    let ours = Context::from_json(json);
    match (ours, reference(json)) {
        (Ok(a), Some(b)) if a == b => Ok(()),
        (Err(_), None) => Ok(()),
        (Err(ContextError::Json(e)), Some(_)) if e.message() == "duplicate key" => Ok(()),
        (ours, theirs) => Err(format!(
            "{}\n  reader: {ours:?}\n  serde_json: {theirs:?}",
            String::from_utf8_lossy(json)
        )),
    }
}

#[test]
fn the_reader_agrees_with_serde_json_on_valid_contexts() {
    let sample = Context::sample().to_json();
    let cases = [
        FULL.to_owned(),
        sample.clone(),
        include_str!("../../contexts/decrypt.json").to_owned(),
        include_str!("../../contexts/decrypt-attested.json").to_owned(),
        include_str!("../../contexts/schedule-deletion.json").to_owned(),
        // Escapes of every kind, in values and keys.
        sample.replace(
            r#""encryption_context":{}"#,
            r#""encryption_context":{"q\"b\\s\/":"\b\f\n\r\t","\u00e9\u20AC":"\ud83d\ude00 x","":""}"#,
        ),
        // Unknown members of every type, nested, anywhere.
        sample.replace(
            r#""version":1"#,
            r#""x":{"a":[1,-2.5e+3,0.0,1E-2,true,false,null,"s",{"b":[]},[[{}]]]},"version":1,"y":[]"#,
        ),
        sample.replace(r#""time_ms":"#, r#""later":{"n":-0},"time_ms":"#),
        sample.replace(r#""recipient":false"#, r#""recipient":false,"z":"\u0000""#),
        // A replacement decision (keyward:policy.update), and its member null.
        sample.replace(
            r#""grant_tokens":[]"#,
            r#""grant_tokens":[],"policy_update":{"current_module_sha256":"aa","new_module_sha256":"bb","x":1}"#,
        ),
        sample.replace(r#""grant_tokens":[]"#, r#""grant_tokens":[],"policy_update":null"#),
        // Whitespace everywhere it may be.
        format!(" \t\r\n{} \n", sample.replace(',', " ,\n\t").replace(':', " : ")),
        // Attestation absent, null, present; u32/u64 extremes.
        sample.replace(r#","attestation":null"#, ""),
        FULL.replace("1704110399000", "18446744073709551615"),
        FULL.replace(r#""version": 1"#, r#""version": 1.0"#),
        FULL.replace(r#""version": 1"#, r#""version": 4294967297"#),
        FULL.replace(r#""time_ms": 1704110400000"#, r#""time_ms": 18446744073709551616"#),
        FULL.replace(r#""time_ms": 1704110400000"#, r#""time_ms": 18446744073709551620"#),
        FULL.replace(r#""time_ms": 1704110400000"#, r#""time_ms": 99999999999999999999"#),
        FULL.replace(r#""time_ms": 1704110400000"#, r#""time_ms": 9999999999999999999"#),
        FULL.replace(r#""0": "AB01""#, r#""4294967295": "AB01""#),
        FULL.replace(r#""0": "AB01""#, r#""4294967296": "AB01""#),
        FULL.replace(r#""0": "AB01""#, r#""00": "AB01""#),
        FULL.replace(r#""0": "AB01""#, r#""-1": "AB01""#),
        // Duplicates of members (errors for both).
        sample.replace(r#""action":"#, r#""action":"kms:Encrypt","action":"#),
        sample.replace(r#""recipient":false"#, r#""recipient":false,"recipient":true"#),
        sample.replace(r#""attestation":null"#, r#""attestation":null,"attestation":null"#),
    ];
    for case in cases {
        agrees(case.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    }
    let deep = |n: usize| {
        sample.replace(
            r#""version":1"#,
            &format!(r#""d":{}1{},"version":1"#, "[".repeat(n), "]".repeat(n)),
        )
    };
    assert!(Context::from_json(deep(126).as_bytes()).is_ok());
    assert!(Context::from_json(deep(200).as_bytes()).is_err());
}

/// Every one-byte change, insertion and deletion of a full context: the
/// reader accepts exactly what serde_json accepts, with the same result.
#[test]
fn the_reader_agrees_with_serde_json_on_every_one_byte_mutation() {
    let original = FULL.as_bytes();
    let replacements = b" \t\"\\{}[],:-+.eE0159tfnulx/";
    let mut mismatches = Vec::new();
    for i in 0..=original.len() {
        let mut variants: Vec<Vec<u8>> = Vec::new();
        for &r in replacements {
            let mut inserted = original.to_vec();
            inserted.insert(i, r);
            variants.push(inserted);
            if i < original.len() {
                let mut replaced = original.to_vec();
                replaced[i] = r;
                variants.push(replaced);
            }
        }
        if i < original.len() {
            let mut deleted = original.to_vec();
            deleted.remove(i);
            variants.push(deleted);
        }
        for variant in variants {
            if let Err(e) = agrees(&variant) {
                mismatches.push(e);
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {}",
        mismatches.len(),
        mismatches[0]
    );
}

#[test]
fn decisions_escape_as_serde_json_does() {
    for reason in ["plain", "q\"b\\", "é€😀", "", "\u{7f}\u{9f}"] {
        for allow in [true, false] {
            let decision = Decision::new(allow, reason);
            assert_eq!(
                decision.to_json(),
                serde_json::to_string(&decision).expect("serializes")
            );
        }
    }
    // Control characters cannot reach a reason through `Decision::new`, but
    // a deserialized decision may carry them: they are escaped.
    let raw: Decision = serde_json::from_str(r#"{"allow":false,"reason":"a\nb\u0001\b\f\r\t"}"#).expect("parses");
    assert_eq!(raw.to_json(), serde_json::to_string(&raw).expect("serializes"));
}
