//! One managed process: started in its own process group with its output in a log file,
//! checked for readiness, stopped with SIGTERM and, after a grace period, SIGKILL.
//!
//! A [`ManagedProcess`] stops its process when dropped, so an error half-way through
//! starting a stack never leaves servers behind; [`ManagedProcess::detach`] hands the
//! process over to run on its own (what `freshet up --detach` does).

use crate::components::{ComponentSpec, Readiness};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {name} ({program}): {cause}")]
    Spawn {
        name: String,
        program: String,
        cause: std::io::Error,
    },
    #[error("cannot create log file {}: {cause}", path.display())]
    Log {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("port {port} on {host} is already in use, so {name} cannot listen there; stop whatever holds it or choose another port")]
    PortInUse {
        name: String,
        host: String,
        port: u16,
    },
    #[error("{name} exited during start-up ({status}); last lines of {}:\n{tail}", log.display())]
    Exited {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} did not become ready on {address} within {}s; last lines of {}:\n{tail}", timeout.as_secs(), log.display())]
    NotReady {
        name: String,
        address: String,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
}

/// A free TCP port on 127.0.0.1, chosen by the kernel.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the kernel hands out a free loopback port")
}

#[derive(Debug)]
pub struct ManagedProcess {
    pub name: String,
    pub pid: i32,
    pub log: PathBuf,
    child: Option<Child>,
}

impl ManagedProcess {
    /// Starts the component with stdout and stderr appended to `log`. Fails at once if
    /// its port is taken, rather than letting it die with a less clear message.
    pub fn start(spec: &ComponentSpec, log: &Path) -> Result<Self, ProcessError> {
        if TcpListener::bind((spec.host.as_str(), spec.port)).is_err() {
            return Err(ProcessError::PortInUse {
                name: spec.name.clone(),
                host: spec.host.clone(),
                port: spec.port,
            });
        }
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|cause| ProcessError::Log {
                path: log.to_path_buf(),
                cause,
            })?;
        }
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|cause| ProcessError::Log {
                    path: log.to_path_buf(),
                    cause,
                })
        };
        let (stdout, stderr) = (open()?, open()?);
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Own process group: a Ctrl-C in the terminal reaches `freshet up`, which then
            // stops the components in order, instead of reaching every child at once.
            .process_group(0);
        for key in &spec.env_remove {
            command.env_remove(key);
        }
        let child = command.spawn().map_err(|cause| ProcessError::Spawn {
            name: spec.name.clone(),
            program: spec.program.display().to_string(),
            cause,
        })?;
        Ok(Self {
            name: spec.name.clone(),
            pid: child.id() as i32,
            log: log.to_path_buf(),
            child: Some(child),
        })
    }

    /// Waits until the component answers its readiness check.
    pub fn wait_ready(
        &mut self,
        spec: &ComponentSpec,
        timeout: Duration,
    ) -> Result<(), ProcessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(ProcessError::Exited {
                    name: self.name.clone(),
                    status: status.to_string(),
                    log: self.log.clone(),
                    tail: log_tail(&self.log, 20),
                });
            }
            if check_ready(&spec.host, spec.port, &spec.readiness) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ProcessError::NotReady {
                    name: self.name.clone(),
                    address: spec.address(),
                    timeout,
                    log: self.log.clone(),
                    tail: log_tail(&self.log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process has exited (only known for processes this one started).
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Leaves the process running on its own; returns its pid.
    pub fn detach(mut self) -> i32 {
        self.child = None;
        self.pid
    }

    /// Stops the process: SIGTERM, then SIGKILL after [`STOP_GRACE`].
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
                let deadline = Instant::now() + STOP_GRACE;
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Whether a process with this pid exists and runs `program` (guards against a pid
/// reused by an unrelated process since the state file was written).
pub fn is_running(pid: i32, program: &Path) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // A zombie has exited; only its parent has not collected it yet.
    if stat
        .rsplit(')')
        .next()
        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    {
        return false;
    }
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => {
            let wanted = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
            exe == wanted || exe.file_name() == wanted.file_name()
        }
        // Not ours to inspect: trust the pid.
        Err(_) => true,
    }
}

/// Stops a process that this one did not start (a detached component): SIGTERM, wait up
/// to [`STOP_GRACE`], then SIGKILL. Returns whether it had to be killed.
pub fn stop_pid(pid: i32, program: &Path) -> bool {
    if !is_running(pid, program) {
        return false;
    }
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while kill(pid, None).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if kill(pid, None).is_ok() {
        let _ = kill(pid, Signal::SIGKILL);
        return true;
    }
    false
}

/// Runs a component's readiness check once.
pub fn check_ready(host: &str, port: u16, readiness: &Readiness) -> bool {
    let Some(addr): Option<SocketAddr> = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    match readiness {
        Readiness::Tcp => true,
        Readiness::RedisPing => {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut reply = [0u8; 7];
            stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
        }
        Readiness::Http { path } => {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut status = [0u8; 12];
            stream.write_all(request.as_bytes()).is_ok()
                && stream.read_exact(&mut status).is_ok()
                && status.starts_with(b"HTTP/1.")
                && &status[9..12] == b"200"
        }
    }
}

/// The body of `GET {path}` on `host:port`, if it answers within a second.
pub fn http_get(host: &str, port: u16, path: &str) -> Option<String> {
    let addr: SocketAddr = (host, port).to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.is_empty() {
        "(the log is empty)".into()
    } else {
        tail
    }
}
