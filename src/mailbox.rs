//! One viewer's reliable queue: messages in order and bounded, except that sticky state —
//! status, url, viewport and each error code — is latest-wins per viewer.
//!
//! Owns: the queue, its bound, and the replacement rule: a new value of a sticky kind removes
//! the value of that kind still waiting and joins the end of the queue. What the viewer reads
//! is therefore the sequence of messages as they were queued, minus superseded values, so a
//! burst of `{url}` or `{error}` messages costs one entry per kind (never a 4001 for a viewer
//! that reads) and no old value ever arrives after a newer message. Must not decide what is
//! sticky (the registry does) nor touch sockets (the writers do).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use bytes::Bytes;

use crate::registry::Outbound;
use crate::sync::lock;

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
    /// `{"type":"tabs"}` (extended viewers).
    Tabs,
}

/// The queue is at its bound: the viewer does not read (the caller closes it with 4001).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

struct Entry {
    message: Outbound,
    sticky: Option<StickyKind>,
}

struct Queue {
    entries: VecDeque<Entry>,
    /// The receiver waiting for an entry (or for the last sender to go). Kept under the same
    /// lock as the entries: a poll is one lock, and dropping a poll costs nothing (the writer
    /// polls its mailbox once per frame).
    waiting: Option<Waker>,
}

struct Shared {
    queue: Mutex<Queue>,
    senders: AtomicUsize,
    capacity: usize,
}

impl Shared {
    fn wake_receiver(&self) {
        let waker = lock(&self.queue).waiting.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A viewer's queue holding at most `capacity` messages: the sending and the receiving end.
pub fn mailbox(capacity: usize) -> (Outbox, Mailbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            entries: VecDeque::new(),
            waiting: None,
        }),
        senders: AtomicUsize::new(1),
        capacity: capacity.max(1),
    });
    (Outbox(shared.clone()), Mailbox(shared))
}

/// The sending end (cloned for the registry's link and the viewer's reader).
pub struct Outbox(Arc<Shared>);

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Outbox(self.0.clone())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The receiver sees the end once the queue is drained.
            self.0.wake_receiver();
        }
    }
}

impl Outbox {
    /// Queues `message` at the end.
    pub fn try_send(&self, message: Outbound) -> Result<(), Full> {
        self.push(Entry {
            message,
            sticky: None,
        })
    }

    /// Queues the newest value of a sticky kind: the value of that kind still waiting (if
    /// any) is dropped, and this one joins the end of the queue.
    pub fn send_sticky(&self, kind: StickyKind, text: Bytes, after_seq: u64) -> Result<(), Full> {
        let entry = Entry {
            message: Outbound::Text { text, after_seq },
            sticky: Some(kind),
        };
        self.push(entry)
    }

    fn push(&self, entry: Entry) -> Result<(), Full> {
        let mut queue = lock(&self.0.queue);
        let replaced = entry.sticky.as_ref().and_then(|kind| {
            queue
                .entries
                .iter()
                .position(|waiting| waiting.sticky.as_ref() == Some(kind))
        });
        match replaced {
            Some(at) => {
                queue.entries.remove(at);
            }
            None if queue.entries.len() >= self.0.capacity => return Err(Full),
            None => {}
        }
        queue.entries.push_back(entry);
        let waiting = queue.waiting.take();
        drop(queue);
        if let Some(waker) = waiting {
            waker.wake();
        }
        Ok(())
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        lock(&self.0.queue).entries.len()
    }
}

/// The receiving end, read by the viewer's writer.
pub struct Mailbox(Arc<Shared>);

impl Mailbox {
    /// The next message; `None` once the queue is drained and every sender is gone.
    /// Cancel-safe: a message is taken only when this returns it.
    pub async fn recv(&mut self) -> Option<Outbound> {
        std::future::poll_fn(|cx| {
            let mut queue = lock(&self.0.queue);
            if let Some(entry) = queue.entries.pop_front() {
                return Poll::Ready(Some(entry.message));
            }
            // Read under the lock: a sender that is gone pushed (under this lock) before it went.
            if self.0.senders.load(Ordering::Acquire) == 0 {
                return Poll::Ready(None);
            }
            match &mut queue.waiting {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                waiting => *waiting = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// The next message if one waits.
    #[cfg(test)]
    pub fn try_recv(&self) -> Option<Outbound> {
        lock(&self.0.queue)
            .entries
            .pop_front()
            .map(|entry| entry.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(message: Option<Outbound>) -> String {
        match message {
            Some(Outbound::Text { text, .. }) => String::from_utf8_lossy(&text).into_owned(),
            other => panic!("expected a text, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_burst_of_one_kind_takes_one_entry_and_delivers_the_newest() {
        let (outbox, mut mailbox) = mailbox(2);
        for i in 0..1000 {
            let url = Bytes::from(format!("url {i}"));
            outbox
                .send_sticky(StickyKind::Url, url, i)
                .expect("one entry per kind");
        }
        outbox
            .send_sticky(StickyKind::Status, Bytes::from("streaming"), 0)
            .expect("a second kind fits");
        match mailbox.recv().await {
            Some(Outbound::Text { text, after_seq }) => {
                assert_eq!(&text[..], b"url 999");
                assert_eq!(after_seq, 999);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(text(mailbox.recv().await), "streaming");
        assert!(mailbox.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_newer_value_never_overtakes_what_was_queued_after_the_old_one() {
        let (outbox, mut mailbox) = mailbox(8);
        let status = |s: &'static str| outbox.send_sticky(StickyKind::Status, Bytes::from(s), 0);
        status("starting").expect("room");
        outbox
            .send_sticky(StickyKind::Url, Bytes::from("url"), 0)
            .expect("room");
        outbox
            .try_send(Outbound::Text {
                text: Bytes::from("other"),
                after_seq: 0,
            })
            .expect("room");
        status("closed").expect("room");
        assert_eq!(text(mailbox.recv().await), "url");
        assert_eq!(text(mailbox.recv().await), "other");
        assert_eq!(text(mailbox.recv().await), "closed");
        assert!(mailbox.try_recv().is_none());
    }

    #[tokio::test]
    async fn error_codes_are_kept_apart_and_plain_messages_are_bounded() {
        let (outbox, mut mailbox) = mailbox(3);
        for code in ["a", "b", "a"] {
            outbox
                .send_sticky(StickyKind::Error(code.into()), Bytes::from(code), 0)
                .expect("room");
        }
        assert_eq!(outbox.len(), 2);
        let plain = || Outbound::Pong(Bytes::new());
        assert_eq!(outbox.try_send(plain()), Ok(()));
        assert_eq!(outbox.try_send(plain()), Err(Full));
        // A full queue refuses a new kind, but still takes a newer value of a waiting kind.
        assert_eq!(
            outbox.send_sticky(StickyKind::Url, Bytes::new(), 0),
            Err(Full)
        );
        assert_eq!(
            outbox.send_sticky(StickyKind::Error("b".into()), Bytes::from("b2"), 0),
            Ok(())
        );
        assert_eq!(text(mailbox.recv().await), "a");
        assert!(matches!(mailbox.recv().await, Some(Outbound::Pong(_))));
        assert_eq!(text(mailbox.recv().await), "b2");
    }

    #[tokio::test]
    async fn the_receiver_ends_once_drained_and_every_sender_is_gone() {
        let (outbox, mut mailbox) = mailbox(4);
        let second = outbox.clone();
        outbox.try_send(Outbound::Pong(Bytes::new())).expect("room");
        drop(outbox);
        let waiter = tokio::spawn(async move {
            let first = mailbox.recv().await;
            let end = mailbox.recv().await;
            (first.is_some(), end.is_none())
        });
        tokio::task::yield_now().await;
        drop(second);
        assert_eq!(waiter.await.expect("joined"), (true, true));
    }
}
