//! Frame sources run in Rust: [`cdp`] (a Chromium page over the DevTools protocol, input
//! relayed back to it) and [`replay`] (prerecorded images in a loop, for demos and the
//! benchmark). Sources kept in JS (a Mastra toolset) push through `node` instead.
//! Must not reach into channel state: a source publishes through `Registry`'s push methods
//! and learns that its session ended from `Registry::is_live`.

pub(crate) mod cdp;
pub(crate) mod replay;
