//! Property tests: arbitrary headers, paths and queries never panic, percent-encoding round-trips,
//! and whatever `aws-sigv4` signs verifies (a differential test) while a changed body never does.

use super::*;

// ---- property tests ----

fn kms_headers_with_authorization(authorization: ByteBuf) -> Vec<(String, ByteBuf)> {
    vec![
        ("host".to_owned(), bytes(HOST)),
        ("content-type".to_owned(), bytes("application/x-amz-json-1.1")),
        ("x-amz-target".to_owned(), bytes("TrentService.Encrypt")),
        ("x-amz-date".to_owned(), bytes("20240101T120000Z")),
        ("authorization".to_owned(), authorization),
    ]
}

/// parse, and verify whatever parses; must never panic.
fn exercise(req: &SignedRequest<'_>) {
    if let Ok(auth) = parse(req) {
        let key = SigningKey::derive(SECRET.as_bytes(), &auth.scope_date, &auth.region, &auth.service);
        let _ = verify(req, &auth, &key, at(SIGNED_AT), REGION, SERVICE);
        let _ = format!("{auth:?}");
    }
}

fn printable() -> impl Strategy<Value = String> {
    "[ -~]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn structured_garbage_never_panics(
        algorithm in prop_oneof![9 => Just("AWS4-HMAC-SHA256".to_owned()), 1 => printable()],
        akid in prop_oneof![9 => Just(AKID.to_owned()), 1 => printable()],
        date in prop_oneof![9 => Just("20240101".to_owned()), 1 => "[0-9]{0,9}"],
        region in prop_oneof![9 => Just(REGION.to_owned()), 1 => printable()],
        service in prop_oneof![9 => Just(SERVICE.to_owned()), 1 => printable()],
        terminator in prop_oneof![9 => Just("aws4_request".to_owned()), 1 => printable()],
        signed in prop_oneof![
            9 => Just("content-type;host;x-amz-date;x-amz-target".to_owned()),
            2 => "[a-z;\\-]{0,80}",
            1 => printable(),
        ],
        signature in prop_oneof![9 => "[0-9a-f]{64}", 1 => "[0-9a-fA-F]{0,70}", 1 => printable()],
        separator in prop_oneof![9 => Just(", ".to_owned()), 1 => Just(",".to_owned()), 1 => printable()],
        amz_date in prop_oneof![9 => Just("20240101T120000Z".to_owned()), 1 => "[0-9TZ]{16}", 1 => printable()],
        method in prop_oneof![9 => Just("POST".to_owned()), 1 => printable()],
        path in prop_oneof![9 => Just("/".to_owned()), 1 => "[/.a%0-9]{0,20}", 1 => any::<String>()],
        query in prop_oneof![9 => Just(String::new()), 1 => "[a-z=&+%0-9]{0,30}", 1 => any::<String>()],
        header_value in prop_oneof![
            9 => "[ -~]{0,40}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 0..64),
        ],
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let authorization = format!(
            "{algorithm} Credential={akid}/{date}/{region}/{service}/{terminator}{separator}\
             SignedHeaders={signed}{separator}Signature={signature}"
        );
        let mut headers = kms_headers_with_authorization(bytes(&authorization));
        for (name, value) in &mut headers {
            match name.as_str() {
                "x-amz-date" => *value = bytes(&amz_date),
                "content-type" => *value = ByteBuf::from(header_value.clone()),
                _ => {}
            }
        }
        headers.push(("x-amz-meta".to_owned(), ByteBuf::from(header_value)));
        let req = SignedRequest { method: &method, path: &path, query: &query, headers: &headers, body: &body };
        exercise(&req);
    }
}

proptest! {
    #[test]
    fn garbage_authorization_never_panics(value in any::<String>()) {
        let headers = kms_headers_with_authorization(bytes(&value));
        let req = SignedRequest { method: "POST", path: "/", query: "", headers: &headers, body: b"{}" };
        exercise(&req);
    }

    #[test]
    fn garbage_authorization_bytes_never_panic(value in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let headers = kms_headers_with_authorization(ByteBuf::from(value));
        let req = SignedRequest { method: "POST", path: "/", query: "", headers: &headers, body: b"{}" };
        exercise(&req);
    }

    #[test]
    fn canonicalization_never_panics(path in any::<String>(), query in any::<String>()) {
        let mut out = Vec::new();
        canonical_uri(&path, &mut out);
        prop_assert!(out.starts_with(b"/"));
        let _ = canonical_query(&query, &mut out);
    }

    #[test]
    fn percent_encoding_round_trips(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut encoded = Vec::new();
        percent_encode(&data, false, &mut encoded);
        prop_assert!(encoded.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(b)));
        prop_assert_eq!(percent_decode(&encoded), data);
    }

    /// Differential test: whatever aws-sigv4 signs (paths, queries, header values, times within
    /// the window), the verifier accepts; and flipping the body is always caught.
    #[test]
    fn aws_sigv4_signed_requests_verify(
        segments in proptest::collection::vec(prop_oneof!["\\PC{0,8}", Just(".".to_owned()), Just("..".to_owned())], 0..5),
        trailing_slash in any::<bool>(),
        params in proptest::collection::vec(("\\PC{0,6}", "\\PC{0,6}"), 0..5),
        values in proptest::collection::vec("[ -~]{0,20}", 0..4),
        skew in -300i64..=300,
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut path = String::new();
        for segment in &segments {
            let mut enc = Vec::new();
            percent_encode(segment.as_bytes(), false, &mut enc);
            path.push('/');
            path.push_str(std::str::from_utf8(&enc).expect("ascii"));
        }
        if path.is_empty() || trailing_slash {
            path.push('/');
        }
        let query = params
            .iter()
            .map(|(k, v)| {
                let (mut ek, mut ev) = (Vec::new(), Vec::new());
                percent_encode(k.as_bytes(), false, &mut ek);
                percent_encode(v.as_bytes(), false, &mut ev);
                format!("{}={}", String::from_utf8_lossy(&ek), String::from_utf8_lossy(&ev))
            })
            .collect::<Vec<_>>()
            .join("&");
        let mut spec = Spec { path, query, body, time: SIGNED_AT + skew, ..Spec::default() };
        for value in &values {
            spec.headers.push(("x-amz-meta-p".to_owned(), value.clone()));
        }
        let req = sign_request(spec);
        prop_assert_eq!(check(&req), Ok(()));

        let mut tampered = req.clone();
        tampered.body.push(0);
        prop_assert_eq!(check(&tampered), Err(SigV4Error::SignatureMismatch));
    }
}
