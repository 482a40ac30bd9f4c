//! Takeover plumbing: the per-viewer input rate limit and the per-channel input queue in which
//! mouse moves coalesce.
//!
//! Owns: the token bucket each viewer's client messages draw from (and how often a
//! `rate_limited` answer may be sent), and the ordered queue of inputs waiting to be relayed to
//! the page (a move replaces a queued move; when full, moves make room for clicks and keys, which
//! are never dropped for a move). Must not touch sockets, the registry's channel state or the
//! control decision (who may send input): the registry decides, then uses these.

use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::protocol::ClientMessage;

/// How often a viewer over its rate is told so.
const RATE_LIMIT_REPORT_EVERY: Duration = Duration::from_secs(1);

/// A token bucket: `rate` tokens per second, holding at most `rate` (one second of burst).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
    last_report: Option<Instant>,
}

impl RateLimiter {
    /// A full bucket of `rate` per second.
    pub fn new(rate: u32, now: Instant) -> RateLimiter {
        let rate = f64::from(rate.max(1));
        RateLimiter {
            rate,
            tokens: rate,
            last: now,
            last_report: None,
        }
    }

    /// Takes `cost` tokens if there are that many. A cost above the bucket's size takes the
    /// whole bucket, so every message stays possible at any configured rate.
    pub fn try_take(&mut self, now: Instant, cost: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        let cost = f64::from(cost).min(self.rate);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Whether a `rate_limited` answer may be sent now (at most one per second).
    pub fn may_report(&mut self, now: Instant) -> bool {
        match self.last_report {
            Some(at) if now.saturating_duration_since(at) < RATE_LIMIT_REPORT_EVERY => false,
            _ => {
                self.last_report = Some(now);
                true
            }
        }
    }
}

/// What happened to an input offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued at the end.
    Queued,
    /// A mouse move that replaced the queued move before it.
    Coalesced,
    /// Queued after dropping the oldest queued move to make room.
    QueuedDroppingMove,
    /// A mouse move dropped: the queue is full.
    MoveDropped,
    /// Not queued: the queue is full of inputs that must not drop (or it is closed).
    Full,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<ClientMessage>,
    closed: bool,
}

/// The inputs of one channel waiting to be relayed, in order, to one consumer.
#[derive(Debug)]
pub struct InputQueue {
    state: Mutex<QueueState>,
    ready: Notify,
    capacity: usize,
}

impl InputQueue {
    /// A queue holding at most `capacity` inputs.
    pub fn new(capacity: usize) -> InputQueue {
        InputQueue {
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Offers an input (see `Enqueued`).
    pub fn push(&self, input: ClientMessage) -> Enqueued {
        let mut state = lock(&self.state);
        if state.closed {
            return Enqueued::Full;
        }
        if let Some(last) = state.items.back_mut() {
            if input.coalesces_with(last) {
                *last = input;
                return Enqueued::Coalesced;
            }
        }
        let mut outcome = Enqueued::Queued;
        if state.items.len() >= self.capacity {
            if input.is_mouse_move() {
                return Enqueued::MoveDropped;
            }
            match state.items.iter().position(ClientMessage::is_mouse_move) {
                Some(at) => {
                    state.items.remove(at);
                    outcome = Enqueued::QueuedDroppingMove;
                }
                None => return Enqueued::Full,
            }
        }
        state.items.push_back(input);
        drop(state);
        self.ready.notify_one();
        outcome
    }

    /// The next input, waiting for one; `None` once the queue is closed.
    pub async fn pop(&self) -> Option<ClientMessage> {
        loop {
            {
                let mut state = lock(&self.state);
                if let Some(input) = state.items.pop_front() {
                    return Some(input);
                }
                if state.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Inputs waiting.
    pub fn len(&self) -> usize {
        lock(&self.state).items.len()
    }

    /// Ends the consumer's `pop` loop; later pushes are refused.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.items.clear();
        drop(state);
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{KeyboardInput, MouseInput};

    fn mouse(event_type: &'static str, x: f64) -> ClientMessage {
        ClientMessage::Mouse(MouseInput {
            event_type,
            x,
            y: 0.0,
            button: None,
            click_count: None,
            delta_x: None,
            delta_y: None,
            modifiers: None,
        })
    }

    fn key() -> ClientMessage {
        ClientMessage::Keyboard(KeyboardInput {
            event_type: "keyDown",
            key: Some("a".into()),
            code: None,
            text: None,
            modifiers: None,
            windows_virtual_key_code: Some(65),
        })
    }

    #[test]
    fn bucket_refills_at_its_rate_and_reports_once_a_second() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, start);
        assert_eq!((0..20).filter(|_| limiter.try_take(start, 1)).count(), 10);
        assert!(!limiter.try_take(start, 1));
        assert!(limiter.try_take(start + Duration::from_millis(110), 1));
        assert!(!limiter.try_take(start + Duration::from_millis(120), 5));
        assert!(limiter.try_take(start + Duration::from_millis(700), 5));
        // Costlier than the whole bucket: possible once the bucket is full.
        assert!(!limiter.try_take(start + Duration::from_millis(800), 20));
        assert!(limiter.try_take(start + Duration::from_millis(2000), 20));
        assert!(limiter.may_report(start));
        assert!(!limiter.may_report(start + Duration::from_millis(500)));
        assert!(limiter.may_report(start + Duration::from_millis(1001)));
    }

    #[test]
    fn moves_coalesce_and_make_room_for_clicks() {
        let queue = InputQueue::new(3);
        assert_eq!(queue.push(mouse("mouseMoved", 1.0)), Enqueued::Queued);
        assert_eq!(queue.push(mouse("mouseMoved", 2.0)), Enqueued::Coalesced);
        assert_eq!(queue.push(mouse("mousePressed", 2.0)), Enqueued::Queued);
        assert_eq!(queue.push(mouse("mouseMoved", 3.0)), Enqueued::Queued);
        assert_eq!(queue.len(), 3);
        // Full: a move is dropped, a click replaces the oldest move.
        assert_eq!(
            queue.push(mouse("mouseReleased", 3.0)),
            Enqueued::QueuedDroppingMove
        );
        assert_eq!(queue.push(mouse("mouseMoved", 4.0)), Enqueued::MoveDropped);
        assert_eq!(queue.push(key()), Enqueued::QueuedDroppingMove);
        assert_eq!(queue.push(key()), Enqueued::Full);
        let order: Vec<ClientMessage> = std::iter::from_fn(|| {
            let mut state = lock(&queue.state);
            state.items.pop_front()
        })
        .collect();
        assert_eq!(
            order,
            vec![
                mouse("mousePressed", 2.0),
                mouse("mouseReleased", 3.0),
                key()
            ]
        );
    }

    #[tokio::test]
    async fn pop_waits_and_close_ends_it() {
        let queue = std::sync::Arc::new(InputQueue::new(8));
        let consumer = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(input) = queue.pop().await {
                    got.push(input);
                }
                got
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        queue.push(key());
        tokio::time::sleep(Duration::from_millis(10)).await;
        queue.close();
        assert_eq!(consumer.await.expect("consumer"), vec![key()]);
        assert_eq!(queue.push(key()), Enqueued::Full);
    }
}
