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
//! Prometheus text exposition at `/metrics`.
//!
//! It binds to 127.0.0.1 by default, on port 4040 or the next free one.

#![deny(missing_docs)]

mod api;
pub mod error;
mod prometheus;
mod time;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread::JoinHandle;

use lockgate_core::StreamingContext;

pub use error::{Error, Result};

/// Where the server listens.
#[derive(Clone, Debug)]
pub struct UiConfig {
    /// The address to bind (default 127.0.0.1: loopback only).
    pub host: IpAddr,
    /// The first port to try (default 4040).
    pub port: u16,
    /// How many following ports to try when it is taken (default 16).
    pub port_retries: u16,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 4040,
            port_retries: 16,
        }
    }
}

/// A running server; stopped when dropped.
pub struct UiServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl UiServer {
    /// Starts serving `ctx` on its own thread.
    pub fn start(ctx: &StreamingContext, cfg: &UiConfig) -> Result<UiServer> {
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
        let app = api::router(api::AppState::new(ctx.clone()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(Error::Io)?;
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
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                        let _ = rx.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "UI server stopped");
                    }
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
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
