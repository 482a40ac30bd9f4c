//! The reader task of a native viewer: decodes client frames, answers pings and close frames,
//! hands messages to the registry and enforces the heartbeat timeout.
//! Must not write to the socket itself: pongs and close requests go through the writer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;

use crate::mailbox::Outbox;
use crate::registry::{Channel, Outbound, Registry, ViewerCloser, ViewerLink};
use crate::ws::codec::{
    ClientFrame, Decoder, CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_SLOW_CONSUMER,
};

/// The reader half of a native viewer.
pub struct Reader {
    pub(super) registry: Arc<Registry>,
    pub(super) channel: Arc<Channel>,
    pub(super) link: Arc<ViewerLink>,
    pub(super) outbox: Outbox,
    pub(super) closer: Arc<ViewerCloser>,
}

/// The close code echoed for a client's close frame (RFC 6455 §7.4).
pub(super) fn echo_code(code: Option<u16>) -> u16 {
    match code {
        None => CLOSE_NORMAL,
        Some(code @ (1000..=1003 | 1007..=1011 | 3000..=4999)) => code,
        Some(_) => CLOSE_PROTOCOL_ERROR,
    }
}

impl Reader {
    /// Reads client frames until close, error, heartbeat timeout or cancellation; hands the
    /// read half back (a server-initiated close drains it).
    pub async fn run(
        self,
        mut read: OwnedReadHalf,
        head: Bytes,
        max_message: usize,
        heartbeat_timeout: Duration,
    ) -> OwnedReadHalf {
        let mut decoder = Decoder::new(max_message);
        decoder.buffer_mut().extend_from_slice(&head);
        loop {
            loop {
                match decoder.next_frame() {
                    Ok(None) => break,
                    Ok(Some(ClientFrame::Text(text))) => {
                        self.registry
                            .on_client_text(&self.channel, &self.link, &text)
                    }
                    Ok(Some(ClientFrame::Binary(_))) => {
                        self.registry.on_client_binary(&self.channel, &self.link)
                    }
                    Ok(Some(ClientFrame::Ping(payload))) => {
                        if self.outbox.try_send(Outbound::Pong(payload)).is_err() {
                            self.closer
                                .close(CLOSE_SLOW_CONSUMER, "slow consumer: message queue full");
                            return read;
                        }
                    }
                    Ok(Some(ClientFrame::Pong(_))) => {}
                    Ok(Some(ClientFrame::Close(code, _))) => {
                        self.closer.close(echo_code(code), "");
                        return read;
                    }
                    Err(error) => {
                        self.closer.close(error.close_code(), &error.reason());
                        return read;
                    }
                }
            }
            let read_result = tokio::select! {
                biased;
                _ = self.closer.cancelled() => return read,
                result = tokio::time::timeout(heartbeat_timeout, read.read_buf(decoder.buffer_mut())) => result,
            };
            match read_result {
                Err(_elapsed) => {
                    self.closer.close(CLOSE_GOING_AWAY, "heartbeat timeout");
                    return read;
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.closer.abort();
                    return read;
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}
