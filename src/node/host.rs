//! The core's host in JS: `JsHost` turns each call of the core (`Host`) into one `HostEvent`
//! for the JS callback (through a weak threadsafe function, so it never keeps Node alive),
//! after giving the native CDP sessions their turn (they stop and take input in Rust).
//! Also the toolset's shape of a viewer input (`ToolsetInput`), shared with `parseInputMessage`.
//! Must not decide anything: the registry decided, this only delivers.

use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Promise};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use std::collections::HashMap;

use napi_derive::napi;

use crate::host::{
    BridgedOutbound, ControlChange, Host, HostFuture, LogLevel, LogRecord, ProbeRequest,
    SourceRequest, ViewerReply,
};
use crate::protocol::{parse_client_message, ClientMessage};
use crate::source::cdp::CdpSessions;

/// What a viewer's input is.
#[napi(string_enum = "lowercase")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// `injectMouseEvent`.
    Mouse,
    /// `injectKeyboardEvent`.
    Keyboard,
    /// Text to insert (extended `text`).
    Text,
    /// Start the browser again (a viewer asked after it was closed).
    Relaunch,
}

/// How much a log line matters, named as the JS logger's method.
#[napi(string_enum = "lowercase")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLogLevel {
    /// `logger.info`.
    Info,
    /// `logger.warn`.
    Warn,
    /// `logger.error`.
    Error,
}

/// A request from the native registry to the JS glue; `kind` says which. The callback returns
/// a promise; `input` and `send` are awaited (one input at a time per channel; a bridged viewer
/// gets its next frame once the last one was written).
#[napi(
    discriminant = "kind",
    discriminant_case = "lowercase",
    object_from_js = false
)]
pub enum HostEvent {
    /// Start the frame source of `key` (its first viewer came); `generation` tags its pushes.
    Start {
        /// Channel key (`channelKey(agentId, threadId)`).
        key: String,
        /// Agent id.
        agent_id: String,
        /// Thread id, when the channel is thread-scoped.
        thread_id: Option<String>,
        /// Source generation.
        generation: u32,
    },
    /// Stop that source (last viewer gone and linger over, or `close()`).
    Stop {
        /// Channel key.
        key: String,
        /// Agent id.
        agent_id: String,
        /// Thread id.
        thread_id: Option<String>,
        /// Source generation.
        generation: u32,
    },
    /// Apply a viewer's input to the page of `key`.
    Input {
        /// Channel key.
        key: String,
        /// Agent id.
        agent_id: String,
        /// Thread id.
        thread_id: Option<String>,
        /// Source generation.
        generation: u32,
        /// What the input is.
        input_kind: InputKind,
        /// The validated event in the toolset's `injectMouseEvent` / `injectKeyboardEvent`
        /// shape (`mouse`, `keyboard`).
        input: Option<serde_json::Value>,
        /// The text of a `text` input.
        text: Option<String>,
    },
    /// Write `text` (a TEXT message) or `data` (a BINARY message) to bridged viewer `viewerId`.
    Send {
        /// Bridged viewer id.
        viewer_id: u32,
        /// A TEXT message.
        text: Option<String>,
        /// A BINARY message.
        data: Option<Buffer>,
    },
    /// Close bridged viewer `viewerId` with `code` and `reason`.
    Close {
        /// Bridged viewer id.
        viewer_id: u32,
        /// Close code.
        code: u32,
        /// Close reason.
        reason: String,
    },
    /// Drop bridged viewer `viewerId`'s socket without a close frame.
    Terminate {
        /// Bridged viewer id.
        viewer_id: u32,
    },
    /// Viewer `controller` (absent: nobody) now controls the page of `key`.
    Control {
        /// Channel key.
        key: String,
        /// Agent id.
        agent_id: String,
        /// Thread id.
        thread_id: Option<String>,
        /// The viewer holding control; absent when nobody does.
        controller: Option<u32>,
        /// Why control ended (`idle`, `controller_left`, or the deployer's `releaseControl`
        /// reason); absent when a viewer took or gave it.
        reason: Option<String>,
    },
    /// Viewer `viewerId` answered the agent event `to` of `key` (`reply`: a JSON text).
    Reply {
        /// Channel key.
        key: String,
        /// Agent id.
        agent_id: String,
        /// Thread id.
        thread_id: Option<String>,
        /// The viewer that answered.
        viewer_id: u32,
        /// Whether it may control the page.
        can_control: bool,
        /// The `seq` of the event answered.
        to: i64,
        /// The answer, as JSON text.
        reply: String,
        /// The event answered, as JSON text, while the channel's resume ring holds it.
        event: Option<String>,
    },
    /// Another instance asks over the relay whether this one has the browser of `agentId`
    /// (and `threadId`): answer with `answerProbe(probeId, owns)`.
    Probe {
        /// Names this question in `answerProbe`.
        probe_id: u32,
        /// Channel key.
        key: String,
        /// Agent id.
        agent_id: String,
        /// Thread id.
        thread_id: Option<String>,
    },
    /// A diagnostic for the deployer's logger.
    Log {
        /// Which logger method.
        level: HostLogLevel,
        /// The line.
        text: String,
        /// Its structured fields (`agent`, `thread`, `viewer`, `reason`…), when it has any.
        fields: Option<HashMap<String, String>>,
    },
}

/// A viewer's input in the shape a toolset takes (`injectMouseEvent` / `injectKeyboardEvent`).
#[napi(object)]
pub struct ToolsetInput {
    /// What the input is.
    pub kind: InputKind,
    /// The event for `injectMouseEvent` / `injectKeyboardEvent` (keyboard events carry
    /// `windowsVirtualKeyCode` where the key has one).
    pub event: Option<serde_json::Value>,
    /// The text of a `text` input.
    pub text: Option<String>,
}

impl From<ClientMessage> for ToolsetInput {
    fn from(input: ClientMessage) -> Self {
        let (kind, event, text) = match input {
            ClientMessage::Mouse(mouse) => {
                (InputKind::Mouse, serde_json::to_value(mouse).ok(), None)
            }
            ClientMessage::Keyboard(key) => {
                (InputKind::Keyboard, serde_json::to_value(key).ok(), None)
            }
            ClientMessage::InsertText(insert) => (InputKind::Text, None, Some(insert)),
            ClientMessage::Relaunch => (InputKind::Relaunch, None, None),
        };
        ToolsetInput { kind, event, text }
    }
}

/// Parses and validates one compat client message (`mouse`, `keyboard`, `relaunch`) by the
/// stream route's own rules, returning it in the toolset's shape, or null when it is not a
/// valid input message. Backs the drop-in `handleInputMessage`.
#[napi]
pub fn parse_input_message(text: String) -> Option<ToolsetInput> {
    parse_client_message(&text).ok().map(ToolsetInput::from)
}

/// The JS callback receiving `HostEvent`s: weak, so it never keeps Node alive.
pub(super) type HostCallback =
    ThreadsafeFunction<HostEvent, Promise<()>, HostEvent, Status, false, true>;

/// The core's host: native CDP sessions first, the JS glue for everything else.
pub(super) struct JsHost {
    pub(super) callback: Arc<HostCallback>,
    pub(super) cdp: Arc<CdpSessions>,
}

impl JsHost {
    /// Delivers `event` without waiting for the JS side.
    fn notify(&self, event: HostEvent) {
        self.callback
            .call(event, ThreadsafeFunctionCallMode::NonBlocking);
    }

    /// Delivers `event` and resolves once the promise JS returned settles.
    fn call_and_wait(&self, event: HostEvent) -> HostFuture {
        let callback = self.callback.clone();
        Box::pin(async move {
            let promise = callback
                .call_async_catch(event)
                .await
                .map_err(|e| e.to_string())?;
            promise.await.map_err(|e| e.to_string())
        })
    }
}

impl Host for JsHost {
    fn start_source(&self, request: SourceRequest) {
        self.notify(HostEvent::Start {
            key: request.key,
            agent_id: request.agent_id,
            thread_id: request.thread_id,
            generation: request.generation,
        });
    }

    fn stop_source(&self, request: SourceRequest) {
        self.cdp.stop(&request);
        self.notify(HostEvent::Stop {
            key: request.key,
            agent_id: request.agent_id,
            thread_id: request.thread_id,
            generation: request.generation,
        });
    }

    fn relay_input(&self, request: SourceRequest, input: ClientMessage) -> HostFuture {
        let input = match self.cdp.relay(&request, input) {
            Ok(relayed) => return relayed,
            Err(input) => input,
        };
        let input = ToolsetInput::from(input);
        self.call_and_wait(HostEvent::Input {
            key: request.key,
            agent_id: request.agent_id,
            thread_id: request.thread_id,
            generation: request.generation,
            input_kind: input.kind,
            input: input.event,
            text: input.text,
        })
    }

    fn control_changed(&self, change: ControlChange) {
        self.notify(HostEvent::Control {
            key: change.key,
            agent_id: change.agent_id,
            thread_id: change.thread_id,
            controller: change.controller,
            reason: change.reason,
        });
    }

    fn viewer_reply(&self, reply: ViewerReply) -> HostFuture {
        self.call_and_wait(HostEvent::Reply {
            key: reply.key,
            agent_id: reply.agent_id,
            thread_id: reply.thread_id,
            viewer_id: reply.viewer_id,
            can_control: reply.can_control,
            to: reply.to as i64,
            reply: reply.reply,
            event: reply.event,
        })
    }

    fn log(&self, record: LogRecord) {
        let level = match record.level {
            LogLevel::Info => HostLogLevel::Info,
            LogLevel::Warn => HostLogLevel::Warn,
            LogLevel::Error => HostLogLevel::Error,
        };
        let fields = (!record.fields.is_empty()).then(|| record.fields.into_iter().collect());
        self.notify(HostEvent::Log {
            level,
            text: record.message,
            fields,
        });
    }

    fn probe_source(&self, probe: ProbeRequest) {
        self.notify(HostEvent::Probe {
            probe_id: probe.probe_id,
            key: probe.key,
            agent_id: probe.agent_id,
            thread_id: probe.thread_id,
        });
    }

    fn refine_frame(&self, request: SourceRequest, quality: u32) -> bool {
        // Only the native CDP source can capture; toolset and replay frames stay as they are.
        self.cdp.refine(&request, quality)
    }

    fn select_tab(&self, request: SourceRequest, tab: u32) -> bool {
        // Only the native CDP source knows the browser's pages.
        self.cdp.select_tab(&request, tab)
    }

    fn capture_frame(&self, request: SourceRequest) {
        // Only the native CDP source can capture on demand; other sources answer with their
        // next frame.
        self.cdp.capture(&request);
    }

    fn bridged_send(&self, viewer_id: u32, message: BridgedOutbound) -> HostFuture {
        let event = match message {
            BridgedOutbound::Text(text) => HostEvent::Send {
                viewer_id,
                // Frames and messages are ASCII/UTF-8 by construction (validated base64, JSON).
                text: Some(String::from_utf8_lossy(&text).into_owned()),
                data: None,
            },
            BridgedOutbound::Binary(data) => HostEvent::Send {
                viewer_id,
                text: None,
                data: Some(Buffer::from(data.to_vec())),
            },
            BridgedOutbound::Terminate => HostEvent::Terminate { viewer_id },
            BridgedOutbound::Close { code, reason } => HostEvent::Close {
                viewer_id,
                code: code.into(),
                reason,
            },
        };
        self.call_and_wait(event)
    }
}
