//! # lockgate-web
//!
//! Lockgate's read-only HTTP server for a running [`StreamingContext`]: a streaming page
//! at `/` (Spark's Streaming tab: input rate, scheduling delay, processing time and
//! total delay as live timelines and histograms, active and completed batches; a page per
//! batch with each source's input descriptor and each output operation; plain HTML, SVG
//! and JavaScript built into the binary, no network access needed), JSON under Spark's
//! REST paths and field names (`/api/v1/applications`,
//! `/api/v1/applications/{app-id}/streaming/statistics`, `.../streaming/batches`,
//! `.../streaming/batches/{batch-id}`), so tools written for Spark's API work, and
//! Prometheus text exposition at `/metrics`; `/health` (liveness) and `/ready`
//! (readiness: 503 while a standby waits or tasks start) for probes. A scale-out
//! instance ([`UiServer::start_instance`]) shows each task as an application, its
//! metrics labelled `task`.
//!
//! It binds to 127.0.0.1 by default, on port 4040 or the next free one.
//!
//! ```
//! use std::io::{Read, Write};
//! use lockgate_core::testing::ManualRun;
//! use lockgate_web::{UiConfig, UiServer};
//!
//! let run = ManualRun::new(2)?;
//! run.ctx.seq_stream(vec![vec![1, 2, 3]]).count().print();
//! // Any free port of loopback (port 0: the system picks one).
//! let ui = UiServer::start(&run.ctx, &UiConfig { port: 0, ..UiConfig::default() })?;
//! run.ctx.start()?;
//! run.run_batches(1)?;
//!
//! let mut http = std::net::TcpStream::connect(ui.addr())?;
//! http.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
//! let mut page = String::new();
//! http.read_to_string(&mut page)?;
//! assert!(page.contains("lockgate_batches_completed_total"), "{page}");
//! run.ctx.stop(false)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod api;
pub mod error;
mod prometheus;
mod serve;
mod time;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use lockgate_core::StreamingContext;

pub use error::{Error, Result};

/// Where the server listens, and how it protects the job it serves.
#[derive(Clone, Debug)]
pub struct UiConfig {
    /// The address to bind (default 127.0.0.1: loopback only).
    pub host: IpAddr,
    /// The first port to try (default 4040).
    pub port: u16,
    /// How many following ports to try when it is taken (default 16).
    pub port_retries: u16,
    /// The most connections served at once (default 64, and never more than a quarter
    /// of the process's file-descriptor limit, so the job's own files always open).
    /// Further clients wait in the listen queue until a connection closes.
    pub max_connections: usize,
    /// A client must send a request's headers within this time of connecting, or of
    /// its previous response (the keep-alive wait), else it is disconnected (default
    /// 10 s).
    pub header_read_timeout: Duration,
    /// A connection with no byte read or written for this long is closed (default
    /// 60 s): a client that stops reading a response cannot hold a slot forever.
    pub idle_timeout: Duration,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 4040,
            port_retries: 16,
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What a server shows: the contexts running in this process, by task, and whether
/// the process is ready. A job in one process is [`Instance::single`]; a scale-out
/// instance gives its tasks' contexts as they come and go.
#[derive(Clone)]
pub struct Instance {
    /// The contexts now, each with its task's name (`""` for a job in one process).
    pub contexts: Arc<dyn Fn() -> Vec<(String, StreamingContext)> + Send + Sync>,
    /// Whether the process is ready (`/ready` answers 200), and a word on why (not).
    pub ready: Arc<dyn Fn() -> (bool, String) + Send + Sync>,
}

impl Instance {
    /// One context: ready once it started, while it is not a standby waiting for the
    /// checkpoint nor stopping.
    pub fn single(ctx: &StreamingContext) -> Instance {
        let shown = ctx.clone();
        let checked = ctx.clone();
        Instance {
            contexts: Arc::new(move || vec![(String::new(), shown.clone())]),
            ready: Arc::new(move || {
                let standby = checked
                    .checkpoint_storage()
                    .is_some_and(|s| s.stats().standby);
                if checked.is_stopping() {
                    (false, "stopping".into())
                } else if standby {
                    (
                        false,
                        "standby: waiting for the checkpoint's owner to end".into(),
                    )
                } else if checked.state() != lockgate_core::ContextState::Active {
                    (false, "starting".into())
                } else {
                    (true, "running".into())
                }
            }),
        }
    }
}

/// A running server; stopped when dropped.
pub struct UiServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

/// The soft limit on open files of this process, if known.
fn fd_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The connection cap: the configured one, at most a quarter of the fd limit, at least 1.
fn connection_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    let quarter = fd_limit.map_or(usize::MAX, |l| usize::try_from(l / 4).unwrap_or(usize::MAX));
    configured.min(quarter).max(1)
}

impl UiServer {
    /// Starts serving `ctx` on its own thread.
    pub fn start(ctx: &StreamingContext, cfg: &UiConfig) -> Result<UiServer> {
        Self::start_instance(Instance::single(ctx), cfg)
    }

    /// Starts serving the contexts of `instance` (a scale-out instance's tasks, each an
    /// application of the API) on its own thread.
    pub fn start_instance(instance: Instance, cfg: &UiConfig) -> Result<UiServer> {
        let mut last_err = None;
        let mut listener = None;
        for offset in 0..=cfg.port_retries {
            let Some(port) = cfg.port.checked_add(offset) else {
                break;
            };
            match std::net::TcpListener::bind(SocketAddr::new(cfg.host, port)) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let listener = listener.ok_or_else(|| Error::Bind {
            host: cfg.host,
            from: cfg.port,
            to: cfg.port.saturating_add(cfg.port_retries),
            source: last_err.unwrap_or_else(|| std::io::Error::other("no port to try")),
        })?;
        listener.set_nonblocking(true).map_err(Error::Io)?;
        let addr = listener.local_addr().map_err(Error::Io)?;
        let app = api::router(api::AppState::new(instance));
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Timers too: the header-read and idle timeouts and the accept back-off.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(Error::Io)?;
        let limits = serve::Limits {
            max_connections: connection_cap(cfg.max_connections, fd_limit()),
            header_read_timeout: cfg.header_read_timeout,
            idle_timeout: cfg.idle_timeout,
        };
        let thread = std::thread::Builder::new()
            .name("lockgate-ui".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "UI listener");
                            return;
                        }
                    };
                    serve::serve(listener, app, limits, rx).await;
                });
            })
            .map_err(Error::Io)?;
        tracing::debug!(url = %format!("http://{addr}"), "streaming UI");
        Ok(UiServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:4040`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_connection_cap_stays_well_below_the_fd_limit() {
        assert_eq!(super::connection_cap(64, Some(1024)), 64);
        assert_eq!(super::connection_cap(64, Some(100)), 25);
        assert_eq!(super::connection_cap(64, Some(2)), 1);
        assert_eq!(super::connection_cap(64, None), 64);
    }
}
