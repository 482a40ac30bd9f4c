//! Counters and snapshots: registry totals, and the stats of each channel and viewer.
//! Must not change state: it only reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{lock, Channel, ChannelId, Registry, Transport};
use crate::frame::FrameMeta;
use crate::protocol::Mode;

/// Counters across the registry's life (channels come and go; these do not).
#[derive(Debug, Default)]
pub struct RegistryTotals {
    /// Source starts requested.
    pub starts: AtomicU64,
    /// Source stops requested.
    pub stops: AtomicU64,
    /// Viewers admitted.
    pub viewers_admitted: AtomicU64,
    /// Viewers gone.
    pub viewers_closed: AtomicU64,
    /// Admissions refused by a limit.
    pub admissions_refused: AtomicU64,
}

/// Stats of one viewer.
#[derive(Debug, Clone)]
pub struct ViewerStats {
    /// Viewer id.
    pub id: u32,
    /// How its socket is served.
    pub transport: Transport,
    /// Its wire.
    pub mode: Mode,
    /// Whether it may control the page.
    pub can_control: bool,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames skipped (it was busy).
    pub frames_skipped: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// JSON messages written.
    pub messages_sent: u64,
    /// Reliable messages waiting in its queue.
    pub queued_messages: usize,
    /// Seconds since it joined.
    pub connected_secs: f64,
}

/// Stats of one channel.
#[derive(Debug, Clone)]
pub struct ChannelStats {
    /// Channel id.
    pub id: ChannelId,
    /// `idle`, `running` or `lingering`.
    pub source_state: &'static str,
    /// Current source generation.
    pub generation: u32,
    /// Last status broadcast.
    pub status: Option<String>,
    /// Current page URL.
    pub url: Option<String>,
    /// Sequence number of the newest frame.
    pub last_seq: u64,
    /// The viewer holding control.
    pub controller: Option<u32>,
    /// Events published to the channel (before `text_delta` merging).
    pub events_published: u64,
    /// Events sent (after merging).
    pub events_sent: u64,
    /// Events held in the resume ring.
    pub ring_events: usize,
    /// Inputs refused (not the controller, view-only).
    pub inputs_refused: u64,
    /// Client messages over the rate limit, or refused by a full input queue.
    pub inputs_rate_limited: u64,
    /// Mouse moves coalesced or dropped for room.
    pub moves_coalesced: u64,
    /// Inputs waiting to be relayed.
    pub pending_inputs: usize,
    /// Metadata of the newest frame.
    pub last_frame_meta: Option<FrameMeta>,
    /// Frames accepted.
    pub frames_in: u64,
    /// Frames refused.
    pub frames_rejected: u64,
    /// Stale pushes ignored.
    pub frames_stale: u64,
    /// Bytes accepted.
    pub bytes_in: u64,
    /// Malformed client messages.
    pub malformed_messages: u64,
    /// Inputs relayed.
    pub inputs_relayed: u64,
    /// Inputs dropped (queue full).
    pub inputs_dropped: u64,
    /// Inputs the host failed to apply.
    pub inputs_failed: u64,
    /// Starts requested.
    pub starts: u64,
    /// Stops requested.
    pub stops: u64,
    /// Its viewers.
    pub viewers: Vec<ViewerStats>,
}

impl Registry {
    /// Stats of every channel.
    pub fn stats(&self) -> Vec<ChannelStats> {
        let channels: Vec<Arc<Channel>> = lock(&self.channels).values().cloned().collect();
        channels
            .iter()
            .map(|channel| {
                let state = lock(&channel.state);
                let counters = &channel.counters;
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let mut viewers: Vec<ViewerStats> = state
                    .viewers
                    .iter()
                    .map(|(id, viewer)| {
                        let link = &viewer.link;
                        ViewerStats {
                            id: *id,
                            transport: viewer.transport,
                            mode: link.mode,
                            can_control: link.can_control,
                            frames_sent: get(&link.counters.frames_sent),
                            // Frames strictly between the one it is on and the newest are
                            // superseded already: it can never get them.
                            frames_skipped: get(&link.counters.frames_skipped)
                                + state
                                    .frame_count
                                    .saturating_sub(get(&link.counters.seen_index))
                                    .saturating_sub(1),
                            bytes_sent: get(&link.counters.bytes_sent),
                            messages_sent: get(&link.counters.messages_sent),
                            queued_messages: link.outbox.len(),
                            connected_secs: viewer.joined.elapsed().as_secs_f64(),
                        }
                    })
                    .collect();
                let events = lock(&channel.events);
                viewers.sort_by_key(|v| v.id);
                ChannelStats {
                    id: channel.id.clone(),
                    source_state: state.source.name(),
                    generation: state.generation,
                    status: state.status.clone(),
                    url: state.url.clone(),
                    last_seq: if state.frame_count == 0 {
                        0
                    } else {
                        state.frame_seq
                    },
                    controller: state.controller,
                    events_published: events.published,
                    events_sent: events.sent,
                    ring_events: events.len(),
                    inputs_refused: get(&counters.inputs_refused),
                    inputs_rate_limited: get(&counters.inputs_rate_limited),
                    moves_coalesced: get(&counters.moves_coalesced),
                    pending_inputs: channel.inputs.len(),
                    last_frame_meta: channel.frames.borrow().as_ref().map(|f| f.meta),
                    frames_in: get(&counters.frames_in),
                    frames_rejected: get(&counters.frames_rejected),
                    frames_stale: get(&counters.frames_stale),
                    bytes_in: get(&counters.bytes_in),
                    malformed_messages: get(&counters.malformed_messages),
                    inputs_relayed: get(&counters.inputs_relayed),
                    inputs_dropped: get(&counters.inputs_dropped),
                    inputs_failed: get(&counters.inputs_failed),
                    starts: get(&counters.starts),
                    stops: get(&counters.stops),
                    viewers,
                }
            })
            .collect()
    }
}
