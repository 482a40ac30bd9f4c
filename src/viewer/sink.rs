//! Where a viewer's bytes go: a Rust-owned TCP socket (vectored writes of a prebuilt header and
//! the shared payload), a JS-owned socket written through the host, or a relay's stream on the
//! message bus (whole messages, no WebSocket framing); and how a write is cut short at a
//! message boundary when the viewer is being closed.
//! Must not decide what to send: the writer does.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

/// How long a close frame may take to write before the socket is simply dropped.
pub(super) const CLOSE_FRAME_TIMEOUT: Duration = Duration::from_millis(500);

use crate::host::{BridgedOutbound, Host, HostFuture};
use crate::registry::ViewerCloser;
use crate::ws::codec::{close_payload, encode_frame, FrameHeader, OP_CLOSE};

/// Where a viewer's writer sends its bytes.
pub enum Sink {
    /// A socket owned by Rust.
    Tcp(OwnedWriteHalf),
    /// A socket owned by JS, written through the host.
    Bridged {
        /// The viewer id the host knows the socket by.
        viewer_id: u32,
        host: Arc<dyn Host>,
    },
    /// A relay's stream to other instances (`relay::owner`): whole messages, in order.
    Relay(Arc<dyn MessageOut>),
}

/// Where a relay viewer's messages go. Completes when the message was taken (queued for the
/// bus), which paces the viewer like a socket: the latest frame wins while it is busy.
pub trait MessageOut: Send + Sync {
    /// One TEXT (`binary` false) or BINARY message's payload.
    fn send(&self, binary: bool, payload: Bytes) -> HostFuture;
}

/// Writes `head` then `body` with vectored writes (one syscall for both in the usual case).
pub(super) async fn write_all_vectored(
    writer: &mut OwnedWriteHalf,
    head: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let mut storage = [IoSlice::new(head), IoSlice::new(body)];
    let mut slices = &mut storage[..];
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let written = writer.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// A writer stopped at a message boundary because the viewer is being closed gracefully: the
/// close frame may follow. Carried as an `io::Error` so `?` ends the writer's loop at once.
#[derive(Debug)]
pub(super) struct ClosingAtBoundary;

impl std::fmt::Display for ClosingAtBoundary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the viewer is closing; stopped at a message boundary")
    }
}

impl std::error::Error for ClosingAtBoundary {}

pub(super) fn closing_at_boundary() -> io::Error {
    io::Error::other(ClosingAtBoundary)
}

/// Whether the writer stopped where a close frame can follow (not mid-message).
pub(super) fn at_message_boundary(result: &io::Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(error) => error
            .get_ref()
            .is_some_and(|inner| inner.is::<ClosingAtBoundary>()),
    }
}

/// Runs a write unless the viewer is closed meanwhile (`cancelled` resolves). On a graceful
/// close (a close frame is requested) nothing new is started, and the message in progress may
/// finish within `CLOSE_FRAME_TIMEOUT`: both end the writer with `ClosingAtBoundary`, so the
/// close frame follows at most one more message. Otherwise, or if the message does not finish,
/// the cut write leaves the stream mid-frame, reported as `Interrupted`: no close frame.
pub(super) async fn interruptible<C: Future<Output = ()>>(
    closer: &ViewerCloser,
    cancelled: Pin<&mut C>,
    write: impl Future<Output = io::Result<()>>,
) -> io::Result<()> {
    let graceful = || closer.request().is_some();
    if closer.is_cancelled() {
        return Err(if graceful() {
            closing_at_boundary()
        } else {
            io::ErrorKind::Interrupted.into()
        });
    }
    tokio::pin!(write);
    tokio::select! {
        biased;
        _ = cancelled => {}
        result = &mut write => return result,
    }
    if !graceful() {
        return Err(io::ErrorKind::Interrupted.into());
    }
    match tokio::time::timeout(CLOSE_FRAME_TIMEOUT, write).await {
        Ok(Ok(())) => Err(closing_at_boundary()),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(io::ErrorKind::Interrupted.into()),
    }
}

impl Sink {
    /// Writes one TEXT message whose header is already built (frames) or built here.
    pub(super) async fn send_text(&mut self, header: &FrameHeader, text: &Bytes) -> io::Result<()> {
        match self {
            Sink::Tcp(writer) => write_all_vectored(writer, header.as_bytes(), text).await,
            Sink::Bridged { viewer_id, host } => host
                .bridged_send(*viewer_id, BridgedOutbound::Text(text.clone()))
                .await
                .map_err(io::Error::other),
            Sink::Relay(out) => out
                .send(false, text.clone())
                .await
                .map_err(io::Error::other),
        }
    }

    /// Writes one BINARY message: `head` (WebSocket header of `ws_header_len` bytes, then the
    /// frame header) and the shared image.
    pub(super) async fn send_binary(
        &mut self,
        head: &[u8],
        ws_header_len: usize,
        body: &Bytes,
    ) -> io::Result<()> {
        match self {
            Sink::Tcp(writer) => write_all_vectored(writer, head, body).await,
            Sink::Bridged { viewer_id, host } => {
                // JS frames the message itself: it gets the payload (one copy, TLS path only).
                host.bridged_send(
                    *viewer_id,
                    BridgedOutbound::Binary(unframed(head, ws_header_len, body)),
                )
                .await
                .map_err(io::Error::other)
            }
            // One copy per message for the whole bus, not per subscriber.
            Sink::Relay(out) => out
                .send(true, unframed(head, ws_header_len, body))
                .await
                .map_err(io::Error::other),
        }
    }

    /// Writes a ping or pong. JS sockets answer pings themselves.
    pub(super) async fn send_control(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        match self {
            Sink::Tcp(writer) => writer.write_all(&encode_frame(opcode, payload)).await,
            Sink::Bridged { .. } | Sink::Relay(_) => Ok(()),
        }
    }

    /// Sends the close frame and ends the write side.
    pub(super) async fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        match self {
            Sink::Tcp(writer) => {
                writer
                    .write_all(&encode_frame(OP_CLOSE, &close_payload(code, reason)))
                    .await?;
                writer.shutdown().await
            }
            Sink::Bridged { viewer_id, host } => host
                .bridged_send(
                    *viewer_id,
                    BridgedOutbound::Close {
                        code,
                        reason: reason.to_string(),
                    },
                )
                .await
                .map_err(io::Error::other),
            // The bus has no close frame: subscribers learn of the end by their lease.
            Sink::Relay(_) => Ok(()),
        }
    }
}

/// A BINARY message's payload without its WebSocket header: the frame header, then the body.
fn unframed(head: &[u8], ws_header_len: usize, body: &Bytes) -> Bytes {
    let mut payload = BytesMut::with_capacity(head.len() - ws_header_len + body.len());
    payload.extend_from_slice(&head[ws_header_len..]);
    payload.extend_from_slice(body);
    payload.freeze()
}
