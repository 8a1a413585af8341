//! History in the data lake, for the CLI's backfill and training sets: where a file or a
//! set of files is ([`Location`]: a local path or `s3://bucket/key`, either with `*` in
//! its last part), listing, reading and writing them ([`Lake`], through `object_store`),
//! Parquet files read as records of a source's Avro schema ([`parquet_records`]), and
//! Iceberg tables read the same way ([`iceberg_table`]).
//!
//! S3 credentials and settings come from the standard AWS environment variables, read by
//! `object_store`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION` (or `AWS_DEFAULT_REGION`), and for S3-compatible stores
//! `AWS_ENDPOINT_URL` with `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint; without an
//! access key there, from the named profile (`AWS_PROFILE`, else `default`) of the shared
//! credentials and config files; else the instance's or container's role. No credential
//! is ever part of a message.

pub mod iceberg_table;
mod location;
pub mod parquet_records;

pub use iceberg_table::{TableError, TableRows, TableShape, TableSource};
pub use location::Location;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use std::future::Future;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("{location}: {reason}")]
    BadLocation { location: String, reason: String },
    #[error("cannot reach {location}: {reason}")]
    Store { location: String, reason: String },
    #[error("{location} matches no file")]
    NothingThere { location: String },
    #[error("cannot read {location}: {reason}")]
    Read { location: String, reason: String },
    #[error("cannot write {location}: {reason}")]
    Write { location: String, reason: String },
}

/// One file of a [`Location`]: its full name and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeFile {
    pub location: Location,
    pub size: u64,
}

/// Reads and writes lake files from synchronous code anywhere (also from inside another
/// tokio runtime): the I/O runs on the lake's own small runtime, and callers wait for it.
pub struct Lake {
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

/// The runtime is let go without waiting: a lake may be dropped inside another runtime,
/// where waiting is not allowed (and nothing of the lake's runs by then).
impl Drop for Lake {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Lake {
    pub fn new() -> Result<Self, LakeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("freshet-lake")
            .enable_all()
            .build()
            .map_err(|e| LakeError::Store {
                location: "the data lake".into(),
                reason: format!("cannot start its I/O threads: {e}"),
            })?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Runs `work` on the lake's runtime and waits for it, without entering a runtime on
    /// the calling thread.
    fn wait<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        let (send, receive) = std::sync::mpsc::channel();
        let runtime = self.runtime.as_ref().expect("only taken when dropped");
        runtime.spawn(async move {
            let _ = send.send(work.await);
        });
        receive
            .recv()
            .expect("the lake's runtime finishes what it is given")
    }

    /// The files `location` names, sorted by name: the one file, or every file whose name
    /// matches its pattern. Fails when there is none.
    pub fn list(&self, location: &Location) -> Result<Vec<LakeFile>, LakeError> {
        let files = match location {
            Location::Local(path) => list_local(path, location)?,
            Location::S3 { bucket, key } => {
                let store = self.s3(bucket, location)?;
                let (prefix, pattern) = location::split_pattern(key);
                let (bucket, shown) = (bucket.clone(), location.to_string());
                self.wait(async move {
                    let prefix = object_store::path::Path::from(prefix);
                    let listed: Vec<object_store::ObjectMeta> = match &pattern {
                        Some(pattern) => store
                            .list(Some(&prefix))
                            .try_filter(|meta| {
                                std::future::ready(pattern.matches(meta.location.as_ref()))
                            })
                            .try_collect()
                            .await
                            .map_err(|e| store_error(&shown, e))?,
                        // One object: asked for by its key (a listing would take the key
                        // as a folder).
                        None => match store.head(&prefix).await {
                            Ok(meta) => vec![meta],
                            Err(object_store::Error::NotFound { .. }) => Vec::new(),
                            Err(e) => return Err(store_error(&shown, e)),
                        },
                    };
                    let mut files: Vec<LakeFile> = listed
                        .into_iter()
                        .map(|meta| LakeFile {
                            location: Location::S3 {
                                bucket: bucket.clone(),
                                key: meta.location.to_string(),
                            },
                            size: meta.size,
                        })
                        .collect();
                    files.sort_by_key(|f| f.location.to_string());
                    Ok::<_, LakeError>(files)
                })?
            }
        };
        if files.is_empty() {
            return Err(LakeError::NothingThere {
                location: location.to_string(),
            });
        }
        Ok(files)
    }

    /// The whole content of one file.
    pub fn read(&self, location: &Location) -> Result<Bytes, LakeError> {
        let shown = location.to_string();
        let read_error = |reason: String| LakeError::Read {
            location: shown.clone(),
            reason,
        };
        match location {
            Location::Local(path) => std::fs::read(path)
                .map(Bytes::from)
                .map_err(|e| read_error(e.to_string())),
            Location::S3 { bucket, key } => {
                let store = self.s3(bucket, location)?;
                let key = object_store::path::Path::from(key.as_str());
                self.wait(async move {
                    let got = store.get(&key).await?;
                    got.bytes().await
                })
                .map_err(|e| read_error(describe(e)))
            }
        }
    }

    /// Writes `bytes` as the whole content of one file (replacing it).
    pub fn write(&self, location: &Location, bytes: Bytes) -> Result<(), LakeError> {
        let shown = location.to_string();
        let write_error = |reason: String| LakeError::Write {
            location: shown.clone(),
            reason,
        };
        match location {
            Location::Local(path) => {
                std::fs::write(path, &bytes).map_err(|e| write_error(e.to_string()))
            }
            Location::S3 { bucket, key } => {
                let store = self.s3(bucket, location)?;
                let key = object_store::path::Path::from(key.as_str());
                self.wait(async move { store.put(&key, bytes.into()).await.map(|_| ()) })
                    .map_err(|e| write_error(describe(e)))
            }
        }
    }
}

impl Lake {
    /// The S3 store of `bucket`, configured from the AWS environment variables, with the
    /// keys of the named profile when the environment has none.
    fn s3(&self, bucket: &str, location: &Location) -> Result<Arc<dyn ObjectStore>, LakeError> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            if let Some(keys) = self.wait(profile_credentials()) {
                builder = builder
                    .with_access_key_id(keys.access_key_id)
                    .with_secret_access_key(keys.secret_access_key);
                if let Some(token) = keys.session_token {
                    builder = builder.with_token(token);
                }
            }
        }
        builder
            .build()
            .map(|store| Arc::new(store) as Arc<dyn ObjectStore>)
            .map_err(|e| store_error(&location.to_string(), e))
    }
}

/// The keys of the named profile (`AWS_PROFILE`, else `default`) in the shared
/// credentials and config files (`~/.aws/credentials`, `~/.aws/config`, or the files
/// `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` name), when there are some.
async fn profile_credentials() -> Option<reqsign_aws_v4::Credential> {
    use reqsign_core::ProvideCredential;
    let context = reqsign_core::Context::new()
        .with_file_read(reqsign_file_read_tokio::TokioFileRead)
        .with_env(reqsign_core::OsEnv);
    match reqsign_aws_v4::ProfileCredentialProvider::new()
        .provide_credential(&context)
        .await
    {
        Ok(found) => found,
        Err(e) => {
            // The error names the profile and the file, never a key.
            tracing::warn!(error = %e, "cannot read the AWS profile");
            None
        }
    }
}

fn store_error(location: &str, e: object_store::Error) -> LakeError {
    LakeError::Store {
        location: location.to_string(),
        reason: describe(e),
    }
}

/// object_store's message with its causes; it names no credential.
fn describe(e: object_store::Error) -> String {
    with_causes(e.to_string(), &e)
}

/// `text` followed by each cause of `e` that it does not already say.
pub(crate) fn with_causes(mut text: String, e: &dyn std::error::Error) -> String {
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn list_local(path: &std::path::Path, location: &Location) -> Result<Vec<LakeFile>, LakeError> {
    let text = path.display().to_string();
    let bad = |reason: String| LakeError::BadLocation {
        location: location.to_string(),
        reason,
    };
    let paths: Vec<std::path::PathBuf> = if text.contains('*') {
        glob::glob(&text)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?
    } else if path.exists() {
        vec![path.to_path_buf()]
    } else {
        Vec::new()
    };
    let mut files = paths
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            LakeFile {
                location: Location::Local(p),
                size,
            }
        })
        .collect::<Vec<_>>();
    files.sort_by_key(|f| f.location.to_string());
    Ok(files)
}
