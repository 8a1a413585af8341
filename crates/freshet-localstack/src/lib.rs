//! Runs the local Freshet stack as plain processes, without containers.
//!
//! - [`tools`]: finds the binaries the stack runs (the tansu broker, redis-server), as
//!   installed by `scripts/bootstrap.sh`, and says how to install a missing one.
//! - [`process`]: one managed process: spawned in its own process group with its output
//!   in a log file, checked for readiness, stopped with SIGTERM then SIGKILL.
//! - [`components`]: how each component of the stack is started (command line, port,
//!   readiness check, the `stack.env` variable that publishes its address).
//! - [`stack`]: the whole stack under one state folder (`.freshet/` by default): start in
//!   dependency order, record pids in `stack.json`, write `stack.env`, report status, stop.
//!
//! The CLI's `freshet up|status|down` and the integration-test kit both start components
//! through this crate, so tests run the stack the way users do.

pub mod components;
pub mod process;
pub mod stack;
pub mod tools;

pub use components::{ComponentSpec, Readiness};
pub use process::{free_port, ManagedProcess, ProcessError};
pub use stack::{StackConfig, StackError, StackState};
pub use tools::{ServiceBinaries, ToolError, Tools};
