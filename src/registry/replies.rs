//! Human in the loop: a viewer's `reply` to an agent event, checked here (who may answer,
//! which event, how many at once) and handed to the host (`onViewerReply`), the viewer told
//! once the hook ran. Must not interpret the answer (the deployer does) nor touch sockets.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Channel, Registry, ViewerLink};
use crate::host::ViewerReply;
use crate::protocol;

/// Replies of one channel handed to the deployer's hook and not answered yet: past it, a
/// reply is refused (`rate_limited`), so a slow hook cannot make them pile up in memory.
pub const MAX_REPLIES_IN_FLIGHT: u32 = 16;

impl Registry {
    /// Hands viewer `link`'s answer `reply` to the event `to` of `channel` to the host, and
    /// tells the viewer `{"type":"reply-ok","to":N}` once the hook ran; or answers why not:
    /// no hook (`reply_unavailable`), a view-only viewer (`reply_denied`, unless
    /// `viewOnlyReplies`), a `to` that names no event of this channel (`bad_reply`), too many
    /// replies of the channel waiting for the hook (`rate_limited`).
    pub(super) fn viewer_reply(
        &self,
        channel: &Arc<Channel>,
        link: &Arc<ViewerLink>,
        to: u64,
        reply: String,
    ) {
        if !self.config.viewer_replies {
            link.answer_error("reply_unavailable", "this server takes no replies");
            return;
        }
        if !link.can_control && !self.config.view_only_replies {
            link.answer_error("reply_denied", "this viewer may only watch");
            return;
        }
        if !channel.event_numbered(to) {
            channel.count_malformed();
            link.answer_error("bad_reply", "\"to\" names no event of this channel");
            return;
        }
        let in_flight = &channel.replies_in_flight;
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_REPLIES_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            link.answer_error(
                "rate_limited",
                "replies are arriving faster than the server hands them on; this one was dropped",
            );
            return;
        }
        channel.counters.replies.fetch_add(1, Ordering::Relaxed);
        // The event answered, while the ring still holds it: the deployer need not keep a
        // map from numbers to its questions.
        let event = channel
            .events_after(Some(to - 1), 1)
            .events
            .into_iter()
            .find(|sent| sent.seq == to)
            .and_then(|sent| serde_json::from_slice::<serde_json::Value>(&sent.text).ok())
            .and_then(|mut message| message.get_mut("event").map(serde_json::Value::take))
            .map(|event| event.to_string());
        let handed = self.host.viewer_reply(ViewerReply {
            key: channel.id.key.clone(),
            agent_id: channel.id.agent_id.clone(),
            thread_id: channel.id.thread_id.clone(),
            viewer_id: link.id,
            can_control: link.can_control,
            to,
            reply,
            event,
        });
        let (channel, link) = (channel.clone(), link.clone());
        self.runtime.spawn(async move {
            let handed = handed.await;
            channel.replies_in_flight.fetch_sub(1, Ordering::AcqRel);
            match handed {
                Ok(()) => link.send(protocol::reply_ok_message(to)),
                Err(_) => {
                    link.answer_error("reply_unavailable", "the reply could not be handed on")
                }
            }
        });
    }
}
