//! A Redis server that speaks only TLS and knows only the ACL users a test gives it, for
//! tests of `rediss://`: its certificates (a CA, and a server certificate for 127.0.0.1
//! and localhost signed by it) are made here with rcgen, so the test can trust that CA
//! and nothing else.

use crate::{start_server, Server};
use freshet_localstack::components::{self, Readiness};
use freshet_localstack::Tools;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::PathBuf;

pub struct TlsRedis {
    server: Server,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    /// `users`: ACL rules, one per user, e.g. `"writer on >secret ~* &* +@all"`. The
    /// default user is off: every client must name a user.
    pub fn start(users: &[&str]) -> Self {
        let tools = Tools::locate().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new()
            .prefix("freshet-tls-redis-")
            .tempdir()
            .expect("a temporary folder");
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Freshet test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(path("server.key"), server_key.serialize_pem()).unwrap();
        let data = path("data");
        std::fs::create_dir_all(&data).unwrap();

        let server = start_server(&dir, |port| {
            let mut spec = components::redis(&tools, "127.0.0.1", port, &data);
            spec.name = "tls-redis".into();
            // The plain port off, the TLS port on the one chosen.
            let at = spec.args.iter().position(|a| a == "--port").unwrap();
            spec.args[at + 1] = "0".into();
            let file = |name: &str| path(name).display().to_string();
            spec.args.extend([
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                file("server.pem"),
                "--tls-key-file".into(),
                file("server.key"),
                "--tls-ca-cert-file".into(),
                file("ca.pem"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]);
            // Each rule's words as their own arguments: redis-server joins them into the
            // config line `user NAME RULE...`.
            for user in std::iter::once(&"default off").chain(users) {
                spec.args.push("--user".into());
                spec.args
                    .extend(user.split_whitespace().map(str::to_string));
            }
            spec.readiness = Readiness::Tcp;
            spec
        });
        Self { server, dir }
    }

    /// The CA certificate (PEM) the server's certificate is signed by.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `rediss://user:password@127.0.0.1:port/db`.
    pub fn url(&self, user: &str, password: &str, db: u8) -> String {
        format!("rediss://{user}:{password}@{}/{db}", self.server.address())
    }
}
