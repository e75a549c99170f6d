//! The launcher's processes: `/healthz` while the enclave answers, and a
//! clean shutdown of both processes on SIGTERM. (The operations themselves
//! are tested in process: `tests/inprocess`.)

use crate::harness::{Sandbox, process_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_clean_shutdown() {
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    assert_eq!(kw.healthz().await, 200, "/healthz while the enclave answers");
    let launcher = kw.pid;
    let enclave = kw.enclave_pid;
    assert_ne!(launcher, enclave, "the enclave must be a separate process");
    assert!(
        !process_gone(enclave),
        "enclave pid {enclave} from stdout is not a live process"
    );
    let status = kw.stop();
    assert_eq!(status.code(), Some(0), "keyward must exit 0 on SIGTERM, got {status}");
    assert!(
        process_gone(enclave),
        "enclave process {enclave} still running after the launcher exited"
    );
}
