//! browser-stream-native: streams an agent's live browser to every viewer of it, natively.
//!
//! The JS glue (`lib/`) keeps routing in Hono and hands admitted sockets to this crate, which
//! serves them on a tokio runtime. Modules, one concept each:
//! - [`ws_codec`]: WebSocket framing (server side);
//! - [`protocol`]: the application messages on the wire;
//! - [`frame`]: a frame as it is fanned out;
//! - [`registry`]: channels, viewers, source lifecycle, limits, stats;
//! - [`mailbox`]: a viewer's reliable queue, sticky state latest-wins;
//! - [`viewer`]: serving one viewer's socket (native or JS-bridged);
//! - [`host`]: what the core asks of its embedder;
//! - [`replay_source`]: a browser-less frame source in Rust (demos, benchmark);
//! - [`cdp_source`]: the native frame source, a Chromium page over the DevTools protocol;
//! - [`input`]: viewer input as CDP `Input.*` commands;
//! - [`takeover`]: input rate limits and the coalescing input queue;
//! - [`events`]: the agent event channel (`text_delta` batching, resume ring);
//! - [`clock`]: wall-clock units and optional deadlines;
//! - [`node_api`]: the napi classes and objects.

#![deny(missing_docs)]

pub mod cdp_source;
pub mod clock;
pub mod events;
pub mod frame;
pub mod host;
pub mod input;
pub mod mailbox;
pub mod node_api;
pub mod protocol;
pub mod registry;
pub mod replay_source;
pub mod takeover;
pub mod viewer;
pub mod ws_codec;
