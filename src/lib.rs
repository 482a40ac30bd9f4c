//! browser-stream-native: streams an agent's live browser to every viewer of it, natively.
//!
//! The JS glue (`lib/`) keeps routing in Hono and hands admitted sockets to this crate, which
//! serves them on a tokio runtime. Its rooms, one concept each:
//! - [`ws`]: RFC 6455 framing and the opening handshake (server side);
//! - [`protocol`]: the application messages on the wire, both ways;
//! - [`frame`]: a frame as it is fanned out (validated once, header prebuilt);
//! - [`registry`]: channels, viewers, source lifecycle, limits, control, events, stats;
//! - [`mailbox`]: a viewer's reliable queue, sticky state latest-wins;
//! - [`viewer`]: serving one viewer's socket (native or JS-bridged);
//! - [`host`]: what the core asks of its embedder;
//! - [`source`]: frame sources run in Rust (Chromium over CDP, replay);
//! - [`clock`]: wall-clock units and optional deadlines; [`sync`]: the one lock helper;
//! - [`node`]: the napi face (class, options, host events, stats, socket adoption).
//!
//! Everything is crate-private but for the small facade below, which the fuzz targets drive.

#![deny(missing_docs)]

pub(crate) mod clock;
pub(crate) mod codec;
pub mod frame;
pub(crate) mod host;
pub(crate) mod logging;
pub(crate) mod mailbox;
// napi registers its exports at load time, which rustc cannot see in test builds.
#[cfg_attr(test, allow(dead_code))]
pub(crate) mod node;
pub mod protocol;
pub(crate) mod registry;
pub(crate) mod relay;
pub(crate) mod source;
pub(crate) mod sync;
pub(crate) mod viewer;
pub(crate) mod webrtc;
pub mod ws;

/// What the fuzz targets drive besides `ws`, `protocol` and `frame`: the parts with rules a
/// peer's bytes reach.
pub mod fuzzing {
    pub use crate::registry::channel_id::ChannelId;
    pub use crate::registry::event_log::{Event, EventError, EventLimits, EventLog, SentEvent};
    pub use crate::source::cdp::input::{insert_text_command, keyboard_command, mouse_command};
}
