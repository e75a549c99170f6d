//! The SigV4-signing JSON 1.1 client and the typed `Keyward.*` calls.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{CONTENT_TYPE as CONTENT_TYPE_HEADER, HOST};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::audit::AuditRecord;
use crate::error::{Error, error_chain};
use crate::model::{
    AccessKeyIdRequest, AccessKeyInfo, AuditChain, AuditLogPage, CreateAccessKeyRequest, CreatedAccessKey,
    CreatedTenant, Empty, GetAuditLogRequest, ListAccessKeysResponse, ListTenantsRequest, ListTenantsResponse, Role,
    Tenant, TenantIdRequest,
};
use crate::secret::Secret;
use crate::tls::{HttpsConnector, PeerSpki, TlsOptions};
use crate::{CONTENT_TYPE, KEYWARD_TARGET_PREFIX, SIGNING_SERVICE};

/// Responses larger than this are refused (the largest legitimate one, an
/// audit page of 1000 records, is far smaller).
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Default bound on one request, from sending to the last response byte.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Page size [`Client::fetch_audit_chain`] and [`Client::audit_records`] ask for (the service's maximum).
const AUDIT_PAGE_LIMIT: u32 = 1000;
/// How much of an unparseable error body [`Error::Http`] keeps.
const ERROR_BODY_SNIPPET: usize = 200;

/// A Keyward client: one endpoint, region and credential.
///
/// Cheap to clone (the connection pool is shared). Every call is one
/// `POST` of a JSON body to the endpoint over HTTPS (TLS ends inside the
/// enclave; [`crate::tls`]), SigV4-signed for service `kms` over `host`,
/// `x-amz-date`, `x-amz-target` and `content-type`.
#[derive(Clone)]
pub struct Client {
    http: HttpClient<HttpsConnector, Full<Bytes>>,
    tls: TlsOptions,
    /// `https://authority/path` as given (path `/` when none).
    url: String,
    uri: http::Uri,
    host: String,
    region: String,
    access_key_id: String,
    secret_access_key: Secret,
    timeout: Duration,
    clock_offset_secs: i64,
    /// Requests go out unsigned ([`Client::unauthenticated`]).
    unsigned: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.url)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("timeout", &self.timeout)
            .field("clock_offset_secs", &self.clock_offset_secs)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `endpoint` (`https://host:port`, optionally with a path
    /// prefix), signing as `access_key_id` in `region`, trusting the
    /// system's roots (see [`Client::with_tls`] for a CA bundle and pinning).
    ///
    /// Only `https://` endpoints are accepted: `http://` is refused rather
    /// than sent in clear.
    pub fn new(endpoint: &str, region: &str, access_key_id: &str, secret_access_key: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed: http::Uri = endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match parsed.scheme_str() {
            Some("https") => {}
            Some("http") => {
                return Err(invalid(
                    "http is not supported: Keyward is served over HTTPS (TLS ends inside the enclave)",
                ));
            }
            Some(other) => return Err(invalid(&format!("unsupported scheme {other:?}"))),
            None => return Err(invalid("missing scheme (expected https://host:port)")),
        }
        let authority = parsed.authority().ok_or_else(|| invalid("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information in the URL is not supported"));
        }
        if authority.host().is_empty() {
            return Err(invalid("missing host"));
        }
        if parsed.query().is_some() {
            return Err(invalid("a query string is not supported"));
        }
        let path = match parsed.path() {
            "" => "/",
            p => p,
        };
        let url = format!("https://{}{}", authority.as_str(), path);
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Error::Request(format!("invalid region {region:?}")));
        }

        let tls = TlsOptions::default();
        Ok(Client {
            http: https_client(&tls)?,
            tls,
            url,
            uri,
            host: authority.as_str().to_owned(),
            region: region.to_owned(),
            access_key_id: access_key_id.to_owned(),
            secret_access_key: Secret::from(secret_access_key),
            timeout: DEFAULT_TIMEOUT,
            clock_offset_secs: 0,
            unsigned: false,
        })
    }

    /// A client without a credential, for the operations a sealed service
    /// answers unauthenticated (`Keyward.InitCustody`,
    /// `Keyward.GetUnsealDocument`, `Keyward.Unseal`: [`crate::custody`]).
    /// Its requests carry no SigV4 signature; any other operation is
    /// refused by the service.
    pub fn unauthenticated(endpoint: &str) -> Result<Self, Error> {
        let mut client = Client::new(endpoint, "us-east-1", "", "")?;
        client.unsigned = true;
        Ok(client)
    }

    /// Checks the server's certificate as `options` say (a CA bundle
    /// instead of the system's roots, a pinned SPKI hash); a fresh
    /// connection pool.
    pub fn with_tls(mut self, options: TlsOptions) -> Result<Self, Error> {
        self.http = https_client(&options)?;
        self.tls = options;
        Ok(self)
    }

    /// The TLS options in force.
    pub fn tls_options(&self) -> &TlsOptions {
        &self.tls
    }

    /// Bounds each request (connect, send, and reading the whole response);
    /// 30 seconds by default.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Signs with the local clock shifted by `seconds` (for a dev enclave
    /// started with `--mock-clock-offset`).
    pub fn with_clock_offset(mut self, seconds: i64) -> Self {
        self.clock_offset_secs = seconds;
        self
    }

    /// The endpoint URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.url
    }

    /// The signing region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The access key id requests are signed with.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    // --- tenants (operator) ---

    /// `Keyward.CreateTenant`: creates a tenant and its first (KeyAdmin)
    /// access key. Operator only.
    pub async fn create_tenant(&self, tenant_id: &str) -> Result<CreatedTenant, Error> {
        self.keyward("CreateTenant", &TenantIdRequest { tenant_id }).await
    }

    /// `Keyward.ListTenants`, following `NextMarker` until the list ends.
    /// Operator only.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, Error> {
        let mut tenants = Vec::new();
        let mut pages = Pages::new("Keyward.ListTenants");
        loop {
            let request = ListTenantsRequest {
                limit: None,
                marker: pages.marker(),
            };
            let page: ListTenantsResponse = self.keyward("ListTenants", &request).await?;
            tenants.extend(page.tenants);
            if !pages.advance(page.truncated, page.next_marker)? {
                return Ok(tenants);
            }
        }
    }

    /// `Keyward.DisableTenant`: the tenant's requests are refused until it is
    /// enabled again. Operator only.
    pub async fn disable_tenant(&self, tenant_id: &str) -> Result<(), Error> {
        let Empty {} = self.keyward("DisableTenant", &TenantIdRequest { tenant_id }).await?;
        Ok(())
    }

    /// `Keyward.EnableTenant`. Operator only.
    pub async fn enable_tenant(&self, tenant_id: &str) -> Result<(), Error> {
        let Empty {} = self.keyward("EnableTenant", &TenantIdRequest { tenant_id }).await?;
        Ok(())
    }

    // --- access keys (tenant KeyAdmin) ---

    /// `Keyward.CreateAccessKey`: a new access key of the caller's tenant
    /// with `role`. The secret is returned only this once.
    pub async fn create_access_key(&self, role: Role) -> Result<CreatedAccessKey, Error> {
        self.keyward("CreateAccessKey", &CreateAccessKeyRequest { role }).await
    }

    /// `Keyward.ListAccessKeys`: the caller's tenant's access keys.
    pub async fn list_access_keys(&self) -> Result<Vec<AccessKeyInfo>, Error> {
        let response: ListAccessKeysResponse = self.keyward("ListAccessKeys", &Empty {}).await?;
        Ok(response.access_keys)
    }

    /// `Keyward.DeleteAccessKey`.
    pub async fn delete_access_key(&self, access_key_id: &str) -> Result<(), Error> {
        let Empty {} = self
            .keyward("DeleteAccessKey", &AccessKeyIdRequest { access_key_id })
            .await?;
        Ok(())
    }

    // --- the enclave's TLS certificate (operator) ---

    /// `Keyward.GetTlsCertificateRequest`: a PKCS#10 request (PEM) for the
    /// enclave's TLS key and its configured names. Operator only.
    pub async fn get_tls_certificate_request(&self) -> Result<String, Error> {
        let response: TlsCertificateRequest = self.keyward("GetTlsCertificateRequest", &Empty {}).await?;
        Ok(response.certificate_signing_request)
    }

    /// `Keyward.ImportTlsCertificate`: installs `chain_pem` (PEM, leaf first,
    /// issued for the enclave's key) for new connections. Operator only.
    pub async fn import_tls_certificate(&self, chain_pem: &str) -> Result<(), Error> {
        let Empty {} = self
            .keyward(
                "ImportTlsCertificate",
                &ImportTlsCertificateRequest {
                    certificate_chain: chain_pem,
                },
            )
            .await?;
        Ok(())
    }

    // --- audit ---

    /// `Keyward.GetAuditLog`: one page of the caller's chain (the operator's
    /// chain for the operator). `start` / `end` are seconds since the epoch;
    /// `limit` is 1–1000 (the service's default is 100).
    pub async fn get_audit_log(
        &self,
        start: Option<u64>,
        end: Option<u64>,
        limit: Option<u32>,
        marker: Option<&str>,
    ) -> Result<AuditLogPage, Error> {
        let request = GetAuditLogRequest {
            start_time: start,
            end_time: end,
            limit,
            marker,
        };
        self.keyward("GetAuditLog", &request).await
    }

    /// Every record between `start` and `end` (seconds since the epoch),
    /// following markers. Unverified: for listing, not for proof.
    pub async fn audit_records(&self, start: Option<u64>, end: Option<u64>) -> Result<Vec<AuditRecord>, Error> {
        let mut records = Vec::new();
        let mut pages = Pages::new("Keyward.GetAuditLog");
        loop {
            let page = self
                .get_audit_log(start, end, Some(AUDIT_PAGE_LIMIT), pages.marker())
                .await?;
            records.extend(page.records);
            if !pages.advance(page.truncated, page.next_marker)? {
                return Ok(records);
            }
        }
    }

    /// The caller's whole audit chain: every record (no time filter,
    /// following markers), the head returned with the last page and the
    /// `AuditPublicKey` the service reported. Verify it with
    /// [`AuditChain::verify_with`] or [`crate::audit::verify_chain`].
    pub async fn fetch_audit_chain(&self) -> Result<AuditChain, Error> {
        const OPERATION: &str = "Keyward.GetAuditLog";
        let mut records = Vec::new();
        let mut pages = Pages::new(OPERATION);
        loop {
            let page = self
                .get_audit_log(None, None, Some(AUDIT_PAGE_LIMIT), pages.marker())
                .await?;
            records.extend(page.records);
            if !pages.advance(page.truncated, page.next_marker)? {
                let audit_public_key = base64::engine::general_purpose::STANDARD
                    .decode(page.audit_public_key.trim())
                    .map_err(|e| Error::Decode {
                        operation: OPERATION.to_owned(),
                        reason: format!("AuditPublicKey is not base64: {e}"),
                    })?;
                return Ok(AuditChain {
                    records,
                    head: page.head,
                    audit_public_key,
                });
            }
        }
    }

    // --- any operation ---

    /// Sends `body` as JSON to the operation `target` (a full `X-Amz-Target`
    /// such as `TrentService.ListKeys` or `Keyward.ListTenants`) and decodes
    /// the JSON answer. An empty success body decodes as `{}`.
    pub async fn call<B, R>(&self, target: &str, body: &B) -> Result<R, Error>
    where
        B: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call_with_tls_spki(target, body)
            .await
            .map(|(response, _)| response)
    }

    /// [`Client::call`], also returning the SHA-256 of the SubjectPublicKeyInfo
    /// of the certificate served on the very connection that carried the
    /// response.
    pub async fn call_with_tls_spki<B, R>(&self, target: &str, body: &B) -> Result<(R, [u8; 32]), Error>
    where
        B: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let body = serde_json::to_vec(body).map_err(|e| Error::Request(format!("encoding the body: {e}")))?;
        let request = self.signed_request(target, body, self.signing_time())?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| Error::Transport(error_chain(&e)))?;
            let spki = response.extensions().get::<PeerSpki>().copied();
            let (parts, body) = response.into_parts();
            let collected = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    Error::Decode {
                        operation: target.to_owned(),
                        reason: format!("response larger than {MAX_RESPONSE_BYTES} bytes"),
                    }
                } else {
                    Error::Transport(error_chain(e.as_ref()))
                }
            })?;
            Ok::<_, Error>((parts, collected.to_bytes(), spki))
        };
        let (parts, bytes, spki) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout(self.timeout))??;
        let spki = spki.ok_or_else(|| Error::Transport("the connection reported no certificate".into()))?;
        // The body may hold a secret: keep our copy in a buffer wiped on drop.
        let body = Zeroizing::new(Vec::from(bytes));
        if parts.status.is_success() {
            let json: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
                b"{}"
            } else {
                &body
            };
            serde_json::from_slice(json)
                .map(|response| (response, spki.0))
                .map_err(|e| Error::Decode {
                    operation: target.to_owned(),
                    reason: e.to_string(),
                })
        } else {
            Err(service_error(&parts, &body))
        }
    }

    async fn keyward<B, R>(&self, operation: &str, body: &B) -> Result<R, Error>
    where
        B: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call(&format!("{KEYWARD_TARGET_PREFIX}{operation}"), body).await
    }

    fn signing_time(&self) -> SystemTime {
        let now = SystemTime::now();
        let shift = Duration::from_secs(self.clock_offset_secs.unsigned_abs());
        let shifted = if self.clock_offset_secs >= 0 {
            now.checked_add(shift)
        } else {
            now.checked_sub(shift)
        };
        shifted.unwrap_or(now)
    }

    /// The signed HTTP request for one call, signed as of `time`.
    pub(crate) fn signed_request(
        &self,
        target: &str,
        body: Vec<u8>,
        time: SystemTime,
    ) -> Result<http::Request<Full<Bytes>>, Error> {
        let headers = [
            (HOST.as_str(), self.host.as_str()),
            (CONTENT_TYPE_HEADER.as_str(), CONTENT_TYPE),
            ("x-amz-target", target),
        ];
        if self.unsigned {
            let mut builder = http::Request::builder()
                .method(http::Method::POST)
                .uri(self.uri.clone());
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            return builder
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| Error::Request(e.to_string()));
        }
        let identity = Credentials::new(
            self.access_key_id.as_str(),
            self.secret_access_key.expose(),
            None,
            None,
            "keyward-sdk",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Error::Request(format!("signing parameters: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            self.url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| Error::Request(format!("signing: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| Error::Request(format!("signing: {e}")))?
            .into_parts();

        let mut builder = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.uri.clone());
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::Request(e.to_string()))
    }
}

/// The pooled HTTPS client of `options`.
fn https_client(options: &TlsOptions) -> Result<HttpClient<HttpsConnector, Full<Bytes>>, Error> {
    let config = crate::tls::client_config(options)?;
    Ok(HttpClient::builder(TokioExecutor::new()).build(HttpsConnector::new(config, DEFAULT_TIMEOUT)))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TlsCertificateRequest {
    certificate_signing_request: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImportTlsCertificateRequest<'a> {
    certificate_chain: &'a str,
}

/// Marker bookkeeping for a paginated call: refuses a `Truncated` page
/// without `NextMarker` and a marker that repeats (a host looping us).
struct Pages {
    operation: &'static str,
    marker: Option<String>,
    seen: HashSet<String>,
}

impl Pages {
    fn new(operation: &'static str) -> Self {
        Pages {
            operation,
            marker: None,
            seen: HashSet::new(),
        }
    }

    fn marker(&self) -> Option<&str> {
        self.marker.as_deref()
    }

    /// Whether another page is to be fetched.
    fn advance(&mut self, truncated: bool, next_marker: Option<String>) -> Result<bool, Error> {
        if !truncated {
            return Ok(false);
        }
        let decode = |reason: &str| Error::Decode {
            operation: self.operation.to_owned(),
            reason: reason.to_owned(),
        };
        let next = next_marker.ok_or_else(|| decode("Truncated without NextMarker"))?;
        if !self.seen.insert(next.clone()) {
            return Err(decode("NextMarker repeats an earlier marker"));
        }
        self.marker = Some(next);
        Ok(true)
    }
}

/// The [`Error`] for a non-success response.
fn service_error(parts: &http::response::Parts, body: &[u8]) -> Error {
    let status = parts.status.as_u16();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request_id = header("x-amzn-requestid");
    let document: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(body).ok();
    let field = |names: &[&str]| {
        document.as_ref().and_then(|doc| {
            names
                .iter()
                .find_map(|n| doc.get(*n).and_then(serde_json::Value::as_str).map(str::to_owned))
        })
    };
    let error_type = field(&["__type", "code", "Code"]).or_else(|| header("x-amzn-errortype"));
    match error_type {
        Some(raw) if !raw.is_empty() => Error::Service {
            error_type: clean_error_type(&raw).to_owned(),
            message: field(&["message", "Message"]).unwrap_or_default(),
            status,
            request_id,
        },
        _ => {
            let text = String::from_utf8_lossy(body);
            Error::Http {
                status,
                body: text.chars().take(ERROR_BODY_SNIPPET).collect(),
            }
        }
    }
}

/// `com.amazonaws.kms#NotFoundException` → `NotFoundException`;
/// `NotFoundException:http://…` (the header form) → `NotFoundException`.
fn clean_error_type(raw: &str) -> &str {
    let after_hash = raw.rsplit_once('#').map_or(raw, |(_, t)| t);
    after_hash.split_once(':').map_or(after_hash, |(t, _)| t).trim()
}

#[cfg(test)]
mod tests;
