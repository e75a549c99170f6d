//! The SigV4 canonical request: method, canonical URI (path normalization and re-encoding),
//! canonical query string, canonical headers and the payload hash, built byte for byte the way
//! `aws-sigv4` and botocore build it.

use std::borrow::Cow;

use super::{MAX_METHOD_LEN, MAX_QUERY_PARAMS, SigV4Error, SignedRequest, malformed, static_header_name};

/// The SigV4 canonical request (bytes: header values need not be UTF-8).
pub(super) fn canonical_request(
    req: &SignedRequest<'_>,
    signed: &[String],
    payload_hash: &str,
) -> Result<Vec<u8>, SigV4Error> {
    if req.method.is_empty() || req.method.len() > MAX_METHOD_LEN || !req.method.bytes().all(is_tchar) {
        return Err(malformed("invalid HTTP method"));
    }
    let mut out = Vec::with_capacity(req.path.len().saturating_add(req.query.len()).saturating_add(512));
    out.extend_from_slice(req.method.as_bytes());
    out.push(b'\n');
    canonical_uri(req.path, &mut out);
    out.push(b'\n');
    canonical_query(req.query, &mut out)?;
    out.push(b'\n');
    for name in signed {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut count = 0usize;
        for (header, value) in req.headers {
            if header.eq_ignore_ascii_case(name) {
                if count > 0 {
                    out.push(b',');
                }
                push_header_value(value, &mut out)?;
                count += 1;
            }
        }
        if count == 0 {
            return Err(SigV4Error::MissingSignedHeader(static_header_name(name)));
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    for (i, name) in signed.iter().enumerate() {
        if i > 0 {
            out.push(b';');
        }
        out.extend_from_slice(name.as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    Ok(out)
}

pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Trims leading/trailing spaces (and tabs, which HTTP parsers strip anyway) and collapses runs of
/// spaces to one. Control characters (CR, LF, NUL, …) are refused: they could forge lines of the
/// canonical request.
pub(super) fn push_header_value(value: &[u8], out: &mut Vec<u8>) -> Result<(), SigV4Error> {
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(malformed("control character in a signed header value"));
    }
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    let mut prev_space = false;
    for &b in value.get(start..end).unwrap_or_default() {
        if b == b' ' {
            if !prev_space {
                out.push(b);
            }
            prev_space = true;
        } else {
            out.push(b);
            prev_space = false;
        }
    }
    Ok(())
}

/// Canonical URI for non-S3 services, as `aws-sigv4` and botocore build it: normalize the raw path
/// (RFC 3986 §5.2.4 dot-segment removal, empty segments dropped), then percent-encode it once more
/// keeping `/`.
pub(super) fn canonical_uri(path: &str, out: &mut Vec<u8>) {
    let path: Cow<'_, str> = match path {
        "" => Cow::Borrowed("/"),
        p if p.starts_with('/') => Cow::Borrowed(p),
        p => Cow::Owned(format!("/{p}")),
    };
    if !(path.contains('.') || path.contains("//")) {
        percent_encode(path.as_bytes(), true, out);
        return;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let ends_with_slash = ["/", "/.", "/./", "/..", "/../"].iter().any(|s| path.ends_with(s));
    out.push(b'/');
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        percent_encode(segment.as_bytes(), false, out);
    }
    // With no segments left the output is already "/".
    if ends_with_slash && !segments.is_empty() {
        out.push(b'/');
    }
}

/// Canonical query string: split on `&` and the first `=`, decode (`+` is a space, as
/// `form_urlencoded` does in `aws-sigv4`), re-encode with only unreserved characters left alone,
/// sort by encoded name then value.
pub(super) fn canonical_query(query: &str, out: &mut Vec<u8>) -> Result<(), SigV4Error> {
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if params.len() >= MAX_QUERY_PARAMS {
            return Err(malformed("too many query parameters"));
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let mut enc_name = Vec::with_capacity(name.len());
        percent_encode(&percent_decode(name.as_bytes()), false, &mut enc_name);
        let mut enc_value = Vec::with_capacity(value.len());
        percent_encode(&percent_decode(value.as_bytes()), false, &mut enc_value);
        params.push((enc_name, enc_value));
    }
    params.sort();
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(value);
    }
    Ok(())
}

/// Percent-encodes everything except the RFC 3986 unreserved set (and `/` if `keep_slash`),
/// with upper-case hex.
pub(super) fn percent_encode(input: &[u8], keep_slash: bool, out: &mut Vec<u8>) {
    for &b in input {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', hex_upper(b >> 4), hex_upper(b & 0x0f)]);
        }
    }
}

pub(super) fn hex_upper(nibble: u8) -> u8 {
    if nibble < 10 {
        b'0' + nibble
    } else {
        b'A' + (nibble - 10)
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` → space, valid `%XX` → byte, anything else
/// (including a stray `%`) kept literally.
pub(super) fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut iter = input.iter().copied();
    while let Some(b) = iter.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let mut ahead = iter.clone();
                match (ahead.next().and_then(hex_value), ahead.next().and_then(hex_value)) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        iter = ahead;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
    }
    out
}

pub(super) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
