//! A small etcd v3 client: the calls discovery, `fulcrum register` and the
//! cluster store make (range, put, delete, watch, leases, authenticate).
//!
//! gRPC and HTTP/2 come from tonic; the message types are in [`super::pb`]
//! (see there why they are not generated). One [`Client`] talks to one member:
//! [`Client::connect`] tries the endpoints in turn from a given index, so a
//! caller that loses its member reconnects to the next one. Linearizable reads
//! (the default here) fail on a member without quorum, which is how callers
//! learn that the store is not usable; watches carry etcd's `hasleader`
//! metadata so a member that loses its leader cancels them instead of going
//! silent.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Streaming;

use super::pb;

/// Time allowed for one unary call (a linearizable read needs the leader).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed to open a connection to one member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Client TLS files (all PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA that signed the members' certificates; the system roots when absent.
    pub ca: Option<PathBuf>,
    /// Client certificate for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    /// Key of `cert`.
    pub key: Option<PathBuf>,
}

/// How to reach an etcd cluster. (`Debug` leaves the password out.)
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`.
    pub endpoints: Vec<String>,
    /// etcd user (with `password`), for clusters with auth enabled.
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<String>,
    /// TLS to the members; `HOST:PORT` endpoints then mean https.
    pub tls: Option<TlsFiles>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// A connection to one etcd member.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    token: Option<AsciiMetadataValue>,
    /// The endpoint this client talks to (for logs and status).
    pub endpoint: String,
    /// Its index in `ConnectOptions::endpoints`.
    pub index: usize,
}

/// The end of `prefix`'s key range: the prefix with its last byte + 1
/// (etcd's `clientv3.GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): the range runs to the end of the key space.
    vec![0]
}

fn url(endpoint: &str, tls: bool) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

fn tls_config(files: &TlsFiles) -> Result<ClientTlsConfig, String> {
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let mut cfg = ClientTlsConfig::new();
    cfg = match &files.ca {
        Some(ca) => cfg.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => cfg.with_native_roots(),
    };
    match (&files.cert, &files.key) {
        (Some(c), Some(k)) => cfg = cfg.identity(Identity::from_pem(read(c)?, read(k)?)),
        (None, None) => {}
        _ => return Err("a TLS client certificate needs both `cert` and `key`".into()),
    }
    Ok(cfg)
}

fn status_text(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        s.message().to_string()
    }
}

impl Client {
    /// Connect to the first member that answers, trying the endpoints in turn
    /// from `start` (modulo their number), and log in when a user is set.
    pub async fn connect(opts: &ConnectOptions, start: usize) -> Result<Client, String> {
        if opts.endpoints.is_empty() {
            return Err("no etcd endpoints".into());
        }
        let n = opts.endpoints.len();
        let mut errors = Vec::new();
        for k in 0..n {
            let index = (start + k) % n;
            let Some(ep) = opts.endpoints.get(index) else {
                continue;
            };
            match Self::connect_one(opts, ep, index).await {
                Ok(c) => return Ok(c),
                Err(e) => errors.push(format!("{ep}: {e}")),
            }
        }
        Err(format!("no etcd member reachable ({})", errors.join("; ")))
    }

    async fn connect_one(opts: &ConnectOptions, ep: &str, index: usize) -> Result<Client, String> {
        let uri = url(ep, opts.tls.is_some());
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("bad endpoint `{uri}`: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // Notice a member that vanished without closing the connection.
            .http2_keep_alive_interval(Duration::from_secs(3))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true);
        if let Some(files) = &opts.tls {
            endpoint = endpoint
                .tls_config(tls_config(files)?)
                .map_err(|e| format!("TLS setup: {e}"))?;
        }
        let channel = tokio::time::timeout(CONNECT_TIMEOUT * 2, endpoint.connect())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let mut client = Client {
            channel,
            token: None,
            endpoint: ep.to_string(),
            index,
        };
        if let Some(user) = &opts.username {
            let resp: pb::AuthenticateResponse = client
                .unary(
                    pb::path::AUTHENTICATE,
                    pb::AuthenticateRequest {
                        name: user.clone(),
                        password: opts.password.clone().unwrap_or_default(),
                    },
                )
                .await
                .map_err(|e| format!("login as `{user}` failed: {e}"))?;
            let token = MetadataValue::try_from(resp.token.as_str())
                .map_err(|_| "etcd returned an unusable auth token".to_string())?;
            client.token = Some(token);
        }
        Ok(client)
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert("token", t.clone());
        }
        r
    }

    async fn unary<Req, Resp>(&self, path: &'static str, msg: Req) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let call = async {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone());
            grpc.ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.unary(
                self.request(msg),
                http::uri::PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| status_text(&s))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| format!("{} timed out (no quorum?)", path))?
    }

    async fn streaming<Req, Resp>(
        &self,
        path: &'static str,
        first: Req,
        require_leader: bool,
    ) -> Result<(mpsc::Sender<Req>, Streaming<Resp>), String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::channel::<Req>(16);
        tx.send(first)
            .await
            .map_err(|_| "request stream closed".to_string())?;
        let call = async {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone());
            grpc.ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            let mut req = self.request(tokio_stream::wrappers::ReceiverStream::new(rx));
            if require_leader {
                req.metadata_mut()
                    .insert("hasleader", MetadataValue::from_static("true"));
            }
            grpc.streaming(req, http::uri::PathAndQuery::from_static(path), codec)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| status_text(&s))
        };
        let stream = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| format!("{path} timed out"))??;
        Ok((tx, stream))
    }

    /// Every key under `prefix`, read linearizably, and the store's revision
    /// at that read.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(i64, Vec<pb::KeyValue>), String> {
        let resp: pb::RangeResponse = self
            .unary(
                pb::path::RANGE,
                pb::RangeRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix.as_bytes()),
                    ..Default::default()
                },
            )
            .await?;
        let rev = resp.header.map(|h| h.revision).unwrap_or(0);
        Ok((rev, resp.kvs))
    }

    /// One key's value, read linearizably.
    pub async fn get(&self, key: &str) -> Result<(i64, Option<pb::KeyValue>), String> {
        let resp: pb::RangeResponse = self
            .unary(
                pb::path::RANGE,
                pb::RangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                },
            )
            .await?;
        let rev = resp.header.map(|h| h.revision).unwrap_or(0);
        Ok((rev, resp.kvs.into_iter().next()))
    }

    /// Write `key` (attached to `lease` when non-zero); returns the revision.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, String> {
        let resp: pb::PutResponse = self
            .unary(
                pb::path::PUT,
                pb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.to_vec(),
                    lease,
                },
            )
            .await?;
        Ok(resp.header.map(|h| h.revision).unwrap_or(0))
    }

    /// Delete `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: &str) -> Result<i64, String> {
        let resp: pb::DeleteRangeResponse = self
            .unary(
                pb::path::DELETE_RANGE,
                pb::DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    range_end: Vec::new(),
                },
            )
            .await?;
        Ok(resp.deleted)
    }

    /// Grant a lease of `ttl` seconds; returns its id.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, String> {
        let resp: pb::LeaseGrantResponse = self
            .unary(pb::path::LEASE_GRANT, pb::LeaseGrantRequest { ttl, id: 0 })
            .await?;
        if !resp.error.is_empty() {
            return Err(resp.error);
        }
        Ok(resp.id)
    }

    /// Revoke a lease: its keys are deleted at once.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), String> {
        let _: pb::LeaseRevokeResponse = self
            .unary(pb::path::LEASE_REVOKE, pb::LeaseRevokeRequest { id })
            .await?;
        Ok(())
    }

    /// Open a keep-alive stream for lease `id` (one ping sent). Send further
    /// pings on the returned sender; each gets a response with the TTL left.
    pub async fn lease_keep_alive(
        &self,
        id: i64,
    ) -> Result<
        (
            mpsc::Sender<pb::LeaseKeepAliveRequest>,
            Streaming<pb::LeaseKeepAliveResponse>,
        ),
        String,
    > {
        self.streaming(
            pb::path::LEASE_KEEP_ALIVE,
            pb::LeaseKeepAliveRequest { id },
            false,
        )
        .await
    }

    /// Watch every key under `prefix` from revision `start` (0: from now).
    /// The sender keeps the request side open; drop it to end the watch.
    pub async fn watch_prefix(
        &self,
        prefix: &str,
        start: i64,
    ) -> Result<(mpsc::Sender<pb::WatchRequest>, Streaming<pb::WatchResponse>), String> {
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix.as_bytes()),
                    start_revision: start,
                    progress_notify: true,
                    ..Default::default()
                },
            )),
        };
        self.streaming(pb::path::WATCH, create, true).await
    }
}

/// A prefix watcher's view of the store: the keys under a prefix, kept
/// current from a consistent read and then the watch from revision + 1.
/// Used by discovery and the cluster store; the caller decides what a key's
/// value means.
pub struct PrefixMirror {
    opts: ConnectOptions,
    prefix: String,
    /// The key → value map (keys with the prefix removed).
    pub keys: std::collections::BTreeMap<String, Vec<u8>>,
    /// The store revision `keys` reflects; 0 before the first read.
    pub revision: i64,
    next_endpoint: usize,
    /// Index of the member the mirror is connected to, once connected.
    member: Option<usize>,
}

impl PrefixMirror {
    /// A mirror of `prefix` (nothing read yet).
    pub fn new(opts: ConnectOptions, prefix: String) -> PrefixMirror {
        PrefixMirror {
            opts,
            prefix,
            keys: Default::default(),
            revision: 0,
            next_endpoint: 0,
            member: None,
        }
    }

    /// Index (in the endpoints) of the member the mirror reads from now, or
    /// last read from; `None` before it first connected.
    pub fn member(&self) -> Option<usize> {
        self.member
    }

    /// Use new connect options from the next connect on (a rotated password).
    pub fn set_options(&mut self, opts: ConnectOptions) {
        self.opts = opts;
    }

    fn strip(&self, key: &[u8]) -> Option<String> {
        let k = std::str::from_utf8(key).ok()?;
        k.strip_prefix(self.prefix.as_str()).map(str::to_string)
    }

    /// Connect, read and watch until the connection or the watch breaks;
    /// `on` is called each time `keys` changed (a full read, or a batch of
    /// watch events). Returns the reason it stopped
    /// (the caller reports it, waits and calls again: the next call resumes
    /// from `revision + 1`, or re-reads everything when that was compacted).
    pub async fn run_once(&mut self, on: &mut (impl FnMut(&Self) + Send)) -> String {
        let client = match Client::connect(&self.opts, self.next_endpoint).await {
            Ok(c) => c,
            Err(e) => {
                self.next_endpoint += 1;
                return e;
            }
        };
        // Next time start with the member after this one, in case this one
        // is the problem (no leader, partitioned).
        self.next_endpoint = client.index + 1;
        self.member = Some(client.index);
        let mut need_read = self.revision == 0;
        loop {
            if need_read {
                match client.range_prefix(&self.prefix).await {
                    Ok((rev, kvs)) => {
                        self.keys = kvs
                            .iter()
                            .filter_map(|kv| Some((self.strip(&kv.key)?, kv.value.clone())))
                            .collect();
                        self.revision = rev;
                        on(self);
                    }
                    Err(e) => {
                        return format!("read of {} from {}: {e}", self.prefix, client.endpoint)
                    }
                }
            } else {
                // Resuming: check that the member can serve a linearizable
                // read (has quorum) before trusting its watch.
                if let Err(e) = client.get(&self.prefix).await {
                    return format!("{}: {e}", client.endpoint);
                }
                // Back in touch: tell the caller (the keys are unchanged
                // until the watch says otherwise).
                on(self);
            }
            let (_keep, mut stream) =
                match client.watch_prefix(&self.prefix, self.revision + 1).await {
                    Ok(w) => w,
                    Err(e) => return format!("watch on {}: {e}", client.endpoint),
                };
            loop {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => return format!("watch on {} ended", client.endpoint),
                    Err(s) => return format!("watch on {}: {}", client.endpoint, status_text(&s)),
                };
                if msg.compact_revision > 0 {
                    // Our revision was compacted away: events were lost, so
                    // read everything again and watch from there.
                    tracing::warn!(prefix = %self.prefix, revision = self.revision, compacted = msg.compact_revision, "etcd watch revision compacted; re-reading");
                    need_read = true;
                    break;
                }
                if msg.canceled {
                    return format!(
                        "watch canceled by {}: {}",
                        client.endpoint, msg.cancel_reason
                    );
                }
                if msg.events.is_empty() {
                    if let Some(h) = &msg.header {
                        // Progress notification: nothing changed up to here.
                        if !msg.created && h.revision > self.revision {
                            self.revision = h.revision;
                        }
                    }
                    continue;
                }
                for ev in &msg.events {
                    let Some(kv) = &ev.kv else { continue };
                    let Some(k) = self.strip(&kv.key) else {
                        continue;
                    };
                    if ev.r#type == pb::EVENT_DELETE {
                        self.keys.remove(&k);
                    } else {
                        self.keys.insert(k, kv.value.clone());
                    }
                    self.revision = self.revision.max(kv.mod_revision);
                }
                if !msg.fragment {
                    on(self);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn urls() {
        assert_eq!(url("127.0.0.1:2379", false), "http://127.0.0.1:2379");
        assert_eq!(url("127.0.0.1:2379", true), "https://127.0.0.1:2379");
        assert_eq!(url("http://h:1", true), "http://h:1");
    }
}
