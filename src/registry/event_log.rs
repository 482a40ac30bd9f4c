//! The agent event channel of one channel: `text_delta` batching and the resume ring.
//!
//! Owns: merging consecutive `text_delta` events over a window (flushed before any other
//! event, so order is kept), numbering events, the bounded ring of sent events (count, bytes
//! and age limits) and answering "what comes after sequence number N" for resume and for each
//! viewer's writer. Must not touch sockets, viewers or timers: the registry owns the lock
//! around an `EventLog`, arms the batch timer and wakes writers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::protocol::event_message;

/// Limits of the event channel.
#[derive(Debug, Clone)]
pub struct EventLimits {
    /// How long `text_delta`s are held to be merged.
    pub batch_window: Duration,
    /// Events the ring holds.
    pub max_events: usize,
    /// Bytes (message texts) the ring holds.
    pub max_bytes: usize,
    /// Age after which an event leaves the ring.
    pub max_age: Duration,
    /// Largest event accepted (JSON bytes), and largest merged delta.
    pub max_event_bytes: usize,
}

/// Why an event is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// Not the text of a JSON object.
    NotAnObject,
    /// No string `type`.
    MissingType,
    /// Larger than `max_event_bytes`.
    TooLarge(usize),
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventError::NotAnObject => write!(f, "an event must be a JSON object"),
            EventError::MissingType => write!(f, "an event must have a string \"type\""),
            EventError::TooLarge(max) => write!(f, "an event must be at most {max} bytes of JSON"),
        }
    }
}

/// A checked event, ready for `EventLog::publish`.
#[derive(Debug, Clone)]
pub struct Event {
    json: String,
    delta: Option<Delta>,
}

/// The parts of a `text_delta`: its text field and everything else (which must match for two
/// deltas to merge).
#[derive(Debug, Clone, PartialEq)]
struct Delta {
    field: &'static str,
    text: String,
    rest: Map<String, Value>,
}

impl Event {
    /// Checks an event's JSON text: an object with a string `type`, within `max_bytes`.
    pub fn parse(json: String, max_bytes: usize) -> Result<Event, EventError> {
        if json.len() > max_bytes {
            return Err(EventError::TooLarge(max_bytes));
        }
        let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&json) else {
            return Err(EventError::NotAnObject);
        };
        let Some(kind) = object.get("type").and_then(Value::as_str) else {
            return Err(EventError::MissingType);
        };
        let delta = if kind == "text_delta" {
            ["text", "delta"].into_iter().find_map(|field| {
                match object.get(field) {
                    Some(Value::String(_)) => {}
                    _ => return None,
                }
                let Some(Value::String(text)) = object.remove(field) else {
                    return None;
                };
                Some(Delta {
                    field,
                    text,
                    rest: std::mem::take(&mut object),
                })
            })
        } else {
            None
        };
        Ok(Event { json, delta })
    }
}

/// One event as sent: its number and its whole `{"type":"event",…}` message.
#[derive(Debug, Clone)]
pub struct SentEvent {
    /// Sequence number.
    pub seq: u64,
    /// The message text.
    pub text: Bytes,
    at: Instant,
}

/// What follows a sequence number in the ring.
#[derive(Debug, Default)]
pub struct EventsAfter {
    /// Events after the asked number were evicted: the oldest still held (or none).
    pub stale: Option<Option<u64>>,
    /// Events in order.
    pub events: Vec<SentEvent>,
    /// The newest event number when this was read (under the same lock): a reader that got
    /// everything continues after it.
    pub last_seq: u64,
}

/// What `publish` did, and what it asks of the caller.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Number of the newest event sent now (0: none): wake the writers.
    pub sent: u64,
    /// A new delta batch started: call `flush_batch(epoch)` when the window ends.
    pub batch_started: Option<u64>,
}

/// The event log of one channel.
#[derive(Debug)]
pub struct EventLog {
    limits: EventLimits,
    held: Option<Delta>,
    held_bytes: usize,
    batch_epoch: u64,
    ring: VecDeque<SentEvent>,
    ring_bytes: usize,
    /// Events numbered up to here may have been evicted; after it the ring holds them all.
    floor: u64,
    /// Numbers at or below this were given elsewhere before this log heard of them.
    known_from: u64,
    last_seq: u64,
    /// Events sent (after merging).
    pub sent: u64,
    /// Events published (before merging).
    pub published: u64,
}

impl EventLog {
    /// An empty log whose first event will be numbered above `floor`.
    pub fn new(limits: EventLimits, floor: u64) -> EventLog {
        EventLog {
            limits,
            held: None,
            held_bytes: 0,
            batch_epoch: 0,
            ring: VecDeque::new(),
            ring_bytes: 0,
            floor,
            known_from: 0,
            last_seq: floor,
            sent: 0,
            published: 0,
        }
    }

    /// Number of the newest event sent (the floor when none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Events held in the ring.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Publishes `event`; `next_seq` numbers each event sent. Deltas are held (merged with a
    /// held batch when their other fields match); anything else flushes the batch first.
    pub fn publish(
        &mut self,
        event: Event,
        now: Instant,
        next_seq: impl FnMut() -> u64,
    ) -> Published {
        let mut next_seq = next_seq;
        self.published += 1;
        match event.delta {
            Some(delta) => {
                if let Some(held) = &mut self.held {
                    let fits = self.held_bytes + delta.text.len() <= self.limits.max_event_bytes;
                    if held.field == delta.field && held.rest == delta.rest && fits {
                        held.text.push_str(&delta.text);
                        self.held_bytes += delta.text.len();
                        return Published::default();
                    }
                }
                // A batch of other fields is sent now; the new one after the window.
                let sent = self.flush(now, &mut next_seq);
                self.held_bytes = delta.text.len();
                self.held = Some(delta);
                self.batch_epoch += 1;
                if self.limits.batch_window.is_zero() {
                    return Published {
                        sent: self.flush(now, &mut next_seq),
                        batch_started: None,
                    };
                }
                Published {
                    sent,
                    batch_started: Some(self.batch_epoch),
                }
            }
            None => {
                self.flush(now, &mut next_seq);
                let seq = next_seq();
                self.append(seq, event_message(seq, &event.json), now);
                Published {
                    sent: seq,
                    batch_started: None,
                }
            }
        }
    }

    /// Appends an event numbered elsewhere (the owner's, relayed as it sent it: batched
    /// there) under its own number, so that a client's number means the same event on every
    /// instance. An event not above the newest here (only when this instance published one of
    /// its own in between) gets a number of this log instead. Returns its number.
    pub fn append_numbered(
        &mut self,
        seq: u64,
        event: Event,
        now: Instant,
        next_seq: impl FnMut() -> u64,
    ) -> u64 {
        let mut next_seq = next_seq;
        self.published += 1;
        self.flush(now, &mut next_seq);
        if seq <= self.last_seq && self.ring.binary_search_by_key(&seq, |e| e.seq).is_ok() {
            // Sent twice (the owner's relay viewer was replaced while it streamed): once.
            return 0;
        }
        let seq = if seq > self.last_seq { seq } else { next_seq() };
        self.append(seq, event_message(seq, &event.json), now);
        seq
    }

    /// Whether `after` is a number this log can place: not below what it dropped (or what
    /// preceded it, or what it was told it cannot know: [`EventLog::known_from`]), not above
    /// `newest`.
    pub fn places(&self, after: u64, newest: u64) -> bool {
        after >= self.floor && after >= self.known_from && after <= newest
    }

    /// Events numbered `seq` or below (elsewhere) never reached this log: a resume from such
    /// a number is not placed here. Unlike the floor, it changes nothing for live readers.
    pub fn known_from(&mut self, seq: u64) {
        self.known_from = self.known_from.max(seq);
    }

    /// Sends the held delta batch if it is still batch `epoch` (its window ended). Returns
    /// the number it got, or 0 when there was nothing to send.
    pub fn flush_batch(&mut self, epoch: u64, now: Instant, next_seq: impl FnMut() -> u64) -> u64 {
        let mut next_seq = next_seq;
        if epoch != self.batch_epoch {
            return 0;
        }
        self.flush(now, &mut next_seq)
    }

    fn flush(&mut self, now: Instant, next_seq: &mut impl FnMut() -> u64) -> u64 {
        let Some(delta) = self.held.take() else {
            return 0;
        };
        self.held_bytes = 0;
        let mut object = delta.rest;
        object.insert(delta.field.to_string(), Value::String(delta.text));
        let json = Value::Object(object).to_string();
        let seq = next_seq();
        self.append(seq, event_message(seq, &json), now);
        seq
    }

    fn append(&mut self, seq: u64, text: String, now: Instant) {
        self.sent += 1;
        self.last_seq = seq;
        self.ring_bytes += text.len();
        self.ring.push_back(SentEvent {
            seq,
            text: Bytes::from(text),
            at: now,
        });
        self.evict(now);
    }

    fn evict(&mut self, now: Instant) {
        while let Some(oldest) = self.ring.front() {
            let over = self.ring.len() > self.limits.max_events
                || self.ring_bytes > self.limits.max_bytes
                || now.saturating_duration_since(oldest.at) > self.limits.max_age;
            if !over {
                break;
            }
            self.ring_bytes -= oldest.text.len();
            self.floor = oldest.seq;
            self.ring.pop_front();
        }
    }

    /// The events after `after` (all held ones for `None`), at most `limit`. `stale` is set
    /// when events after `after` were evicted, or `after` is not a number this log can place
    /// (above `newest`, the newest number given out anywhere): the events are then the oldest
    /// held ones.
    pub fn after(
        &mut self,
        after: Option<u64>,
        newest: u64,
        limit: usize,
        now: Instant,
    ) -> EventsAfter {
        self.evict(now);
        let oldest = self.ring.front().map(|e| e.seq);
        let (from, stale) = match after {
            None => (0, None),
            Some(after) if after < self.floor || after > newest => (0, Some(oldest)),
            Some(after) => (after, None),
        };
        let start = self.ring.partition_point(|e| e.seq <= from);
        EventsAfter {
            stale,
            events: self.ring.iter().skip(start).take(limit).cloned().collect(),
            last_seq: self.last_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryConfig;

    fn event(json: &str) -> Event {
        Event::parse(json.to_string(), 1 << 20).expect("valid event")
    }

    fn counter(start: u64) -> impl FnMut() -> u64 {
        let mut n = start;
        move || {
            n += 1;
            n
        }
    }

    fn texts(events: &[SentEvent]) -> Vec<Value> {
        events
            .iter()
            .map(|e| serde_json::from_slice::<Value>(&e.text).expect("json")["event"].clone())
            .collect()
    }

    #[test]
    fn refuses_bad_events() {
        assert_eq!(
            Event::parse("[1]".into(), 100).err(),
            Some(EventError::NotAnObject)
        );
        assert_eq!(
            Event::parse(r#"{"x":1}"#.into(), 100).err(),
            Some(EventError::MissingType)
        );
        assert_eq!(
            Event::parse(format!(r#"{{"type":"{}"}}"#, "x".repeat(200)), 100).err(),
            Some(EventError::TooLarge(100))
        );
    }

    #[test]
    fn deltas_merge_and_flush_before_other_events() {
        let now = Instant::now();
        let mut log = EventLog::new(RegistryConfig::default().events, 100);
        let mut seq = counter(100);
        assert_eq!(
            log.publish(
                event(r#"{"type":"text_delta","text":"Hel"}"#),
                now,
                &mut seq
            ),
            Published {
                sent: 0,
                batch_started: Some(1)
            }
        );
        assert_eq!(
            log.publish(event(r#"{"type":"text_delta","text":"lo"}"#), now, &mut seq),
            Published::default()
        );
        assert_eq!(
            log.publish(event(r#"{"type":"tool_start","name":"x"}"#), now, &mut seq),
            Published {
                sent: 102,
                batch_started: None
            }
        );
        // A delta of another message starts a new batch; the window's end flushes it.
        log.publish(
            event(r#"{"type":"text_delta","delta":" world","messageId":"m1"}"#),
            now,
            &mut seq,
        );
        log.publish(
            event(r#"{"type":"text_delta","delta":"!","messageId":"m2"}"#),
            now,
            &mut seq,
        );
        assert_eq!(
            log.flush_batch(1, now, &mut seq),
            0,
            "an old epoch flushes nothing"
        );
        assert_eq!(log.flush_batch(3, now, &mut seq), 104);
        let all = log.after(None, 1000, 100, now);
        assert_eq!(
            texts(&all.events),
            vec![
                serde_json::json!({"type":"text_delta","text":"Hello"}),
                serde_json::json!({"type":"tool_start","name":"x"}),
                serde_json::json!({"type":"text_delta","delta":" world","messageId":"m1"}),
                serde_json::json!({"type":"text_delta","delta":"!","messageId":"m2"}),
            ]
        );
        assert_eq!(
            all.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![101, 102, 103, 104]
        );
        assert_eq!(log.published, 5);
        assert_eq!(log.sent, 4);
    }

    #[test]
    fn resume_replays_what_follows_or_says_stale() {
        let now = Instant::now();
        let limits = EventLimits {
            max_events: 3,
            ..RegistryConfig::default().events
        };
        let mut log = EventLog::new(limits, 10);
        let mut seq = counter(10);
        for i in 0..3 {
            log.publish(event(&format!(r#"{{"type":"n","i":{i}}}"#)), now, &mut seq);
        }
        let after = log.after(Some(11), 13, 10, now);
        assert_eq!(after.stale, None);
        assert_eq!(
            after.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![12, 13]
        );
        assert!(log.after(Some(13), 13, 10, now).events.is_empty());
        // Two more evict 11 and 12: resuming from 11 missed 12.
        for i in 3..5 {
            log.publish(event(&format!(r#"{{"type":"n","i":{i}}}"#)), now, &mut seq);
        }
        let stale = log.after(Some(11), 15, 10, now);
        assert_eq!(stale.stale, Some(Some(13)));
        assert_eq!(stale.events.len(), 3);
        assert_eq!(log.after(Some(12), 15, 10, now).stale, None);
        // From before this log existed, or from the future: stale.
        assert!(log.after(Some(5), 15, 10, now).stale.is_some());
        assert!(log.after(Some(99), 15, 10, now).stale.is_some());
        assert_eq!(log.after(Some(13), 15, 1, now).events.len(), 1);
    }

    #[test]
    fn ring_is_bounded_by_bytes_and_age() {
        let now = Instant::now();
        let limits = EventLimits {
            max_bytes: 200,
            max_age: Duration::from_secs(5),
            ..RegistryConfig::default().events
        };
        let mut log = EventLog::new(limits, 0);
        let mut seq = counter(0);
        for _ in 0..10 {
            log.publish(event(r#"{"type":"x","pad":"0123456789"}"#), now, &mut seq);
        }
        assert!(log.ring_bytes <= 200);
        assert!(log.len() < 10);
        let later = now + Duration::from_secs(6);
        assert!(log.after(None, 10, 100, later).events.is_empty());
        assert!(log.is_empty());
    }

    #[test]
    fn numbered_events_keep_their_number_once_and_placing_knows_what_came_before() {
        let now = Instant::now();
        let mut log = EventLog::new(RegistryConfig::default().events, 100);
        let mut seq = counter(1000);
        assert_eq!(
            log.append_numbered(500, event(r#"{"type":"a"}"#), now, &mut seq),
            500
        );
        assert_eq!(
            log.append_numbered(510, event(r#"{"type":"b"}"#), now, &mut seq),
            510
        );
        // The same event again (a replaced relay viewer): kept once.
        assert_eq!(
            log.append_numbered(500, event(r#"{"type":"a"}"#), now, &mut seq),
            0
        );
        assert_eq!(log.len(), 2);
        // One of this log's own came in between: a relayed one not above it is renumbered.
        log.publish(event(r#"{"type":"own"}"#), now, &mut seq);
        assert_eq!(
            log.append_numbered(520, event(r#"{"type":"c"}"#), now, &mut seq),
            1002
        );
        let numbers: Vec<u64> = log
            .after(Some(100), 2000, 10, now)
            .events
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(numbers, vec![500, 510, 1001, 1002]);
        assert!(log.places(100, 2000) && log.places(510, 2000));
        assert!(!log.places(99, 2000), "below the floor");
        assert!(!log.places(2001, 2000), "above the newest");
        log.known_from(505);
        assert!(!log.places(504, 2000), "before what reached this log");
        assert!(log.places(505, 2000));
        // Knowing that changes nothing for live readers.
        assert_eq!(log.after(Some(100), 2000, 10, now).stale, None);
    }
}
