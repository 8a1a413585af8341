//! A local OTLP/HTTP receiver: accepts `POST /v1/traces` and keeps every body, so a test
//! can check what a service exported. It stands in for a collector such as Jaeger; it
//! does not decode the protobuf, so tests look for the bytes they expect (trace ids, span
//! names, attribute keys and string values appear verbatim in the encoding).

use std::sync::{Arc, Mutex};

pub struct OtlpReceiver {
    pub port: u16,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Serves on a free loopback port, on a thread with its own runtime (so it can be
    /// started and dropped from sync and async tests alike).
    pub fn start() -> Self {
        use axum::routing::post;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("receiver port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("bound address").port();
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let kept = bodies.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().route(
                    "/v1/traces",
                    post(move |body: axum::body::Bytes| {
                        let kept = kept.clone();
                        async move {
                            kept.lock().expect("bodies").push(body.to_vec());
                            axum::http::StatusCode::OK
                        }
                    }),
                );
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self {
            port,
            bodies,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The endpoint to give an exporter (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether any export so far holds `needle`.
    pub fn contains(&self, needle: &[u8]) -> bool {
        let bodies = self.bodies.lock().expect("bodies");
        bodies
            .iter()
            .any(|b| b.windows(needle.len()).any(|w| w == needle))
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
