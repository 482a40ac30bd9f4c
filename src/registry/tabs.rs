//! The agent's pages (tabs) as extended viewers see them: the list a source reports
//! (`{"type":"tabs"}`, latest-wins per viewer, sent to joiners) and the controller's
//! `tab-select`, checked here and handed to the source through the host. Only the native CDP
//! source reports tabs; with other sources `tab-select` is answered `tabs_unavailable`.
//! Must not choose pages (the source does) nor touch sockets.

use super::control::ControlRefusal;
use super::{lock, Channel, ChannelState, Registry, Transport, ViewerLink};
use crate::mailbox::StickyKind;
use crate::protocol::Mode;

/// Tabs listed at most (the shown one and the newest are kept; the source picks them): a page
/// that opens hundreds of popups must not make every viewer's message grow without bound.
pub const MAX_TABS: usize = 100;
/// Longest URL of a tab in the list, in bytes (longer ones are cut).
pub const MAX_TAB_URL: usize = 2048;
/// Longest title of a tab in the list, in bytes (longer ones are cut).
pub const MAX_TAB_TITLE: usize = 256;

/// One page of the agent's browser, as a source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tab {
    /// The source's number for it (stable for the session; never a DevTools target id).
    pub id: u32,
    pub url: String,
    pub title: String,
    /// The page the stream shows.
    pub shown: bool,
}

/// `{"type":"tabs","tabs":[{id,url,title,shown}]}`.
pub fn tabs_message(tabs: &[Tab]) -> String {
    let cut = |text: &str, bound: usize| {
        let mut end = text.len().min(bound);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_string()
    };
    let list: Vec<serde_json::Value> = tabs
        .iter()
        .take(MAX_TABS)
        .map(|tab| {
            serde_json::json!({
                "id": tab.id,
                "url": cut(&tab.url, MAX_TAB_URL),
                "title": cut(&tab.title, MAX_TAB_TITLE),
                "shown": tab.shown,
            })
        })
        .collect();
    serde_json::json!({ "type": "tabs", "tabs": list }).to_string()
}

/// What a channel keeps of its source's tabs: the ids a `tab-select` may name, and the
/// message a joiner gets.
#[derive(Debug, Default)]
pub(super) struct TabList {
    pub(super) ids: Vec<u32>,
    pub(super) message: Option<String>,
}

impl Registry {
    /// The source of `key` (session `generation`) reports its pages: extended viewers get
    /// the list when it changed. False when stale.
    pub fn set_tabs(&self, key: &str, generation: u32, tabs: &[Tab]) -> bool {
        self.with_live_source(key, Some(generation), |_, state| {
            let message = tabs_message(tabs);
            if state.tabs.message.as_deref() == Some(message.as_str()) {
                return;
            }
            state.tabs.ids = tabs.iter().take(MAX_TABS).map(|tab| tab.id).collect();
            broadcast_to_extended(state, &message);
            state.tabs.message = Some(message);
        })
        .is_some()
    }

    /// A viewer's `tab-select`: with the rules of input (the controller only, not while
    /// private), a tab of the last list, a source that switches tabs.
    pub(super) fn select_tab(&self, channel: &Channel, link: &ViewerLink, id: u32) {
        let request = {
            let mut state = lock(&channel.state);
            let verdict = if !link.can_control {
                Err(ControlRefusal::WatchOnly)
            } else if state.privacy.is_some() {
                Err(ControlRefusal::Private)
            } else if Channel::is_relayed(&state) {
                drop(state);
                link.answer_error(
                    "tabs_unavailable",
                    "tabs of a browser on another server cannot be switched from here",
                );
                return;
            } else {
                self.input_verdict(channel, &mut state, link.id, link.mode == Mode::Compat)
            };
            if let Err(refusal) = verdict {
                drop(state);
                let (code, message) = refusal.answer();
                link.answer_error(code, message);
                return;
            }
            if state.tabs.message.is_none() {
                drop(state);
                link.answer_error("tabs_unavailable", "this page's source lists no tabs");
                return;
            }
            if !state.tabs.ids.contains(&id) {
                drop(state);
                link.answer_error("bad_tab", "no tab with this id");
                return;
            }
            channel.source_request(state.generation)
        };
        if !self.host.select_tab(request, id) {
            link.answer_error(
                "tabs_unavailable",
                "this page's source does not switch tabs",
            );
        }
    }
}

/// The session is over: its tabs are forgotten, and extended viewers that were told some are
/// told there are none (a new session lists its own).
pub(super) fn clear(state: &mut ChannelState) {
    if state.tabs.message.take().is_some() {
        state.tabs.ids.clear();
        broadcast_to_extended(state, &tabs_message(&[]));
    }
}

/// Queues `message` for every extended viewer of this instance, latest-wins (compat viewers
/// know no tabs; another instance's relay viewer has no use for them: the relay carries
/// none).
fn broadcast_to_extended(state: &mut ChannelState, message: &str) {
    let text = bytes::Bytes::from(message.to_string());
    let after_seq = state.frame_seq;
    for viewer in state.viewers.values() {
        if viewer.link.mode == Mode::Extended && viewer.transport != Transport::Relay {
            viewer
                .link
                .send_sticky(StickyKind::Tabs, text.clone(), after_seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tab_lists_are_bounded_and_cut_at_character_boundaries() {
        let long = "é".repeat(MAX_TAB_URL);
        let tabs: Vec<Tab> = (1..=MAX_TABS as u32 + 5)
            .map(|id| Tab {
                id,
                url: long.clone(),
                title: "t".into(),
                shown: id == 1,
            })
            .collect();
        let message: serde_json::Value = serde_json::from_str(&tabs_message(&tabs)).expect("json");
        let list = message["tabs"].as_array().expect("a list");
        assert_eq!(list.len(), MAX_TABS);
        assert!(list[0]["url"].as_str().expect("url").len() <= MAX_TAB_URL);
        assert_eq!(list[0]["shown"], true);
    }
}
