//! A minimal HTTP/1.1 client for the admin API (one request per connection).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One admin endpoint: `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// As given, without a trailing slash.
    pub url: String,
    host_port: String,
}

impl Node {
    /// Parse `http://host:port` (or `host:port`).
    pub fn parse(s: &str) -> Result<Node> {
        let s = s.trim().trim_end_matches('/');
        if s.starts_with("https://") {
            bail!("`{s}`: the admin API speaks plain HTTP; use http://");
        }
        let rest = s.strip_prefix("http://").unwrap_or(s);
        if rest.is_empty() || rest.contains('/') {
            bail!("`{s}` is not an admin URL like http://127.0.0.1:9000");
        }
        let host_port = if rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !rest.ends_with(']')
        {
            rest.to_string()
        } else {
            format!("{rest}:80")
        };
        Ok(Node {
            url: format!("http://{rest}"),
            host_port,
        })
    }
}

/// A parsed answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: serde_json::Value,
}

impl Answer {
    /// The API's `error` message, or the status.
    pub fn error_message(&self) -> String {
        self.json
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

/// Send one request; `body` is JSON when given.
pub async fn call(
    node: &Node,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Answer> {
    let work = async {
        let stream = TcpStream::connect(&node.host_port).await.map_err(|e| {
            anyhow!(
                "cannot reach the fulcrum admin API at {}: {e} (is `fulcrum run` running with an [admin] listen address?)",
                node.url
            )
        })?;
        let _ = stream.set_nodelay(true);
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {} failed", node.url))?;
        tokio::spawn(conn);
        let payload = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", node.host_port.as_str())
            .header(
                "user-agent",
                concat!("fulcrum-ctl/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = send
            .send_request(req.body(Full::new(payload))?)
            .await
            .with_context(|| format!("request to {} failed", node.url))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        Ok(Answer { status, json })
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| anyhow!("{} did not answer within 10s", node.url))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls() {
        assert_eq!(
            Node::parse("http://127.0.0.1:9000/").unwrap().url,
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            Node::parse("127.0.0.1:9000").unwrap().host_port,
            "127.0.0.1:9000"
        );
        assert_eq!(Node::parse("http://lb1").unwrap().host_port, "lb1:80");
        assert!(Node::parse("https://x:1").is_err());
        assert!(Node::parse("http://x:1/api").is_err());
    }
}
