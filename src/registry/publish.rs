//! What a source and the embedder push into a channel: frames, status, url, errors, JSON
//! broadcasts and agent events, each checked against the live source generation.
//! Must not start or stop sources.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::runtime::Handle;

use super::channel::GEOMETRY_HISTORY;
use super::event_log::{Event, EventError, Published};
use super::{lock, Channel, Registry};
use crate::frame::{check_base64_image, Frame, FrameMeta};
use crate::logging::log;
use crate::mailbox::StickyKind;
use crate::protocol::{self, ErrorCode};

/// What a source push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Accepted and published with this sequence number.
    Published(u64),
    /// No channel with that key (no viewers): dropped.
    NoChannel,
    /// The push belongs to an older source session or the channel is idle: dropped.
    Stale,
    /// Not a base64 image: dropped, counted, viewers told once per session.
    Rejected(String),
    /// The channel is private (`setPrivacy`): dropped unseen, counted.
    Withheld,
}

impl Registry {
    /// Publishes a frame (base64 image text) from the source of `key`. `generation` `None`
    /// accepts it for whatever source is live (the drop-in `broadcastFrame`).
    pub fn push_frame(
        &self,
        key: &str,
        generation: Option<u32>,
        text: Bytes,
        meta: FrameMeta,
    ) -> PushOutcome {
        let Some(channel) = self.channel(key) else {
            return PushOutcome::NoChannel;
        };
        let outcome = self.with_live_source(key, generation, |channel, state| {
            if state.privacy.is_some() {
                channel
                    .counters
                    .frames_withheld
                    .fetch_add(1, Ordering::Relaxed);
                return PushOutcome::Withheld;
            }
            if let Err(rejection) = check_base64_image(&text) {
                channel
                    .counters
                    .frames_rejected
                    .fetch_add(1, Ordering::Relaxed);
                if state.rejection_reported_for != state.generation {
                    state.rejection_reported_for = state.generation;
                    log!(
                        self,
                        warn,
                        agent = %channel.id.agent_id,
                        thread = channel.id.thread_id.as_deref(),
                        reason = ErrorCode::SCREENCAST_FAILED,
                        "{key}: the browser source sent an invalid frame: {rejection}"
                    );
                    Channel::broadcast_source_error(state, ErrorCode::SCREENCAST_FAILED);
                }
                return PushOutcome::Rejected(rejection.to_string());
            }
            let seq = channel.next_seq();
            state.frame_seq = seq;
            state.frame_count += 1;
            channel.counters.frames_in.fetch_add(1, Ordering::Relaxed);
            channel
                .counters
                .bytes_in
                .fetch_add(text.len() as u64, Ordering::Relaxed);
            channel.capture_requested.store(false, Ordering::Relaxed);
            let frame = Arc::new(Frame::from_base64(seq, state.frame_count, text, meta));
            if state.geometries.back().map(|(_, g)| *g) != Some(frame.geometry) {
                if state.geometries.len() == GEOMETRY_HISTORY {
                    state.geometries.pop_front();
                }
                state.geometries.push_back((seq, frame.geometry));
            }
            if Handle::try_current().is_ok() {
                Channel::publish(channel, frame);
            } else {
                // Off the runtime (a push from the JS thread): publishing wakes every viewer's
                // writer, a cross-thread wake each; a runtime task does that instead, so the JS
                // thread's cost per frame does not grow with the number of viewers.
                let channel = channel.clone();
                self.runtime
                    .spawn(async move { Channel::publish(&channel, frame) });
            }
            // Queued now, in order with the source's other messages; each writer holds it
            // until it has sent this frame (`after_seq`).
            let size = (meta.device_width, meta.device_height);
            if size.0 > 0.0 && size.1 > 0.0 && state.viewport != Some(size) {
                state.viewport = Some(size);
                Channel::broadcast_sticky(
                    state,
                    StickyKind::Viewport,
                    protocol::viewport_message(size.0, size.1),
                );
            }
            PushOutcome::Published(seq)
        });
        outcome.unwrap_or_else(|| {
            channel
                .counters
                .frames_stale
                .fetch_add(1, Ordering::Relaxed);
            PushOutcome::Stale
        })
    }

    /// Sets and broadcasts the status of `key`'s source (`browser_starting`, `streaming`,
    /// `browser_closed`…). Returns false when stale or unknown.
    pub fn set_status(&self, key: &str, generation: Option<u32>, status: &str) -> bool {
        self.with_live_source(key, generation, |_, state| {
            state.status = Some(status.to_string());
            // While private, viewers keep the private status; they get this one after it.
            if state.privacy.is_none() {
                Channel::broadcast_sticky(
                    state,
                    StickyKind::Status,
                    protocol::status_message(status),
                );
            }
        })
        .is_some()
    }

    /// Sets and broadcasts the page URL if it changed.
    pub fn set_url(&self, key: &str, generation: Option<u32>, url: &str) -> bool {
        self.with_live_source(key, generation, |_, state| {
            if state.url.as_deref() != Some(url) {
                state.url = Some(url.to_string());
                Channel::broadcast_sticky(state, StickyKind::Url, protocol::url_message(url));
            }
        })
        .is_some()
    }

    /// Reports an error of `key`'s source: viewers get `{error: code, message}` with the
    /// fixed text for `code` (`protocol::viewer_error_text`), never `detail`, which may hold
    /// an endpoint or a deployer's error text; `detail` goes to the host's log. Latest-wins
    /// per code for each viewer.
    pub fn broadcast_error(
        &self,
        key: &str,
        generation: Option<u32>,
        code: &str,
        detail: &str,
    ) -> bool {
        let sent = self
            .with_live_source(key, generation, |_, state| {
                Channel::broadcast_source_error(state, code);
            })
            .is_some();
        if sent {
            let id = crate::registry::ChannelId::from_key(key).ok();
            log!(
                self,
                warn,
                agent = id.as_ref().map(|id| id.agent_id.as_str()),
                thread = id.as_ref().and_then(|id| id.thread_id.as_deref()),
                reason = code,
                "{key}: {code}: {detail}"
            );
        }
        sent
    }

    /// Broadcasts a JSON text as it is (drop-in `broadcastStatus` of an arbitrary object).
    /// A `{status}` object also becomes the channel's sticky status.
    pub fn broadcast_json(&self, key: &str, json: &str) -> bool {
        let status = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(String::from));
        self.with_live_source(key, None, |_, state| match status {
            Some(status) => {
                state.status = Some(status);
                if state.privacy.is_none() {
                    Channel::broadcast_sticky(state, StickyKind::Status, json.to_string());
                }
            }
            None => Channel::broadcast(state, json.to_string()),
        })
        .is_some()
    }

    /// Forgets the page state of `key` (url, viewport, latest frame): the browser session is
    /// over and the next one must send fresh data.
    pub fn clear_page_state(&self, key: &str) {
        if let Some(channel) = self.channel(key) {
            let mut state = lock(&channel.state);
            state.url = None;
            state.viewport = None;
            channel.withdraw_pictures(&state);
            super::tabs::clear(&mut state);
        }
    }
}

/// How far ahead of this machine's clock a relayed event's number may be (clock skew
/// between machines): beyond, it is numbered here.
const MAX_PEER_LEAD_US: u64 = 10 * 60 * 1_000_000;

impl Registry {
    /// Publishes an event the owner of relayed channel `key` numbered `seq` (its JSON object
    /// text, checked as any event): kept under that number, so resume means the same event on
    /// every instance. False when the channel is gone or the event is refused.
    pub fn publish_relayed_event(&self, key: &str, seq: u64, json: String) -> bool {
        let Ok(event) = Event::parse(json, self.config.events.max_event_bytes) else {
            return false;
        };
        let Some(channel) = self.channel(key) else {
            return false;
        };
        // A number far ahead of the clock (a wrong or forged peer) is not taken as it is: it
        // would lift this registry's numbers past what JSON carries exactly.
        let seq = if seq <= crate::clock::wall_clock_us().saturating_add(MAX_PEER_LEAD_US) {
            channel.observe_seq(seq);
            seq
        } else {
            0
        };
        channel.write_events(|log, now| Published {
            sent: log.append_numbered(seq, event, now, || channel.next_seq()),
            batch_started: None,
        });
        true
    }

    /// The owner of relayed channel `key` streams the events numbered above `seq` from now
    /// on: this ring does not place earlier numbers (a resume from one asks the owner's).
    pub fn relayed_events_from(&self, key: &str, seq: u64) {
        if let Some(channel) = self.channel(key) {
            lock(&channel.events).known_from(seq);
        }
    }

    /// Publishes one event (JSON object text) to every channel (a server-wide notice such as
    /// `config_changed`): each channel numbers it and keeps it for resume like its own
    /// events. A channel relayed from another instance is left out: that instance's own
    /// broadcast reaches it through the relay. Returns how many channels it went to.
    pub fn broadcast_event(self: &Arc<Self>, json: String) -> Result<usize, EventError> {
        // Checked once, so a bad event is refused even when no channel exists.
        let event = Event::parse(json, self.config.events.max_event_bytes)?;
        let channels: Vec<Arc<Channel>> = lock(&self.channels).values().cloned().collect();
        let mut sent = 0;
        for channel in channels {
            if !Channel::is_relayed(&lock(&channel.state)) {
                self.publish_to(&channel, event.clone());
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Publishes an agent event (JSON object text) to the extended viewers of `key`: numbered,
    /// kept in the resume ring, `text_delta`s merged over the batch window. `Ok(false)` when
    /// the channel does not exist (nobody to tell).
    pub fn publish_event(self: &Arc<Self>, key: &str, json: String) -> Result<bool, EventError> {
        let event = Event::parse(json, self.config.events.max_event_bytes)?;
        let Some(channel) = self.channel(key) else {
            return Ok(false);
        };
        self.publish_to(&channel, event);
        Ok(true)
    }

    /// Publishes checked `event` to `channel`'s extended viewers (see `publish_event`).
    fn publish_to(self: &Arc<Self>, channel: &Arc<Channel>, event: Event) {
        let published =
            channel.write_events(|log, now| log.publish(event, now, || channel.next_seq()));
        if let Some(epoch) = published.batch_started {
            let window = self.config.events.batch_window;
            let batching = Arc::downgrade(channel);
            self.runtime.spawn(async move {
                tokio::time::sleep(window).await;
                if let Some(channel) = batching.upgrade() {
                    channel.write_events(|log, now| Published {
                        sent: log.flush_batch(epoch, now, || channel.next_seq()),
                        batch_started: None,
                    });
                }
            });
        }
    }
}
