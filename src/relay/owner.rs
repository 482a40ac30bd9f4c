//! The owner's side: answers "who has this browser?" for the channels this instance has the
//! browser of (its host says so), and streams each such channel once on the bus through a
//! relay viewer of its own registry, which keeps the source running as any viewer does.
//! Subscribing instances renew a lease; when the last lease runs out the relay viewer leaves,
//! and the source lingers and stops as after a local viewer.
//!
//! Owns: the held channels (relay viewer, leases), the per-channel serialization of questions.
//! Control asked by other instances is [`super::control`]'s.
//! Must not push into channels: the relay viewer's writer reads them as any viewer does.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_nats::client::PublishErrorKind;
use async_nats::connection::State;
use async_nats::{Client, HeaderMap, Message};
use bytes::Bytes;
use futures_util::StreamExt;

use super::config::LEASE_MISSES;
use super::wire::{
    self, ChannelSubjects, Lease, LeaseAnswer, OwnerAnswer, OwnerQuestion, KIND_BINARY,
    KIND_HEADER, KIND_TEXT,
};
use super::Relay;
use crate::host::{HostFuture, LogLevel};
use crate::protocol::Mode;
use crate::registry::{lock, ChannelId, JoinOptions, Transport, ViewerCloser, ViewerCounters};
use crate::viewer::{serve_relay, MessageOut};

/// One channel this instance streams to the bus.
pub(super) struct Held {
    closer: Arc<ViewerCloser>,
    /// The relay viewer's counters (how far its events went).
    counters: Arc<ViewerCounters>,
    /// Subscribing instance → its last lease.
    pub(super) leases: HashMap<String, Instant>,
}

/// The channels this instance streams, and the locks that keep two questions about one
/// channel from both starting a stream.
#[derive(Default)]
pub(super) struct Owned {
    pub(super) held: Mutex<HashMap<String, Held>>,
    asking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Owned {
    /// Channels streamed now.
    pub(super) fn streaming(&self) -> usize {
        lock(&self.held)
            .values()
            .filter(|channel| !channel.closer.is_cancelled())
            .count()
    }
}

/// A relay viewer's way onto the bus: every message on one subject of its channel.
pub(super) struct BusOut {
    relay: Arc<Relay>,
    client: Client,
    subject: String,
}

impl BusOut {
    pub(super) fn new(relay: Arc<Relay>, client: Client, subject: String) -> BusOut {
        BusOut {
            relay,
            client,
            subject,
        }
    }
}

impl MessageOut for BusOut {
    fn send(&self, binary: bool, payload: Bytes) -> HostFuture {
        let relay = self.relay.clone();
        let client = self.client.clone();
        let subject = self.subject.clone();
        Box::pin(async move {
            // Latest-wins across an outage: a frame published while the bus is away would be
            // flushed stale on reconnect; skipping it lets the writer move on to the newest.
            if binary && client.connection_state() != State::Connected {
                relay
                    .counters
                    .frames_dropped
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let mut headers = HeaderMap::new();
            headers.insert(KIND_HEADER, if binary { KIND_BINARY } else { KIND_TEXT });
            match client.publish_with_headers(subject, headers, payload).await {
                Ok(()) => Ok(()),
                // Over the server's `max_payload` (1 MiB by default; a huge frame): dropped and
                // counted, never fatal to the stream.
                Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    relay
                        .counters
                        .frames_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(error) => Err(error.to_string()),
            }
        })
    }
}

/// Listens for questions and leases of every channel, and lets go of channels whose leases
/// ran out, for as long as the client lives.
pub(super) async fn serve(relay: Arc<Relay>, client: Client) {
    let prefix = relay.config.subject_prefix.clone();
    relay
        .runtime
        .spawn(super::control::publish(relay.clone(), client.clone()));
    let (questions, leases, commands, rings, keys) = match (
        client.subscribe(wire::owner_wildcard(&prefix)).await,
        client.subscribe(wire::lease_wildcard(&prefix)).await,
        client.subscribe(wire::control_wildcard(&prefix)).await,
        client.subscribe(wire::ring_wildcard(&prefix)).await,
        client.subscribe(wire::key_wildcard(&prefix)).await,
    ) {
        (Ok(questions), Ok(leases), Ok(commands), Ok(rings), Ok(keys)) => {
            (questions, leases, commands, rings, keys)
        }
        (Err(error), _, _, _, _)
        | (_, Err(error), _, _, _)
        | (_, _, Err(error), _, _)
        | (_, _, _, Err(error), _)
        | (_, _, _, _, Err(error)) => {
            relay.log(
                LogLevel::Warn,
                format!("relay: cannot listen for other instances: {error}"),
            );
            return;
        }
    };
    let sweeping = relay.clone();
    let sweeper = relay.runtime.spawn(async move {
        let mut tick = tokio::time::interval(sweeping.config.lease_interval);
        loop {
            tick.tick().await;
            sweep(&sweeping);
        }
    });
    let answering = relay.clone();
    let answering_client = client.clone();
    let answers = relay.runtime.spawn(async move {
        let mut questions = questions;
        while let Some(message) = questions.next().await {
            // Each in its own task: a slow host answer about one channel holds up no other.
            let relay = answering.clone();
            let client = answering_client.clone();
            answering
                .runtime
                .spawn(async move { answer_question(relay, client, message).await });
        }
    });
    let controls = relay.runtime.spawn(super::control::serve_commands(
        relay.clone(),
        client.clone(),
        commands,
    ));
    let ring = relay.runtime.spawn(super::ring::serve_ring(
        relay.clone(),
        client.clone(),
        rings,
    ));
    let video = relay.runtime.spawn(super::video::serve_key_requests(
        relay.clone(),
        client.clone(),
        keys,
    ));
    let mut leases = leases;
    while let Some(message) = leases.next().await {
        answer_lease(&relay, &client, message).await;
    }
    sweeper.abort();
    answers.abort();
    controls.abort();
    ring.abort();
    video.abort();
}

/// The question's channel, if the message is well formed and asked on that channel's subject.
fn read_question(prefix: &str, message: &Message) -> Option<(OwnerQuestion, ChannelId)> {
    let question: OwnerQuestion = serde_json::from_slice(&message.payload).ok()?;
    // The rules a viewer's ids obey (length, characters) hold for a peer on the bus too.
    let id = ChannelId::checked(&question.agent_id, question.thread_id.as_deref()).ok()?;
    if id.key != question.key
        || ChannelSubjects::new(prefix, &id.key).owner != message.subject.as_str()
    {
        return None;
    }
    Some((question, id))
}

async fn answer_question(relay: Arc<Relay>, client: Client, message: Message) {
    let Some(reply) = message.reply.clone() else {
        return;
    };
    let Some((question, id)) = read_question(&relay.config.subject_prefix, &message) else {
        return;
    };
    if question.instance == relay.instance {
        return;
    }
    let asking = lock(&relay.owned.asking)
        .entry(id.key.clone())
        .or_default()
        .clone();
    let events_from = {
        let _one_at_a_time = asking.lock().await;
        hold(&relay, &client, &id, &question.instance).await
    };
    {
        // Forget the channel's lock once nobody else waits on it.
        let mut locks = lock(&relay.owned.asking);
        if Arc::strong_count(&asking) == 2 {
            locks.remove(&id.key);
        }
    }
    let Some(events_from) = events_from else {
        return;
    };
    relay
        .counters
        .questions_answered
        .fetch_add(1, Ordering::Relaxed);
    let answer = OwnerAnswer {
        owner: relay.instance.clone(),
        events_from,
    };
    if let Ok(json) = serde_json::to_vec(&answer) {
        let _ = client.publish(reply, json.into()).await;
    }
}

/// Streams `id` for `instance`, or says this instance has no browser for it (`None`); the
/// new relay viewer streams the events after the number returned. Every
/// question (a new subscribing instance, or a new session of one) gets a new relay viewer, so
/// that the asker receives what a joining viewer gets first (status, url, viewport, the newest
/// frame); the old one leaves at once, and the new one starts its events where the old one's
/// stopped, so that one writer at a time sends them, in order (a late copy of the old one's
/// last is a duplicate the subscribers drop).
async fn hold(relay: &Arc<Relay>, client: &Client, id: &ChannelId, instance: &str) -> Option<u64> {
    let registry = relay.registry()?;
    // Not under the `held` lock: the registry takes its channel locks, and a control change
    // (under a channel's lock) takes `held`.
    // The relay viewer this one replaces, if any: questions about a channel come one at a
    // time (`asking`), so it is still the one in `held` once this one is admitted.
    let previous = lock(&relay.owned.held)
        .get(&id.key)
        .filter(|channel| !channel.closer.is_cancelled())
        .map(|channel| channel.counters.clone());
    let streaming = previous.is_some() && registry.has_live_source(&id.key);
    if !streaming && !relay.probe(id).await {
        return None;
    }
    let join = JoinOptions {
        mode: Mode::Extended,
        can_control: false,
        send_connected: false,
    };
    let mut slot = match registry.admit_with(id, Transport::Relay, join) {
        Ok(slot) => slot,
        Err(refused) => {
            relay.log(
                LogLevel::Warn,
                format!(
                    "relay: {}: cannot stream it to other instances: {refused}",
                    id.key
                ),
            );
            return None;
        }
    };
    // Where the relay viewer this one replaces stopped (it may lag behind the log's newest).
    if let Some(previous) = previous {
        let through = previous.events_through.load(Ordering::Relaxed);
        slot.event_cursor = slot.event_cursor.min(through);
    }
    let closer = slot.closer.clone();
    let counters = slot.counters.clone();
    let events_from = slot.event_cursor;
    let out = Arc::new(BusOut::new(
        relay.clone(),
        client.clone(),
        ChannelSubjects::new(&relay.config.subject_prefix, &id.key).stream,
    ));
    relay
        .runtime
        .spawn(serve_relay(registry.clone(), slot, out));
    relay
        .counters
        .streams_started
        .fetch_add(1, Ordering::Relaxed);
    let replaced = {
        let mut held = lock(&relay.owned.held);
        let channel = held.entry(id.key.clone()).or_insert_with(|| Held {
            closer: closer.clone(),
            counters: counters.clone(),
            leases: HashMap::new(),
        });
        channel.leases.insert(instance.to_string(), Instant::now());
        channel.counters = counters;
        let previous = std::mem::replace(&mut channel.closer, closer);
        (!Arc::ptr_eq(&previous, &channel.closer)).then_some(previous)
    };
    if let Some(old) = replaced {
        old.close(1000, "replaced");
    }
    // The new subscriber learns who holds control as the others did.
    registry.restate_controller(&id.key);
    Some(events_from)
}

impl Relay {
    /// Whether this instance streams `key` to `instance` now (its lease is held).
    pub(super) fn holds_lease(&self, key: &str, instance: &str) -> bool {
        lock(&self.owned.held).get(key).is_some_and(|channel| {
            !channel.closer.is_cancelled() && channel.leases.contains_key(instance)
        })
    }
}

async fn answer_lease(relay: &Arc<Relay>, client: &Client, message: Message) {
    let Some(reply) = message.reply.clone() else {
        return;
    };
    let Ok(lease) = serde_json::from_slice::<Lease>(&message.payload) else {
        return;
    };
    if lease.owner != relay.instance {
        return;
    }
    // A session that ended here (its browser went away) is not held: the subscriber asks
    // again, and its question starts a new session.
    let live = relay
        .registry()
        .is_some_and(|registry| registry.has_live_source(&lease.key));
    let held = {
        let mut held = lock(&relay.owned.held);
        match held.get_mut(&lease.key) {
            Some(channel) if live && !channel.closer.is_cancelled() => {
                channel
                    .leases
                    .insert(lease.instance.clone(), Instant::now());
                true
            }
            _ => false,
        }
    };
    if held && lease.video {
        super::video::renew_video(relay, &lease.key, &lease.instance);
    }
    if let Ok(json) = serde_json::to_vec(&LeaseAnswer { held }) {
        let _ = client.publish(reply, json.into()).await;
    }
}

/// Drops leases not renewed for `LEASE_MISSES` intervals; a channel left without one (or
/// whose relay viewer was closed) is let go.
fn sweep(relay: &Relay) {
    let expiry = relay.config.lease_interval * LEASE_MISSES;
    let now = Instant::now();
    let mut released = Vec::new();
    let mut expired = Vec::new();
    lock(&relay.owned.held).retain(|key, channel| {
        channel.leases.retain(|instance, renewed| {
            let keep = now.duration_since(*renewed) < expiry;
            if !keep {
                expired.push((key.clone(), Some(instance.clone())));
            }
            keep
        });
        let keep = !channel.leases.is_empty() && !channel.closer.is_cancelled();
        if !keep {
            released.push(channel.closer.clone());
            expired.push((key.clone(), None));
        }
        keep
    });
    for closer in released {
        closer.close(1000, "no subscriber");
    }
    let streamed: std::collections::HashSet<String> =
        lock(&relay.owned.held).keys().cloned().collect();
    super::video::sweep_video(relay, expiry, |key| streamed.contains(key));
    // Control held by viewers of an instance that went away is given back.
    for (key, instance) in expired {
        relay.forget_remotes(&key, instance.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_must_name_its_own_channel() {
        let question = |key: &str, agent: &str, thread: Option<&str>, subject: &str| {
            let body = serde_json::to_vec(&OwnerQuestion {
                key: key.into(),
                agent_id: agent.into(),
                thread_id: thread.map(String::from),
                instance: "i".into(),
            })
            .unwrap();
            Message {
                subject: subject.into(),
                reply: Some("inbox".into()),
                payload: body.into(),
                headers: None,
                status: None,
                description: None,
                length: 0,
            }
        };
        let key = ChannelId::new("agent", Some("t")).key;
        let right = ChannelSubjects::new("p", &key).owner;
        assert!(read_question("p", &question(&key, "agent", Some("t"), &right)).is_some());
        let other = ChannelSubjects::new("p", "other").owner;
        assert!(read_question("p", &question(&key, "agent", Some("t"), &other)).is_none());
        assert!(read_question("p", &question("forged", "agent", Some("t"), &right)).is_none());
    }
}
