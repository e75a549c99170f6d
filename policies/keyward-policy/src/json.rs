//! The request context reader: a small JSON parser that builds a
//! [`Context`] directly from the bytes the host sends.
//!
//! It replaces `serde_json` + `#[derive(Deserialize)]` on the module's hot
//! path: parsing is most of what a typical policy costs, and this reader
//! needs several times less fuel (one pass over the bytes, members matched by
//! name without serde's visitor machinery, strings copied once). It accepts
//! exactly the documents `serde_json` would turn into a v1 [`Context`] (the
//! tests check the two against each other), except that it is stricter in
//! one place: a PCR index given twice is an error, like any other duplicate
//! key (`serde_json` keeps the last).
//!
//! * The whole input must be UTF-8: one JSON value, whitespace around it.
//! * Members this version does not know are skipped, but must be valid JSON
//!   (nested at most [`MAX_DEPTH`] deep).
//! * A member given twice, a missing required member, a wrong type, a
//!   negative, fractional or overflowing integer is an error.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use crate::context::{Attestation, Context, Environment, PolicyUpdate, Principal, Request, Resource};

/// Deepest nesting of arrays and objects accepted (as `serde_json`).
pub const MAX_DEPTH: u32 = 128;

/// Why bytes are not the JSON of a v1 context: what, and at which byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    message: Cow<'static, str>,
    offset: usize,
}

impl JsonError {
    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The byte offset in the input where it was found.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for JsonError {}

type Result<T> = std::result::Result<T, JsonError>;

/// Parses a context document (the `version` is checked by the caller).
pub fn context(json: &[u8]) -> Result<Context> {
    let text = std::str::from_utf8(json).map_err(|e| JsonError {
        message: "the context is not UTF-8".into(),
        offset: e.valid_up_to(),
    })?;
    let mut reader = Reader { text, pos: 0, depth: 0 };
    reader.ws();
    let context = reader.context()?;
    reader.ws();
    if reader.pos != text.len() {
        return Err(reader.error("trailing characters"));
    }
    Ok(context)
}

/// `0x01` in every byte of a word (SWAR: eight bytes tested at once).
pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` below `n`; the borrow can set false
/// bits, but only above a true one, so the lowest set bit and "any" are
/// exact.
pub(crate) const fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * n as u64) & !x & HIGHS
}

/// The first byte at or after `pos` that ends a run of plain string
/// characters: `"`, `\\` or a control character (below 0x20); `bytes.len()`
/// if there is none.
///
/// Eight bytes at a time (SWAR): the module is charged per WebAssembly
/// instruction, and strings are most of a context's bytes. For each test,
/// `(x - 0x01…01·n) & !x & 0x80…80` has its lowest set bit in the first byte
/// of `x` below `n` (higher bits may be false positives from the borrow,
/// never lower ones), so the lowest set bit of the three tests ORed is the
/// first special byte. Bytes of 0x80 and above (UTF-8 sequences) never match.
fn plain_run_end(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let special = below(v ^ (ONES * b'"' as u64), 1) | below(v ^ (ONES * b'\\' as u64), 1) | below(v, 0x20);
        if special != 0 {
            return pos + (special.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while let Some(&b) = bytes.get(pos) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        pos += 1;
    }
    pos
}

/// A cursor over the (UTF-8) input.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
}

/// Fills a member slot once; a second time is an error.
fn once<T>(reader: &Reader<'_>, slot: &mut Option<T>, value: T, name: &'static str) -> Result<()> {
    if slot.is_some() {
        return Err(reader.error_owned(format!("duplicate field `{name}`")));
    }
    *slot = Some(value);
    Ok(())
}

/// A required member.
fn required<T>(reader: &Reader<'_>, slot: Option<T>, name: &'static str) -> Result<T> {
    slot.ok_or_else(|| reader.error_owned(format!("missing field `{name}`")))
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn error(&self, message: &'static str) -> JsonError {
        JsonError {
            message: message.into(),
            offset: self.pos,
        }
    }

    #[cold]
    fn error_owned(&self, message: String) -> JsonError {
        JsonError {
            message: message.into(),
            offset: self.pos,
        }
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `byte` (after whitespace) or fails with `message`.
    fn expect(&mut self, byte: u8, message: &'static str) -> Result<()> {
        self.ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(message))
        }
    }

    /// Walks an object, calling `member` with each key; `member` must read
    /// the value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>) -> Result<()> {
        self.ws();
        if self.peek() != Some(b'{') {
            return Err(self.error("expected an object"));
        }
        self.enter()?;
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.expect(b':', "expected `:`")?;
            member(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    /// Walks an array, calling `element` for each element.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.ws();
        if self.peek() != Some(b'[') {
            return Err(self.error("expected an array"));
        }
        self.enter()?;
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            element(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    fn enter(&mut self) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        self.depth += 1;
        Ok(())
    }

    /// A string, borrowed from the input unless it has escapes.
    fn string(&mut self) -> Result<Cow<'a, str>> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        self.pos += 1;
        let bytes = self.bytes();
        let start = self.pos;
        let pos = plain_run_end(bytes, start);
        match bytes.get(pos) {
            Some(b'"') => {
                self.pos = pos + 1;
                // Both ends are ASCII quotes: character boundaries.
                return Ok(Cow::Borrowed(&self.text[start..pos]));
            }
            Some(b'\\') => {}
            Some(_) => {
                self.pos = pos;
                return Err(self.error("control character in a string"));
            }
            None => {
                self.pos = pos;
                return Err(self.error("unterminated string"));
            }
        }
        // With escapes: copy the plain runs, decode the escapes.
        let mut out = String::with_capacity(pos - start + 16);
        out.push_str(&self.text[start..pos]);
        self.pos = pos;
        loop {
            let run_start = self.pos;
            let pos = plain_run_end(bytes, run_start);
            out.push_str(&self.text[run_start..pos]);
            self.pos = pos;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// One escape, after its backslash.
    fn escape(&mut self, out: &mut String) -> Result<()> {
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let first = self.hex4()?;
                let c = match first {
                    0xd800..=0xdbff => {
                        if self.bytes().get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&second) {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        char::from_u32(0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00))
                    }
                    0xdc00..=0xdfff => None,
                    _ => char::from_u32(first),
                };
                out.push(c.ok_or_else(|| self.error("invalid unicode code point"))?);
                return Ok(());
            }
            _ => return Err(self.error("invalid escape")),
        };
        self.pos += 1;
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.error("invalid escape")),
            };
            value = value * 16 + u32::from(digit);
            self.pos += 1;
        }
        Ok(value)
    }

    fn owned_string(&mut self) -> Result<String> {
        self.string().map(Cow::into_owned)
    }

    /// A non-negative integer (no fraction, no exponent) that fits a `u64`.
    fn u64(&mut self) -> Result<u64> {
        self.ws();
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.skip_number()?;
            self.pos = start;
            return Err(self.error("invalid value: expected a non-negative integer"));
        }
        let mut value: u64 = 0;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(b @ b'0'..=b'9') = self.peek() {
                    let digit = u64::from(b - b'0');
                    // Compared, not `checked_mul`: on wasm32 that is a call
                    // to a 128-bit multiply per digit.
                    if value > u64::MAX / 10 || (value == u64::MAX / 10 && digit > u64::MAX % 10) {
                        return Err(self.error("number out of range"));
                    }
                    value = value * 10 + digit;
                    self.pos += 1;
                }
            }
            _ => return Err(self.error("expected an integer")),
        }
        match self.peek() {
            Some(b'.' | b'e' | b'E') => {
                self.pos = start;
                self.skip_number()?;
                self.pos = start;
                Err(self.error("invalid type: floating point, expected an integer"))
            }
            Some(b'0'..=b'9') => Err(self.error("invalid number")),
            _ => Ok(value),
        }
    }

    fn u32(&mut self) -> Result<u32> {
        let start = self.pos;
        let value = self.u64()?;
        u32::try_from(value).map_err(|_| JsonError {
            message: "number out of range".into(),
            offset: start,
        })
    }

    fn bool(&mut self) -> Result<bool> {
        self.ws();
        let rest = &self.bytes()[self.pos..];
        if rest.starts_with(b"true") {
            self.pos += 4;
            Ok(true)
        } else if rest.starts_with(b"false") {
            self.pos += 5;
            Ok(false)
        } else {
            Err(self.error("expected a boolean"))
        }
    }

    /// `null` (consumed, `true`) or anything else (not consumed, `false`).
    fn null(&mut self) -> bool {
        self.ws();
        if self.bytes()[self.pos..].starts_with(b"null") {
            self.pos += 4;
            true
        } else {
            false
        }
    }

    fn strings(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.array(|r| {
            out.push(r.owned_string()?);
            Ok(())
        })?;
        Ok(out)
    }

    /// An object of strings; a key given twice is an error.
    fn string_map(&mut self) -> Result<BTreeMap<String, String>> {
        let mut entries: Vec<(String, String)> = Vec::new();
        self.object(|r, key| {
            let value = r.owned_string()?;
            entries.push((key.into_owned(), value));
            Ok(())
        })?;
        let count = entries.len();
        // Bulk build: a sort, linear for the sorted keys the host sends.
        let map: BTreeMap<String, String> = entries.into_iter().collect();
        if map.len() != count {
            return Err(self.error("duplicate key"));
        }
        Ok(map)
    }

    /// Skips any JSON value, checking its syntax.
    fn skip_value(&mut self) -> Result<()> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(|r, _| r.skip_value()),
            Some(b'[') => self.array(Self::skip_value),
            Some(b'"') => self.string().map(drop),
            Some(b't' | b'f') => self.bool().map(drop),
            Some(b'n') => {
                if self.null() {
                    Ok(())
                } else {
                    Err(self.error("expected a value"))
                }
            }
            Some(b'-' | b'0'..=b'9') => self.skip_number(),
            _ => Err(self.error("expected a value")),
        }
    }

    /// Skips a JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn skip_number(&mut self) -> Result<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.error("invalid number"));
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    // --- the v1 context ---------------------------------------------------

    fn context(&mut self) -> Result<Context> {
        let (mut version, mut principal, mut action, mut resource, mut request, mut environment) =
            (None, None, None, None, None, None);
        self.object(|r, key| match key.as_ref() {
            "version" => {
                let v = r.u32()?;
                once(r, &mut version, v, "version")
            }
            "principal" => {
                let v = r.principal()?;
                once(r, &mut principal, v, "principal")
            }
            "action" => {
                let v = r.owned_string()?;
                once(r, &mut action, v, "action")
            }
            "resource" => {
                let v = r.resource()?;
                once(r, &mut resource, v, "resource")
            }
            "request" => {
                let v = r.request()?;
                once(r, &mut request, v, "request")
            }
            "environment" => {
                let v = r.environment()?;
                once(r, &mut environment, v, "environment")
            }
            _ => r.skip_value(),
        })?;
        Ok(Context {
            version: required(self, version, "version")?,
            principal: required(self, principal, "principal")?,
            action: required(self, action, "action")?,
            resource: required(self, resource, "resource")?,
            request: required(self, request, "request")?,
            environment: required(self, environment, "environment")?,
        })
    }

    fn principal(&mut self) -> Result<Principal> {
        let (mut tenant, mut access_key_id, mut roles, mut attestation) = (None, None, None, None);
        self.object(|r, key| match key.as_ref() {
            "tenant" => {
                let v = r.owned_string()?;
                once(r, &mut tenant, v, "tenant")
            }
            "access_key_id" => {
                let v = r.owned_string()?;
                once(r, &mut access_key_id, v, "access_key_id")
            }
            "roles" => {
                let v = r.strings()?;
                once(r, &mut roles, v, "roles")
            }
            "attestation" => {
                let v = if r.null() { None } else { Some(r.attestation()?) };
                once(r, &mut attestation, v, "attestation")
            }
            _ => r.skip_value(),
        })?;
        Ok(Principal {
            tenant: required(self, tenant, "tenant")?,
            access_key_id: required(self, access_key_id, "access_key_id")?,
            roles: required(self, roles, "roles")?,
            attestation: attestation.flatten(),
        })
    }

    fn attestation(&mut self) -> Result<Attestation> {
        let (mut module_id, mut pcrs, mut timestamp) = (None, None, None);
        self.object(|r, key| match key.as_ref() {
            "module_id" => {
                let v = r.owned_string()?;
                once(r, &mut module_id, v, "module_id")
            }
            "pcrs" => {
                let v = r.pcrs()?;
                once(r, &mut pcrs, v, "pcrs")
            }
            "timestamp" => {
                let v = r.u64()?;
                once(r, &mut timestamp, v, "timestamp")
            }
            _ => r.skip_value(),
        })?;
        Ok(Attestation {
            module_id: required(self, module_id, "module_id")?,
            pcrs: required(self, pcrs, "pcrs")?,
            timestamp: required(self, timestamp, "timestamp")?,
        })
    }

    /// PCR index (a decimal string) → value.
    fn pcrs(&mut self) -> Result<BTreeMap<u32, String>> {
        let mut pcrs = BTreeMap::new();
        self.object(|r, key| {
            let index = pcr_index(&key).ok_or_else(|| r.error("expected a PCR index (a decimal u32)"))?;
            let value = r.owned_string()?;
            if pcrs.insert(index, value).is_some() {
                return Err(r.error("duplicate key"));
            }
            Ok(())
        })?;
        Ok(pcrs)
    }

    fn resource(&mut self) -> Result<Resource> {
        let (mut key_id, mut arn, mut key_spec, mut key_usage, mut key_state, mut tags) =
            (None, None, None, None, None, None);
        self.object(|r, key| match key.as_ref() {
            "key_id" => {
                let v = r.owned_string()?;
                once(r, &mut key_id, v, "key_id")
            }
            "arn" => {
                let v = r.owned_string()?;
                once(r, &mut arn, v, "arn")
            }
            "key_spec" => {
                let v = r.owned_string()?;
                once(r, &mut key_spec, v, "key_spec")
            }
            "key_usage" => {
                let v = r.owned_string()?;
                once(r, &mut key_usage, v, "key_usage")
            }
            "key_state" => {
                let v = r.owned_string()?;
                once(r, &mut key_state, v, "key_state")
            }
            "tags" => {
                let v = r.string_map()?;
                once(r, &mut tags, v, "tags")
            }
            _ => r.skip_value(),
        })?;
        Ok(Resource {
            key_id: required(self, key_id, "key_id")?,
            arn: required(self, arn, "arn")?,
            key_spec: required(self, key_spec, "key_spec")?,
            key_usage: required(self, key_usage, "key_usage")?,
            key_state: required(self, key_state, "key_state")?,
            tags: required(self, tags, "tags")?,
        })
    }

    fn request(&mut self) -> Result<Request> {
        let (mut encryption_context, mut recipient, mut grant_tokens, mut policy_update) = (None, None, None, None);
        self.object(|r, key| match key.as_ref() {
            "encryption_context" => {
                let v = r.string_map()?;
                once(r, &mut encryption_context, v, "encryption_context")
            }
            "recipient" => {
                let v = r.bool()?;
                once(r, &mut recipient, v, "recipient")
            }
            "grant_tokens" => {
                let v = r.strings()?;
                once(r, &mut grant_tokens, v, "grant_tokens")
            }
            "policy_update" => {
                let v = if r.null() { None } else { Some(r.policy_update()?) };
                once(r, &mut policy_update, v, "policy_update")
            }
            _ => r.skip_value(),
        })?;
        Ok(Request {
            encryption_context: required(self, encryption_context, "encryption_context")?,
            recipient: required(self, recipient, "recipient")?,
            grant_tokens: required(self, grant_tokens, "grant_tokens")?,
            policy_update: policy_update.flatten(),
        })
    }

    fn policy_update(&mut self) -> Result<PolicyUpdate> {
        let (mut current, mut new) = (None, None);
        self.object(|r, key| match key.as_ref() {
            "current_module_sha256" => {
                let v = r.owned_string()?;
                once(r, &mut current, v, "current_module_sha256")
            }
            "new_module_sha256" => {
                let v = r.owned_string()?;
                once(r, &mut new, v, "new_module_sha256")
            }
            _ => r.skip_value(),
        })?;
        Ok(PolicyUpdate {
            current_module_sha256: required(self, current, "current_module_sha256")?,
            new_module_sha256: required(self, new, "new_module_sha256")?,
        })
    }

    fn environment(&mut self) -> Result<Environment> {
        let mut time_ms = None;
        self.object(|r, key| match key.as_ref() {
            "time_ms" => {
                let v = r.u64()?;
                once(r, &mut time_ms, v, "time_ms")
            }
            _ => r.skip_value(),
        })?;
        Ok(Environment {
            time_ms: required(self, time_ms, "time_ms")?,
        })
    }
}

/// `"0"`, `"15"`: decimal digits without a leading zero, fitting a `u32`.
fn pcr_index(key: &str) -> Option<u32> {
    let bytes = key.as_bytes();
    if bytes.is_empty() || (bytes.len() > 1 && bytes[0] == b'0') || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    key.parse().ok()
}

/// `reason` as a JSON string body (without the quotes), escaped as
/// `serde_json` escapes it.
pub fn escape_into(out: &mut String, reason: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = reason.as_bytes();
    let mut run = 0;
    loop {
        // Runs without a quote, a backslash or a control character are copied whole.
        let i = plain_run_end(bytes, run);
        out.push_str(&reason[run..i]);
        let Some(&b) = bytes.get(i) else {
            return;
        };
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => "",
        };
        if escaped.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escaped);
        }
        run = i + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::plain_run_end;

    /// The byte-at-a-time definition `plain_run_end` must agree with.
    fn naive(bytes: &[u8], mut pos: usize) -> usize {
        while let Some(&b) = bytes.get(pos) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                break;
            }
            pos += 1;
        }
        pos
    }

    /// Every special byte and its neighbours in value (`!`, `#`, `[`, `]`,
    /// 0x1f/0x20, 0x7f/0x80, 0xff), at every offset of words and tails, after
    /// runs of plain bytes of every length up to three words, and several
    /// specials in one word.
    #[test]
    fn finds_the_first_quote_backslash_or_control_byte() {
        let plain = [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff, 0x20];
        let special = [b'"', b'\\', 0x00, 0x01, 0x0a, 0x1f];
        for filler in plain {
            for len in 0..24 {
                let mut bytes = vec![filler; len];
                assert_eq!(plain_run_end(&bytes, 0), naive(&bytes, 0), "{bytes:?}");
                for s in special {
                    for at in 0..=len {
                        bytes.insert(at, s);
                        for start in 0..=bytes.len() {
                            assert_eq!(
                                plain_run_end(&bytes, start),
                                naive(&bytes, start),
                                "{bytes:?} from {start}"
                            );
                        }
                        // A second special later in the same word.
                        bytes.push(b'"');
                        assert_eq!(plain_run_end(&bytes, 0), naive(&bytes, 0), "{bytes:?}");
                        bytes.pop();
                        bytes.remove(at);
                    }
                }
            }
        }
    }
}
