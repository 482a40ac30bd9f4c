//! The seam between the Rust core and whoever embeds it: the JavaScript glue (through napi
//! threadsafe functions) in production, a recording fake in unit tests.
//!
//! Owns: the `Host` trait and the requests the core makes of its host on lifecycle edges
//! (start/stop a frame source, control changes), for input relay, fresh captures, and for
//! writes to JS-bridged viewers. Must not touch napi types: those live in `node`, so the
//! core builds and tests without Node.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::protocol::ClientMessage;

/// A host call that completes when the host is done with it (e.g. a JS promise settled).
pub type HostFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Identifies one source session of one channel: the channel key plus the generation number
/// the registry gave this start. Calls carrying an older generation are stale and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRequest {
    /// Channel key: `agentId`, or `agentId:threadId`.
    pub key: String,
    /// The agent the channel streams.
    pub agent_id: String,
    /// The thread, when the viewer scoped itself with `?threadId=`.
    pub thread_id: Option<String>,
    /// Generation of this source session (unique across the registry's life).
    pub generation: u32,
}

/// The relay asks whether this instance has the browser of a channel (another instance's
/// viewers want to watch it); the answer comes back through `Relay::answer_probe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    /// Names this question in the answer.
    pub probe_id: u32,
    /// Channel key.
    pub key: String,
    pub agent_id: String,
    pub thread_id: Option<String>,
}

/// Control of a channel's page changed hands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlChange {
    /// Channel key.
    pub key: String,
    pub agent_id: String,
    /// The thread, if the channel is thread-scoped.
    pub thread_id: Option<String>,
    /// The viewer holding control now, or nobody.
    pub controller: Option<u32>,
    /// Why control ended, when the server (`idle`, `controller_left`) or the deployer
    /// (`releaseControl`) ended it.
    pub reason: Option<String>,
}

/// A viewer's answer to an agent event (`reply`), for the deployer's `onViewerReply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerReply {
    /// Channel key.
    pub key: String,
    pub agent_id: String,
    pub thread_id: Option<String>,
    /// The viewer that answered (its id on this instance).
    pub viewer_id: u32,
    /// Whether that viewer may control the page.
    pub can_control: bool,
    /// The `seq` of the event it answers.
    pub to: u64,
    /// Its answer, a JSON value's text (checked and bounded).
    pub reply: String,
    /// The event answered (its JSON text), while the channel's ring holds it.
    pub event: Option<String>,
}

/// What the core asks a JS-bridged viewer's socket to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgedOutbound {
    /// Send one TEXT message.
    Text(Bytes),
    /// Send one BINARY message (an extended-mode frame: header and image).
    Binary(Bytes),
    /// Drop the socket without a close frame (it was cut mid-message, or is gone).
    Terminate,
    /// Close the socket with this code and reason.
    Close {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// How much a log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// A state change worth a line (the relay's bus connected again).
    Info,
    /// Something the operator may want to know (a source failed, a frame was refused).
    Warn,
    /// Something is broken and needs the operator.
    Error,
}

/// One line for the deployer's log: its level, message and structured fields (`agent`,
/// `thread`, `viewer`, `reason`, `suppressed`…), never sent to viewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: LogLevel,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// The embedder's side of the registry. Calls are made from tokio worker threads and must not
/// block: they enqueue work for the host and return.
pub trait Host: Send + Sync + 'static {
    /// A channel went from no source to wanting one (0→1 viewers): start its frame source.
    fn start_source(&self, request: SourceRequest);
    /// The channel's source is no longer wanted (last viewer gone and linger over, or close).
    fn stop_source(&self, request: SourceRequest);
    /// Relay a viewer's input to the page; the future completes when it has been applied, so
    /// the registry relays one input at a time per channel, in order.
    fn relay_input(&self, request: SourceRequest, input: ClientMessage) -> HostFuture;
    /// Write to a JS-bridged viewer; completes when the socket has taken the data, which is
    /// what paces a bridged viewer (latest frame wins while it is busy).
    fn bridged_send(&self, viewer_id: u32, message: BridgedOutbound) -> HostFuture;
    /// Control changed hands (`onControlChange`). Must not block; called in change order.
    fn control_changed(&self, change: ControlChange) {
        let _ = change;
    }
    /// A viewer answered an agent event (`onViewerReply`): resolves once the deployer's hook
    /// ran (an error: it could not be called). Must not block.
    fn viewer_reply(&self, reply: ViewerReply) -> HostFuture {
        let _ = reply;
        Box::pin(async { Err("this host takes no replies".to_string()) })
    }
    /// The controller asked to show tab `tab` (an id of the source's last `set_tabs`). False
    /// when the source cannot switch tabs. Must not block.
    fn select_tab(&self, request: SourceRequest, tab: u32) -> bool {
        let _ = (request, tab);
        false
    }
    /// A viewer asked for a snapshot and the channel has no frame: capture one if the source
    /// can (the native CDP source takes a screenshot). Must not block.
    fn capture_frame(&self, request: SourceRequest) {
        let _ = request;
    }
    /// The page has been quiet and JPEG viewers watch it: capture it once at JPEG `quality`
    /// and publish it as a refined frame, if the source can (the native CDP source can):
    /// true if it will. Must not block.
    fn refine_frame(&self, request: SourceRequest, quality: u32) -> bool {
        let _ = (request, quality);
        false
    }
    /// Does this instance have the browser of `probe`'s channel? Answered later (the host
    /// looks it up: `getCdpEndpoint`, `getToolset`), through `Relay::answer_probe`; without an
    /// answer the relay takes it as no. Must not block.
    fn probe_source(&self, probe: ProbeRequest) {
        let _ = probe;
    }
    /// A diagnostic for the deployer's log (never sent to viewers: it may name endpoints or
    /// quote a deployer's error). Must not block.
    fn log(&self, record: LogRecord) {
        let _ = record;
    }
}
