//! Parsing of the `Authorization` and `x-amz-date` headers into an [`Authorization`], with the
//! bounds and syntax checks listed in the parent module's docs; nothing cryptographic happens here.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use super::{
    ALGORITHM, Authorization, MAX_ACCESS_KEY_ID_LEN, MAX_AUTHORIZATION_LEN, MAX_HEADER_NAME_LEN, MAX_SCOPE_PART_LEN,
    MAX_SIGNED_HEADERS, SINGLE_VALUED, SigV4Error, SignedRequest, TERMINATOR, malformed,
};

/// Parses the `Authorization` and `x-amz-date` headers without verifying anything cryptographic,
/// so the caller can look up the secret for [`Authorization::access_key_id`].
///
/// Rejects requests that repeat a header listed in the module docs as single-valued.
pub fn parse(req: &SignedRequest<'_>) -> Result<Authorization, SigV4Error> {
    parse_with_date(req).map(|(auth, _)| auth)
}

/// Like [`parse`], also returning the raw (validated, 16-byte ASCII) `x-amz-date` value.
pub(super) fn parse_with_date<'a>(req: &SignedRequest<'a>) -> Result<(Authorization, &'a str), SigV4Error> {
    let header = single_header(req, "authorization")?.ok_or(SigV4Error::Missing)?;
    for name in SINGLE_VALUED {
        single_header(req, name)?;
    }
    if header.len() > MAX_AUTHORIZATION_LEN {
        return Err(malformed("Authorization header too long"));
    }
    let header = std::str::from_utf8(header).map_err(|_| malformed("Authorization header is not ASCII"))?;
    if !header.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
        return Err(malformed("Authorization header is not printable ASCII"));
    }
    let header = header.trim_matches([' ', '\t']);
    let (algorithm, rest) = header
        .split_once(' ')
        .ok_or_else(|| malformed("Authorization header has no credentials"))?;
    if algorithm != ALGORITHM {
        return Err(malformed("unsupported signing algorithm"));
    }

    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim_matches([' ', '\t']);
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| malformed("Authorization component is not key=value"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(malformed("unknown Authorization component")),
        };
        if slot.replace(value).is_some() {
            return Err(malformed("repeated Authorization component"));
        }
    }
    let credential = credential.ok_or_else(|| malformed("missing Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| malformed("missing SignedHeaders"))?;
    let signature = signature.ok_or_else(|| malformed("missing Signature"))?;

    let (access_key_id, scope_date, region, service) = parse_credential(credential)?;
    let signed_headers = parse_signed_headers(signed_headers)?;
    let signature = parse_signature(signature)?;

    let amz_date = single_header(req, "x-amz-date")?.ok_or_else(|| malformed("missing x-amz-date header"))?;
    let (request_time, amz_date) = parse_amz_date(amz_date)?;

    let auth = Authorization {
        access_key_id: access_key_id.to_owned(),
        scope_date: scope_date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature,
        request_time,
    };
    Ok((auth, amz_date))
}

/// The value of a header that may appear at most once (`Ok(None)` if absent).
pub(super) fn single_header<'a>(req: &SignedRequest<'a>, name: &str) -> Result<Option<&'a [u8]>, SigV4Error> {
    let mut found = None;
    for (header, value) in req.headers {
        if header.eq_ignore_ascii_case(name) && found.replace(value.as_slice()).is_some() {
            return Err(SigV4Error::Malformed(format!("repeated {name} header")));
        }
    }
    Ok(found)
}

pub(super) fn parse_credential(credential: &str) -> Result<(&str, &str, &str, &str), SigV4Error> {
    let mut parts = credential.split('/');
    let (Some(akid), Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed("Credential must be AKID/date/region/service/aws4_request"));
    };
    let ident = |s: &str, max: usize, extra: &[u8]| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    if !ident(akid, MAX_ACCESS_KEY_ID_LEN, b"-_.") {
        return Err(malformed("invalid access key id"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("credential scope date must be YYYYMMDD"));
    }
    if !ident(region, MAX_SCOPE_PART_LEN, b"-_") {
        return Err(malformed("invalid credential scope region"));
    }
    if !ident(service, MAX_SCOPE_PART_LEN, b"-_") {
        return Err(malformed("invalid credential scope service"));
    }
    if terminator != TERMINATOR {
        return Err(SigV4Error::WrongScope(
            "credential scope must end in aws4_request".to_owned(),
        ));
    }
    Ok((akid, date, region, service))
}

pub(super) fn parse_signed_headers(list: &str) -> Result<Vec<String>, SigV4Error> {
    let mut out: Vec<String> = Vec::new();
    for (i, name) in list.split(';').enumerate() {
        if i >= MAX_SIGNED_HEADERS {
            return Err(malformed("too many signed headers"));
        }
        if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN || !name.bytes().all(is_lower_tchar) {
            return Err(malformed("invalid header name in SignedHeaders"));
        }
        if name == "authorization" {
            return Err(malformed("authorization cannot be a signed header"));
        }
        if out.last().is_some_and(|prev| prev.as_str() >= name) {
            return Err(malformed("SignedHeaders must be sorted and unique"));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

/// RFC 9110 `tchar`, restricted to lower case (SignedHeaders lists lower-cased names).
pub(super) fn is_lower_tchar(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn parse_signature(hex_sig: &str) -> Result<[u8; 32], SigV4Error> {
    let bad = || malformed("Signature must be 64 lower-case hex digits");
    if hex_sig.len() != 64
        || !hex_sig
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_sig, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// Parses `YYYYMMDD'T'HHMMSS'Z'` (UTC).
pub(super) fn parse_amz_date(raw: &[u8]) -> Result<(OffsetDateTime, &str), SigV4Error> {
    let bad = || malformed("x-amz-date must be YYYYMMDD'T'HHMMSS'Z'");
    let bytes: &[u8; 16] = raw.try_into().map_err(|_| bad())?;
    let [y0, y1, y2, y3, mo0, mo1, d0, d1, t, h0, h1, mi0, mi1, s0, s1, z] = *bytes;
    if t != b'T' || z != b'Z' {
        return Err(bad());
    }
    let digit = |b: u8| if b.is_ascii_digit() { Ok(b - b'0') } else { Err(bad()) };
    let two = |a: u8, b: u8| -> Result<u8, SigV4Error> { Ok(digit(a)? * 10 + digit(b)?) };
    let year = i32::from(two(y0, y1)?) * 100 + i32::from(two(y2, y3)?);
    let month = Month::try_from(two(mo0, mo1)?).map_err(|_| bad())?;
    let date = Date::from_calendar_date(year, month, two(d0, d1)?).map_err(|_| bad())?;
    let time = Time::from_hms(two(h0, h1)?, two(mi0, mi1)?, two(s0, s1)?).map_err(|_| bad())?;
    // All 16 bytes were just checked to be ASCII.
    let text = std::str::from_utf8(raw).map_err(|_| bad())?;
    Ok((PrimitiveDateTime::new(date, time).assume_utc(), text))
}
