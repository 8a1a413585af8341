//! Optional HTTP basic auth, as Confluent's registry offers it: users with argon2 password
//! hashes from a file, each with a role. `read` may look schemas up, list, fetch and test
//! compatibility; `write` may also register, delete and change settings. `/health` stays
//! open, for the checks of whatever runs the registry.
//!
//! The users file has one user per line, `NAME:ROLE:HASH`, where HASH is an argon2 PHC
//! string (`freshet-schema-registry hash-password` makes one); blank lines and lines
//! starting with `#` are ignored.
//!
//! Verifying an argon2 hash is slow on purpose, so a verified `Authorization` header is
//! remembered (by its SHA-256, never in clear) and later requests with it cost a lookup.

use crate::api::reply;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read the users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path} names no user: give at least one NAME:ROLE:HASH line")]
    Empty { path: String },
}

struct User {
    role: Role,
    /// The PHC string, checked to parse when the file is read.
    hash: String,
}

/// The registry's users, and the headers already verified.
pub struct Users {
    users: HashMap<String, User>,
    verified: Mutex<HashMap<[u8; 32], (String, Role)>>,
}

/// How many verified headers are remembered; past that the memory starts over.
const VERIFIED_CAPACITY: usize = 1024;

impl Users {
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Reads users from `text`; `origin` names it in errors. Errors name the line, never
    /// the hash.
    pub fn parse(text: &str, origin: &str) -> Result<Self, UsersError> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| UsersError::Line {
                path: origin.into(),
                line: index + 1,
                reason,
            };
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected NAME:ROLE:HASH".into()));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(bad("the user name is empty".into()));
            }
            let role = match role.trim() {
                "read" => Role::Read,
                "write" => Role::Write,
                other => {
                    return Err(bad(format!(
                        "unknown role {other:?} for user {name:?} (roles: read, write)"
                    )))
                }
            };
            let hash = hash.trim();
            PasswordHash::new(hash).map_err(|e| {
                bad(format!(
                    "the password hash of user {name:?} is not a PHC string ({e}); make one with \
                     `freshet-schema-registry hash-password`"
                ))
            })?;
            if users
                .insert(
                    name.to_string(),
                    User {
                        role,
                        hash: hash.to_string(),
                    },
                )
                .is_some()
            {
                return Err(bad(format!("user {name:?} is listed twice")));
            }
        }
        if users.is_empty() {
            return Err(UsersError::Empty {
                path: origin.into(),
            });
        }
        Ok(Self {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user and role a basic `Authorization` header proves, or `None`.
    async fn authenticate(self: &Arc<Self>, header: &HeaderValue) -> Option<(String, Role)> {
        let fingerprint: [u8; 32] = Sha256::digest(header.as_bytes()).into();
        if let Some(known) = self
            .verified
            .lock()
            .expect("never poisoned")
            .get(&fingerprint)
        {
            return Some(known.clone());
        }
        let encoded = header.to_str().ok()?.strip_prefix("Basic ")?.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (name, password) = decoded.split_once(':')?;
        let user = self.users.get(name)?;
        let (hash, role) = (user.hash.clone(), user.role);
        let password = password.to_string();
        // Argon2 takes tens of milliseconds by design: off the async workers.
        let matches = tokio::task::spawn_blocking(move || {
            let hash = PasswordHash::new(&hash).expect("checked when the file was read");
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if !matches {
            return None;
        }
        let mut verified = self.verified.lock().expect("never poisoned");
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(fingerprint, (name.to_string(), role));
        Some((name.to_string(), role))
    }
}

/// An argon2id PHC string for `password`, for the users file.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// The role a request needs: registering, deleting and changing settings write; looking
/// up (including `POST /subjects/{subject}`) and compatibility tests read.
pub fn needed_role(method: &Method, path: &str) -> Role {
    let registers = *method == Method::POST
        && path.starts_with("/subjects/")
        && path.trim_end_matches('/').ends_with("/versions");
    if *method == Method::PUT || *method == Method::DELETE || registers {
        Role::Write
    } else {
        Role::Read
    }
}

/// The middleware: `/health` passes; every other request needs a user whose role allows
/// it (401 without one, 403 when the role is too small), with Confluent's error shape.
pub async fn require_user(
    State(users): State<Arc<Users>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let user = match request.headers().get(header::AUTHORIZATION) {
        Some(value) => users.authenticate(value).await,
        None => None,
    };
    let Some((name, role)) = user else {
        tracing::warn!(path = %request.uri().path(), "request without valid credentials refused");
        let mut response = reply(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({
                "error_code": 401,
                "message": "Unauthorized: this registry needs HTTP basic auth with a user of its users file",
            }),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"freshet-schema-registry\""),
        );
        return response;
    };
    let needed = needed_role(request.method(), request.uri().path());
    if role < needed {
        tracing::warn!(user = %name, method = %request.method(), path = %request.uri().path(), "request beyond the user's role refused");
        return reply(
            StatusCode::FORBIDDEN,
            &serde_json::json!({
                "error_code": 40301,
                "message": format!(
                    "User '{name}' is denied operation {} {}: the user's role is {}, this needs {}",
                    request.method(),
                    request.uri().path(),
                    role.name(),
                    needed.name()
                ),
            }),
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_what_a_request_changes() {
        use Role::*;
        for (method, path, role) in [
            (Method::GET, "/subjects", Read),
            (Method::GET, "/schemas/ids/1", Read),
            (Method::POST, "/subjects/a-value", Read),
            (
                Method::POST,
                "/compatibility/subjects/a-value/versions",
                Read,
            ),
            (
                Method::POST,
                "/compatibility/subjects/a-value/versions/latest",
                Read,
            ),
            (Method::POST, "/subjects/a-value/versions", Write),
            (Method::POST, "/subjects/a-value/versions/", Write),
            (Method::DELETE, "/subjects/a-value", Write),
            (Method::PUT, "/config", Write),
            (Method::PUT, "/mode/a-value", Write),
        ] {
            assert_eq!(needed_role(&method, path), role, "{method} {path}");
        }
    }

    #[test]
    fn bad_lines_are_named_and_hashes_are_not_shown() {
        let good = hash_password("pw");
        let error = |text: &str| Users::parse(text, "users.txt").err().unwrap().to_string();
        assert_eq!(
            error("# nobody\n\n"),
            "users.txt names no user: give at least one NAME:ROLE:HASH line"
        );
        assert!(error("alice:write").starts_with("users.txt, line 1: expected NAME:ROLE:HASH"));
        assert!(error(&format!("alice:admin:{good}"))
            .contains("line 1: unknown role \"admin\" for user \"alice\""));
        let shown = error("\nbob:read:plaintext-password");
        assert!(
            shown.starts_with(
                "users.txt, line 2: the password hash of user \"bob\" is not a PHC string"
            ),
            "{shown}"
        );
        assert!(!shown.contains("plaintext-password"), "{shown}");
        assert!(error(&format!("a:read:{good}\na:write:{good}"))
            .contains("line 2: user \"a\" is listed twice"));
        let users =
            Users::parse(&format!("# the registry's users\nci:write:{good}\n"), "u").unwrap();
        assert_eq!(users.len(), 1);
    }

    #[tokio::test]
    async fn a_header_is_accepted_only_with_the_right_password() {
        let users = Arc::new(
            Users::parse(
                &format!("reader:read:{}", hash_password("s3cret:with colon")),
                "u",
            )
            .unwrap(),
        );
        let basic = |pair: &str| {
            HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
            .unwrap()
        };
        let ok = Some(("reader".to_string(), Role::Read));
        assert_eq!(
            users.authenticate(&basic("reader:s3cret:with colon")).await,
            ok
        );
        // Remembered: the same header again is a lookup, with the same answer.
        assert_eq!(
            users.authenticate(&basic("reader:s3cret:with colon")).await,
            ok
        );
        assert_eq!(users.authenticate(&basic("reader:wrong")).await, None);
        assert_eq!(
            users.authenticate(&basic("nobody:s3cret:with colon")).await,
            None
        );
        assert_eq!(
            users
                .authenticate(&HeaderValue::from_static("Bearer abc"))
                .await,
            None
        );
    }
}
