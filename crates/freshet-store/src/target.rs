//! Where the feature store is: one Redis server, or a Redis Cluster.
//!
//! A URL in the redis crate's forms (`redis://[user:password@]host:port[/db]`) is one
//! server. A Redis Cluster is named by the scheme `redis+cluster` and a comma-separated
//! list of some of its nodes: `redis+cluster://[user:password@]host1:port1,host2:port2`;
//! the client learns the rest of the cluster (and its slots) from them. Over TLS, the
//! schemes are `rediss://` and `rediss+cluster://` (see [`crate::tls`]).
//!
//! In a cluster, one entity is one key (see `freshet_core::store_layout`), so all of its
//! views live in one slot and a lookup is one command on one node. Many keys cannot be
//! pipelined across slots, so a cluster's reads and writes are sent as concurrent
//! commands; the cluster connection sends each to its node, all nodes in parallel, and
//! pipelines those to the same node.

use crate::{RawFields, RawHash, WRITE_CHUNK};
use freshet_core::store_layout::{FeatureUpdate, ViewStorage, Writer, VERSIONED_WRITE_SCRIPT};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use std::sync::LazyLock;
use std::time::Duration;

/// The scheme naming a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster";
/// The scheme naming a Redis Cluster reached over TLS.
pub const TLS_CLUSTER_SCHEME: &str = "rediss+cluster";

static SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(VERSIONED_WRITE_SCRIPT));

#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL {url:?}: {reason}")]
pub struct BadStoreUrl {
    pub url: String,
    pub reason: String,
}

/// `url` fit for logs and error messages: a password in it (`redis://user:pass@host`,
/// `rediss://:pass@host`, a cluster URL's) replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    if user.len() == userinfo.len() {
        // No password: `redis://user@host`.
        return url.to_string();
    }
    format!("{scheme}://{user}:***{}", &rest[at..])
}

/// The `redis://` URL of each node a cluster URL lists (credentials and options kept;
/// `rediss://` for a `rediss+cluster://` URL); `None` for a URL that is not a cluster's.
pub fn cluster_node_urls(url: &str) -> Option<Vec<String>> {
    let (node_scheme, rest) = [(TLS_CLUSTER_SCHEME, "rediss"), (CLUSTER_SCHEME, "redis")]
        .into_iter()
        .find_map(|(scheme, node_scheme)| {
            let rest = url.strip_prefix(scheme)?.strip_prefix("://")?;
            Some((node_scheme, rest))
        })?;
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    Some(
        hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|host| format!("{node_scheme}://{userinfo}{host}{tail}"))
            .collect(),
    )
}

/// One Redis server or a cluster.
#[derive(Clone)]
pub enum StoreTarget {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

impl StoreTarget {
    /// Checks the URL; connects to nothing. `timeout` bounds connecting and each answer
    /// of a cluster's nodes.
    pub fn parse(url: &str, timeout: Option<Duration>) -> Result<Self, BadStoreUrl> {
        let bad = |reason: String| BadStoreUrl {
            url: redacted_url(url),
            // Parsers quote what they could not read, which may be the password.
            reason: reason.replace(url, &redacted_url(url)),
        };
        let Some(nodes) = cluster_node_urls(url) else {
            return crate::tls::client(url)
                .map(|client| StoreTarget::Single(Box::new(client)))
                .map_err(|e| bad(e.to_string()));
        };
        if nodes.is_empty() {
            return Err(bad(format!(
                "a cluster URL lists its nodes: {CLUSTER_SCHEME}://host1:port1,host2:port2"
            )));
        }
        let mut builder = crate::tls::cluster_builder(nodes);
        if let Some(timeout) = timeout {
            builder = builder
                .connection_timeout(timeout)
                .response_timeout(timeout);
        }
        builder
            .build()
            .map(|client| StoreTarget::Cluster(Box::new(client)))
            .map_err(|e| bad(e.to_string()))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, StoreTarget::Cluster(_))
    }

    /// A connection for writers: reconnects by itself after a failure.
    pub async fn connect(&self) -> redis::RedisResult<StoreConnection> {
        Ok(match self {
            StoreTarget::Single(client) => {
                StoreConnection::Single(ConnectionManager::new(client.as_ref().clone()).await?)
            }
            StoreTarget::Cluster(client) => {
                StoreConnection::Cluster(client.get_async_connection().await?)
            }
        })
    }
}

/// A connection to one server or to a cluster; cheap to clone (clones share it).
#[derive(Clone)]
pub enum StoreConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl StoreConnection {
    /// [`crate::write_updates`] on either kind of store.
    pub async fn write_updates<'a>(
        &mut self,
        updates: impl IntoIterator<Item = (&'a FeatureUpdate, &'a ViewStorage)>,
        writer: Writer,
    ) -> redis::RedisResult<usize> {
        match self {
            StoreConnection::Single(connection) => {
                crate::write_updates(connection, updates, writer).await
            }
            StoreConnection::Cluster(connection) => write_each(connection, updates, writer).await,
        }
    }

    /// [`crate::read_fields`] on either kind of store.
    pub async fn read_fields(
        &mut self,
        requests: &[(String, &[&str])],
    ) -> redis::RedisResult<Vec<RawFields>> {
        match self {
            StoreConnection::Single(connection) => crate::read_fields(connection, requests).await,
            StoreConnection::Cluster(connection) => read_each(connection, requests).await,
        }
    }

    /// [`crate::read_hashes`] on either kind of store, any number of keys (in pipelines of
    /// [`WRITE_CHUNK`], so that each is answered within the connection's response timeout).
    pub async fn read_hashes(&mut self, keys: &[String]) -> redis::RedisResult<Vec<RawHash>> {
        match self {
            StoreConnection::Single(connection) => {
                let mut hashes = Vec::with_capacity(keys.len());
                for chunk in keys.chunks(WRITE_CHUNK) {
                    hashes.extend(crate::read_hashes(connection, chunk).await?);
                }
                Ok(hashes)
            }
            StoreConnection::Cluster(connection) => {
                let reads = keys.iter().map(|key| {
                    let mut connection = connection.clone();
                    async move {
                        redis::cmd("HGETALL")
                            .arg(key)
                            .query_async::<RawHash>(&mut connection)
                            .await
                    }
                });
                futures::future::try_join_all(reads).await
            }
        }
    }

    /// Sends `PING` (to some node, in a cluster).
    pub async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            StoreConnection::Single(c) => redis::cmd("PING").query_async(c).await,
            StoreConnection::Cluster(c) => redis::cmd("PING").query_async(c).await,
        }
    }
}

/// Versioned writes as concurrent commands (a pipeline cannot span slots).
async fn write_each<'a, C: ConnectionLike + Clone + Send>(
    connection: &C,
    updates: impl IntoIterator<Item = (&'a FeatureUpdate, &'a ViewStorage)>,
    writer: Writer,
) -> redis::RedisResult<usize> {
    let mut applied = 0;
    let mut updates = updates.into_iter().peekable();
    while updates.peek().is_some() {
        let writes = updates.by_ref().take(WRITE_CHUNK).map(|(update, storage)| {
            let mut connection = connection.clone();
            let mut invocation = SCRIPT.key(update.key(storage));
            invocation.arg(update.script_args(storage, writer));
            async move { invocation.invoke_async::<i64>(&mut connection).await }
        });
        let results = futures::future::try_join_all(writes).await?;
        applied += results.iter().filter(|r| **r == 1).count();
    }
    Ok(applied)
}

/// `HMGET`s as concurrent commands, in order; a key answered with an error (e.g.
/// `WRONGTYPE`) fails only its own read.
async fn read_each<C: ConnectionLike + Clone + Send>(
    connection: &C,
    requests: &[(String, &[&str])],
) -> redis::RedisResult<Vec<RawFields>> {
    let reads = requests.iter().map(|(key, fields)| {
        let mut connection = connection.clone();
        async move {
            match redis::cmd("HMGET")
                .arg(key)
                .arg(*fields)
                .query_async::<RawFields>(&mut connection)
                .await
            {
                Err(e) if e.code() == Some("WRONGTYPE") => Ok(RawFields::failed(e.to_string())),
                other => other,
            }
        }
    });
    futures::future::try_join_all(reads).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_lists_its_nodes_over_tls_when_its_scheme_says() {
        assert_eq!(
            cluster_node_urls("redis+cluster://u:p@a:1,b:2/0"),
            Some(vec![
                "redis://u:p@a:1/0".to_string(),
                "redis://u:p@b:2/0".to_string()
            ])
        );
        assert_eq!(
            cluster_node_urls("rediss+cluster://a:1, b:2"),
            Some(vec!["rediss://a:1".to_string(), "rediss://b:2".to_string()])
        );
        assert_eq!(cluster_node_urls("rediss://a:1"), None);
        let target = StoreTarget::parse("rediss+cluster://a:1,b:2", None).unwrap();
        assert!(target.is_cluster());
        assert!(!StoreTarget::parse("rediss://a:1/0", None)
            .unwrap()
            .is_cluster());
    }

    #[test]
    fn passwords_are_left_out_of_urls_shown() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://app:s3cret@redis:6379/0",
                "redis://app:***@redis:6379/0",
            ),
            ("rediss://:s3cret@redis:6380", "rediss://:***@redis:6380"),
            ("redis://app@redis", "redis://app@redis"),
            (
                "redis+cluster://u:p@w@a:1,b:2",
                "redis+cluster://u:***@a:1,b:2",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
        let err = StoreTarget::parse("redis://app:s3cret@[bad", None)
            .err()
            .unwrap();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
