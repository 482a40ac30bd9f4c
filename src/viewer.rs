//! Viewer transport: serves one admitted viewer's connection, either a TCP socket handed over
//! from Node by file descriptor (`Sink::Tcp`) or a socket that stays in JS (`Sink::Bridged`).
//!
//! Owns: completing the WebSocket handshake (the `101` is written from Rust), the reader task
//! (decode client frames, answer pings, hand text to the channel, heartbeat timeout), the
//! writer task (latest frame wins, reliable messages in order, vectored writes of a prebuilt
//! header and the shared payload, pings) and the close sequence. Must not touch registry state
//! except through `Registry::release` and `Channel::on_client_text`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::frame::Frame;
use crate::host::{BridgedOutbound, Host};
use crate::registry::{Channel, Outbound, Registry, ViewerCloser, ViewerCounters, ViewerSlot};
use crate::ws_codec::{
    close_payload, encode_frame, ClientFrame, Decoder, FrameHeader, CLOSE_GOING_AWAY, CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR, CLOSE_SLOW_CONSUMER, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,
};

/// How long the handshake response may take to write.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close frame may take to write before the socket is simply dropped.
const CLOSE_FRAME_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a `Sec-WebSocket-Key` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey;

impl std::fmt::Display for BadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sec-WebSocket-Key must be the base64 of 16 bytes")
    }
}

/// Checks a `Sec-WebSocket-Key` (base64 of 16 bytes: 22 characters and `==`).
pub fn check_websocket_key(key: &str) -> Result<(), BadKey> {
    let bytes = key.as_bytes();
    let body_ok = bytes.len() == 24
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        && &bytes[22..] == b"==";
    if body_ok {
        Ok(())
    } else {
        Err(BadKey)
    }
}

/// The `101 Switching Protocols` response for a checked key.
pub fn handshake_response(key: &str) -> String {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Where a viewer's writer sends its bytes.
pub enum Sink {
    /// A socket owned by Rust.
    Tcp(OwnedWriteHalf),
    /// A socket owned by JS, written through the host.
    Bridged {
        /// The viewer id the host knows the socket by.
        viewer_id: u32,
        /// The host.
        host: Arc<dyn Host>,
    },
}

/// Writes `head` then `body` with vectored writes (one syscall for both in the usual case).
async fn write_all_vectored(
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

/// Runs a write unless the viewer is closed meanwhile (`cancelled` resolves); a cut write leaves
/// the stream mid-frame, reported as `Interrupted` so no close frame follows it.
async fn interruptible<C: Future<Output = ()>>(
    cancelled: Pin<&mut C>,
    write: impl Future<Output = io::Result<()>>,
) -> io::Result<()> {
    tokio::select! {
        biased;
        _ = cancelled => Err(io::ErrorKind::Interrupted.into()),
        result = write => result,
    }
}

impl Sink {
    /// Writes one TEXT message whose header is already built (frames) or built here.
    async fn send_text(&mut self, header: &FrameHeader, text: &Bytes) -> io::Result<()> {
        match self {
            Sink::Tcp(writer) => write_all_vectored(writer, header.as_bytes(), text).await,
            Sink::Bridged { viewer_id, host } => host
                .bridged_send(*viewer_id, BridgedOutbound::Text(text.clone()))
                .await
                .map_err(io::Error::other),
        }
    }

    /// Writes a ping or pong. JS sockets answer pings themselves.
    async fn send_control(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        match self {
            Sink::Tcp(writer) => writer.write_all(&encode_frame(opcode, payload)).await,
            Sink::Bridged { .. } => Ok(()),
        }
    }

    /// Sends the close frame and ends the write side.
    async fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
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
        }
    }
}

/// The writer half of a viewer: what it needs besides the sink.
pub struct Writer {
    outbox: mpsc::Receiver<Outbound>,
    frames: watch::Receiver<Option<Arc<Frame>>>,
    closer: Arc<ViewerCloser>,
    counters: Arc<ViewerCounters>,
    heartbeat: Duration,
    cleared_through: Arc<AtomicU64>,
}

/// Longest wait of a message for the frame it follows; that frame is normally published within
/// microseconds, this only bounds the unforeseen.
const FRAME_ORDER_WAIT: Duration = Duration::from_secs(1);

impl Writer {
    /// Sends the newest frame if this viewer has not seen it; counts the frames it skipped.
    async fn send_latest_frame<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        cancelled: Pin<&mut C>,
    ) -> io::Result<()> {
        let frame = self.frames.borrow_and_update().clone();
        let Some(frame) = frame else {
            return Ok(());
        };
        // Only this writer stores `seen_seq`; the registry reads it for stats.
        let seen = self.counters.seen_seq.load(Ordering::Relaxed);
        if frame.seq <= seen {
            return Ok(());
        }
        let skipped = frame.seq - seen - 1;
        self.counters.seen_seq.store(frame.seq, Ordering::Relaxed);
        self.counters
            .frames_skipped
            .fetch_add(skipped, Ordering::Relaxed);
        interruptible(cancelled, sink.send_text(&frame.text_header, &frame.text)).await?;
        self.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_sent.fetch_add(
            (frame.text_header.as_bytes().len() + frame.text.len()) as u64,
            Ordering::Relaxed,
        );
        Ok(())
    }

    async fn pump(&mut self, sink: &mut Sink) -> io::Result<()> {
        let start = tokio::time::Instant::now() + self.heartbeat;
        let mut ping = tokio::time::interval_at(start, self.heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One cancellation future for the writer's life: re-creating it per frame registered
        // and unregistered a waiter (two lock round trips) for every frame of every viewer.
        let closer = self.closer.clone();
        let cancelled = closer.cancelled();
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                biased;
                _ = cancelled.as_mut() => return Ok(()),
                message = self.outbox.recv() => match message {
                    None => return Ok(()),
                    Some(Outbound::Text { text, after_seq }) => {
                        let seen = self.counters.seen_seq.load(Ordering::Relaxed);
                        if after_seq > seen {
                            // The frame this message follows may still be on its way to the
                            // watch (a JS push publishes from a runtime task): wait for it.
                            let cleared = self.cleared_through.clone();
                            let wait = self.frames.wait_for(|latest| {
                                latest.as_ref().is_some_and(|f| f.seq >= after_seq)
                                    || cleared.load(Ordering::Acquire) >= after_seq
                            });
                            let published = tokio::select! {
                                biased;
                                _ = cancelled.as_mut() => return Ok(()),
                                published = tokio::time::timeout(FRAME_ORDER_WAIT, wait) => {
                                    matches!(published, Ok(Ok(_)))
                                }
                            };
                            if published {
                                self.send_latest_frame(sink, cancelled.as_mut()).await?;
                            }
                        }
                        let header = FrameHeader::new(OP_TEXT, text.len());
                        interruptible(cancelled.as_mut(), sink.send_text(&header, &text)).await?;
                        self.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
                        self.counters.bytes_sent.fetch_add(
                            (header.as_bytes().len() + text.len()) as u64,
                            Ordering::Relaxed,
                        );
                    }
                    Some(Outbound::Pong(payload)) => {
                        interruptible(cancelled.as_mut(), sink.send_control(OP_PONG, &payload))
                            .await?;
                    }
                },
                changed = self.frames.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.send_latest_frame(sink, cancelled.as_mut()).await?;
                }
                _ = ping.tick() => {
                    interruptible(cancelled.as_mut(), sink.send_control(OP_PING, b"")).await?;
                }
            }
        }
    }

    /// Runs until the viewer is closed or its socket fails, then sends the requested close
    /// frame when the stream is still at a frame boundary.
    pub async fn run(mut self, mut sink: Sink) {
        let result = self.pump(&mut sink).await;
        if result.is_ok() {
            if let Some((code, reason)) = self.closer.request() {
                let _ =
                    tokio::time::timeout(CLOSE_FRAME_TIMEOUT, sink.send_close(code, &reason)).await;
            }
        }
        self.closer.abort();
    }
}

/// Splits a slot into its writer and what the reader needs.
pub fn split_slot(slot: ViewerSlot, heartbeat: Duration) -> (Writer, Reader, Arc<Channel>, u32) {
    let writer = Writer {
        cleared_through: slot.channel.cleared_through.clone(),
        outbox: slot.outbox,
        frames: slot.frames,
        closer: slot.closer.clone(),
        counters: slot.counters,
        heartbeat,
    };
    let reader = Reader {
        channel: slot.channel.clone(),
        outbox: slot.outbox_tx,
        closer: slot.closer,
    };
    (writer, reader, slot.channel, slot.id)
}

/// The reader half of a native viewer.
pub struct Reader {
    channel: Arc<Channel>,
    outbox: mpsc::Sender<Outbound>,
    closer: Arc<ViewerCloser>,
}

/// The close code echoed for a client's close frame (RFC 6455 §7.4).
fn echo_code(code: Option<u16>) -> u16 {
    match code {
        None => CLOSE_NORMAL,
        Some(code @ (1000..=1003 | 1007..=1011 | 3000..=4999)) => code,
        Some(_) => CLOSE_PROTOCOL_ERROR,
    }
}

impl Reader {
    /// Reads client frames until close, error, heartbeat timeout or cancellation.
    pub async fn run(
        self,
        mut read: OwnedReadHalf,
        head: Bytes,
        max_message: usize,
        heartbeat_timeout: Duration,
    ) {
        let mut decoder = Decoder::new(max_message);
        decoder.buffer_mut().extend_from_slice(&head);
        loop {
            loop {
                match decoder.next_frame() {
                    Ok(None) => break,
                    Ok(Some(ClientFrame::Text(text))) => self.channel.on_client_text(&text),
                    Ok(Some(ClientFrame::Binary(_))) => self.channel.count_malformed(),
                    Ok(Some(ClientFrame::Ping(payload))) => {
                        if self.outbox.try_send(Outbound::Pong(payload)).is_err() {
                            self.closer
                                .close(CLOSE_SLOW_CONSUMER, "slow consumer: message queue full");
                            return;
                        }
                    }
                    Ok(Some(ClientFrame::Pong(_))) => {}
                    Ok(Some(ClientFrame::Close(code, _))) => {
                        self.closer.close(echo_code(code), "");
                        return;
                    }
                    Err(error) => {
                        self.closer.close(error.close_code(), &error.reason());
                        return;
                    }
                }
            }
            let read_result = tokio::select! {
                biased;
                _ = self.closer.cancelled() => return,
                result = tokio::time::timeout(heartbeat_timeout, read.read_buf(decoder.buffer_mut())) => result,
            };
            match read_result {
                Err(_elapsed) => {
                    self.closer.close(CLOSE_GOING_AWAY, "heartbeat timeout");
                    return;
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.closer.abort();
                    return;
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Serves a native viewer on an accepted socket whose HTTP upgrade request was already read
/// (by Node): writes the `101`, then runs reader and writer until the connection ends, then
/// releases the viewer. Must run inside the registry's runtime.
pub async fn serve_native(
    registry: Arc<Registry>,
    slot: ViewerSlot,
    stream: std::net::TcpStream,
    key: String,
    head: Bytes,
) {
    let config = registry.config().clone();
    let (writer, reader, channel, viewer_id) = split_slot(slot, config.heartbeat_interval);
    let closer = reader.closer.clone();
    let served = async {
        stream.set_nonblocking(true)?;
        let stream = TcpStream::from_std(stream)?;
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let response = handshake_response(&key);
        tokio::time::timeout(HANDSHAKE_TIMEOUT, write.write_all(response.as_bytes()))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        tokio::join!(
            reader.run(
                read,
                head,
                config.max_message_bytes,
                config.heartbeat_timeout
            ),
            writer.run(Sink::Tcp(write)),
        );
        io::Result::Ok(())
    };
    let _ = served.await;
    closer.abort();
    registry.release(&channel, viewer_id);
}

/// Serves a JS-bridged viewer: only the writer runs in Rust; the JS socket's messages come in
/// through `Channel::on_client_text` and its close through `Registry::close_viewer`.
pub async fn serve_bridged(registry: Arc<Registry>, slot: ViewerSlot) {
    let heartbeat = registry.config().heartbeat_interval;
    let (writer, _reader, channel, viewer_id) = split_slot(slot, heartbeat);
    let sink = Sink::Bridged {
        viewer_id,
        host: registry.host().clone(),
    };
    writer.run(sink).await;
    registry.release(&channel, viewer_id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;
    use crate::registry::tests::registry_with;
    use crate::registry::{ChannelId, RegistryConfig, Transport};
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncBufReadExt;
    use tokio_tungstenite::tungstenite::Message;

    const JPEG: &str = "/9j/4AAQSkZJRgABAQ==";

    #[test]
    fn websocket_key_checks() {
        assert!(check_websocket_key("dGhlIHNhbXBsZSBub25jZQ==").is_ok());
        assert!(check_websocket_key("short").is_err());
        assert!(check_websocket_key("dGhlIHNhbXBsZSBub25jZQ=x").is_err());
        assert!(handshake_response("dGhlIHNhbXBsZSBub25jZQ==")
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    /// Accepts one TCP connection, reads its HTTP upgrade request like Node would, and hands
    /// the socket to `serve_native`.
    async fn accept_viewer(
        listener: &tokio::net::TcpListener,
        registry: &Arc<Registry>,
        id: &ChannelId,
    ) -> tokio::task::JoinHandle<()> {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut reader = tokio::io::BufReader::new(stream);
        let mut key = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("request line");
            if let Some(value) = line.strip_prefix("Sec-WebSocket-Key: ") {
                key = value.trim().to_string();
            }
            if line == "\r\n" {
                break;
            }
        }
        let stream = reader.into_inner().into_std().expect("std stream");
        let slot = registry
            .admit(id, Transport::Native, true)
            .expect("admitted");
        tokio::spawn(serve_native(
            registry.clone(),
            slot,
            stream,
            key,
            Bytes::new(),
        ))
    }

    type ClientSocket =
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

    /// A real WebSocket client connected to a viewer of `agent` served by `serve_native`.
    async fn connect_viewer(
        registry: &Arc<Registry>,
        agent: &str,
    ) -> (ClientSocket, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let url = format!("ws://{addr}/browser/{agent}/stream");
        let client = tokio::spawn(async move {
            tokio_tungstenite::connect_async(url)
                .await
                .expect("connect")
                .0
        });
        let served = accept_viewer(&listener, registry, &ChannelId::new(agent, None)).await;
        (client.await.expect("client task"), served)
    }

    #[tokio::test]
    async fn native_viewer_end_to_end() {
        let (registry, host) = registry_with(RegistryConfig {
            linger: Duration::ZERO,
            ..RegistryConfig::default()
        });
        let (mut ws, served) = connect_viewer(&registry, "agent").await;
        let first = ws.next().await.expect("message").expect("ok");
        assert_eq!(first, Message::Text(r#"{"status":"connected"}"#.into()));
        registry.set_status("agent", None, "streaming");
        registry.push_frame("agent", None, JPEG.into(), FrameMeta::default());
        assert_eq!(
            ws.next().await.expect("message").expect("ok"),
            Message::Text(r#"{"status":"streaming"}"#.into())
        );
        assert_eq!(
            ws.next().await.expect("message").expect("ok"),
            Message::Text(JPEG.into())
        );
        ws.send(Message::Text(
            r#"{"type":"keyboard","eventType":"char","text":"x"}"#.into(),
        ))
        .await
        .expect("send");
        ws.send(Message::Ping(Bytes::from_static(b"hi")))
            .await
            .expect("ping");
        assert_eq!(
            ws.next().await.expect("message").expect("ok"),
            Message::Pong(Bytes::from_static(b"hi"))
        );
        ws.close(None).await.expect("close");
        served.await.expect("served");
        assert_eq!(registry.viewer_count("agent"), 0);
        assert_eq!(host.inputs.lock().expect("lock").len(), 1);
        assert_eq!(host.stops.lock().expect("lock").len(), 1);
    }

    #[tokio::test]
    async fn oversized_message_closes_1009() {
        let (registry, _host) = registry_with(RegistryConfig {
            max_message_bytes: 1024,
            ..RegistryConfig::default()
        });
        let (mut ws, served) = connect_viewer(&registry, "agent").await;
        let _connected = ws.next().await;
        ws.send(Message::Text("x".repeat(4096).into()))
            .await
            .expect("send");
        let mut close_code = None;
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(Some(frame)) = message {
                close_code = Some(u16::from(frame.code));
            }
        }
        assert_eq!(close_code, Some(1009));
        served.await.expect("served");
        assert_eq!(registry.viewer_total(), 0);
    }
}
