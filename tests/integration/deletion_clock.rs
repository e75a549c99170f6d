//! `keyward dev --mock-clock-offset`: signatures are checked against the
//! shifted clock and dates are stamped with it. (Key destruction once the
//! deletion window has passed, with the clock moved across restarts, is
//! tested in process: `tests/inprocess/deletion_clock.rs`.)

use crate::harness::{DAY, Sandbox, assert_near, epoch_secs, expect_error, must};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_clock_offset_shifts_the_enclave_clock() {
    let mut sb = Sandbox::new();
    let kw = sb.start_with_clock_offset(-DAY).await;

    // A client signing with the real time is a day off the enclave's clock.
    let r = kw.client_real_time().list_keys().send().await;
    expect_error(
        "real-time signature against an enclave a day behind",
        r,
        400,
        "InvalidSignatureException",
    );

    // Signing with the shifted time works, and the enclave stamps its dates
    // with it.
    let client = kw.client();
    let out = must("CreateKey", client.create_key().send().await);
    let m = out.key_metadata().expect("KeyMetadata");
    assert_near("CreationDate a day ago", m.creation_date(), epoch_secs(kw.now()), 300);
    let out = must(
        "ScheduleKeyDeletion",
        client
            .schedule_key_deletion()
            .key_id(m.key_id())
            .pending_window_in_days(7)
            .send()
            .await,
    );
    assert_near(
        "DeletionDate six days from the real now",
        out.deletion_date(),
        epoch_secs(std::time::SystemTime::now()) + 6 * DAY,
        600,
    );
    // The raw signer uses the shifted time too.
    let resp = kw.signed_call("ListKeys", b"{}").await;
    assert_eq!(
        resp.status,
        200,
        "raw ListKeys: {}",
        String::from_utf8_lossy(&resp.body)
    );
}
