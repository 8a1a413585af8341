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
    /// The keys requests are signed with (the only ones accepted when started with
    /// [`S3Server::start_with_auth`]).
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The lake venv's Python, when it has moto, boto3 and pyiceberg.
pub fn lake_python() -> Option<PathBuf> {
    let python = crate::tools_dir().join("lake-venv/bin/python");
    Command::new(&python)
        .args(["-c", "import moto, boto3, pyiceberg"])
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(python)
}

/// The lake venv's Python, or `None` after saying why the test is skipped; with
/// `FRESHET_REQUIRE_TOOLS=1` (the project's test command) a missing venv fails instead.
pub fn lake_python_or_skip() -> Option<PathBuf> {
    let python = lake_python();
    if python.is_none() {
        let reason =
            "no lake-venv with moto, boto3 and pyiceberg (run scripts/bootstrap.sh --with-flink)";
        if std::env::var("FRESHET_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{reason}");
        }
        eprintln!("SKIPPED: {reason}");
    }
    python
}

impl S3Server {
    /// A server that takes requests signed with any keys.
    pub fn start(python: &Path) -> Self {
        Self::spawn(python, None)
    }

    /// A server that checks every request's signature: only the keys of the one IAM user
    /// it is started with (`access_key_id`, `secret_access_key`) are accepted.
    pub fn start_with_auth(python: &Path) -> Self {
        // moto lets the first requests through unchecked: the three that make the user.
        let mut server = Self::spawn(python, Some(3));
        let keys = server.boto_with(
            "iam",
            "import json\n\
             iam.create_user(UserName='freshet')\n\
             iam.put_user_policy(UserName='freshet', PolicyName='all', PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))\n\
             key = iam.create_access_key(UserName='freshet')['AccessKey']\n\
             print(key['AccessKeyId'], key['SecretAccessKey'])",
            &[],
        );
        let keys = String::from_utf8(keys).unwrap();
        let (id, secret) = keys.trim().split_once(' ').expect("two keys");
        server.access_key_id = id.into();
        server.secret_access_key = secret.into();
        server
    }

    fn spawn(python: &Path, unchecked_requests: Option<u32>) -> Self {
        let port = freshet_localstack::free_port();
        let server = python.with_file_name("moto_server");
        let mut command = Command::new(&server);
        if let Some(count) = unchecked_requests {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", count.to_string());
        }
        let child = command
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
            access_key_id: "freshet-test".into(),
            secret_access_key: "freshet-test-secret".into(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a client of this server needs (the standard AWS variables).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Runs `script` with boto3's S3 client bound to `s3`; panics with its output if it
    /// fails.
    fn boto(&self, script: &str, args: &[&str]) -> Vec<u8> {
        self.boto_with("s3", script, args)
    }

    /// Runs `script` with boto3's `service` client bound to a variable of that name.
    fn boto_with(&self, service: &str, script: &str, args: &[&str]) -> Vec<u8> {
        let program = format!(
            "import sys, boto3\n{service} = boto3.client('{service}', endpoint_url='{}', aws_access_key_id='{}', aws_secret_access_key='{}', region_name='us-east-1')\n{script}",
            self.endpoint(),
            self.access_key_id,
            self.secret_access_key,
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

    /// Copies every object of `bucket` here into the same bucket of `other` (which must
    /// exist there).
    pub fn copy_bucket(&self, bucket: &str, other: &S3Server) {
        self.boto(
            "to = boto3.client('s3', endpoint_url=sys.argv[2], aws_access_key_id=sys.argv[3], aws_secret_access_key=sys.argv[4], region_name='us-east-1')\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[1]):\n\
             \x20   for item in page.get('Contents', []):\n\
             \x20       body = s3.get_object(Bucket=sys.argv[1], Key=item['Key'])['Body'].read()\n\
             \x20       to.put_object(Bucket=sys.argv[1], Key=item['Key'], Body=body)",
            &[
                bucket,
                &other.endpoint(),
                &other.access_key_id,
                &other.secret_access_key,
            ],
        );
    }

    /// Writes Iceberg tables with pyiceberg into a SQL catalog on SQLite at `catalog`,
    /// the warehouse in this server's `lake` bucket (`iceberg_tables.py` says what they
    /// hold): `lake.events` from the JSON Lines events of `events`, in two appends (the
    /// events from `split` on first). Its snapshot ids, oldest first.
    pub fn write_iceberg_tables(&self, catalog: &Path, events: &Path, split: usize) -> Vec<i64> {
        // Built in, as `flink::FLINK_SQL_RUNNER` is (and for the same reason).
        let output = Command::new(&self.python)
            .envs(self.env())
            .arg("-c")
            .arg(include_str!("iceberg_tables.py"))
            .args([
                catalog.to_str().unwrap(),
                &self.endpoint(),
                events.to_str().unwrap(),
                &split.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pyiceberg: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let said: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        said["snapshots"]
            .as_array()
            .expect("snapshot ids")
            .iter()
            .map(|id| id.as_i64().unwrap())
            .collect()
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
