//! The accept loop: HTTP/1 connections served by hyper with a header-read timeout, an
//! idle timeout and a cap on open connections, so that a crowd of clients (or idle
//! sockets) never takes the file descriptors the job itself needs, and an accept error
//! (out of file descriptors) is waited out with back-off instead of ending the server.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// How the server protects the process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Duration::from_millis(10);
    loop {
        // A slot first: clients beyond the cap wait in the kernel's listen queue and
        // hold no descriptor of ours.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                stream
            }
            Err(e) => {
                // EMFILE and the like: the job may be using every descriptor for a
                // moment; wait and try again.
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "UI cannot accept a connection; retrying");
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let app = app.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let last = Arc::new(AtomicU64::new(0));
            let io = TokioIo::new(Tracked {
                inner: stream,
                started,
                last: last.clone(),
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(io, TowerToHyperService::new(app));
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                let idle_for = Duration::from_millis(
                    u64::try_from(started.elapsed().as_millis())
                        .unwrap_or(u64::MAX)
                        .saturating_sub(last.load(Ordering::Acquire)),
                );
                let wait = limits.idle_timeout.saturating_sub(idle_for);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = tokio::time::sleep(wait), if !closing => {
                        let idle_for = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
                            .saturating_sub(last.load(Ordering::Acquire));
                        if Duration::from_millis(idle_for) >= limits.idle_timeout {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                    _ = stop.changed(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                if closing {
                    // A connection that will not finish its response goes anyway.
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                    return;
                }
            }
        });
    }
}

/// A stream that notes when it last moved a byte (milliseconds since `started`).
struct Tracked<S> {
    inner: S,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Release);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
