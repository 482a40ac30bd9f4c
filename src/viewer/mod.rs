//! Viewer transport: serves one admitted viewer's connection, either a TCP socket handed over
//! from Node by file descriptor (`Sink::Tcp`) or a socket that stays in JS (`Sink::Bridged`).
//!
//! Owns: writing the `101` (from `ws::handshake`) and running a viewer's two tasks until it is
//! released: [`reader`] (decode client frames, answer pings, hand messages to the registry,
//! heartbeat timeout) and [`writer`] (latest frame wins, pacing, reliable messages in order,
//! events, resume and snapshot answers, pings), both writing through a [`sink`]; and the close
//! sequence (close frame, then draining the client's last bytes). Must not touch registry state
//! except through `Registry::release`, `Registry::on_client_*` and the channel's read-only
//! accessors.

pub(crate) mod reader;
pub(crate) mod sink;
pub(crate) mod writer;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use crate::host::BridgedOutbound;
use crate::protocol::{Mode, EXTENDED_PROTOCOL};
use crate::registry::{Channel, Registry, ViewerCloser, ViewerSlot};
use crate::ws::handshake::handshake_response;
use reader::Reader;
pub(crate) use sink::MessageOut;
use sink::Sink;
use writer::{Pacing, Writer};

/// How long the handshake response may take to write.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After the server's close frame, how long the client's remaining bytes (up to its own close
/// frame and end of stream) are read and discarded. Closing a socket with unread data makes the
/// kernel send a reset, which can destroy the close frame before the client reads it.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Splits a slot into its writer and what the reader needs.
pub fn split_slot(
    registry: &Arc<Registry>,
    slot: ViewerSlot,
    heartbeat: Duration,
) -> (Writer, Reader, Arc<Channel>, u32) {
    slot.counters
        .events_through
        .store(slot.event_cursor, std::sync::atomic::Ordering::Relaxed);
    let writer = Writer {
        cleared_through: slot.channel.cleared_through.clone(),
        outbox: slot.outbox,
        frames: slot.frames,
        closer: slot.closer.clone(),
        counters: slot.counters,
        heartbeat,
        link: slot.link.clone(),
        channel: slot.channel.clone(),
        events: slot.events,
        event_cursor: slot.event_cursor,
        pacing: Pacing::default(),
        video: None,
        video_config: None,
        webrtc_pictures: 0,
        relay: registry.relay.clone(),
    };
    let reader = Reader {
        registry: registry.clone(),
        channel: slot.channel.clone(),
        link: slot.link,
        outbox: slot.outbox_tx,
        closer: slot.closer,
    };
    (writer, reader, slot.channel, slot.id)
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
    let protocol = (slot.link.mode == Mode::Extended).then_some(EXTENDED_PROTOCOL);
    let (writer, reader, channel, viewer_id) =
        split_slot(&registry, slot, config.heartbeat_interval);
    let closer = reader.closer.clone();
    let release = ReleaseOnDrop {
        registry: registry.clone(),
        channel,
        viewer_id,
        closer: closer.clone(),
    };
    let served = async {
        stream.set_nonblocking(true)?;
        let stream = TcpStream::from_std(stream)?;
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let response = handshake_response(&key, protocol);
        tokio::time::timeout(HANDSHAKE_TIMEOUT, write.write_all(response.as_bytes()))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let (read, close_sent) = tokio::join!(
            reader.run(
                read,
                head,
                config.max_message_bytes,
                config.heartbeat_timeout
            ),
            writer.run(Sink::Tcp(write)),
        );
        io::Result::Ok(close_sent.then_some(read))
    };
    let lingering = served.await;
    drop(release);
    if let Ok(Some(read)) = lingering {
        // Counted against the viewer limit while it lasts; with no room, closed at once.
        if let Some(_draining) = registry.start_draining() {
            drain_until_closed(read).await;
        }
    }
}

/// Reads and discards what the client still sends after the server's close frame, until it
/// closes its side or `CLOSE_LINGER` passes.
async fn drain_until_closed(mut read: OwnedReadHalf) {
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Ok(n) = read.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Serves a JS-bridged viewer: only the writer runs in Rust; the JS socket's messages come in
/// through `Registry::on_client_text` and its close through `Registry::close_viewer`.
pub async fn serve_bridged(registry: Arc<Registry>, slot: ViewerSlot) {
    let (writer, viewer_id, _release) = writer_only(&registry, slot);
    let host = registry.host().clone();
    let sink = Sink::Bridged {
        viewer_id,
        host: host.clone(),
    };
    if !writer.run(sink).await {
        // Closed without a close frame (cut mid-message, or stopped): the JS socket must not
        // live on outside every limit.
        let _ = host
            .bridged_send(viewer_id, BridgedOutbound::Terminate)
            .await;
    }
}

/// Serves a relay viewer, the channel's stream to the other instances (`relay::owner`): only
/// the writer runs, publishing whole messages; it ends when the relay closes it (its last
/// subscriber's lease ran out) or the registry closes.
pub async fn serve_relay(registry: Arc<Registry>, slot: ViewerSlot, out: Arc<dyn MessageOut>) {
    let (writer, _, _release) = writer_only(&registry, slot);
    writer.run(Sink::Relay(out)).await;
}

/// The writer of a viewer whose messages come in elsewhere (or never), its id, and what
/// releases it when the serving task ends.
fn writer_only(registry: &Arc<Registry>, slot: ViewerSlot) -> (Writer, u32, ReleaseOnDrop) {
    let heartbeat = registry.config().heartbeat_interval;
    let (writer, reader, channel, viewer_id) = split_slot(registry, slot, heartbeat);
    let release = ReleaseOnDrop {
        registry: registry.clone(),
        channel,
        viewer_id,
        closer: reader.closer.clone(),
    };
    (writer, viewer_id, release)
}

/// Releases a viewer when dropped, including when its task panics: a bug must never leave a
/// phantom viewer that holds control or keeps its channel's source running.
struct ReleaseOnDrop {
    registry: Arc<Registry>,
    channel: Arc<Channel>,
    viewer_id: u32,
    closer: Arc<ViewerCloser>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.closer.abort();
        self.registry.release(&self.channel, self.viewer_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;
    use crate::registry::tests::registry_with;
    use crate::registry::{ChannelId, JoinOptions, RegistryConfig, Transport};
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncBufReadExt;
    use tokio_tungstenite::tungstenite::Message;

    const JPEG: &str = "/9j/4AAQSkZJRgABAQ==";

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
            .admit_with(id, Transport::Native, JoinOptions::compat(true))
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
    async fn graceful_close_finishes_the_frame_in_progress_then_sends_the_close_frame() {
        let (registry, _host) = registry_with(RegistryConfig::default());
        let (mut ws, served) = connect_viewer(&registry, "agent").await;
        let _connected = ws.next().await;
        // A frame far larger than the socket buffers: its write is still pending while the
        // client does not read.
        let big = format!("/9j/{}", "A".repeat(8 * 1024 * 1024));
        registry.push_frame("agent", None, big.clone().into(), FrameMeta::default());
        tokio::time::sleep(Duration::from_millis(100)).await;
        registry.close();
        let mut got_frame = false;
        let mut close_code = None;
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(text) if text.len() == big.len() => got_frame = true,
                Message::Close(Some(frame)) => close_code = Some(u16::from(frame.code)),
                _ => {}
            }
        }
        assert!(got_frame, "the frame in progress was finished");
        assert_eq!(close_code, Some(1001), "then the close frame");
        served.await.expect("served without a panic");
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
