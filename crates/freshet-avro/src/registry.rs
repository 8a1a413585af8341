//! Where the schema registry is and the credentials every request to it carries: basic
//! auth (a managed registry's API key and secret) or a bearer token. Credentials never
//! appear in `Debug` or `Display` output, and a URL's user info (`https://KEY:SECRET@host`,
//! Confluent's `basic.auth.credentials.source=URL`) is taken out of the URL as basic auth,
//! so the URL the services log is clean.

use schema_registry_converter::async_impl::schema_registry::SrSettings;
use std::fmt;
use std::time::Duration;

/// A schema registry: its URL and how to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct Registry {
    url: String,
    auth: RegistryAuth,
}

/// How requests to the registry authenticate.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum RegistryAuth {
    #[default]
    None,
    /// `Authorization: Basic`; for Confluent Cloud, the API key and secret.
    Basic { username: String, password: String },
    /// `Authorization: Bearer`.
    Bearer { token: String },
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::None => f.write_str("None"),
            RegistryAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"***")
                .finish(),
            RegistryAuth::Bearer { .. } => f.debug_struct("Bearer").field("token", &"***").finish(),
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .finish()
    }
}

/// The URL, without credentials.
impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl From<String> for Registry {
    fn from(url: String) -> Self {
        Registry::new(url)
    }
}

impl From<&str> for Registry {
    fn from(url: &str) -> Self {
        Registry::new(url)
    }
}

/// Why the registry could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the schema registry at {url} refused the request with HTTP {status}: {hint}")]
    Refused {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("the schema registry at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the schema registry at {url} answered HTTP {status} for {what}: {message}")]
    Failed {
        url: String,
        what: String,
        status: u16,
        message: String,
    },
}

/// What to do about a 401 or a 403, for every message that reports one.
pub(crate) fn refusal_hint(status: u16) -> Option<&'static str> {
    match status {
        401 => Some(
            "it needs credentials, or these are wrong; give them with --registry-basic-auth \
             USER:PASSWORD or --registry-bearer-token (FRESHET_REGISTRY_BASIC_AUTH, \
             FRESHET_REGISTRY_BEARER_TOKEN)",
        ),
        403 => Some(
            "these credentials are not allowed to do this (a read-only user cannot register \
             schemas)",
        ),
        _ => None,
    }
}

impl Registry {
    /// A registry at `url`. User info in the URL becomes basic auth (percent-decoded) and
    /// is removed from the URL.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let Ok(mut parsed) = reqwest::Url::parse(&url) else {
            // Not a URL: kept as given; the first request reports it.
            return Self {
                url,
                auth: RegistryAuth::None,
            };
        };
        if parsed.username().is_empty() && parsed.password().is_none() {
            return Self {
                url,
                auth: RegistryAuth::None,
            };
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let auth = RegistryAuth::Basic {
            username: decode(parsed.username()),
            password: decode(parsed.password().unwrap_or_default()),
        };
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        let mut clean = parsed.to_string();
        // Url adds a "/" to a bare host: keep the URL as the user wrote it.
        if clean.ends_with('/') && !url.ends_with('/') {
            clean.pop();
        }
        let url = clean;
        Self { url, auth }
    }

    /// The same registry with these credentials (replacing any from the URL).
    pub fn with_auth(mut self, auth: RegistryAuth) -> Self {
        self.auth = auth;
        self
    }

    /// The URL, without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn auth(&self) -> &RegistryAuth {
        &self.auth
    }

    /// schema_registry_converter's settings for this registry, with `timeout` per request.
    pub(crate) fn settings(&self, timeout: Duration) -> SrSettings {
        let mut builder = SrSettings::new_builder(self.url.clone());
        builder.set_timeout(timeout);
        match &self.auth {
            RegistryAuth::None => {}
            RegistryAuth::Basic { username, password } => {
                builder.set_basic_authorization(username, Some(password));
            }
            RegistryAuth::Bearer { token } => {
                builder.set_token_authorization(token);
            }
        }
        builder.build().unwrap_or_else(|_| {
            // Building fails only on a bad proxy or header, neither of which is set here.
            SrSettings::new(self.url.clone())
        })
    }

    fn request(&self, path: &str) -> reqwest::RequestBuilder {
        let request = reqwest::Client::new()
            .get(format!("{}{path}", self.url.trim_end_matches('/')))
            .timeout(Duration::from_secs(10));
        match &self.auth {
            RegistryAuth::None => request,
            RegistryAuth::Basic { username, password } => {
                request.basic_auth(username, Some(password))
            }
            RegistryAuth::Bearer { token } => request.bearer_auth(token),
        }
    }

    /// Asks the registry for a JSON answer at `path` (`what` names it in errors).
    async fn get_json(&self, path: &str, what: &str) -> Result<serde_json::Value, RegistryError> {
        let response = self
            .request(path)
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: self.url.clone(),
                reason: without_url(&e),
            })?;
        let status = response.status().as_u16();
        if let Some(hint) = refusal_hint(status) {
            return Err(RegistryError::Refused {
                url: self.url.clone(),
                status,
                hint,
            });
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(RegistryError::Failed {
                url: self.url.clone(),
                what: what.into(),
                status,
                message: body["message"].as_str().unwrap_or("no message").into(),
            });
        }
        Ok(body)
    }

    /// Proves the registry accepts these credentials for reading (it lists its subjects).
    /// Services call it at start: refused credentials are an error to stop on, while an
    /// unreachable registry may only be late.
    pub async fn check(&self) -> Result<(), RegistryError> {
        self.get_json("/subjects", "the list of subjects")
            .await
            .map(|_| ())
    }

    /// The latest schema registered under `subject`, as text.
    pub async fn latest_schema(&self, subject: &str) -> Result<String, RegistryError> {
        let what = format!("the latest schema of subject {subject}");
        let body = self
            .get_json(&format!("/subjects/{subject}/versions/latest"), &what)
            .await?;
        body["schema"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Failed {
                url: self.url.clone(),
                what,
                status: 200,
                message: "the answer holds no schema".into(),
            })
    }
}

/// reqwest's error text without the URL it names (the URL is in the message already).
fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut reason = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_in_the_url_becomes_basic_auth_and_leaves_the_url() {
        let registry = Registry::new("https://KEY:se%2Fcr%2Bet@registry.example:8081");
        assert_eq!(registry.url(), "https://registry.example:8081");
        assert_eq!(
            registry.auth(),
            &RegistryAuth::Basic {
                username: "KEY".into(),
                password: "se/cr+et".into()
            }
        );
        assert_eq!(registry.to_string(), "https://registry.example:8081");
        let shown = format!("{registry:?}");
        assert!(
            !shown.contains("se/cr+et") && !shown.contains("se%2F"),
            "{shown}"
        );
        assert!(shown.contains("KEY") && shown.contains("***"), "{shown}");
    }

    #[test]
    fn a_url_without_credentials_is_kept_as_written() {
        for url in [
            "http://127.0.0.1:8081",
            "http://127.0.0.1:8081/",
            "https://r.example/prefix",
            "not a url",
        ] {
            let registry = Registry::new(url);
            assert_eq!(registry.url(), url);
            assert_eq!(registry.auth(), &RegistryAuth::None);
        }
        assert_eq!(
            Registry::new("https://u:p@r.example/prefix").url(),
            "https://r.example/prefix"
        );
    }

    #[test]
    fn tokens_are_never_shown() {
        let registry = Registry::new("http://r:1").with_auth(RegistryAuth::Bearer {
            token: "tok-123".into(),
        });
        assert!(!format!("{registry:?}").contains("tok-123"));
        assert!(!registry.to_string().contains("tok-123"));
    }
}
