//! `serve --metrics ADDR`: `GET /metrics` over HTTP/1.1, on threads of its own, never
//! on the answers' path.
//!
//! A plain `std::net::TcpListener` and a small responder: one request per connection,
//! `Connection: close`, nothing but `GET` (and `HEAD`) of `/metrics`. No async runtime
//! and no HTTP crate: a scrape endpoint needs none of their features, and every byte it
//! reads is bounded here, where it can be seen:
//! - a request head larger than [`MAX_REQUEST_BYTES`] gets `431` and the connection is
//!   closed (nothing more is read: a huge request costs the host 8 KiB);
//! - a request head must arrive whole within [`REQUEST_DEADLINE`], however slowly its
//!   bytes trickle in (a slowloris holds a connection for that long, no longer);
//! - at most [`MAX_CONNECTIONS`] connections are handled at once; any more is closed as
//!   soon as it is accepted (many connections cost a file descriptor for a moment);
//! - writing the answer has a deadline too (a scraper that never reads).
//!
//! The text is made by [`crate::Guard::metrics`], which reads atomics and takes only
//! the metrics' own locks: a scrape never waits for a decision, nor a decision for it.
//!
//! An address without a host (`9464`, `:9464`) binds the loopback interface: the
//! metrics leave the machine only when the operator names another address.

use crate::Guard;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections handled at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// The most bytes of a request head read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a request head may take to arrive, in all.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long writing an answer may take.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    /// The address does not parse or resolve.
    #[error("metrics address {addr:?}: {reason}")]
    Address {
        /// As given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        /// As resolved.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The accepting thread could not start.
    #[error("cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// The socket addresses `text` names: `PORT` or `:PORT` on the loopback interface,
/// else `HOST:PORT` as given (`0.0.0.0:9464` for every interface).
pub fn resolve(text: &str) -> Result<Vec<SocketAddr>, MetricsServerError> {
    let text = text.trim();
    let error = |reason: String| MetricsServerError::Address {
        addr: text.to_owned(),
        reason,
    };
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only
            .parse()
            .map_err(|_| error("the port is not a number from 0 to 65535".to_owned()))?;
        return Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]);
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| error(format!("{e} (expected PORT or HOST:PORT)")))?
        .collect();
    if addrs.is_empty() {
        return Err(error("it resolves to no address".to_owned()));
    }
    Ok(addrs)
}

/// The running endpoint; dropping it stops accepting (connections being answered finish
/// on their own, within their deadlines).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Bind `addr` (see [`resolve`]) and serve `guard`'s metrics from a thread of its own.
    pub fn start(addr: &str, guard: Guard) -> Result<MetricsServer, MetricsServerError> {
        let addrs = resolve(addr)?;
        let listener = TcpListener::bind(&addrs[..]).map_err(|source| MetricsServerError::Bind {
            addr: addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            source,
        })?;
        let local = listener.local_addr().map_err(|source| MetricsServerError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("deploy-guard-metrics".into())
            .spawn(move || accept_loop(&listener, &guard, &stopped))
            .map_err(MetricsServerError::Thread)?;
        Ok(MetricsServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address bound (with the port the system chose for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Decrements the count of connections being handled when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(listener: &TcpListener, guard: &Guard, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors or the like: say so, breathe, go on.
                tracing::warn!(target: "deploy_guard::metrics", "cannot accept a metrics connection: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            drop(stream);
            continue;
        }
        let slot = Slot(Arc::clone(&active));
        let guard = guard.clone();
        let spawned = std::thread::Builder::new()
            .name("deploy-guard-metrics-conn".into())
            .stack_size(256 << 10)
            .spawn(move || {
                let _slot = slot;
                answer(stream, &guard);
            });
        if let Err(e) = spawned {
            tracing::warn!(target: "deploy_guard::metrics", "cannot start a metrics connection thread: {e}");
        }
    }
}

/// Read one request head (bounded in size and time) and answer it.
fn answer(mut stream: TcpStream, guard: &Guard) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_DEADLINE));
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = [0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    while !is_complete(&head[..len]) {
        if len == head.len() {
            respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                true,
            );
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut head[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
    let line = head[..len].split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let text = guard.metrics();
            respond(
                &mut stream,
                "200 OK",
                crate::observe::metrics::CONTENT_TYPE,
                text.as_bytes(),
                method == "GET",
            );
        }
        ("GET" | "HEAD", _) => respond(&mut stream, "404 Not Found", "text/plain", b"try /metrics\n", true),
        _ => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"only GET /metrics\n",
            true,
        ),
    }
}

/// Whether `bytes` hold a whole request head (it ends with an empty line).
fn is_complete(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n")
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8], with_body: bool) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| if with_body { stream.write_all(body) } else { Ok(()) })
        .and_then(|()| stream.flush());
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_binds_the_loopback_interface() {
        let loopback = |port| vec![SocketAddr::from(([127, 0, 0, 1], port))];
        assert_eq!(resolve("9464").ok(), Some(loopback(9464)));
        assert_eq!(resolve(":9464").ok(), Some(loopback(9464)));
        assert_eq!(resolve(" 0 ").ok(), Some(loopback(0)));
        assert_eq!(
            resolve("0.0.0.0:9464").ok(),
            Some(vec![SocketAddr::from(([0, 0, 0, 0], 9464))])
        );
        for bad in ["", "99999", "no-port", "host:port:x"] {
            assert!(resolve(bad).is_err(), "{bad:?} resolved");
        }
    }

    #[test]
    fn a_request_head_ends_with_an_empty_line() {
        assert!(is_complete(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(is_complete(b"GET /metrics HTTP/1.0\n\n"));
        assert!(!is_complete(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"));
    }
}
