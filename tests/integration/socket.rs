//! Talking to the enclave's Unix socket directly: malformed input closes that
//! connection only; the enclave keeps serving the proxy and does not die.

use std::time::Duration;

use keyward_wire::{Frame, MAX_FRAME_LEN, PROTOCOL_VERSION, read_frame, write_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::harness::{Keyward, Sandbox, create_key, decrypt, encrypt, process_gone, random_bytes};

const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(kw: &Keyward) -> UnixStream {
    let path = kw.data_dir.join("enclave.sock");
    tokio::time::timeout(CLOSE_TIMEOUT, UnixStream::connect(&path))
        .await
        .unwrap_or_else(|_| panic!("connecting to {} timed out", path.display()))
        .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()))
}

/// Waits (bounded) until the enclave closes the connection: a read returns
/// 0 or an error. Anything it sends first is skipped.
async fn expect_closed(stream: &mut UnixStream, what: &str) {
    let mut buf = [0u8; 4096];
    let mut received = 0usize;
    loop {
        match tokio::time::timeout(CLOSE_TIMEOUT, stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: the enclave kept the connection open for {CLOSE_TIMEOUT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                received += n;
                assert!(
                    received < 1 << 20,
                    "{what}: the enclave keeps sending instead of closing"
                );
            }
        }
    }
}

/// The service still works through the SDK, and the enclave is the same
/// process (no restart line, pid alive).
async fn assert_still_serving(kw: &mut Keyward, key_id: &str, after: &str) {
    let client = kw.client();
    let plaintext = random_bytes(32);
    let ciphertext = encrypt(&client, key_id, &plaintext, None).await;
    assert_eq!(
        decrypt(&client, None, &ciphertext, None).await,
        plaintext,
        "round trip after {after}"
    );
    assert_eq!(
        decrypt(&client, Some(key_id), &ciphertext, None).await,
        plaintext,
        "round trip after {after}"
    );
    let restarts = kw.drain_enclave_starts();
    assert!(
        restarts.is_empty(),
        "the enclave restarted after {after}: new pids {restarts:?}"
    );
    assert!(
        !process_gone(kw.enclave_pid),
        "enclave pid {} died after {after}",
        kw.enclave_pid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_that_connection() {
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let key_id = create_key(&kw.client(), "socket").await;
    let pid = kw.enclave_pid;

    // (a1) Text garbage: its first four bytes read as a length far above the maximum.
    let mut s = connect(&kw).await;
    let _ = s
        .write_all(b"GET / HTTP/1.1\r\nHost: enclave\r\n\r\nthis is not a frame")
        .await;
    expect_closed(&mut s, "text garbage").await;
    assert_still_serving(&mut kw, &key_id, "text garbage").await;

    // (a2) Random garbage inside a well-sized frame: the body is not CBOR of a
    // Frame (it starts with 0xff, a CBOR "break", which no item starts with).
    let mut body = random_bytes(64);
    body[0] = 0xff;
    let mut garbage = (body.len() as u32).to_be_bytes().to_vec();
    garbage.extend_from_slice(&body);
    assert!(keyward_wire::decode(&body).is_err(), "the garbage happens to decode");
    let mut s = connect(&kw).await;
    let _ = s.write_all(&garbage).await;
    expect_closed(&mut s, "random garbage frame").await;
    assert_still_serving(&mut kw, &key_id, "random garbage frame").await;

    // (a3) Random garbage after a valid Hello exchange.
    let mut s = connect(&kw).await;
    write_frame(
        &mut s,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .await
    .expect("send Hello");
    let ack = tokio::time::timeout(CLOSE_TIMEOUT, read_frame(&mut s))
        .await
        .expect("HelloAck in time")
        .expect("read HelloAck");
    assert!(matches!(ack, Frame::HelloAck { .. }), "expected HelloAck, got {ack:?}");
    let _ = s.write_all(&garbage).await;
    expect_closed(&mut s, "garbage after the handshake").await;
    assert_still_serving(&mut kw, &key_id, "garbage after the handshake").await;

    // (a4) An API request on the host link, signed and well-formed: there is
    // no plaintext path into the API (requests arrive only inside TLS), so
    // the enclave answers nothing and closes the connection.
    let mut s = connect(&kw).await;
    write_frame(
        &mut s,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .await
    .expect("send Hello");
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, read_frame(&mut s))
        .await
        .expect("HelloAck in time")
        .expect("read HelloAck");
    let body = b"{}".to_vec();
    let mut headers = crate::harness::api_headers(&kw.addr, "TrentService.ListKeys");
    crate::harness::sign_headers(&mut headers, &kw.addr, &body, &kw.creds, kw.now());
    let request = keyward_wire::ApiRequest {
        request_id: "plaintext-path".into(),
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: headers
            .into_iter()
            .map(|(k, v)| (k, serde_bytes::ByteBuf::from(v.into_bytes())))
            .collect(),
        body,
        client_addr: None,
    };
    let _ = write_frame(&mut s, &Frame::Request { id: 1, request }).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, s.read_to_end(&mut answer))
        .await
        .expect("the enclave closes the connection");
    assert!(
        !contains_bytes(&answer, b"KeyId") && !contains_bytes(&answer, b"\"Keys\""),
        "the enclave answered an API request on the host link"
    );
    assert_still_serving(&mut kw, &key_id, "an API request on the host link").await;

    // (b) A length prefix one byte over the maximum, and nothing else: the
    // enclave must refuse it without waiting for (or allocating) the body.
    let mut s = connect(&kw).await;
    let _ = s.write_all(&(MAX_FRAME_LEN + 1).to_be_bytes()).await;
    expect_closed(&mut s, "oversize length prefix").await;
    assert_still_serving(&mut kw, &key_id, "oversize length prefix").await;

    // (b2) The largest possible prefix.
    let mut s = connect(&kw).await;
    let _ = s.write_all(&u32::MAX.to_be_bytes()).await;
    expect_closed(&mut s, "u32::MAX length prefix").await;
    assert_still_serving(&mut kw, &key_id, "u32::MAX length prefix").await;

    // (c) A truncated frame: the prefix claims 100 bytes, 10 arrive, then EOF.
    let mut s = connect(&kw).await;
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&random_bytes(10));
    let _ = s.write_all(&truncated).await;
    let _ = s.shutdown().await;
    expect_closed(&mut s, "truncated frame").await;
    assert_still_serving(&mut kw, &key_id, "truncated frame").await;

    // Many at once (connections opened and abandoned concurrently).
    let mut streams = Vec::new();
    for _ in 0..16 {
        let mut s = connect(&kw).await;
        let _ = s.write_all(&(MAX_FRAME_LEN + 1).to_be_bytes()).await;
        streams.push(s);
    }
    for (i, s) in streams.iter_mut().enumerate() {
        expect_closed(s, &format!("concurrent oversize prefix #{i}")).await;
    }
    assert_still_serving(&mut kw, &key_id, "16 concurrent bad connections").await;

    assert_eq!(kw.enclave_pid, pid, "the enclave pid changed");
    let status = kw.stop();
    assert_eq!(status.code(), Some(0), "keyward must exit 0 on SIGTERM, got {status}");
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_gets_hello_ack() {
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let key_id = create_key(&kw.client(), "hello").await;

    let mut s = connect(&kw).await;
    write_frame(
        &mut s,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .await
    .expect("send Hello");
    let reply = tokio::time::timeout(CLOSE_TIMEOUT, read_frame(&mut s))
        .await
        .expect("the enclave answers Hello in time")
        .expect("read the answer to Hello");
    match reply {
        Frame::HelloAck { version } => assert_eq!(version, PROTOCOL_VERSION, "HelloAck version"),
        other => panic!("expected HelloAck, got {other:?}"),
    }
    drop(s);
    assert_still_serving(&mut kw, &key_id, "a Hello handshake").await;
}
