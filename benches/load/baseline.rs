//! The HTTP limit of the machine: an axum server that echoes each request body, driven by the same
//! client as the service.

use std::net::SocketAddr;

/// An axum echo server (`POST /` answers the request body) on its own
/// runtime and threads, on a loopback port it picked.
pub(crate) struct Baseline {
    pub(crate) addr: SocketAddr,
}

impl Baseline {
    pub(crate) fn start() -> anyhow::Result<Baseline> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("axum-echo")
            .build()?;
        std::thread::Builder::new().name("axum-echo".into()).spawn(move || {
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(echo);
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        if let Err(e) = axum::serve(listener, app).await {
                            eprintln!("axum echo baseline stopped: {e}");
                        }
                    }
                    Err(e) => eprintln!("axum echo baseline cannot listen: {e}"),
                }
            });
        })?;
        Ok(Baseline { addr })
    }
}

async fn echo(body: axum::body::Bytes) -> impl axum::response::IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/x-amz-json-1.1")], body)
}
