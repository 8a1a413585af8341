//! A plain Redis connection for very large read pipelines.
//!
//! A 1,000-entity batch is 2,000 `HMGET`s and 12,000 reply values. Through redis-rs'
//! multiplexed connection, parsing that reply costs the service about three times the CPU
//! Redis spends answering it (measured: 6.4-7.1 ms of client CPU per 2,000 `HMGET`s,
//! against 2.5-3.1 ms here), because every value goes through its general parser and gets
//! its own allocation. Here the reply is decoded by `redis-protocol` straight from the
//! read buffer: each value is a slice of that buffer, not a copy. The request is encoded
//! here too: packing 2,000 commands through `redis::Pipeline` took 0.7-1.2 ms, most of it
//! spent building a command object per key, while the fields (most of each command) are
//! the same for every key of a view and are encoded once.
//!
//! One connection serves one pipeline at a time (`&mut self`); a caller that reads
//! concurrently keeps several. After any [`BatchReadError`] the connection may be out of
//! step with Redis and must be dropped.

use crate::RawFields;
use bytes::BytesMut;
use redis::{ConnectionAddr, ConnectionInfo};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Requests encoded and sent at a time: Redis starts on the first ones while the rest
/// are encoded (about 13 KB, near the 16 KB Redis reads from a socket at a time).
const SEND_CHUNK: usize = 128;

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BatchReadError {
    #[error("I/O error talking to Redis: {0}")]
    Io(#[from] std::io::Error),
    #[error("Redis closed the connection")]
    Closed,
    #[error("Redis sent something that is not a RESP2 reply: {0}")]
    Protocol(String),
    #[error("Redis refused the connection's setup ({command}): {reason}")]
    Setup {
        command: &'static str,
        reason: String,
    },
    #[error("batch reads need a TCP, TLS or Unix-socket Redis address, not {0}")]
    UnsupportedAddress(String),
    #[error("TLS to Redis at {host}: {reason}")]
    Tls { host: String, reason: String },
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

pub struct BatchConnection {
    stream: Stream,
    buffer: BytesMut,
}

impl BatchConnection {
    /// Connects to the address of `info` (as parsed from a `redis://`, `rediss://` or
    /// `redis+unix://` URL; TLS checks the server as [`crate::tls`] says) and applies its settings: `AUTH` when it has a password, `SELECT` when its
    /// database is not 0.
    pub async fn connect(info: &ConnectionInfo) -> Result<Self, BatchReadError> {
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Stream::Tcp(stream)
            }
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                ..
            } => {
                let tls_error = |reason: String| BatchReadError::Tls {
                    host: host.clone(),
                    reason,
                };
                let config = crate::tls::rustls_config().map_err(tls_error)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| tls_error(e.to_string()))?;
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_error(e.to_string()))?;
                Stream::Tls(Box::new(stream))
            }
            ConnectionAddr::Unix(path) => Stream::Unix(UnixStream::connect(path).await?),
            other => return Err(BatchReadError::UnsupportedAddress(other.to_string())),
        };
        let mut connection = Self {
            stream,
            buffer: BytesMut::with_capacity(READ_CHUNK),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = settings.username() {
                auth.arg(username);
            }
            auth.arg(password);
            connection.setup("AUTH", &auth).await?;
        }
        if settings.db() != 0 {
            connection
                .setup("SELECT", redis::cmd("SELECT").arg(settings.db()))
                .await?;
        }
        Ok(connection)
    }

    async fn setup(
        &mut self,
        command: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<(), BatchReadError> {
        self.send(&cmd.get_packed_command()).await?;
        match self.next_frame().await? {
            BytesFrame::Error(reason) => Err(BatchReadError::Setup {
                command,
                reason: reason.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// For each `(key, fields)`, the values of those fields (`HMGET`), all in one round
    /// trip: what [`crate::read_fields`] does, at a fraction of the client's CPU. A key
    /// Redis answers with an error fails only its own read ([`RawFields::error`]).
    pub async fn read_fields(
        &mut self,
        requests: &[(String, &[&str])],
    ) -> Result<Vec<RawFields>, BatchReadError> {
        let mut read = Vec::with_capacity(requests.len());
        self.read_fields_each(requests, |fields| read.push(fields))
            .await?;
        Ok(read)
    }

    /// [`BatchConnection::read_fields`], handing each request's fields to `each` (in
    /// order) as soon as its reply has arrived, so a caller can work
    /// on the first replies while Redis is still answering the rest.
    pub async fn read_fields_each(
        &mut self,
        requests: &[(String, &[&str])],
        mut each: impl FnMut(RawFields),
    ) -> Result<(), BatchReadError> {
        for chunk in requests.chunks(SEND_CHUNK) {
            self.send(&encode_hmgets(chunk)).await?;
        }
        for _ in requests {
            let fields = match self.next_frame().await? {
                BytesFrame::Array(values) => {
                    RawFields::fields(values.into_iter().map(|value| match value {
                        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Some(b),
                        _ => None,
                    }))
                }
                BytesFrame::Error(e) => RawFields::failed(e.to_string()),
                other => {
                    return Err(BatchReadError::Protocol(format!(
                        "expected HMGET's array, Redis sent {other:?}"
                    )))
                }
            };
            each(fields);
        }
        Ok(())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), BatchReadError> {
        match &mut self.stream {
            Stream::Tcp(s) => s.write_all(bytes).await?,
            Stream::Tls(s) => s.write_all(bytes).await?,
            Stream::Unix(s) => s.write_all(bytes).await?,
        }
        Ok(())
    }

    /// The next whole reply, reading from the socket until the buffer holds one.
    async fn next_frame(&mut self) -> Result<BytesFrame, BatchReadError> {
        loop {
            let decoded = decode_bytes_mut(&mut self.buffer)
                .map_err(|e| BatchReadError::Protocol(e.to_string()))?;
            if let Some((frame, _, _)) = decoded {
                return Ok(frame);
            }
            self.buffer.reserve(READ_CHUNK);
            let n = match &mut self.stream {
                Stream::Tcp(s) => s.read_buf(&mut self.buffer).await?,
                Stream::Tls(s) => s.read_buf(&mut self.buffer).await?,
                Stream::Unix(s) => s.read_buf(&mut self.buffer).await?,
            };
            if n == 0 {
                return Err(BatchReadError::Closed);
            }
        }
    }
}

/// The RESP encoding of `HMGET key fields...` for every request, back to back. A run of
/// requests sharing one field list (one view's) encodes that list once.
fn encode_hmgets(requests: &[(String, &[&str])]) -> Vec<u8> {
    fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
        out.push(b'$');
        out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    let mut out = Vec::new();
    let mut shared: Option<(&[&str], Vec<u8>)> = None;
    for (key, fields) in requests {
        let encoded_fields = match &shared {
            Some((same, encoded)) if std::ptr::eq(*same, *fields) => encoded,
            _ => {
                let mut encoded = Vec::new();
                for field in *fields {
                    bulk(&mut encoded, field.as_bytes());
                }
                if out.is_empty() {
                    out.reserve(requests.len() * (encoded.len() + key.len() + 32));
                }
                &shared.insert((*fields, encoded)).1
            }
        };
        out.push(b'*');
        out.extend_from_slice(itoa::Buffer::new().format(2 + fields.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        bulk(&mut out, b"HMGET");
        bulk(&mut out, key.as_bytes());
        out.extend_from_slice(encoded_fields);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmgets_are_encoded_as_redis_rs_packs_them() {
        let clicks: &[&str] = &["_version", "count", "\u{e9}t\u{e9}\r\n"];
        let other: &[&str] = &["x"];
        let requests = vec![
            ("fv:clicks:1".to_string(), clicks),
            ("fv:clicks:long id with spaces".to_string(), clicks),
            ("fv:other:1".to_string(), other),
            ("fv:clicks:2".to_string(), clicks),
        ];
        let mut pipe = redis::pipe();
        for (key, fields) in &requests {
            pipe.cmd("HMGET").arg(key).arg(*fields);
        }
        assert_eq!(encode_hmgets(&requests), pipe.get_packed_pipeline());
    }
}
