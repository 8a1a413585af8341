//! What every Freshet binary does the same way at its edge, written once:
//!
//! - the connection flags (`--brokers`, `--kafka-option`, `--registry-url`,
//!   `--redis-url`) with their
//!   environment variables, defaulting to the addresses a running local stack published in
//!   its `stack.env` ([`StackEnv`]), else to the local defaults;
//! - the OTLP endpoint flag ([`OtlpArgs`]) and the Prometheus listener ([`serve_metrics`]);
//! - shutdown on SIGTERM or Ctrl-C ([`shutdown_signal`], [`stop_flag`]);
//! - transparent huge pages off for binaries that use mimalloc
//!   ([`no_transparent_huge_pages`]).
//!
//! Reading `stack.env` needs no link to the local-stack crate, which writes it: the file is
//! plain `KEY=value` lines, and [`STACK_ENV_FILE`] names it for both.

pub use freshet_avro::{Registry, RegistryAuth};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The local stack's folder, relative to where a binary runs.
pub const DEFAULT_STACK_DIR: &str = ".freshet";
/// The file in the stack's folder where `freshet up` publishes the addresses it started.
pub const STACK_ENV_FILE: &str = "stack.env";

pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
pub const DEFAULT_REGISTRY_URL: &str = "http://127.0.0.1:8081";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The addresses a stack published in its `stack.env`, for services' default settings:
/// a service started by hand next to a running `freshet up` finds the stack by itself.
#[derive(Debug, Clone, Default)]
pub struct StackEnv(std::collections::HashMap<String, String>);

impl StackEnv {
    /// Reads `stack_dir/stack.env`; a missing file gives no values.
    pub fn load(stack_dir: &Path) -> Self {
        let text = std::fs::read_to_string(stack_dir.join(STACK_ENV_FILE)).unwrap_or_default();
        Self(
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    /// A setting given by flag or environment, else the stack's value for `key`, else
    /// `default`.
    pub fn resolve(&self, given: Option<String>, key: &str, default: &str) -> String {
        given
            .or_else(|| self.get(key))
            .unwrap_or_else(|| default.to_string())
    }
}

/// `--stack-dir`: the local stack whose `stack.env` supplies default addresses.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// Folder of the local stack whose stack.env supplies default addresses.
    #[arg(long = "stack-dir", env = "FRESHET_STATE_DIR", default_value = DEFAULT_STACK_DIR)]
    pub stack_dir: PathBuf,
}

impl StackArgs {
    pub fn env(&self) -> StackEnv {
        StackEnv::load(&self.stack_dir)
    }
}

/// `--brokers` and `--kafka-option`.
#[derive(Clone, clap::Args)]
pub struct BrokerArgs {
    /// Kafka bootstrap servers (default: the local stack's, else 127.0.0.1:9092).
    #[arg(long, env = "FRESHET_BROKERS")]
    pub brokers: Option<String>,
    /// A librdkafka property for every Kafka client, repeatable:
    /// `--kafka-option security.protocol=SASL_SSL --kafka-option sasl.mechanisms=PLAIN`.
    /// Also from the environment: FRESHET_KAFKA_SASL_USERNAME=... is sasl.username (the
    /// name after FRESHET_KAFKA_, lower case, `_` as `.`). A flag wins over a variable.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub kafka_options: Vec<String>,
}

/// Values left out: a Kafka setting may be a password.
impl std::fmt::Debug for BrokerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self
            .kafka_options
            .iter()
            .map(|o| o.split_once('=').map_or(o.as_str(), |(k, _)| k))
            .collect();
        f.debug_struct("BrokerArgs")
            .field("brokers", &self.brokers)
            .field("kafka_options", &keys)
            .finish()
    }
}

/// The prefix of environment variables that are librdkafka properties.
pub const KAFKA_ENV_PREFIX: &str = "FRESHET_KAFKA_";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--kafka-option {0:?} is not KEY=VALUE (a librdkafka property, e.g. security.protocol=SASL_SSL)")]
pub struct BadKafkaOption(pub String);

impl BrokerArgs {
    pub fn resolve(&self, stack: &StackEnv) -> String {
        stack.resolve(self.brokers.clone(), "FRESHET_BROKERS", DEFAULT_BROKERS)
    }

    /// The librdkafka properties given: `FRESHET_KAFKA_*` variables of `env`, then the
    /// `--kafka-option` flags (which win). For `freshet_kafka::set_client_options`.
    pub fn kafka_options(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<(String, String)>, BadKafkaOption> {
        let mut options: Vec<(String, String)> = Vec::new();
        let mut put = |key: String, value: String| {
            options.retain(|(k, _)| *k != key);
            options.push((key, value));
        };
        let mut from_env: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(name, value)| {
                let property = name.strip_prefix(KAFKA_ENV_PREFIX)?;
                Some((property.to_ascii_lowercase().replace('_', "."), value))
            })
            .collect();
        from_env.sort();
        for (key, value) in from_env {
            put(key, value);
        }
        for option in &self.kafka_options {
            let (key, value) = option
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| {
                    BadKafkaOption(option.split('=').next().unwrap_or_default().to_string())
                })?;
            put(key.trim().to_string(), value.to_string());
        }
        Ok(options)
    }
}

/// `--registry-url` and the registry's credentials.
#[derive(Clone, clap::Args)]
pub struct RegistryArgs {
    /// Schema registry URL (default: the local stack's, else http://127.0.0.1:8081).
    /// Credentials in it (https://KEY:SECRET@host) are used as basic auth.
    #[arg(long, env = "FRESHET_REGISTRY_URL")]
    pub registry_url: Option<String>,
    /// Basic auth for the schema registry, USER:PASSWORD (a managed registry's API key
    /// and secret).
    #[arg(
        long,
        env = "FRESHET_REGISTRY_BASIC_AUTH",
        hide_env_values = true,
        value_name = "USER:PASSWORD",
        conflicts_with = "registry_bearer_token"
    )]
    pub registry_basic_auth: Option<String>,
    /// A bearer token for the schema registry.
    #[arg(
        long,
        env = "FRESHET_REGISTRY_BEARER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub registry_bearer_token: Option<String>,
}

/// Credentials left out.
impl std::fmt::Debug for RegistryArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("RegistryArgs")
            .field(
                "registry_url",
                &self.registry_url.as_deref().map(Registry::new),
            )
            .field("registry_basic_auth", &given(&self.registry_basic_auth))
            .field("registry_bearer_token", &given(&self.registry_bearer_token))
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--registry-basic-auth (FRESHET_REGISTRY_BASIC_AUTH) is not USER:PASSWORD: it has no ':'")]
pub struct BadRegistryAuth;

impl RegistryArgs {
    /// The registry: the URL given, else the stack's, else the default; with the
    /// credentials given (which win over any in the URL).
    pub fn resolve(&self, stack: &StackEnv) -> Result<Registry, BadRegistryAuth> {
        let registry = Registry::new(stack.resolve(
            self.registry_url.clone(),
            "FRESHET_REGISTRY_URL",
            DEFAULT_REGISTRY_URL,
        ));
        Ok(
            match (&self.registry_basic_auth, &self.registry_bearer_token) {
                (Some(pair), _) => {
                    let (username, password) = pair.split_once(':').ok_or(BadRegistryAuth)?;
                    registry.with_auth(RegistryAuth::Basic {
                        username: username.into(),
                        password: password.into(),
                    })
                }
                (None, Some(token)) => registry.with_auth(RegistryAuth::Bearer {
                    token: token.clone(),
                }),
                (None, None) => registry,
            },
        )
    }
}

/// Stops a service at start when the registry refuses its credentials (401, 403): that
/// will not change by waiting. A registry that cannot be reached, or answers with an error
/// of its own, is only logged: it may still be starting, and readers wait for it.
pub async fn check_registry(registry: &Registry) -> Result<(), freshet_avro::RegistryError> {
    match registry.check().await {
        Ok(()) => Ok(()),
        Err(e @ freshet_avro::RegistryError::Refused { .. }) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "schema registry not ready yet; continuing");
            Ok(())
        }
    }
}

/// `--redis-url` and `--redis-ca-cert`.
#[derive(Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL (default: the local stack's, else redis://127.0.0.1:6379):
    /// redis://[USER:PASSWORD@]HOST:PORT[/DB], rediss://... over TLS,
    /// redis+cluster://HOST1:PORT1,HOST2:PORT2 (rediss+cluster:// over TLS) for a cluster.
    #[arg(long, env = "FRESHET_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Check a rediss:// server's certificate against the CA certificates of this PEM
    /// file instead of the system's.
    #[arg(long, env = "FRESHET_REDIS_CA_CERT", value_name = "PEM_FILE")]
    pub redis_ca_cert: Option<PathBuf>,
}

/// The URL's password left out.
impl std::fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisArgs")
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(freshet_store::redacted_url),
            )
            .field("redis_ca_cert", &self.redis_ca_cert)
            .finish()
    }
}

impl RedisArgs {
    /// Trusts the CA certificates of `--redis-ca-cert` for `rediss://` servers, for the
    /// whole process, when given: call once at start, before any Redis client.
    pub fn install_ca_certificate(&self) -> Result<(), freshet_store::tls::TlsError> {
        match &self.redis_ca_cert {
            Some(path) => freshet_store::tls::set_ca_certificate(path),
            None => Ok(()),
        }
    }

    pub fn resolve(&self, stack: &StackEnv) -> String {
        stack.resolve(
            self.redis_url.clone(),
            "FRESHET_REDIS_URL",
            DEFAULT_REDIS_URL,
        )
    }
}

/// `--otlp-endpoint`.
#[derive(Debug, Clone, clap::Args)]
pub struct OtlpArgs {
    /// OTLP/HTTP endpoint to export traces to.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl OtlpArgs {
    /// Logs to stderr and, with an endpoint, spans over OTLP; keep the guard for the
    /// process's life.
    pub fn init(
        &self,
        service: &'static str,
    ) -> Result<freshet_telemetry::Telemetry, freshet_telemetry::TelemetryError> {
        freshet_telemetry::init(service, self.otlp_endpoint.as_deref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot serve metrics on {address}: {source} (use --metrics-listen to choose another address, or off)")]
    MetricsListen {
        address: String,
        source: std::io::Error,
    },
}

/// Serves `registry` on `/metrics` at `listen`, unless it is `off`.
pub async fn serve_metrics(
    listen: &str,
    registry: prometheus::Registry,
) -> Result<(), ServiceError> {
    if listen == "off" {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServiceError::MetricsListen {
            address: listen.to_string(),
            source,
        })?;
    freshet_telemetry::metrics::spawn_server(listener, registry);
    Ok(())
}

/// Resolves at the first SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stop requested");
}

/// A flag set at the first SIGTERM or Ctrl-C, for loops that check it between steps.
/// Needs a running tokio runtime. The signals are listened for from this call on, not
/// from when a task first runs: a SIGTERM while the service is still starting is a stop
/// like any other, never the default action's abrupt exit.
pub fn stop_flag() -> Arc<AtomicBool> {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let listening = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    tokio::spawn(async move {
        match listening {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
                tracing::info!("stop requested");
            }
            _ => shutdown_signal().await,
        }
        flag.store(true, Ordering::Relaxed);
    });
    stop
}

/// Turns transparent huge pages off for the process. mimalloc (the allocator of the
/// processor and of `freshet`'s replays) asks for them on its arenas (`MADV_HUGEPAGE`) and
/// hands freed memory back to the system in pieces of 64 KiB; each first touch of such a
/// piece then made the kernel zero a whole fresh 2 MiB page. Catching up, that zeroing took
/// 14% of the machine's CPU in the processor (a fifth of its processing thread's time);
/// without huge pages it took 0.4% (`docs/processor.md`, Performance). The setting holds
/// for memory already mapped, as the kernel checks it at each fault.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!(error = %e, "cannot turn transparent huge pages off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        brokers: BrokerArgs,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        redis: RedisArgs,
    }

    #[test]
    fn kafka_options_come_from_flags_and_the_environment_and_flags_win() {
        let cli = Cli::parse_from([
            "x",
            "--kafka-option",
            "security.protocol=SASL_SSL",
            "--kafka-option",
            "sasl.password=a=b",
        ]);
        let env = [
            ("FRESHET_KAFKA_SASL_USERNAME".to_string(), "svc".to_string()),
            (
                "FRESHET_KAFKA_SECURITY_PROTOCOL".to_string(),
                "SSL".to_string(),
            ),
            ("FRESHET_BROKERS".to_string(), "b:9092".to_string()),
        ];
        let options = cli.brokers.kafka_options(env).unwrap();
        assert_eq!(
            options,
            vec![
                ("sasl.username".to_string(), "svc".to_string()),
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.password".to_string(), "a=b".to_string()),
            ]
        );
        let shown = format!("{:?}", cli.brokers);
        assert!(
            shown.contains("sasl.password") && !shown.contains("a=b"),
            "{shown}"
        );
        let bad = Cli::parse_from(["x", "--kafka-option", "no-equals-sign"]);
        assert_eq!(
            bad.brokers.kafka_options([]).unwrap_err().to_string(),
            "--kafka-option \"no-equals-sign\" is not KEY=VALUE (a librdkafka property, e.g. security.protocol=SASL_SSL)"
        );
    }

    #[test]
    fn a_flag_wins_over_the_stack_which_wins_over_the_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(STACK_ENV_FILE),
            "# written by freshet up\nFRESHET_BROKERS=127.0.0.1:19092\nFRESHET_REDIS_URL = redis://127.0.0.1:16379\n",
        )
        .unwrap();
        let dir_arg = dir.path().display().to_string();
        let cli = Cli::parse_from([
            "x",
            "--stack-dir",
            &dir_arg,
            "--registry-url",
            "http://registry:1",
        ]);
        let stack = cli.stack.env();
        assert_eq!(cli.brokers.resolve(&stack), "127.0.0.1:19092");
        assert_eq!(cli.redis.resolve(&stack), "redis://127.0.0.1:16379");
        assert_eq!(
            cli.registry.resolve(&stack).unwrap().url(),
            "http://registry:1"
        );

        let cli = Cli::parse_from(["x", "--stack-dir", "/nonexistent", "--brokers", "b:1"]);
        let stack = cli.stack.env();
        assert_eq!(cli.brokers.resolve(&stack), "b:1");
        assert_eq!(cli.redis.resolve(&stack), DEFAULT_REDIS_URL);
        assert_eq!(
            cli.registry.resolve(&stack).unwrap().url(),
            DEFAULT_REGISTRY_URL
        );
    }

    #[test]
    fn a_redis_password_is_never_shown() {
        let cli = Cli::parse_from(["x", "--redis-url", "rediss://app:s3cret@redis:6380/1"]);
        let shown = format!("{:?}", cli.redis);
        assert!(shown.contains("rediss://app:***@redis:6380/1"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            cli.redis.install_ca_certificate().is_ok(),
            "no CA file given"
        );
    }

    #[test]
    fn registry_credentials_come_from_a_flag_and_are_never_shown() {
        let stack = StackEnv::default();
        let cli = Cli::parse_from([
            "x",
            "--registry-url",
            "https://u:from-url@r.example",
            "--registry-basic-auth",
            "key:se:cret",
        ]);
        let registry = cli.registry.resolve(&stack).unwrap();
        assert_eq!(registry.url(), "https://r.example");
        assert_eq!(
            registry.auth(),
            &RegistryAuth::Basic {
                username: "key".into(),
                password: "se:cret".into()
            }
        );
        let shown = format!("{:?} {registry:?} {registry}", cli.registry);
        assert!(
            !shown.contains("se:cret") && !shown.contains("from-url"),
            "{shown}"
        );

        let cli = Cli::parse_from(["x", "--registry-bearer-token", "tok"]);
        assert_eq!(
            cli.registry.resolve(&stack).unwrap().auth(),
            &RegistryAuth::Bearer {
                token: "tok".into()
            }
        );
        let cli = Cli::parse_from(["x", "--registry-basic-auth", "no-colon-secret"]);
        let error = cli.registry.resolve(&stack).unwrap_err().to_string();
        assert!(!error.contains("no-colon-secret"), "{error}");
        assert!(
            Cli::try_parse_from([
                "x",
                "--registry-basic-auth",
                "a:b",
                "--registry-bearer-token",
                "t"
            ])
            .is_err(),
            "basic auth and a token conflict"
        );
    }
}
