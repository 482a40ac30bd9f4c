//! Human in the loop: a viewer's `reply` to an agent event, checked here (who may answer,
//! which event) and handed to the host (`onViewerReply`), with the viewer told it arrived.
//! Must not interpret the answer (the deployer does) nor touch sockets.

use std::sync::atomic::Ordering;

use super::{Channel, Registry, ViewerLink};
use crate::host::ViewerReply;
use crate::protocol;

impl Registry {
    /// Hands viewer `link`'s answer `reply` to the event `to` of `channel` to the host, and
    /// tells the viewer `{"type":"reply-ok","to":N}`; or answers why not: no hook
    /// (`reply_unavailable`), a view-only viewer (`reply_denied`, unless `viewOnlyReplies`),
    /// or a `to` that names no event of this channel (`bad_reply`).
    pub(super) fn viewer_reply(
        &self,
        channel: &Channel,
        link: &ViewerLink,
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
        self.host.viewer_reply(ViewerReply {
            key: channel.id.key.clone(),
            agent_id: channel.id.agent_id.clone(),
            thread_id: channel.id.thread_id.clone(),
            viewer_id: link.id,
            can_control: link.can_control,
            to,
            reply,
            event,
        });
        link.send(protocol::reply_ok_message(to));
    }
}
