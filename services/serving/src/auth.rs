//! Who may call the API: API keys, of which only SHA-256 hashes are kept, sent as
//! `Authorization: Bearer <key>` or `X-API-Key: <key>`; the copilot's routes, off unless
//! enabled, need a key allowed to use it and are rate limited per key (`governor`).
//!
//! `/health` and `/ready` are always open (orchestrators probe them), `/metrics` unless
//! `metrics_need_key`. Everything else (lookups, Feast's protocol, the OpenAPI document
//! and its UI, the copilot) needs a key. With [`AuthConfig::Off`] (an explicit choice for
//! local use) no key is asked for; the copilot is then limited as one caller.

use crate::error::ApiError;
use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroU32;

/// One API key as configured: its name (for logs and limits), the SHA-256 of the key,
/// and whether it may use the copilot.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub sha256: [u8; 32],
    pub copilot: bool,
}

/// Never the hash in `Debug` output: a hash of a short key can be reversed by search.
impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("copilot", &self.copilot)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("line {line}: {problem}; a line is `NAME SHA256-HEX [copilot]` (the hash of the key: `printf %s \"$KEY\" | sha256sum`)")]
    BadLine { line: usize, problem: String },
    #[error("entry {entry} of FRESHET_API_KEYS: {problem}; an entry is `NAME:KEY` or `NAME:KEY:copilot`, entries separated by commas")]
    BadEntry { entry: usize, problem: String },
    #[error("the API key name `{0}` is given twice")]
    DuplicateName(String),
}

impl ApiKey {
    /// The hash of a key as sent.
    pub fn hash(key: &str) -> [u8; 32] {
        Sha256::digest(key.as_bytes()).into()
    }

    /// A keys file: one `NAME SHA256-HEX [copilot]` per line; `#` starts a comment.
    pub fn parse_file(text: &str) -> Result<Vec<ApiKey>, KeyError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |problem: &str| KeyError::BadLine {
                line: i + 1,
                problem: problem.to_string(),
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (name, hash, copilot) = match parts.as_slice() {
                [name, hash] => (name, hash, false),
                [name, hash, "copilot"] => (name, hash, true),
                [_, _, other] => {
                    return Err(bad(&format!(
                        "`{other}` is not a permission (the only one is `copilot`)"
                    )))
                }
                _ => return Err(bad("expected a name and a hash")),
            };
            let sha256 = parse_hex(hash)
                .ok_or_else(|| bad("the hash is not 64 hexadecimal digits (a SHA-256)"))?;
            keys.push(ApiKey {
                name: name.to_string(),
                sha256,
                copilot,
            });
        }
        Ok(keys)
    }

    /// Keys from the environment: `NAME:KEY[:copilot]`, separated by commas. The keys
    /// are hashed at once; only the hashes are kept.
    pub fn parse_env(text: &str) -> Result<Vec<ApiKey>, KeyError> {
        let mut keys = Vec::new();
        for (i, entry) in text.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let bad = |problem: &str| KeyError::BadEntry {
                entry: i + 1,
                problem: problem.to_string(),
            };
            let (name, rest) = entry.split_once(':').ok_or_else(|| bad("no `:`"))?;
            let (key, copilot) = match rest.rsplit_once(':') {
                Some((key, "copilot")) => (key, true),
                _ => (rest, false),
            };
            if name.is_empty() || key.is_empty() {
                return Err(bad("an empty name or key"));
            }
            keys.push(ApiKey {
                name: name.to_string(),
                sha256: Self::hash(key),
                copilot,
            });
        }
        Ok(keys)
    }
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Whether keys are asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// No key asked for anywhere: for local use only, chosen explicitly.
    Off,
    Keys(Vec<ApiKey>),
}

/// What the service lets through.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub auth: AuthConfig,
    /// Whether `/metrics` needs a key too (it is open by default, for Prometheus).
    pub metrics_need_key: bool,
    /// Whether the copilot's routes (`/api/llm/...`) are served at all.
    pub copilot_enabled: bool,
    /// Copilot requests per minute per key.
    pub copilot_per_minute: u32,
}

impl AccessConfig {
    /// Open: no keys, the copilot on (the library's default for tests and local use).
    pub fn open() -> Self {
        Self {
            auth: AuthConfig::Off,
            metrics_need_key: false,
            copilot_enabled: true,
            copilot_per_minute: DEFAULT_COPILOT_PER_MINUTE,
        }
    }

    pub fn requires_keys(&self) -> bool {
        matches!(self.auth, AuthConfig::Keys(_))
    }
}

pub const DEFAULT_COPILOT_PER_MINUTE: u32 = 10;

/// The checks, shared by every request.
pub struct Access {
    config: AccessConfig,
    /// By hash: the key's name and copilot permission.
    keys: HashMap<[u8; 32], (String, bool)>,
    copilot_limit: DefaultKeyedRateLimiter<String>,
}

impl Access {
    pub fn new(config: AccessConfig) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        let mut names = std::collections::HashSet::new();
        if let AuthConfig::Keys(list) = &config.auth {
            for key in list {
                if !names.insert(key.name.clone()) {
                    return Err(KeyError::DuplicateName(key.name.clone()));
                }
                keys.insert(key.sha256, (key.name.clone(), key.copilot));
            }
        }
        let per_minute = NonZeroU32::new(config.copilot_per_minute.max(1)).expect("at least 1");
        Ok(Self {
            copilot_limit: RateLimiter::keyed(Quota::per_minute(per_minute)),
            config,
            keys,
        })
    }

    /// The key sent, if any: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    fn presented(headers: &HeaderMap) -> Option<&str> {
        if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
            let value = value.to_str().ok()?;
            let (scheme, key) = value.split_once(' ')?;
            return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
        }
        headers.get("x-api-key")?.to_str().ok().map(str::trim)
    }

    /// Lets the request through or answers 401, 403, 429 or 503 (copilot off). Run for every
    /// request by [`crate::api::FrontDoor`].
    pub(crate) fn check(&self, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        let open = path == "/health"
            || path == "/ready"
            || (path == "/metrics" && !self.config.metrics_need_key);
        if open {
            return Ok(());
        }
        let (name, may_use_copilot) = match &self.config.auth {
            AuthConfig::Off => ("anonymous", true),
            AuthConfig::Keys(_) => {
                let key = Self::presented(headers).ok_or(ApiError::Unauthorized(
                    "an API key is needed: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                ))?;
                let (name, copilot) = self
                    .keys
                    .get(&ApiKey::hash(key))
                    .ok_or(ApiError::Unauthorized("the API key is not valid"))?;
                (name.as_str(), *copilot)
            }
        };
        if path.starts_with("/api/llm") {
            if !self.config.copilot_enabled {
                return Err(ApiError::CopilotDisabled);
            }
            if !may_use_copilot {
                return Err(ApiError::Forbidden(
                    "this API key may not use the copilot (give it the `copilot` permission)",
                ));
            }
            if let Err(not_until) = self.copilot_limit.check_key(&name.to_string()) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(ApiError::RateLimited {
                    per_minute: self.config.copilot_per_minute,
                    retry_after_s: wait.as_secs().max(1),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: [u8; 32]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn keys_files_hold_hashes_and_bad_lines_are_named() {
        let hash = hex(ApiKey::hash("s3cret"));
        let keys = ApiKey::parse_file(&format!(
            "# the model servers\nranker {hash}\nanalyst {hash} copilot # may ask the copilot\n\n"
        ))
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].sha256, ApiKey::hash("s3cret"));
        assert!(!keys[0].copilot && keys[1].copilot);
        assert!(
            !format!("{keys:?}").contains(&hash),
            "no hash in Debug output"
        );
        assert_eq!(
            ApiKey::parse_file("ranker s3cret").unwrap_err().to_string(),
            "line 1: the hash is not 64 hexadecimal digits (a SHA-256); a line is `NAME SHA256-HEX [copilot]` (the hash of the key: `printf %s \"$KEY\" | sha256sum`)"
        );
        let err = ApiKey::parse_file(&format!("\nranker {hash} admin")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line 2: `admin` is not a permission"),
            "{err}"
        );
    }

    #[test]
    fn keys_from_the_environment_are_hashed_at_once() {
        let keys = ApiKey::parse_env("ranker:abc, analyst:d:e:copilot").unwrap();
        assert_eq!(keys[0].sha256, ApiKey::hash("abc"));
        assert_eq!(keys[1].sha256, ApiKey::hash("d:e"));
        assert!(keys[1].copilot);
        let err = ApiKey::parse_env("ranker").unwrap_err().to_string();
        assert!(
            err.starts_with("entry 1 of FRESHET_API_KEYS: no `:`"),
            "{err}"
        );
        assert!(
            !err.contains("ranker"),
            "the entry (a key, maybe) is not echoed"
        );
    }
}
