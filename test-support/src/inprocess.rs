//! An enclave served in process: a mock-mode [`Enclave`] over an in-memory
//! store, reached through its public request entry point
//! `keyward_enclave::api::handle` — by an `aws-sdk-kms` client whose HTTP
//! client calls it directly, or by raw signed requests. No sockets, no child
//! processes; every request still carries a real SigV4 signature that the
//! enclave verifies.
//!
//! What this leaves out of `keyward dev`: the host proxy (HTTP parsing, body
//! limits, `/healthz`, metrics) and the wire between the processes; tests of
//! those stay in `tests/integration`.

use std::fmt;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::SystemTime;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use keyward_enclave::Enclave;
use keyward_enclave::nsm::MockAttestingNsm;
use keyward_enclave::store::{MemoryStore, StoreFuture, StoreTransport};
use keyward_wire::{ApiRequest, ApiResponse, StoreOp, StoreResult};

use crate::Creds;
use crate::custody::Custodian;
use crate::enclave::{attesting_enclave_and_pki, mock_args, mock_config};
use crate::raw::RawResponse;
use crate::sdk::{client_config, shifted_now};
use crate::sigv4::{api_headers, sign_headers, target};
use crate::tamper::TamperingStore;
use keyward_enclave::attestation::mock::MockPki;
use keyward_sdk::custody::CustodyKey;

/// The host name clients of an in-process service sign for.
pub const HOST: &str = "keyward.in-process";

/// One connection's view of the shared store (through the host, which may
/// lie: [`TamperingStore`]). A [`Service::restart`] drops it, so the stopped
/// enclave's background work (audit appender, sweep) loses its store as a
/// stopped process would.
struct Link(Arc<TamperingStore>);

impl StoreTransport for Link {
    fn call(&self, op: StoreOp) -> StoreFuture<'_> {
        self.0.call(op)
    }
}

/// A link that lets other tasks run a pseudo-random number of times (from
/// `seed`) before each store call, so concurrent requests of two enclaves
/// interleave differently for every seed.
struct JitteredLink {
    store: Arc<MemoryStore>,
    state: std::sync::Mutex<u64>,
}

impl JitteredLink {
    fn yields(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // xorshift64*
        let mut x = *state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 61
    }
}

/// Lets the executor run other tasks once (a dependency-free
/// `tokio::task::yield_now`).
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

impl StoreTransport for JitteredLink {
    fn call(&self, op: StoreOp) -> StoreFuture<'_> {
        let yields = self.yields();
        Box::pin(async move {
            for _ in 0..yields {
                YieldNow(false).await;
            }
            self.store.call(op).await
        })
    }
}

/// A running in-process enclave: the dev tenant [`crate::ACCOUNT`] with a
/// KeyAdmin + KeyUser credential and an operator credential, as `keyward dev`
/// provisions them.
pub struct Service {
    enclave: Arc<Enclave>,
    link: Arc<dyn StoreTransport>,
    store: Arc<MemoryStore>,
    /// The host in front of the store: honest until a test tells it to lie.
    host: Arc<TamperingStore>,
    pub creds: Creds,
    /// The operator's credential.
    pub operator: Creds,
    /// Seconds the enclave's clock is shifted by; clients sign with that time.
    pub clock_offset: i64,
    /// The enclave's mock attestation root: documents issued under it
    /// (`attest_with`) verify as genuine workloads' documents.
    pub pki: Arc<MockPki>,
    /// The enclave's mock NSM (its PKI is the one the enclave trusts).
    nsm: Arc<MockAttestingNsm>,
    /// The custodian of the 1-of-1 genesis `start` ran (`None` for a
    /// deployment the test initialised itself): `restart` and `peer`
    /// unseal with it.
    custodian: Option<Arc<Custodian>>,
}

/// How a new enclave of [`Service`] comes up.
enum Boot {
    /// Genesis 1-of-1 with a new custodian key (an empty store).
    Genesis,
    /// Unsealed by this custodian (a store with a deployment).
    Unseal(Arc<Custodian>),
    /// Left sealed (awaiting genesis, or its custodians).
    Sealed,
}

impl Service {
    /// A fresh enclave over an empty in-memory store, with the real time.
    /// Call inside a multi-threaded tokio runtime (the enclave spawns its
    /// audit appender and sweep on it; policy decisions block in place).
    /// Runs genesis (1-of-1, a custodian key the service keeps), so the
    /// enclave is Ready.
    pub async fn start() -> Service {
        Self::start_on(MemoryStore::new(), Creds::random(), Creds::random(), 0, Boot::Genesis).await
    }

    /// A fresh enclave over an empty store, left sealed awaiting genesis
    /// (`Keyward.InitCustody`, [`Service::init_custody`]).
    pub async fn start_uninitialised() -> Service {
        Self::start_on(MemoryStore::new(), Creds::random(), Creds::random(), 0, Boot::Sealed).await
    }

    /// A fresh enclave over `store` (whatever it holds), left sealed: for
    /// tests of what the enclave makes of a store at start.
    pub async fn start_sealed_on(store: Arc<MemoryStore>) -> Service {
        Self::start_on(store, Creds::random(), Creds::random(), 0, Boot::Sealed).await
    }

    async fn start_on(
        store: Arc<MemoryStore>,
        creds: Creds,
        operator: Creds,
        clock_offset: i64,
        boot: Boot,
    ) -> Service {
        let host = TamperingStore::new(Arc::clone(&store));
        Self::start_behind(host, creds, operator, clock_offset, boot).await
    }

    async fn start_behind(
        host: Arc<TamperingStore>,
        creds: Creds,
        operator: Creds,
        clock_offset: i64,
        boot: Boot,
    ) -> Service {
        let link: Arc<dyn StoreTransport> = Arc::new(Link(Arc::clone(&host)));
        let store = Arc::clone(host.inner());
        Self::start_linked(store, host, link, creds, operator, clock_offset, boot).await
    }

    /// Another node of a cluster: a second enclave on this one's store, with
    /// the same dev credentials and clock (`keyward dev` twice on one
    /// `--store`). Its store calls let other tasks run a number of times
    /// chosen by `seed` first, so races between the nodes vary with it.
    pub async fn peer(&self, seed: u64) -> Service {
        let link: Arc<dyn StoreTransport> = Arc::new(JitteredLink {
            store: Arc::clone(&self.store),
            state: std::sync::Mutex::new(seed | 1),
        });
        Self::start_linked(
            Arc::clone(&self.store),
            TamperingStore::new(Arc::clone(&self.store)),
            link,
            self.creds.clone(),
            self.operator.clone(),
            self.clock_offset,
            self.custodian.clone().map_or(Boot::Sealed, Boot::Unseal),
        )
        .await
    }

    /// The store this service runs on, for tests that tamper with it.
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    /// The host between this enclave and its store, which lies when told to.
    pub fn host(&self) -> &Arc<TamperingStore> {
        &self.host
    }

    async fn start_linked(
        store: Arc<MemoryStore>,
        host: Arc<TamperingStore>,
        link: Arc<dyn StoreTransport>,
        creds: Creds,
        operator: Creds,
        clock_offset: i64,
        boot: Boot,
    ) -> Service {
        let config = mock_config(mock_args(), Some(&creds), Some(&operator));
        let (enclave, nsm, pki) = attesting_enclave_and_pki(config, clock_offset);
        let enclave = Arc::new(enclave);
        enclave.attach(Arc::downgrade(&link));
        let mut service = Service {
            enclave,
            link,
            store,
            host,
            creds,
            operator,
            clock_offset,
            pki: Arc::new(pki),
            nsm,
            custodian: None,
        };
        match boot {
            Boot::Genesis => {
                let key = CustodyKey::generate();
                let mut genesis = service.init_custody(1, &[key.public_key()], None).await;
                let package = genesis.packages.remove(0);
                service.custodian = Some(Arc::new(Custodian { key, package }));
            }
            Boot::Unseal(custodian) => {
                let response = service.unseal_with(&custodian).await;
                assert_eq!(
                    response.status,
                    200,
                    "unseal: {}",
                    String::from_utf8_lossy(&response.body)
                );
                assert!(service.enclave.is_ready(), "1-of-1: ready after one share");
                service.custodian = Some(custodian);
            }
            Boot::Sealed => {}
        }
        service
    }

    /// A request with no signature (the custody operations'), target as given.
    pub(crate) async fn unsigned_call(&self, target: &str, body: &[u8]) -> RawResponse {
        let request = ApiRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: api_headers(HOST, target)
                .into_iter()
                .map(|(k, v)| (k, serde_bytes::ByteBuf::from(v.into_bytes())))
                .collect(),
            body: body.to_vec(),
            client_addr: None,
        };
        let answer = keyward_enclave::api::handle(&self.enclave, request, &*self.link).await;
        RawResponse {
            status: answer.status,
            headers: vec![("content-type".into(), "application/x-amz-json-1.1".into())],
            body: answer.body,
        }
    }

    /// An attestation document of a workload enclave `module_id` with
    /// `pcrs` (PCR0–15 present, zero unless given) and `public_key` (SPKI
    /// DER), signed under the PKI this enclave trusts, stamped now.
    pub fn workload_document(
        &self,
        module_id: &str,
        pcrs: &std::collections::BTreeMap<u8, Vec<u8>>,
        public_key: &[u8],
    ) -> Vec<u8> {
        let now_ms = self
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        keyward_enclave::attestation::mock::attest_with(
            self.nsm.attester().pki(),
            module_id,
            pcrs,
            None,
            None,
            Some(public_key),
            u64::try_from(now_ms).expect("milliseconds fit"),
        )
        .expect("mock workload document")
    }

    /// Stops this enclave and starts a new one on the same store (and the
    /// same dev credentials) whose clock is the real time shifted by
    /// `clock_offset` seconds: `keyward dev --mock-clock-offset` restarted
    /// on the same data dir.
    pub async fn restart(self, clock_offset: i64) -> Service {
        let Service {
            store,
            creds,
            operator,
            custodian,
            ..
        } = self;
        let boot = custodian.map_or(Boot::Sealed, Boot::Unseal);
        Self::start_on(store, creds, operator, clock_offset, boot).await
    }

    /// Stops this enclave and starts a new one on the same store that
    /// stays sealed (a restart nobody has unsealed yet).
    pub async fn restart_sealed(self) -> Service {
        let Service {
            store,
            creds,
            operator,
            clock_offset,
            custodian,
            ..
        } = self;
        let mut service = Self::start_on(store, creds, operator, clock_offset, Boot::Sealed).await;
        service.custodian = custodian;
        service
    }

    /// Stops this enclave and starts a new, sealed one on `store` (e.g. an
    /// old copy of this one's store: a whole-store rollback while the
    /// enclave was down), keeping the custodian.
    pub async fn restart_sealed_on(self, store: Arc<MemoryStore>) -> Service {
        let Service {
            creds,
            operator,
            clock_offset,
            custodian,
            ..
        } = self;
        let mut service = Self::start_on(store, creds, operator, clock_offset, Boot::Sealed).await;
        service.custodian = custodian;
        service
    }

    /// Like [`Service::restart_sealed`], behind the same host, still telling
    /// the lies it was told to tell.
    pub async fn restart_sealed_behind_same_host(self) -> Service {
        let Service {
            host,
            creds,
            operator,
            clock_offset,
            custodian,
            ..
        } = self;
        let mut service = Self::start_behind(host, creds, operator, clock_offset, Boot::Sealed).await;
        service.custodian = custodian;
        service
    }

    /// The custodian of the genesis [`Service::start`] ran.
    pub fn custodian(&self) -> Option<&Custodian> {
        self.custodian.as_deref()
    }

    /// Like [`Service::restart`], behind the same host, still telling the
    /// lies it was told to tell.
    pub async fn restart_behind_same_host(self) -> Service {
        let Service {
            host,
            creds,
            operator,
            clock_offset,
            custodian,
            ..
        } = self;
        let boot = custodian.map_or(Boot::Sealed, Boot::Unseal);
        Self::start_behind(host, creds, operator, clock_offset, boot).await
    }

    /// The record keys of a store namespace (`key`, `alias`, ...), in order.
    pub async fn stored_keys(&self, namespace: &str) -> Vec<String> {
        let op = StoreOp::List {
            namespace: namespace.into(),
            prefix: String::new(),
            start_after: None,
            limit: u32::MAX,
        };
        match self.store.call(op).await {
            Ok(StoreResult::Entries(entries)) => entries.into_iter().map(|(k, _)| k).collect(),
            other => panic!("listing namespace {namespace}: {other:?}"),
        }
    }

    /// Records in audit chain `chain` (a tenant id, or `operator`), as stored.
    pub async fn audit_chain_len(&self, chain: &str) -> usize {
        let prefix = format!("{chain}/r/");
        self.stored_keys("audit")
            .await
            .iter()
            .filter(|k| k.starts_with(&prefix))
            .count()
    }

    /// The enclave under test.
    pub fn enclave(&self) -> &Enclave {
        &self.enclave
    }

    /// The enclave under test, shared (to serve client streams on it:
    /// `keyward_enclave::server::serve_client_stream`).
    pub fn shared_enclave(&self) -> Arc<Enclave> {
        Arc::clone(&self.enclave)
    }

    /// The enclave's current time: the real time shifted by `clock_offset`.
    pub fn now(&self) -> SystemTime {
        shifted_now(self.clock_offset)
    }

    /// An `aws-sdk-kms` client with the dev tenant's credentials, no retries,
    /// signing with the enclave's (possibly shifted) time.
    pub fn client(&self) -> aws_sdk_kms::Client {
        self.client_with(&self.creds.access_key_id, &self.creds.secret)
    }

    /// An `aws-sdk-kms` client signing with these credentials.
    pub fn client_with(&self, access_key_id: &str, secret: &str) -> aws_sdk_kms::Client {
        let config = client_config(access_key_id, secret, None, self.clock_offset)
            .endpoint_url(format!("http://{HOST}"))
            .http_client(InProcessHttp {
                enclave: Arc::clone(&self.enclave),
                link: Arc::clone(&self.link),
            })
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }

    /// A SigV4-signed `POST /` with `X-Amz-Target: TrentService.{op}` (or
    /// the `Keyward.*` target as given), as the dev tenant.
    pub async fn signed_call(&self, op: &str, body: &[u8]) -> RawResponse {
        self.signed_call_as(&self.creds, op, body).await
    }

    /// [`Service::signed_call`] signed as `creds`.
    pub async fn signed_call_as(&self, creds: &Creds, op: &str, body: &[u8]) -> RawResponse {
        self.signed_call_from(creds, op, body, None).await
    }

    /// [`Service::signed_call_as`] from the client address `client_addr`
    /// (as the host reports it).
    pub async fn signed_call_from(
        &self,
        creds: &Creds,
        op: &str,
        body: &[u8],
        client_addr: Option<&str>,
    ) -> RawResponse {
        let mut headers = api_headers(HOST, &target(op));
        sign_headers(&mut headers, HOST, body, creds, self.now());
        let request = ApiRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k, serde_bytes::ByteBuf::from(v.into_bytes())))
                .collect(),
            body: body.to_vec(),
            client_addr: client_addr.map(str::to_owned),
        };
        let answer = keyward_enclave::api::handle(&self.enclave, request, &*self.link).await;
        RawResponse {
            status: answer.status,
            headers: vec![("content-type".into(), "application/x-amz-json-1.1".into())],
            body: answer.body,
        }
    }
}

/// The HTTP client under [`Service::client`]: every request goes to
/// `keyward_enclave::api::handle` as the host proxy would forward it.
#[derive(Clone)]
struct InProcessHttp {
    enclave: Arc<Enclave>,
    link: Arc<dyn StoreTransport>,
}

impl fmt::Debug for InProcessHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InProcessHttp")
    }
}

impl HttpClient for InProcessHttp {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for InProcessHttp {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let forwarded = forward(&request);
        let enclave = Arc::clone(&self.enclave);
        let link = Arc::clone(&self.link);
        HttpConnectorFuture::new(async move {
            let forwarded = forwarded.map_err(|e| ConnectorError::other(e.into(), None))?;
            let answer = keyward_enclave::api::handle(&enclave, forwarded, &*link).await;
            respond(answer).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The request as the host proxy forwards it: method, path, query, headers
/// (lower-case names, `host` added from the URI as an HTTP client sends it)
/// and body.
fn forward(request: &HttpRequest) -> Result<ApiRequest, String> {
    let uri = http::Uri::from_str(request.uri()).map_err(|e| format!("request URI: {e}"))?;
    let mut headers: Vec<(String, serde_bytes::ByteBuf)> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                serde_bytes::ByteBuf::from(v.as_bytes().to_vec()),
            )
        })
        .collect();
    if !headers.iter().any(|(k, _)| k == "host") {
        let host = uri.authority().ok_or("request URI without a host")?.as_str();
        headers.insert(0, ("host".into(), serde_bytes::ByteBuf::from(host.as_bytes().to_vec())));
    }
    let body = request.body().bytes().ok_or("streaming request body")?.to_vec();
    Ok(ApiRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        method: request.method().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers,
        body,
        client_addr: None,
    })
}

/// The enclave's answer as the host proxy relays it.
fn respond(answer: ApiResponse) -> Result<HttpResponse, String> {
    let status = StatusCode::try_from(answer.status).map_err(|e| format!("status {}: {e}", answer.status))?;
    let mut response = HttpResponse::new(status, SdkBody::from(answer.body));
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.1");
    Ok(response)
}
