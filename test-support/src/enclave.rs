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
        region: REGION.into(),
        dev_tenant: ACCOUNT.into(),
        mock_clock_offset: 0,
        tenant_rate_limit: 10_000,
        data_dir: None,
        mock_pcrs: Vec::new(),
        allow_debug_attestation: false,
        exit_on_stdin_close: false,
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
    let clock: Arc<dyn Clock> = match clock_offset {
        0 => Arc::new(SystemClock),
        offset_seconds => Arc::new(OffsetClock { offset_seconds }),
    };
    let pki = MockPki::ephemeral().expect("mock attestation PKI");
    let anchor = TrustAnchor::from_der(pki.root_der()).expect("mock trust anchor");
    let nsm = keyward_enclave::nsm::MockAttestingNsm::with_clock(MockAttester::new(pki), Arc::clone(&clock));
    Enclave::new(config, Box::new(nsm), clock).with_verifier(Verifier::new(anchor))
}
