//! Resume across instances. Events keep the owner's numbers on every instance, so a client
//! that reconnects elsewhere brings a number that instance's ring usually places. When it
//! cannot (the instance started relaying the channel after that event, or the number is
//! another life's), it asks the owner's ring on the bus, page by page, and the viewer is
//! replayed what the owner holds, as if it had stayed.
//!
//! Owns: the ring question and its answer, on both sides. Must not send to viewers (the
//! writer does) nor touch the event log (it reads it through its channel).

use std::sync::Arc;

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;

use super::wire::{ChannelSubjects, RingAnswer, RingQuestion};
use super::Relay;

/// Bytes of event texts in one answer: well under NATS's default `max_payload` (1 MiB).
const RING_PAGE_BYTES: usize = 256 * 1024;
/// Pages asked for at most: 8 MiB (above the default ring of 4 MiB) even when the owner
/// halved its pages to 32 KiB for a small `max_payload`; past it the viewer is told `stale`.
const RING_PAGES: usize = 256;
/// Events read from the log at a time while filling a page.
const RING_READ: usize = 64;

/// The owner's events after a number, as a resume replays them.
pub struct RingReplay {
    /// Events after the number were dropped there (the oldest held, if any).
    pub stale: Option<Option<u64>>,
    /// Numbers and message texts, in order.
    pub events: Vec<(u64, Bytes)>,
}

impl RingReplay {
    /// Events after those held are missing: the replay says `stale`, naming the oldest event
    /// it holds (or the owner's oldest, if the first page said so already).
    fn mark_gap(&mut self) {
        let oldest = self
            .stale
            .flatten()
            .or(self.events.first().map(|event| event.0));
        self.stale = Some(oldest);
    }
}

impl Relay {
    /// The owner's events of `key` after `after`, if an instance with the browser answers
    /// within the owner timeout.
    pub async fn ring_after(&self, key: &str, after: u64) -> Option<RingReplay> {
        if !self.connected.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let client = self.client().await?;
        let subject = ChannelSubjects::new(&self.config.subject_prefix, key).ring;
        let mut replay = RingReplay {
            stale: None,
            events: Vec::new(),
        };
        let mut from = after;
        for page in 0..RING_PAGES {
            let question = serde_json::to_vec(&RingQuestion {
                key: key.to_string(),
                after: from,
            })
            .ok()?;
            let answer = client.request(subject.clone(), question.into()).await;
            let answer = answer
                .ok()
                .and_then(|answer| serde_json::from_slice::<RingAnswer>(&answer.payload).ok());
            let Some(answer) = answer else {
                if page == 0 {
                    return None;
                }
                // A later page that does not come: what came is replayed, and the viewer is
                // told that events after it are missing (`stale`), not left with a silent gap.
                replay.mark_gap();
                return Some(replay);
            };
            if page == 0 {
                replay.stale = answer.stale;
            } else if answer.stale.is_some() {
                // The owner dropped events between two pages (its ring moved on meanwhile).
                replay.mark_gap();
            }
            let count = answer.events.len();
            for (seq, text) in answer.events {
                // Rebuilt from the event object, in rising order: nothing else of a peer's
                // text reaches a viewer.
                match relayed_event(seq, &text) {
                    Some(message) if seq > from => {
                        from = seq;
                        replay.events.push((seq, message));
                    }
                    // What follows cannot be placed: the viewer is told of the gap.
                    _ => {
                        replay.mark_gap();
                        return Some(replay);
                    }
                }
            }
            if count == 0 || !answer.more {
                return Some(replay);
            }
        }
        // Out of pages with more to come: the rest is missing, and the viewer is told.
        replay.mark_gap();
        Some(replay)
    }
}

/// The event message of number `seq`, rebuilt from a ring page's text (an event message
/// of that number), if it is one.
fn relayed_event(seq: u64, text: &str) -> Option<Bytes> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let event = value.get("event").filter(|event| event.is_object())?;
    let numbered = value.get("type").and_then(|t| t.as_str()) == Some("event")
        && value.get("seq").and_then(|n| n.as_u64()) == Some(seq);
    numbered.then(|| Bytes::from(crate::protocol::event_message(seq, &event.to_string())))
}

/// At the owner: answers ring questions about the channels whose browser is here, for as
/// long as the subscription lives.
pub(super) async fn serve_ring(
    relay: Arc<Relay>,
    client: Client,
    mut questions: async_nats::Subscriber,
) {
    while let Some(message) = questions.next().await {
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let Ok(question) = serde_json::from_slice::<RingQuestion>(&message.payload) else {
            continue;
        };
        let subject = ChannelSubjects::new(&relay.config.subject_prefix, &question.key).ring;
        if subject != message.subject.as_str() {
            continue;
        }
        let Some(registry) = relay.registry() else {
            return;
        };
        // Only the instance with the browser answers; the others stay silent.
        if !registry.has_local_source(&question.key) {
            continue;
        }
        let Some(channel) = registry.channel(&question.key) else {
            continue;
        };
        // A page over the server's `max_payload` would never arrive: halve it until it fits
        // (an event of its own that does not fit could not be relayed live either).
        let max_payload = client.max_payload();
        let mut budget = RING_PAGE_BYTES;
        let json = loop {
            let Ok(json) = serde_json::to_vec(&page_after(&channel, question.after, budget)) else {
                break None;
            };
            if json.len() <= max_payload || budget <= 1 {
                break Some(json);
            }
            budget /= 2;
        };
        if let Some(json) = json {
            let _ = client.publish(reply, json.into()).await;
        }
    }
}

/// One page of `channel`'s ring after `after`: events of up to `budget` bytes (at least one).
fn page_after(channel: &crate::registry::Channel, after: u64, budget: usize) -> RingAnswer {
    let mut answer = RingAnswer {
        stale: None,
        events: Vec::new(),
        more: false,
    };
    let mut bytes = 0;
    let mut from = Some(after);
    let mut first = true;
    loop {
        let batch = channel.events_after(from, RING_READ);
        if first {
            answer.stale = batch.stale;
            first = false;
        }
        let count = batch.events.len();
        for event in batch.events {
            if bytes + event.text.len() > budget && !answer.events.is_empty() {
                answer.more = true;
                return answer;
            }
            bytes += event.text.len();
            from = Some(event.seq);
            answer
                .events
                .push((event.seq, String::from_utf8_lossy(&event.text).into_owned()));
        }
        if count < RING_READ {
            return answer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(stale: Option<Option<u64>>, seqs: &[u64]) -> RingReplay {
        RingReplay {
            stale,
            events: seqs.iter().map(|&seq| (seq, Bytes::new())).collect(),
        }
    }

    #[test]
    fn a_gap_after_the_pages_is_told_as_stale_naming_the_oldest_event_held() {
        let mut held = replay(None, &[7, 8, 9]);
        held.mark_gap();
        assert_eq!(held.stale, Some(Some(7)));

        // The owner's oldest, said on the first page, stays what the viewer is told.
        let mut told = replay(Some(Some(5)), &[5, 6]);
        told.mark_gap();
        assert_eq!(told.stale, Some(Some(5)));

        let mut nothing = replay(None, &[]);
        nothing.mark_gap();
        assert_eq!(nothing.stale, Some(None));
    }
}
