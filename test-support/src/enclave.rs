//! Mock-mode enclaves built in process, as `keyward dev` builds its child:
//! the configuration, the mock NSM and attestation PKI, and a clock.

use std::sync::Arc;

use keyward_enclave::attestation::mock::{MockAttester, MockPki};
use keyward_enclave::attestation::verify::{TrustAnchor, Verifier};
use keyward_enclave::clock::{Clock, OffsetClock, SystemClock};
use keyward_enclave::config::{
    ENV_DEV_ACCESS_KEY_ID, ENV_DEV_OPERATOR_ACCESS_KEY_ID, ENV_DEV_OPERATOR_SECRET_ACCESS_KEY,
    ENV_DEV_SECRET_ACCESS_KEY,
};
use keyward_enclave::nsm::{MockAttestingNsm, Nsm, NsmError};
use keyward_enclave::{Args, Enclave, EnclaveConfig, Mode};

use crate::{ACCOUNT, Creds, REGION};

/// The arguments of a mock-mode enclave of tenant [`ACCOUNT`] in [`REGION`],
/// as `keyward dev` passes them by default (the socket is never opened).
pub fn mock_args() -> Args {
    Args {
        mode: Mode::Mock,
        socket: Some("/unused".into()),
        vsock_port: 5000,
        tls_socket: None,
        tls_vsock_port: 5001,
        tls_names: Vec::new(),
        max_client_streams: 4096,
        memory_budget: None,
        region: REGION.into(),
        dev_tenant: ACCOUNT.into(),
        mock_clock_offset: 0,
        tenant_rate_limit: 10_000,
        data_dir: None,
        mock_pcrs: Vec::new(),
        allow_debug_attestation: false,
        exit_on_stdin_close: false,
        custody: Default::default(),
        join: Default::default(),
    }
}

/// A validated mock-mode configuration of `args`; `tenant` and `operator`
/// become the dev credentials the enclave provisions at boot (a KeyAdmin +
/// KeyUser of the dev tenant, and the operator), as `keyward dev`'s
/// `KEYWARD_DEV_*` variables do.
pub fn mock_config(args: Args, tenant: Option<&Creds>, operator: Option<&Creds>) -> EnclaveConfig {
    let env = |name: &str| -> Option<String> {
        match name {
            ENV_DEV_ACCESS_KEY_ID => tenant.map(|c| c.access_key_id.clone()),
            ENV_DEV_SECRET_ACCESS_KEY => tenant.map(|c| c.secret.clone()),
            ENV_DEV_OPERATOR_ACCESS_KEY_ID => operator.map(|c| c.access_key_id.clone()),
            ENV_DEV_OPERATOR_SECRET_ACCESS_KEY => operator.map(|c| c.secret.clone()),
            _ => None,
        }
    };
    args.validate(env).expect("valid mock-mode configuration")
}

/// A mock-mode enclave with no dev credentials, the plain mock NSM and the
/// system clock (benchmarks and tests that build request contexts
/// themselves).
pub fn mock_enclave() -> Enclave {
    Enclave::new(
        mock_config(mock_args(), None, None),
        Box::new(keyward_enclave::nsm::MockNsm),
        Arc::new(SystemClock),
    )
}

/// A mock-mode enclave of `config` as `keyward_enclave::run` builds it in
/// mock mode: an ephemeral mock attestation PKI (its NSM attests with it, its
/// verifier trusts it), the clock shifted by `clock_offset` seconds.
pub fn attesting_enclave(config: EnclaveConfig, clock_offset: i64) -> Enclave {
    attesting_enclave_with(
        config,
        clock_offset,
        MockPki::ephemeral().expect("mock attestation PKI"),
    )
    .0
}

/// [`attesting_enclave`], and its NSM, whose PKI tests use to forge the
/// attestation documents of workloads the enclave trusts.
pub fn attesting_enclave_and_nsm(config: EnclaveConfig, clock_offset: i64) -> (Enclave, Arc<MockAttestingNsm>) {
    attesting_enclave_with(
        config,
        clock_offset,
        MockPki::ephemeral().expect("mock attestation PKI"),
    )
}

/// [`attesting_enclave_and_nsm`], and a second handle on its mock root with
/// which tests forge workloads' documents that the enclave trusts
/// ([`keyward_enclave::attestation::mock::attest_with`]).
pub fn attesting_enclave_and_pki(
    config: EnclaveConfig,
    clock_offset: i64,
) -> (Enclave, Arc<MockAttestingNsm>, MockPki) {
    // The mock root exists only in a directory of this process's, long
    // enough to load it twice (each handle issues its own intermediate).
    let dir = std::env::temp_dir().join(format!("keyward-mock-root-{}", uuid::Uuid::new_v4()));
    let enclave_pki = MockPki::load_or_create(&dir).expect("mock attestation PKI");
    let forging_pki =
        MockPki::from_root_files(&keyward_enclave::attestation::mock::mock_dir(&dir)).expect("the mock root, again");
    std::fs::remove_dir_all(&dir).expect("removing the temporary mock root");
    let (enclave, nsm) = attesting_enclave_with(config, clock_offset, enclave_pki);
    (enclave, nsm, forging_pki)
}

fn attesting_enclave_with(config: EnclaveConfig, clock_offset: i64, pki: MockPki) -> (Enclave, Arc<MockAttestingNsm>) {
    let clock: Arc<dyn Clock> = match clock_offset {
        0 => Arc::new(SystemClock),
        offset_seconds => Arc::new(OffsetClock { offset_seconds }),
    };
    let anchor = TrustAnchor::from_der(pki.root_der()).expect("mock trust anchor");
    let nsm = Arc::new(MockAttestingNsm::with_clock(MockAttester::new(pki), Arc::clone(&clock)));
    let enclave =
        Enclave::new(config, Box::new(SharedNsm(Arc::clone(&nsm))), clock).with_verifier(Verifier::new(anchor));
    (enclave, nsm)
}

/// The enclave's NSM, shared with the test that built it.
struct SharedNsm(Arc<MockAttestingNsm>);

impl Nsm for SharedNsm {
    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        self.0.fill_random(out)
    }

    fn attest(
        &self,
        user_data: Option<&[u8]>,
        nonce: Option<&[u8]>,
        public_key: Option<&[u8]>,
    ) -> Result<Vec<u8>, NsmError> {
        self.0.attest(user_data, nonce, public_key)
    }
}
