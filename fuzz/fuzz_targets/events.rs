//! The agent event channel: `events::Event::parse` on event JSON, then a sequence of
//! `EventLog::publish` / `flush_batch` / `after` calls decoded from the input, with sequence
//! numbers that skip (other channels take numbers too) and a clock that moves forward.
//!
//! Input: UTF-8 (lossy) text, one line each, so seeds and crashes stay readable. The first line
//! is the limits, the others are operations; a missing or bad number reads as 0:
//!
//! ```text
//! <max_events> <max_bytes> <max_age_ms> <batch_window 0|1> <max_event_bytes> <floor>
//! p <gap> <advance_ms> <event JSON…>     publish (the counter skips `gap` numbers first)
//! f <epoch_back> <gap> <advance_ms>      flush_batch(latest epoch - epoch_back)
//! a <x> <limit> <advance_ms>             after: x is `-` (None), `bK` (newest - K),
//!                                        `aK` (newest + K) or a number
//! e <k>                                  another channel takes k numbers
//! w <ms>                                 time passes
//! ```
//!
//! Invariants:
//! - never panics;
//! - `Event::parse` accepts exactly the JSON objects with a string `type` within the size limit;
//! - the numbers `publish`/`flush_batch` return are strictly rising, are numbers just handed
//!   out, and `last_seq()` is the newest handed out; `sent`/`published` count what they say;
//!   batch epochs rise; a non-delta event flushes the held batch; with a zero batch window
//!   nothing is held;
//! - the ring is the newest suffix of the events sent, in order, each a JSON
//!   `{"type":"event","seq":N,"event":{…"type":string…}}` with its own number, within
//!   `max_events`, `max_bytes` and `max_age`, and no shorter than needed (the newest evicted
//!   event could not have stayed);
//! - `after(Some(x))` is stale exactly when an event after `x` was evicted or `x` is above the
//!   newest number; when not stale it returns exactly the events after `x` (never one ≤ x), up
//!   to `limit`; when stale, the oldest held ones and the oldest held number;
//! - a merged `text_delta` never holds more than `max_event_bytes` of text.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use browser_stream_native::fuzzing::{Event, EventError, EventLimits, EventLog, SentEvent};
use browser_stream_native::protocol::event_message;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Operations run per input (the checks after each are linear in the ring).
const MAX_OPS: usize = 512;

enum Op<'a> {
    Publish {
        json: &'a str,
        gap: u64,
        advance_ms: u64,
    },
    FlushBatch {
        epoch_back: u64,
        gap: u64,
        advance_ms: u64,
    },
    After {
        after: AfterArg,
        limit: usize,
        advance_ms: u64,
    },
    /// Another channel takes numbers.
    Elsewhere(u64),
    Wait(u64),
}

enum AfterArg {
    All,
    Back(u64),
    Ahead(u64),
    Raw(u64),
}

fn num(field: Option<&str>, max: u64) -> u64 {
    field
        .and_then(|f| f.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .min(max)
}

fn parse_op(line: &str) -> Option<Op<'_>> {
    let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
    let mut f = rest.splitn(3, ' ');
    let mut next = |max| num(f.next(), max);
    Some(match op {
        "p" => {
            let gap = next(1 << 20);
            let advance_ms = next(1 << 24);
            let json = rest.splitn(3, ' ').nth(2).unwrap_or("");
            Op::Publish {
                json,
                gap,
                advance_ms,
            }
        }
        "f" => Op::FlushBatch {
            epoch_back: next(u64::MAX),
            gap: next(1 << 20),
            advance_ms: next(1 << 24),
        },
        "a" => {
            let x = rest.split(' ').next().unwrap_or("-");
            let after = if let Some(k) = x.strip_prefix('b') {
                AfterArg::Back(num(Some(k), u64::MAX))
            } else if let Some(k) = x.strip_prefix('a') {
                AfterArg::Ahead(num(Some(k), u64::MAX))
            } else if x == "-" {
                AfterArg::All
            } else {
                AfterArg::Raw(num(Some(x), u64::MAX))
            };
            let mut g = rest.split(' ').skip(1);
            Op::After {
                after,
                limit: num(g.next(), 1 << 16) as usize,
                advance_ms: num(g.next(), 1 << 24),
            }
        }
        "e" => Op::Elsewhere(next(1 << 30)),
        "w" => Op::Wait(next(1 << 24)),
        _ => return None,
    })
}

/// The numbering and the clock, as the registry provides them.
struct World {
    counter: u64,
    handed_out: Vec<u64>,
    handed_at: HashMap<u64, Instant>,
    now: Instant,
}

impl World {
    fn next_seq(&mut self, gap: u64) -> u64 {
        self.counter += 1 + gap;
        self.handed_out.push(self.counter);
        self.handed_at.insert(self.counter, self.now);
        self.counter
    }
}

fn check_parse(json: &str, max: usize, result: &Result<Event, EventError>) {
    let expected = if json.len() > max {
        Err(EventError::TooLarge(max))
    } else {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(o)) if o.get("type").is_some_and(Value::is_string) => Ok(()),
            Ok(Value::Object(_)) => Err(EventError::MissingType),
            _ => Err(EventError::NotAnObject),
        }
    };
    assert_eq!(
        result.as_ref().map(|_| ()).map_err(Clone::clone),
        expected,
        "Event::parse({json:?}, {max})"
    );
}

fn seqs(events: &[SentEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

struct Checker {
    limits: EventLimits,
    initial_floor: u64,
    /// Text lengths of events, known from publishing or from seeing them in the ring.
    lengths: HashMap<u64, usize>,
    last_returned: u64,
    last_epoch: u64,
    published_ok: u64,
}

impl Checker {
    fn returned(&mut self, seq: u64, world: &World, handed_before: usize) {
        if seq == 0 {
            return;
        }
        assert!(
            seq > self.last_returned,
            "returned {seq} after {}",
            self.last_returned
        );
        self.last_returned = seq;
        assert!(
            world.handed_out[handed_before..].contains(&seq),
            "returned {seq}, not a number handed out by this call"
        );
    }

    /// Everything held now (evicting by age at `now`, as every reader does).
    fn observe(&mut self, log: &mut EventLog, world: &World) -> Vec<SentEvent> {
        let held = log.after(None, world.counter, usize::MAX, world.now);
        assert!(held.stale.is_none());
        let held = held.events;
        let held_seqs = seqs(&held);
        let n = world.handed_out.len();
        assert!(held.len() <= n);
        assert_eq!(
            held_seqs,
            world.handed_out[n - held.len()..],
            "the ring is not the newest suffix of the events sent"
        );
        assert_eq!(log.len(), held.len());
        assert_eq!(log.is_empty(), held.is_empty());
        assert_eq!(log.sent, n as u64);
        assert_eq!(log.published, self.published_ok);
        assert_eq!(
            log.last_seq(),
            world
                .handed_out
                .last()
                .copied()
                .unwrap_or(self.initial_floor)
        );

        assert!(held.len() <= self.limits.max_events, "over max_events");
        let bytes: usize = held.iter().map(|e| e.text.len()).sum();
        assert!(bytes <= self.limits.max_bytes, "ring of {bytes} bytes");
        for event in &held {
            let age = world.now.duration_since(world.handed_at[&event.seq]);
            assert!(
                age <= self.limits.max_age,
                "event {} aged {age:?}",
                event.seq
            );
            self.check_text(event);
            self.lengths.insert(event.seq, event.text.len());
        }

        // No longer than needed: the newest evicted event broke a limit.
        if n > held.len() {
            let evicted = world.handed_out[n - held.len() - 1];
            let age = world.now.duration_since(world.handed_at[&evicted]);
            let over_count = held.len() + 1 > self.limits.max_events;
            let over_age = age > self.limits.max_age;
            let over_bytes = self
                .lengths
                .get(&evicted)
                .is_none_or(|len| bytes + len > self.limits.max_bytes);
            assert!(
                over_count || over_age || over_bytes,
                "event {evicted} was evicted though it fits"
            );
        }
        held
    }

    fn check_text(&self, event: &SentEvent) {
        let message: Value = match serde_json::from_slice(&event.text) {
            Ok(message) => message,
            // The wrapper adds a level of nesting to an event already at serde_json's limit.
            Err(e) if e.to_string().contains("recursion limit") => return,
            Err(e) => panic!("event {} is not JSON ({e}): {:?}", event.seq, event.text),
        };
        assert_eq!(message["type"], "event");
        assert_eq!(message["seq"].as_u64(), Some(event.seq));
        let inner = &message["event"];
        assert!(inner.is_object(), "event {} wraps {inner}", event.seq);
        assert!(inner["type"].is_string());
        if inner["type"] == "text_delta" {
            for field in ["text", "delta"] {
                if let Some(text) = inner[field].as_str() {
                    assert!(
                        text.len() <= self.limits.max_event_bytes,
                        "merged {field} of {} bytes",
                        text.len()
                    );
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut head = lines.next().unwrap_or("").split(' ');
    let mut next = |max| num(head.next(), max);
    let limits = EventLimits {
        max_events: next(4096) as usize,
        max_bytes: next(1 << 22) as usize,
        max_age: Duration::from_millis(next(1 << 24)),
        batch_window: if next(1) == 1 {
            Duration::from_millis(50)
        } else {
            Duration::ZERO
        },
        max_event_bytes: next(1 << 20) as usize,
    };
    let floor = next(1 << 53);
    let mut log = EventLog::new(limits.clone(), floor);
    let mut world = World {
        counter: floor,
        handed_out: Vec::new(),
        handed_at: HashMap::new(),
        now: Instant::now(),
    };
    let mut checker = Checker {
        limits: limits.clone(),
        initial_floor: floor,
        lengths: HashMap::new(),
        last_returned: floor,
        last_epoch: 0,
        published_ok: 0,
    };

    for op in lines.filter_map(parse_op).take(MAX_OPS) {
        match op {
            Op::Publish {
                json,
                gap,
                advance_ms,
            } => {
                world.now += Duration::from_millis(advance_ms);
                let parsed = Event::parse(json.to_string(), limits.max_event_bytes);
                check_parse(json, limits.max_event_bytes, &parsed);
                let Ok(parsed) = parsed else { continue };
                checker.published_ok += 1;
                let handed_before = world.handed_out.len();
                let published = log.publish(parsed, world.now, || world.next_seq(gap));
                checker.returned(published.sent, &world, handed_before);
                if let Some(epoch) = published.batch_started {
                    assert!(!limits.batch_window.is_zero());
                    assert!(epoch > checker.last_epoch, "batch epochs must rise");
                    checker.last_epoch = epoch;
                }
                let handed = &world.handed_out[handed_before..];
                assert!(handed.len() <= 2, "one publish sent {handed:?}");
                if published.sent > 0 {
                    assert_eq!(Some(&published.sent), handed.last());
                }
                let value: Value = serde_json::from_str(json).expect("parsed before");
                let is_delta = value["type"] == "text_delta"
                    && (value["text"].is_string() || value["delta"].is_string());
                if !is_delta {
                    // Anything else is sent now, after the held batch.
                    assert!(published.sent > 0);
                    checker
                        .lengths
                        .insert(published.sent, event_message(published.sent, json).len());
                    let probe =
                        log.flush_batch(checker.last_epoch, world.now, || world.next_seq(0));
                    assert_eq!(probe, 0, "a batch was still held after {json}");
                } else if limits.batch_window.is_zero() {
                    assert!(published.sent > 0, "zero window: a delta is sent at once");
                }
            }
            Op::FlushBatch {
                epoch_back,
                gap,
                advance_ms,
            } => {
                world.now += Duration::from_millis(advance_ms);
                let epoch = checker.last_epoch.saturating_sub(epoch_back);
                let handed_before = world.handed_out.len();
                let sent = log.flush_batch(epoch, world.now, || world.next_seq(gap));
                checker.returned(sent, &world, handed_before);
                assert!(world.handed_out.len() - handed_before <= 1);
                if epoch != checker.last_epoch || epoch == 0 {
                    assert_eq!(sent, 0, "an old epoch flushed");
                }
            }
            Op::After {
                after,
                limit,
                advance_ms,
            } => {
                world.now += Duration::from_millis(advance_ms);
                let newest = world.counter;
                let x = match after {
                    AfterArg::All => None,
                    AfterArg::Back(k) => Some(newest.saturating_sub(k)),
                    AfterArg::Ahead(k) => Some(newest.saturating_add(k)),
                    AfterArg::Raw(x) => Some(x),
                };
                let result = log.after(x, newest, limit, world.now);
                let got = seqs(&result.events);
                let held = seqs(&checker.observe(&mut log, &world));
                let n = world.handed_out.len();
                let floor_now = if n > held.len() {
                    world.handed_out[n - held.len() - 1]
                } else {
                    floor
                };
                match x {
                    None => {
                        assert!(result.stale.is_none());
                        assert_eq!(got, held.iter().copied().take(limit).collect::<Vec<_>>());
                    }
                    Some(x) => {
                        let stale = x < floor_now || x > newest;
                        assert_eq!(
                            result.stale.is_some(),
                            stale,
                            "after({x}) with floor {floor_now}, newest {newest}: {:?}",
                            result.stale
                        );
                        match result.stale {
                            None => {
                                assert!(got.iter().all(|&s| s > x), "after({x}) returned {got:?}");
                                let expected: Vec<u64> = world
                                    .handed_out
                                    .iter()
                                    .copied()
                                    .filter(|&s| s > x)
                                    .take(limit)
                                    .collect();
                                assert_eq!(got, expected, "after({x}) missed events");
                            }
                            Some(oldest) => {
                                assert_eq!(oldest, held.first().copied());
                                assert_eq!(
                                    got,
                                    held.iter().copied().take(limit).collect::<Vec<_>>()
                                );
                            }
                        }
                    }
                }
            }
            Op::Elsewhere(k) => world.counter += k,
            Op::Wait(ms) => world.now += Duration::from_millis(ms),
        }
        checker.observe(&mut log, &world);
    }
});
