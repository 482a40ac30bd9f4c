//! The relay source: the source session of a channel whose browser is on another instance.
//! It subscribes to the channel's stream subject once, asks who owns the browser, pushes what
//! the owner streams into this instance's channel (which fans it out to the local viewers as
//! from any source), and renews its lease with the owner. When the owner stops answering, the
//! viewers are told (`browser_closed`, `relay_owner_lost`) and a new owner is looked for; while
//! the bus is away they are told `relay_unavailable`, and the stream comes back with it.
//!
//! Owns: one session's loop (ask, follow, lease, give up). Must not touch viewers: it pushes
//! through the registry, checked against its generation like every source.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::connection::State;
use async_nats::Client;
use futures_util::StreamExt;

use super::config::LEASE_MISSES;
use super::wire::{
    self, ChannelSubjects, ControlState, Lease, LeaseAnswer, OwnerAnswer, OwnerQuestion,
    RelayedText, KIND_BINARY, KIND_CONTROL, KIND_HEADER,
};
use super::Relay;
use crate::protocol::{ErrorCode, Status};
use crate::registry::{ChannelId, PushOutcome, Registry, RemoteAsk, SourceKind};

/// A lease renewal: the owner's answer (`held`), `None` when none came.
type Renewal = Pin<Box<dyn Future<Output = Option<bool>> + Send>>;

/// Why following an owner ended.
enum Ended {
    /// The session is over (no more viewers, or the registry closed).
    SessionOver,
    /// The owner stopped answering leases (or said it no longer streams the channel).
    OwnerLost,
    /// The subscription ended (the client is closing).
    Unsubscribed,
}

/// Runs the relay source of session `generation` of `id` until that session ends.
pub(super) async fn follow(relay: Arc<Relay>, id: ChannelId, generation: u32) {
    // A stale session never ran: what is held belongs to the live one.
    if !relay.registry().is_some_and(|registry| {
        registry.decide_source_kind(&id.key, generation, SourceKind::Relayed)
    }) {
        return;
    }
    follow_session(&relay, &id, generation).await;
    // However the session ended (its viewers left, the registry closed, a local source took
    // over), the `leave`s still held for an owner are of no more use.
    relay.forget_lost_leaves(&id.key);
}

async fn follow_session(relay: &Arc<Relay>, id: &ChannelId, generation: u32) {
    let Some(client) = relay.client().await else {
        // The client could not be set up (the log says why) or the registry closed.
        if let Some(registry) = relay.registry() {
            registry.broadcast_error(
                &id.key,
                Some(generation),
                ErrorCode::RELAY_UNAVAILABLE,
                "the NATS client could not be set up",
            );
        }
        return;
    };
    let subjects = ChannelSubjects::new(&relay.config.subject_prefix, &id.key);
    let live = |relay: &Relay| {
        relay
            .registry()
            .is_some_and(|registry| registry.is_live(&id.key, generation))
    };
    let mut told_unavailable = false;
    while live(relay) {
        if client.connection_state() != State::Connected {
            if !told_unavailable {
                told_unavailable = true;
                if let Some(registry) = relay.registry() {
                    registry.broadcast_error(
                        &id.key,
                        Some(generation),
                        ErrorCode::RELAY_UNAVAILABLE,
                        "the NATS connection is down",
                    );
                }
            }
            tokio::time::sleep(relay.config.retry.min(relay.config.lease_interval)).await;
            continue;
        }
        // Subscribed before asking: the owner's first messages (status, url, the newest
        // frame) follow its answer at once.
        let Ok(stream) = client.subscribe(subjects.stream.clone()).await else {
            tokio::time::sleep(relay.config.retry).await;
            continue;
        };
        let Some(owner) = ask_owner(relay, &client, &subjects, id).await else {
            drop(stream);
            // The browser may have come up here meanwhile (an instance never answers its own
            // question): then this session gives way to a local one.
            if relay.probe(id).await {
                if let Some(registry) = relay.registry() {
                    registry.restart_source(&id.key, generation);
                }
                return;
            }
            tokio::time::sleep(relay.config.retry).await;
            continue;
        };
        told_unavailable = false;
        relay.follow_owner(&id.key, Some(&owner));
        // The owner just answered: the `leave`s it missed can reach it now.
        relay.resend_lost_leaves(&id.key);
        let ended = stream_from(relay, &client, &subjects, id, generation, &owner, stream).await;
        relay.follow_owner(&id.key, None);
        if let Some(registry) = relay.registry() {
            // Nobody holds control until an owner says so again.
            registry.mirror_controller(&id.key, generation, None, false);
        }
        match ended {
            Ended::SessionOver => return,
            Ended::Unsubscribed => {}
            Ended::OwnerLost => {
                relay.counters.owners_lost.fetch_add(1, Ordering::Relaxed);
                if let Some(registry) = relay
                    .registry()
                    .filter(|registry| registry.is_live(&id.key, generation))
                {
                    registry.clear_page_state(&id.key);
                    registry.set_status(&id.key, Some(generation), Status::BROWSER_CLOSED);
                    registry.broadcast_error(
                        &id.key,
                        Some(generation),
                        ErrorCode::RELAY_OWNER_LOST,
                        "the instance streaming this channel stopped answering its leases",
                    );
                }
            }
        }
    }
}

/// The owner's instance id, if one answers within the owner timeout.
async fn ask_owner(
    relay: &Relay,
    client: &Client,
    subjects: &ChannelSubjects,
    id: &ChannelId,
) -> Option<String> {
    let question = OwnerQuestion {
        key: id.key.clone(),
        agent_id: id.agent_id.clone(),
        thread_id: id.thread_id.clone(),
        instance: relay.instance.clone(),
    };
    let body = serde_json::to_vec(&question).ok()?;
    let answer = client
        .request(subjects.owner.clone(), body.into())
        .await
        .ok()?;
    let answer: OwnerAnswer = serde_json::from_slice(&answer.payload).ok()?;
    if let Some(registry) = relay.registry() {
        registry.relayed_events_from(&id.key, answer.events_from);
    }
    Some(answer.owner)
}

/// Pushes the owner's stream into the channel and renews the lease, until one of them ends.
async fn stream_from(
    relay: &Arc<Relay>,
    client: &Client,
    subjects: &ChannelSubjects,
    id: &ChannelId,
    generation: u32,
    owner: &str,
    mut stream: async_nats::Subscriber,
) -> Ended {
    let mut tick = tokio::time::interval(relay.config.lease_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut misses = 0;
    // The renewal in flight: asked beside the stream, so a slow owner delays no frame.
    let mut renewing: Renewal = Box::pin(std::future::pending());
    let mut renewal_pending = false;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return Ended::Unsubscribed };
                let Some(registry) = relay.registry() else { return Ended::SessionOver };
                if !push(relay, &registry, id, generation, &message) {
                    return Ended::SessionOver;
                }
            }
            _ = tick.tick(), if !renewal_pending => {
                if !relay.registry().is_some_and(|r| r.is_live(&id.key, generation)) {
                    return Ended::SessionOver;
                }
                let lease = Lease {
                    key: id.key.clone(),
                    instance: relay.instance.clone(),
                    owner: owner.to_string(),
                    video: relay.wants_video(&id.key),
                };
                let Ok(body) = serde_json::to_vec(&lease) else {
                    return Ended::OwnerLost;
                };
                let client = client.clone();
                let subject = subjects.lease.clone();
                let body = bytes::Bytes::from(body);
                renewing = Box::pin(async move {
                    let answer = client.request(subject, body).await.ok()?;
                    let answer: LeaseAnswer = serde_json::from_slice(&answer.payload).ok()?;
                    Some(answer.held)
                });
                renewal_pending = true;
            }
            answer = &mut renewing, if renewal_pending => {
                renewal_pending = false;
                renewing = Box::pin(std::future::pending());
                match answer {
                    Some(true) => {
                        misses = 0;
                        // Sent when its owner has answered again (after a blip of the bus).
                        relay.resend_lost_leaves(&id.key);
                    }
                    // The owner is there but no longer streams the channel: ask again now.
                    Some(false) => return Ended::OwnerLost,
                    None => {
                        misses += 1;
                        if misses >= LEASE_MISSES {
                            return Ended::OwnerLost;
                        }
                    }
                }
            }
        }
    }
}

/// The source error codes relayed to this instance's viewers.
fn relayed_error(code: &str) -> Option<&'static str> {
    [ErrorCode::SCREENCAST_FAILED, ErrorCode::BROWSER_CRASHED]
        .into_iter()
        .find(|known| *known == code)
}

/// Pushes one message of the owner's stream; false when the session is over.
fn push(
    relay: &Relay,
    registry: &Arc<Registry>,
    id: &ChannelId,
    generation: u32,
    message: &async_nats::Message,
) -> bool {
    relay
        .counters
        .messages_received
        .fetch_add(1, Ordering::Relaxed);
    let kind = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(KIND_HEADER))
        .map(|kind| kind.as_str());
    let key = &id.key;
    if kind == Some(KIND_CONTROL) {
        if let Ok(state) = serde_json::from_slice::<ControlState>(&message.payload) {
            let controller = relay.local_controller(key, &state);
            let ours = state
                .controller
                .as_ref()
                .is_some_and(|name| name.instance == relay.instance);
            if let Some(gone) = registry.mirror_controller(key, generation, controller, ours) {
                // Its own `leave` did not reach the owner: control would stay stuck with it.
                let _ = relay.forward(key, gone, &RemoteAsk::Leave, false);
            }
        }
        return registry.is_live(key, generation);
    }
    let binary = kind == Some(KIND_BINARY);
    let live = if binary {
        match wire::read_frame(&message.payload) {
            Some(frame) => match registry.push_frame(key, Some(generation), frame.text, frame.meta)
            {
                PushOutcome::Published(seq) => {
                    relay
                        .counters
                        .frames_relayed
                        .fetch_add(1, Ordering::Relaxed);
                    let index = registry
                        .channel(key)
                        .and_then(|channel| channel.latest_frame())
                        .filter(|latest| latest.seq == seq)
                        .map(|latest| latest.index);
                    if let Some(index) = index {
                        relay.relayed_frame_number(key, frame.seq, seq, index);
                    }
                    true
                }
                PushOutcome::Rejected(_) | PushOutcome::Withheld => true,
                PushOutcome::NoChannel | PushOutcome::Stale => false,
            },
            None => true,
        }
    } else {
        match wire::read_text(&message.payload) {
            RelayedText::Status(status) => registry.relayed_status(key, generation, &status),
            RelayedText::Url(url) => registry.set_url(key, Some(generation), &url),
            // Only the source errors: the others answered the owner's relay viewer itself
            // (`stale`, `rate_limited`…), and a code from the bus is not echoed to viewers.
            RelayedText::Error(code) => match relayed_error(&code) {
                Some(code) => {
                    registry.broadcast_error(key, Some(generation), code, "relayed from the owner")
                }
                None => true,
            },
            RelayedText::Event(seq, event) => {
                if registry.is_live(key, generation) {
                    // An event the ring refuses (too big) was refused on the owner already.
                    registry.publish_relayed_event(key, seq, event);
                }
                registry.is_live(key, generation)
            }
            RelayedText::Other => true,
        }
    };
    live || registry.is_live(key, generation)
}
