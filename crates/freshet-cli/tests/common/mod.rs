//! What the CLI's integration tests share: running `freshet` from the repository root,
//! plain HTTP requests, and stopping a detached stack even when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
}

pub fn freshet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(args)
        .current_dir(repo())
        .env_remove("FRESHET_FEATURES_DIR")
        .output()
        .expect("freshet runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `GET path`: the status and the body.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    exchange(
        address,
        format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n"),
    )
}

/// `POST path` with a JSON body: the status and the body.
pub fn http_post_json(address: &str, path: &str, body: &str) -> Option<(u16, String)> {
    exchange(
        address,
        format!(
            "POST {path} HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// One HTTP/1.0 request and its answer (HTTP/1.0, so never chunked): status and body.
fn exchange(address: &str, request: String) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Runs `freshet down` when dropped, so a failing test leaves no servers behind.
pub struct DownOnDrop(pub String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = freshet(&["down", "--state-dir", &self.0]);
    }
}
