//! The serving bench's open-loop load generator: requests at a fixed rate whatever the
//! answers do, over HTTP to the service or RESP straight to Redis (the baseline).

use crate::{entity_id, percentile, ENTITIES, FIELDS};
use freshet_core::store_layout::entity_key;
use std::time::Duration;

pub struct OpenLoop {
    pub achieved: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// What the open loop sends and how it knows an answer is whole.
#[derive(Clone, Copy)]
pub enum Protocol {
    /// `GET /features/{id}` over HTTP/1.1, answered by a `200` with a `Content-Length`.
    Http,
    /// `HGETALL` of the entity's hash, straight to Redis (RESP2).
    Redis,
}

impl Protocol {
    fn request(self, entity: usize, address: &str) -> Vec<u8> {
        match self {
            Protocol::Http => format!(
                "GET /features/{} HTTP/1.1\r\nHost: {address}\r\n\r\n",
                entity_id(entity)
            )
            .into_bytes(),
            Protocol::Redis => {
                let key = entity_key("user", &entity_id(entity));
                format!("*2\r\n$7\r\nHGETALL\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
            }
        }
    }

    /// Whether `buffer` holds a whole answer (and it is a success).
    fn complete(self, buffer: &[u8]) -> bool {
        match self {
            Protocol::Http => {
                let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return false;
                };
                let head = std::str::from_utf8(&buffer[..end]).unwrap();
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .expect("a Content-Length");
                buffer.len() >= end + 4 + length
            }
            Protocol::Redis => {
                match redis_protocol::resp2::decode::decode_range(buffer).expect("RESP") {
                    Some((frame, _)) => {
                        assert!(
                            matches!(frame, redis_protocol::resp2::types::RangeFrame::Array(ref a) if a.len() == 2 * FIELDS.len()),
                            "HGETALL answered {frame:?}"
                        );
                        true
                    }
                    None => false,
                }
            }
        }
    }
}

/// Random entities at `rate` requests/s for `time`, open loop: request `i` is due at
/// `start + i / rate` whatever the answers do. Workers (one keep-alive connection each,
/// requests written and answers read by hand so the generator adds little of its own)
/// take requests in turn on a runtime of their own thread; a request whose worker was
/// still busy when it fell due is timed from when it was due, so a slow answer counts
/// against every request it held back. A worker that was idle waits for the due time on
/// tokio's timer (millisecond grain), and its request is timed from when it was sent.
pub fn open_loop(address: &str, protocol: Protocol, rate: f64, time: Duration) -> OpenLoop {
    const WORKERS: usize = 32;
    let address = address
        .trim_start_matches("http://")
        .trim_start_matches("redis://")
        .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the load generator");
    let total = (rate * time.as_secs_f64()) as usize;
    let (mut latencies, elapsed) = runtime.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let address = address.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut buffer = vec![0u8; 64 * 1024];
                let mut latencies = Vec::with_capacity(total / WORKERS + 1);
                let mut entity = w * 7919;
                let mut busy_until = start;
                for i in (w..total).step_by(WORKERS) {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    entity = (entity * 31 + 17) % ENTITIES;
                    let request = protocol.request(entity, &address);
                    let from = if busy_until > due {
                        due
                    } else {
                        tokio::time::sleep_until(due).await;
                        tokio::time::Instant::now()
                    };
                    stream.write_all(&request).await.unwrap();
                    let mut filled = 0;
                    while filled == 0 || !protocol.complete(&buffer[..filled]) {
                        let n = stream.read(&mut buffer[filled..]).await.unwrap();
                        assert!(n > 0, "the server closed the connection");
                        filled += n;
                    }
                    busy_until = tokio::time::Instant::now();
                    latencies.push((busy_until - from).as_secs_f64() * 1_000.0);
                }
                latencies
            }));
        }
        let mut latencies = Vec::with_capacity(total);
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
        (
            latencies,
            (tokio::time::Instant::now() - start).as_secs_f64(),
        )
    });
    latencies.sort_by(f64::total_cmp);
    OpenLoop {
        achieved: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        p999_ms: percentile(&latencies, 0.999),
        max_ms: *latencies.last().unwrap(),
    }
}
