//! Live discovery: an inventory file edited under load (seed 003's rolling
//! replacement), bad inventories that change nothing, and DNS A/SRV records
//! served by a small DNS server on loopback.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulcrum::config::types::AdminState;
use fulcrum::demo::backend::{start_backend, BackendHandle, BackendOptions};
use fulcrum::discovery;
use fulcrum::runtime::Runtime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

async fn backend(name: &str, listen: &str) -> R<BackendHandle> {
    Ok(start_backend(BackendOptions {
        name: name.into(),
        listen: listen.parse()?,
    })
    .await?)
}

/// One `GET /` with `Connection: close`; the name of the server that answered.
async fn get(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let r = common::parse_response(&buf).ok_or("bad response")?;
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.body));
    }
    r.header("x-served-by")
        .map(str::to_string)
        .ok_or_else(|| "no x-served-by".into())
}

/// Poll every 20 ms until `f` holds or `limit` passes.
async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Names of a backend's servers in the current snapshot.
fn servers(rt: &Runtime, backend: &str) -> Vec<String> {
    rt.snapshot()
        .backends
        .get(backend)
        .map(|b| b.servers.iter().map(|s| s.name().to_string()).collect())
        .unwrap_or_default()
}

fn admin(rt: &Runtime, backend: &str, server: &str) -> Option<AdminState> {
    rt.snapshot().server(backend, server).map(|s| s.admin())
}

/// Write through a temporary file and a rename, as deployment tools should, so
/// the poller never sees a half-written file.
fn write_atomic(path: &Path, text: &str) -> R {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

struct Lb {
    rt: Arc<Runtime>,
    listen: SocketAddr,
}

impl Drop for Lb {
    fn drop(&mut self) {
        // Stops the discovery tasks the runtime started (they hold the runtime).
        let rt = self.rt.clone();
        tokio::spawn(async move { rt.shutdown(std::time::Duration::from_millis(100)).await });
    }
}

/// A runtime; it starts the discovery task of every backend that has one.
async fn start_lb(backends_toml: &str) -> R<Lb> {
    let listen = common::free_addr();
    let toml =
        format!("[frontends.www]\nlisten = [\"{listen}\"]\nbackend = \"web\"\n\n{backends_toml}");
    let cfg = fulcrum::config::parse_str(&toml, "t.toml")?;
    let rt = fulcrum::supervisor::start(cfg).await?;
    Ok(Lb { rt, listen })
}

fn inv(entries: &[&str]) -> String {
    format!("[\n{}\n]\n", entries.join(",\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_replacement_by_editing_the_inventory_under_load() -> R {
    let web1 = backend("web1", "127.0.0.1:0").await?;
    let web2 = backend("web2", "127.0.0.1:0").await?;
    let (a1, a2) = (web1.local_addr(), web2.local_addr());
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("web.json");
    let e1 = format!(r#"  {{"name":"web1","address":"{a1}","exclude":false}}"#);
    let e1_drain = format!(r#"  {{"name":"web1","address":"{a1}","drain":true}}"#);
    let e2 = format!(r#"  {{"name":"web2","address":"{a2}","weight":10}}"#);
    write_atomic(&path, &inv(&[&e1]))?;
    let lb = start_lb(&format!(
        "[backends.web]\ndiscovery = {{ file = \"{}\", poll_interval = \"100ms\" }}\n",
        path.display()
    ))
    .await?;
    let rt = lb.rt.clone();
    assert!(
        wait_for(Duration::from_secs(5), || servers(&rt, "web") == ["web1"]).await,
        "web1 discovered: {:?}",
        servers(&rt, "web")
    );

    // Continuous load: 8 clients, each bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, failed, ok, first_error) = (
            stop.clone(),
            failed.clone(),
            ok.clone(),
            first_error.clone(),
        );
        let addr = lb.listen;
        clients.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                match get(addr).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        first_error.lock().unwrap().get_or_insert(e);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let limit = Duration::from_secs(15);
    assert!(wait_for(limit, || web1.request_count() >= 20).await);

    // 1. Add the new box: it receives traffic.
    write_atomic(&path, &inv(&[&e1, &e2]))?;
    assert!(
        wait_for(limit, || web2.request_count() >= 20).await,
        "web2 gets traffic"
    );

    // 2. Gracefully take the old box out: no new requests reach it.
    write_atomic(&path, &inv(&[&e1_drain, &e2]))?;
    assert!(
        wait_for(limit, || admin(&rt, "web", "web1")
            == Some(AdminState::Drain))
        .await
    );
    // Let requests that had picked web1 before the drain arrive.
    let w2 = web2.request_count();
    assert!(wait_for(limit, || web2.request_count() >= w2 + 100).await);
    let drained_at = web1.request_count();
    let w2 = web2.request_count();
    assert!(wait_for(limit, || web2.request_count() >= w2 + 200).await);
    assert_eq!(
        web1.request_count(),
        drained_at,
        "a drained server got new requests"
    );

    // 3. Remove it from the inventory; traffic goes on.
    write_atomic(&path, &inv(&[&e2]))?;
    assert!(wait_for(limit, || servers(&rt, "web") == ["web2"]).await);
    let w2 = web2.request_count();
    assert!(wait_for(limit, || web2.request_count() >= w2 + 100).await);

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests (first: {:?})",
        first_error.lock().unwrap()
    );
    assert!(ok.load(Ordering::Relaxed) >= 400);
    let st = discovery::status(&rt, "web").ok_or("status")?;
    assert_eq!(st.last_error, None);
    assert_eq!(st.servers, 1);
    assert!(st.updates >= 4, "{st:?}");
    assert!(st.source.starts_with("file "), "{st:?}");
    let all = discovery::all(&rt);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, "web");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_inventory_changes_nothing_and_is_reported_with_its_position() -> R {
    let web1 = backend("web1", "127.0.0.1:0").await?;
    let a1 = web1.local_addr();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("inv.json");
    let good = inv(&[&format!(r#"  {{"name":"web1","address":"{a1}"}}"#)]);
    write_atomic(&path, &good)?;
    let lb = start_lb(&format!(
        "[backends.web]\ndiscovery = {{ file = \"{}\", poll_interval = \"50ms\" }}\n",
        path.display()
    ))
    .await?;
    let rt = lb.rt.clone();
    let limit = Duration::from_secs(5);
    assert!(wait_for(limit, || servers(&rt, "web") == ["web1"]).await);
    assert_eq!(get(lb.listen).await?, "web1");
    let generation = rt.snapshot().generation;
    let label = path.display().to_string();

    let bad = [
        (
            // A bad address on line 3.
            inv(&[
                &format!(r#"  {{"name":"web1","address":"{a1}"}}"#),
                r#"  {"name":"web2","address":"10.0.0.300:80"}"#,
            ]),
            format!("{label}:3:28: error: bad server address `10.0.0.300:80`"),
        ),
        (
            inv(&[
                &format!(r#"  {{"name":"web1","address":"{a1}"}}"#),
                r#"  {"name":"web1","address":"127.0.0.1:1"}"#,
            ]),
            format!("{label}:3:11: error: server `web1` appears twice"),
        ),
        (
            "[\n  {\"name\":\"web2\" \"address\":\"127.0.0.1:1\"}\n]\n".to_string(),
            format!("{label}:2:"),
        ),
    ];
    for (text, expected) in bad {
        write_atomic(&path, &text)?;
        let seen = wait_for(limit, || {
            discovery::last_error(&rt, "web").is_some_and(|e| e.contains(&expected))
        })
        .await;
        assert!(
            seen,
            "expected `{expected}`, got {:?}",
            discovery::last_error(&rt, "web")
        );
        assert_eq!(servers(&rt, "web"), ["web1"]);
        assert_eq!(rt.snapshot().generation, generation, "nothing applied");
        assert_eq!(get(lb.listen).await?, "web1");
    }

    // Fixed: the error clears and the new list applies.
    let web2 = backend("web2", "127.0.0.1:0").await?;
    let fixed = inv(&[&format!(
        r#"  {{"name":"web2","address":"{}"}}"#,
        web2.local_addr()
    )]);
    write_atomic(&path, &fixed)?;
    assert!(wait_for(limit, || servers(&rt, "web") == ["web2"]).await);
    assert!(wait_for(limit, || discovery::last_error(&rt, "web").is_none()).await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_inventory_with_exclude_and_a_syntax_error() -> R {
    let web1 = backend("web1", "127.0.0.1:0").await?;
    let web2 = backend("web2", "127.0.0.1:0").await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("inv.toml");
    let text = |exclude2: bool| {
        format!(
            "[[servers]]\nname = \"web1\"\naddress = \"{}\"\n\n[[servers]]\nname = \"web2\"\naddress = \"{}\"\nexclude = {exclude2}\n",
            web1.local_addr(),
            web2.local_addr()
        )
    };
    write_atomic(&path, &text(true))?;
    let lb = start_lb(&format!(
        "[backends.web]\ndiscovery = {{ file = \"{}\", poll_interval = \"50ms\" }}\n",
        path.display()
    ))
    .await?;
    let rt = lb.rt.clone();
    let limit = Duration::from_secs(5);
    assert!(wait_for(limit, || servers(&rt, "web") == ["web1"]).await);
    write_atomic(&path, &text(false))?;
    assert!(wait_for(limit, || servers(&rt, "web") == ["web1", "web2"]).await);
    write_atomic(&path, "[[servers]]\nname = \"web1\"\naddress = \n")?;
    let expected = format!("{}:3:", path.display());
    assert!(
        wait_for(limit, || {
            discovery::last_error(&rt, "web").is_some_and(|e| e.contains(&expected))
        })
        .await,
        "{:?}",
        discovery::last_error(&rt, "web")
    );
    assert_eq!(servers(&rt, "web"), ["web1", "web2"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_inventory_file_means_no_servers_yet() -> R {
    let web1 = backend("web1", "127.0.0.1:0").await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("later.json");
    let lb = start_lb(&format!(
        "[backends.web]\ndiscovery = {{ file = \"{}\", poll_interval = \"50ms\" }}\n",
        path.display()
    ))
    .await?;
    let rt = lb.rt.clone();
    let limit = Duration::from_secs(5);
    assert!(
        wait_for(limit, || discovery::last_error(&rt, "web")
            .is_some_and(|e| e.contains("cannot read")))
        .await
    );
    assert!(servers(&rt, "web").is_empty());
    let text = inv(&[&format!(
        r#"{{"name":"web1","address":"{}"}}"#,
        web1.local_addr()
    )]);
    write_atomic(&path, &text)?;
    assert!(wait_for(limit, || servers(&rt, "web") == ["web1"]).await);
    assert_eq!(get(lb.listen).await?, "web1");
    Ok(())
}

// ---- a DNS server for the test ----

/// What the test DNS server answers. Names are lower case, without the final dot.
#[derive(Default)]
struct Zone {
    a: HashMap<String, Vec<Ipv4Addr>>,
    /// (priority, weight, port, target)
    srv: HashMap<String, Vec<(u16, u16, u16, String)>>,
    /// When false, queries are dropped (the server "stops answering").
    silent: bool,
    queries: u64,
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// The answer to one query, or None to drop it.
fn answer(q: &[u8], zone: &mut Zone) -> Option<Vec<u8>> {
    zone.queries += 1;
    if zone.silent || q.len() < 12 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = q.get(12..i + 4)?;
    let name = labels.join(".");
    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    match qtype {
        1 => {
            for ip in zone.a.get(&name).into_iter().flatten() {
                answers.push((1, ip.octets().to_vec()));
            }
        }
        33 => {
            for (prio, weight, port, target) in zone.srv.get(&name).into_iter().flatten() {
                let mut rd = Vec::new();
                rd.extend_from_slice(&prio.to_be_bytes());
                rd.extend_from_slice(&weight.to_be_bytes());
                rd.extend_from_slice(&port.to_be_bytes());
                encode_name(target, &mut rd);
                answers.push((33, rd));
            }
        }
        _ => {}
    }
    let mut r = Vec::new();
    r.extend_from_slice(q.get(0..2)?); // id
    r.push(0x84 | (q[2] & 0x01)); // response, authoritative, RD copied
    r.push(0x80); // recursion available, NOERROR
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    for (ty, rdata) in answers {
        r.extend_from_slice(&[0xC0, 0x0C]); // the question's name
        r.extend_from_slice(&ty.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes()); // IN
        r.extend_from_slice(&0u32.to_be_bytes()); // TTL 0: never cached
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    Some(r)
}

async fn dns_server(zone: Arc<Mutex<Zone>>) -> R<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = sock.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let reply = answer(&buf[..n], &mut zone.lock().unwrap());
            if let Some(reply) = reply {
                let _ = sock.send_to(&reply, peer).await;
            }
        }
    });
    Ok((addr, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_a_and_srv_records_are_followed_and_kept_when_dns_fails() -> R {
    // A records carry no port: two backends on one port, two loopback addresses.
    let b1 = backend("b1", "127.0.0.1:0").await?;
    let port = b1.local_addr().port();
    let b2 = backend("b2", &format!("127.0.0.2:{port}")).await?;
    let b3 = backend("b3", "127.0.0.1:0").await?;
    let p3 = b3.local_addr().port();

    let zone = Arc::new(Mutex::new(Zone::default()));
    {
        let mut z = zone.lock().unwrap();
        z.a.insert("web.test".into(), vec![Ipv4Addr::new(127, 0, 0, 1)]);
        z.a.insert("b1.test".into(), vec![Ipv4Addr::new(127, 0, 0, 1)]);
        z.a.insert("b3.test".into(), vec![Ipv4Addr::new(127, 0, 0, 1)]);
        z.srv.insert(
            "_http._tcp.web.test".into(),
            vec![
                (10, 5, port, "b1.test.".into()),
                (10, 0, p3, "b3.test.".into()),
            ],
        );
    }
    let (dns, _server) = dns_server(zone.clone()).await?;
    let lb = start_lb(&format!(
        "[backends.web]\ndiscovery = {{ dns = \"web.test\", port = {port}, interval = \"200ms\", resolver = \"{dns}\" }}\n\n\
         [backends.websrv]\ndiscovery = {{ srv = \"_http._tcp.web.test\", interval = \"200ms\", resolver = \"{dns}\" }}\n"
    ))
    .await?;
    let rt = lb.rt.clone();
    let limit = Duration::from_secs(10);
    let n1 = format!("127-0-0-1-{port}");
    let n2 = format!("127-0-0-2-{port}");

    // A records.
    assert!(
        wait_for(limit, || servers(&rt, "web") == [n1.clone()]).await,
        "{:?} {:?}",
        servers(&rt, "web"),
        discovery::status(&rt, "web")
    );
    assert_eq!(get(lb.listen).await?, "b1");
    zone.lock().unwrap().a.insert(
        "web.test".into(),
        vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)],
    );
    assert!(wait_for(limit, || servers(&rt, "web") == [n1.clone(), n2.clone()]).await);
    zone.lock()
        .unwrap()
        .a
        .insert("web.test".into(), vec![Ipv4Addr::new(127, 0, 0, 2)]);
    assert!(wait_for(limit, || servers(&rt, "web") == [n2.clone()]).await);
    assert_eq!(get(lb.listen).await?, "b2");

    // SRV records: target-port names, weights clamped to 1..=256.
    let s1 = format!("b1.test-{port}");
    let s3 = format!("b3.test-{p3}");
    assert!(
        wait_for(limit, || servers(&rt, "websrv") == [s1.clone(), s3.clone()]).await,
        "{:?} {:?}",
        servers(&rt, "websrv"),
        discovery::status(&rt, "websrv")
    );
    {
        let snap = rt.snapshot();
        assert_eq!(snap.server("websrv", &s1).map(|s| s.weight()), Some(5));
        assert_eq!(snap.server("websrv", &s3).map(|s| s.weight()), Some(1));
        assert_eq!(
            snap.server("websrv", &s3).map(|s| s.address().port()),
            Some(p3)
        );
    }
    zone.lock().unwrap().srv.insert(
        "_http._tcp.web.test".into(),
        vec![(10, 300, p3, "b3.test.".into())],
    );
    assert!(wait_for(limit, || servers(&rt, "websrv") == [s3.clone()]).await);
    assert_eq!(
        rt.snapshot().server("websrv", &s3).map(|s| s.weight()),
        Some(256)
    );

    // The DNS server stops answering: both backends keep their servers.
    let generation = rt.snapshot().generation;
    zone.lock().unwrap().silent = true;
    let failed = wait_for(Duration::from_secs(30), || {
        discovery::last_error(&rt, "web").is_some()
            && discovery::last_error(&rt, "websrv").is_some()
    })
    .await;
    assert!(failed, "the failures are reported");
    assert_eq!(servers(&rt, "web"), [n2]);
    assert_eq!(servers(&rt, "websrv"), [s3]);
    assert_eq!(rt.snapshot().generation, generation);
    assert_eq!(get(lb.listen).await?, "b2");

    // Answers again: errors clear.
    zone.lock().unwrap().silent = false;
    assert!(
        wait_for(Duration::from_secs(30), || discovery::last_error(
            &rt, "web"
        )
        .is_none())
        .await
    );
    drop(b1);
    drop(b2);
    drop(b3);
    Ok(())
}

#[test]
fn example_inventories_are_valid() -> R {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/inventory");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let label = path.display().to_string();
        let format = discovery::inventory::Format::of_path(&path);
        if let Err(e) = discovery::inventory::parse(&text, &label, format) {
            panic!("{label}: {e:?}");
        }
        n += 1;
    }
    assert!(n >= 2);
    Ok(())
}
