//! An S3 API server for tests: moto in server mode (from PyPI, in
//! `$FRESHET_TOOLS_DIR/lake-venv`, installed by `scripts/bootstrap.sh --with-flink`) on a
//! free port, with buckets and objects put and fetched through boto3, the AWS SDK users
//! have: what Freshet writes is read back by a third-party client, and the other way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct S3Server {
    pub port: u16,
    child: Child,
    python: PathBuf,
}

/// The lake venv's Python, when it has moto and boto3.
pub fn lake_python() -> Option<PathBuf> {
    let python = crate::tools_dir().join("lake-venv/bin/python");
    Command::new(&python)
        .args(["-c", "import moto, boto3"])
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(python)
}

/// The lake venv's Python, or `None` after saying why the test is skipped; with
/// `FRESHET_REQUIRE_TOOLS=1` (the project's test command) a missing venv fails instead.
pub fn lake_python_or_skip() -> Option<PathBuf> {
    let python = lake_python();
    if python.is_none() {
        let reason = "no lake-venv with moto and boto3 (run scripts/bootstrap.sh --with-flink)";
        if std::env::var("FRESHET_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{reason}");
        }
        eprintln!("SKIPPED: {reason}");
    }
    python
}

impl S3Server {
    pub fn start(python: &Path) -> Self {
        let port = freshet_localstack::free_port();
        let server = python.with_file_name("moto_server");
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not come up on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            port,
            child,
            python: python.to_path_buf(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a client of this server needs (the standard AWS variables).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "freshet-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "freshet-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Runs `script` with boto3's S3 client bound to `s3`; panics with its output if it
    /// fails.
    fn boto(&self, script: &str, args: &[&str]) -> Vec<u8> {
        let program = format!(
            "import sys, boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='freshet-test', aws_secret_access_key='freshet-test-secret', region_name='us-east-1')\n{script}",
            self.endpoint()
        );
        let output = Command::new(&self.python)
            .args(["-c", &program])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.boto("s3.create_bucket(Bucket=sys.argv[1])", &[bucket]);
    }

    /// Uploads the local file `from` as `s3://bucket/key`.
    pub fn put(&self, bucket: &str, key: &str, from: &Path) {
        self.boto(
            "s3.upload_file(sys.argv[3], sys.argv[1], sys.argv[2])",
            &[bucket, key, from.to_str().unwrap()],
        );
    }

    /// The content of `s3://bucket/key`.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.boto(
            "sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[1], Key=sys.argv[2])['Body'].read())",
            &[bucket, key],
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
