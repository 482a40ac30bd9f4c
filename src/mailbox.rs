//! One viewer's reliable queue, as its writer reads it: messages in order and bounded, except
//! sticky state — status, url, viewport and each error code — which is latest-wins per viewer.
//!
//! Owns: the sticky slots and the mapping of a queued sticky marker to the newest text of its
//! kind. A burst of `{url}` or `{error}` messages from a source therefore costs one queue
//! entry per kind, never a 4001 for a viewer that reads. Must not decide what is sticky (the
//! registry does) nor touch sockets (the writers do).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::registry::{lock, Outbound};

/// A kind of state of which a viewer only needs the newest value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StickyKind {
    /// `{status}`.
    Status,
    /// `{url}`.
    Url,
    /// `{viewport}`.
    Viewport,
    /// `{error, message}` of one error code.
    Error(String),
}

/// The newest text of each sticky kind not yet taken by the viewer's writer, with the frame
/// sequence number it must follow.
#[derive(Debug, Default)]
pub struct StickySlots(Mutex<HashMap<StickyKind, (Bytes, u64)>>);

impl StickySlots {
    /// Stores `text` as the newest of `kind`; true when no value of that kind was waiting, so
    /// the caller must queue a marker (`Outbound::Sticky`) for it.
    pub fn put(&self, kind: StickyKind, text: Bytes, after_seq: u64) -> bool {
        lock(&self.0).insert(kind, (text, after_seq)).is_none()
    }

    /// Takes the newest text of `kind`, if one waits.
    fn take(&self, kind: &StickyKind) -> Option<(Bytes, u64)> {
        lock(&self.0).remove(kind)
    }
}

/// The receiving end of a viewer's queue: sticky markers come out as the newest text of
/// their kind.
pub struct Mailbox {
    queue: mpsc::Receiver<Outbound>,
    sticky: Arc<StickySlots>,
}

impl Mailbox {
    /// A mailbox reading `queue`, resolving markers from `sticky`.
    pub fn new(queue: mpsc::Receiver<Outbound>, sticky: Arc<StickySlots>) -> Mailbox {
        Mailbox { queue, sticky }
    }

    /// The next message; `None` once every sender is gone. Cancel-safe (the only await is
    /// the channel's own cancel-safe `recv`).
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            let message = self.queue.recv().await?;
            if let Some(message) = self.resolve(message) {
                return Some(message);
            }
        }
    }

    /// The next message if one is ready.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        loop {
            let message = self.queue.try_recv().ok()?;
            if let Some(message) = self.resolve(message) {
                return Some(message);
            }
        }
    }

    fn resolve(&self, message: Outbound) -> Option<Outbound> {
        match message {
            Outbound::Sticky(kind) => self
                .sticky
                .take(&kind)
                .map(|(text, after_seq)| Outbound::Text { text, after_seq }),
            other => Some(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_one_kind_takes_one_entry_and_delivers_the_newest() {
        let (tx, rx) = mpsc::channel(4);
        let sticky = Arc::new(StickySlots::default());
        let mut mailbox = Mailbox::new(rx, sticky.clone());
        for i in 0..1000 {
            let text = Bytes::from(format!("{{\"url\":\"https://a/{i}\"}}"));
            if sticky.put(StickyKind::Url, text, i) {
                tx.try_send(Outbound::Sticky(StickyKind::Url))
                    .expect("one marker fits");
            }
        }
        let status = Bytes::from_static(br#"{"status":"streaming"}"#);
        assert!(sticky.put(StickyKind::Status, status, 0));
        tx.try_send(Outbound::Sticky(StickyKind::Status))
            .expect("second marker fits");
        match mailbox.recv().await {
            Some(Outbound::Text { text, after_seq }) => {
                assert_eq!(&text[..], br#"{"url":"https://a/999"}"#);
                assert_eq!(after_seq, 999);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(mailbox.recv().await, Some(Outbound::Text { .. })));
        assert!(mailbox.try_recv().is_none());
        // Once taken, the next value of the kind queues a new marker.
        assert!(sticky.put(StickyKind::Url, Bytes::from_static(b"{}"), 0));
    }

    #[test]
    fn error_codes_are_kept_apart() {
        let sticky = StickySlots::default();
        assert!(sticky.put(StickyKind::Error("a".into()), Bytes::new(), 0));
        assert!(sticky.put(StickyKind::Error("b".into()), Bytes::new(), 0));
        assert!(!sticky.put(StickyKind::Error("a".into()), Bytes::new(), 0));
    }
}
