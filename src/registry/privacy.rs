//! The privacy blackout (`setPrivacy`): while a channel is private no frame of it is taken
//! in, so none can leave (to any viewer, the latest-frame cache, a snapshot, the video
//! encoder or the relay), its viewers are told `{status:"private"}` and input is refused.
//! Owns the private state of channel keys and what entering and leaving it does; the frame
//! and input paths read it (`publish`, `control`). Must not touch sockets.

use std::collections::HashMap;

use super::{lock, Channel, ChannelId, ChannelState, Registry, SourceState};
use crate::mailbox::StickyKind;
use crate::protocol;

/// The status viewers get while the page is private (with the deployer's `reason`).
pub const PRIVATE_STATUS: &str = "private";

/// The text of the `private` error (input, snapshot requests while private).
pub const PRIVATE_TEXT: &str = "the page is private for now";

/// What the deployer made private: one channel, or an agent with every thread of it.
#[derive(Debug, Default)]
pub(super) struct PrivateSet {
    /// Channel key → reason.
    channels: HashMap<String, String>,
    /// Agent id → reason: the agent's channel and each of its threads' channels.
    agents: HashMap<String, String>,
}

impl PrivateSet {
    /// The reason channel `id` is private for, if it is (its own reason first).
    pub(super) fn reason_for(&self, id: &ChannelId) -> Option<String> {
        self.channels
            .get(&id.key)
            .or_else(|| self.agents.get(&id.agent_id))
            .cloned()
    }
}

impl Registry {
    /// Makes the channel `agent_id`/`thread_id` private (`Some(reason)`), or with no thread
    /// the agent and every thread of it; `None` ends that. Kept for channels that do not exist
    /// yet, so a channel created later starts private. A channel made private by its agent
    /// and by itself stays private until both ended. On entering: the latest frame and the
    /// video pipeline's picture are dropped, frames still queued for viewers are withdrawn,
    /// and viewers get `{status:"private",reason}`. On leaving: viewers get the source's
    /// status again; the next frame the source sends flows.
    pub fn set_privacy(&self, agent_id: &str, thread_id: Option<&str>, reason: Option<&str>) {
        let channels = lock(&self.channels);
        let mut private = lock(&self.private);
        let scope = match thread_id {
            Some(_) => (
                &mut private.channels,
                ChannelId::key_of(agent_id, thread_id),
            ),
            None => (&mut private.agents, agent_id.to_string()),
        };
        match reason {
            Some(reason) => scope.0.insert(scope.1, reason.to_string()),
            None => scope.0.remove(&scope.1),
        };
        for channel in channels.values() {
            let fits = channel.id.agent_id == agent_id
                && (thread_id.is_none() || channel.id.thread_id.as_deref() == thread_id);
            if fits {
                let mut state = lock(&channel.state);
                let reason = effective_reason(&private, channel, &state);
                apply(channel, &mut state, reason);
            }
        }
    }

    /// Whether channel `key` is private now: made so here (also before anyone watches), or
    /// by the instance that has the browser (relay).
    pub fn is_private(&self, key: &str) -> bool {
        if let Some(channel) = self.channel(key) {
            return lock(&channel.state).privacy.is_some();
        }
        ChannelId::from_key(key).is_ok_and(|id| lock(&self.private).reason_for(&id).is_some())
    }

    /// A status the owner of relayed channel `key` told (session `generation`): its private
    /// status makes the channel private here too (cache withdrawn, snapshots and input
    /// refused), any other ends that and is the source's status. False when stale.
    pub fn relayed_status(&self, key: &str, generation: u32, status: &str) -> bool {
        let Some(channel) = self.channel(key) else {
            return false;
        };
        let owner_private = status == PRIVATE_STATUS;
        let live = {
            let private = lock(&self.private);
            let mut state = lock(&channel.state);
            let live = state.generation == generation && state.source != SourceState::Idle;
            if live && state.owner_private != owner_private {
                state.owner_private = owner_private;
                let reason = effective_reason(&private, &channel, &state);
                apply(&channel, &mut state, reason);
            }
            live
        };
        live && (owner_private || self.set_status(key, Some(generation), status))
    }
}

impl Registry {
    /// The channel `key` no longer relays an owner (its browser is here): the owner's private
    /// status ends; the deployer's own stays.
    pub(super) fn relayed_status_ended(&self, key: &str) {
        let Some(channel) = self.channel(key) else {
            return;
        };
        let private = lock(&self.private);
        let mut state = lock(&channel.state);
        if state.owner_private {
            state.owner_private = false;
            let reason = effective_reason(&private, &channel, &state);
            apply(&channel, &mut state, reason);
        }
    }
}

/// The reason `channel` (locked as `state`) is private for, if it is: the deployer's here,
/// else the owner's (which the relay does not carry: `private`).
fn effective_reason(
    private: &PrivateSet,
    channel: &Channel,
    state: &ChannelState,
) -> Option<String> {
    private
        .reason_for(&channel.id)
        .or_else(|| state.owner_private.then(|| PRIVATE_STATUS.to_string()))
}

/// Brings `channel` (locked as `state`) to its privacy `reason` (`None`: public).
fn apply(channel: &Channel, state: &mut ChannelState, reason: Option<String>) {
    match reason {
        Some(reason) => {
            if state.privacy.is_none() {
                // Nothing captured before may be sent while private either: what is queued
                // or cached is withdrawn, as when a session ends.
                channel.withdraw_pictures(state);
            }
            if state.privacy.as_deref() != Some(reason.as_str()) {
                let message = private_status_message(&reason);
                state.privacy = Some(reason);
                Channel::broadcast_sticky(state, StickyKind::Status, message);
            }
        }
        None => {
            if state.privacy.take().is_some() {
                if let Some(status) = state.status.clone() {
                    let message = protocol::status_message(&status);
                    Channel::broadcast_sticky(state, StickyKind::Status, message);
                }
            }
        }
    }
}

/// `{"status":"private","reason":R}`.
pub fn private_status_message(reason: &str) -> String {
    serde_json::json!({ "status": PRIVATE_STATUS, "reason": reason }).to_string()
}

/// The status message a joiner of a channel in `state` gets: the private status while
/// private, else the source's.
pub(super) fn joiner_status(state: &ChannelState) -> Option<String> {
    match &state.privacy {
        Some(reason) => Some(private_status_message(reason)),
        None => state.status.as_deref().map(protocol::status_message),
    }
}
