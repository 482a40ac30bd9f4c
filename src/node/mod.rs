//! The JavaScript face of the core (napi): the `NativeRegistry` class that the JS glue wraps,
//! and the free functions and constants JS reads from the binding. Its rooms: [`options`]
//! (arguments in, checked), [`host`] (`HostEvent`s out, through `JsHost`), [`stats`] (stats
//! out), [`socket`] (file-descriptor adoption).
//!
//! Owns: argument conversion and validation and errors as JS `Error`s. Must not hold protocol
//! or lifecycle logic: everything it does is delegate to `registry`, `viewer` and `source`.

mod host;
mod metrics;
mod options;
mod socket;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, Either};
use napi::{Error, Result, Status};
use napi_derive::napi;

use crate::frame::FrameMeta;
use crate::host::SourceRequest;
use crate::protocol::{self, EXTENDED_PROTOCOL};
use crate::registry::{ChannelId, PushOutcome, Registry, SourceKind, Transport};
use crate::source::cdp::CdpSessions;
use crate::source::replay::{check_schedule, run_replay, ReplayImages, ReplaySchedule};
use crate::viewer::{serve_bridged, serve_native};
use crate::ws::codec;
use crate::ws::handshake::check_websocket_key;
use host::{HostCallback, JsHost};
use options::{
    CdpSourceOptions, FrameMetadata, NativeRegistryOptions, ReplaySourceOptions, ViewerOptions,
};
use socket::dup_tcp_socket;
use stats::{JsCdpStats, JsChannelStats, JsRegistryStats};

/// The WebSocket subprotocol of the extended mode (`browser-stream.v1`).
#[napi]
pub const SUBPROTOCOL: &str = EXTENDED_PROTOCOL;

/// The close codes used on the stream socket (docs/PROTOCOL.md), by name.
#[napi(object)]
pub struct CloseCodes {
    /// The viewer or the server closed normally.
    #[napi(js_name = "NORMAL")]
    pub normal: u32,
    /// The server is shutting down, or the viewer went silent past the heartbeat timeout.
    #[napi(js_name = "GOING_AWAY")]
    pub going_away: u32,
    /// The client broke RFC 6455.
    #[napi(js_name = "PROTOCOL_ERROR")]
    pub protocol_error: u32,
    /// A TEXT message that is not UTF-8.
    #[napi(js_name = "INVALID_PAYLOAD")]
    pub invalid_payload: u32,
    /// Refused by a policy (the default of `closeViewer`).
    #[napi(js_name = "POLICY")]
    pub policy: u32,
    /// A client message over `maxMessageBytes`.
    #[napi(js_name = "MESSAGE_TOO_BIG")]
    pub message_too_big: u32,
    /// The server failed.
    #[napi(js_name = "INTERNAL_ERROR")]
    pub internal_error: u32,
    /// A limit refused the viewer after the upgrade; try again later.
    #[napi(js_name = "TRY_AGAIN_LATER")]
    pub try_again_later: u32,
    /// The viewer did not read its reliable messages fast enough.
    #[napi(js_name = "SLOW_CONSUMER")]
    pub slow_consumer: u32,
}

/// The close codes used on the stream socket, from the codec that sends them.
#[napi]
pub fn close_codes() -> CloseCodes {
    CloseCodes {
        normal: codec::CLOSE_NORMAL.into(),
        going_away: codec::CLOSE_GOING_AWAY.into(),
        protocol_error: codec::CLOSE_PROTOCOL_ERROR.into(),
        invalid_payload: codec::CLOSE_INVALID_PAYLOAD.into(),
        policy: codec::CLOSE_POLICY.into(),
        message_too_big: codec::CLOSE_TOO_BIG.into(),
        internal_error: codec::CLOSE_INTERNAL.into(),
        try_again_later: codec::CLOSE_TRY_AGAIN_LATER.into(),
        slow_consumer: codec::CLOSE_SLOW_CONSUMER.into(),
    }
}

/// What `pushFrame` did.
#[napi(string_enum = "snake_case")]
pub enum PushResult {
    /// Accepted and fanned out.
    Published,
    /// Nobody watches that key.
    NoChannel,
    /// From a source session that is no longer live; ignored.
    Stale,
    /// Not a base64 JPEG, PNG or WebP image; viewers are told once per session.
    Rejected,
    /// The channel is private (`setPrivacy`): dropped unseen.
    Withheld,
}

/// The statuses the core broadcasts (`{status}`), by name; a JS source sets these too.
#[napi(object)]
pub struct StatusCodes {
    /// Sent first to a compat viewer on join.
    #[napi(js_name = "CONNECTED")]
    pub connected: String,
    /// A source session is starting its browser or screencast.
    #[napi(js_name = "BROWSER_STARTING")]
    pub browser_starting: String,
    /// Frames are flowing.
    #[napi(js_name = "STREAMING")]
    pub streaming: String,
    /// The browser of the session went away.
    #[napi(js_name = "BROWSER_CLOSED")]
    pub browser_closed: String,
}

/// The statuses, from the protocol that defines them.
#[napi]
pub fn status_codes() -> StatusCodes {
    use protocol::Status;
    StatusCodes {
        connected: Status::CONNECTED.into(),
        browser_starting: Status::BROWSER_STARTING.into(),
        streaming: Status::STREAMING.into(),
        browser_closed: Status::BROWSER_CLOSED.into(),
    }
}

/// The error codes a source reports to viewers (`{error, message}`), by name.
#[napi(object)]
pub struct ErrorCodes {
    /// The screencast could not be started.
    #[napi(js_name = "SCREENCAST_FAILED")]
    pub screencast_failed: String,
    /// The browser went away or stopped answering mid-stream.
    #[napi(js_name = "BROWSER_CRASHED")]
    pub browser_crashed: String,
}

/// The error codes, from the protocol that defines them.
#[napi]
pub fn error_codes() -> ErrorCodes {
    use protocol::ErrorCode;
    ErrorCodes {
        screencast_failed: ErrorCode::SCREENCAST_FAILED.into(),
        browser_crashed: ErrorCode::BROWSER_CRASHED.into(),
    }
}

/// The native registry: channels, viewers and their sockets, on a tokio runtime. The JS
/// `ViewerRegistry` wraps it; use that unless you are writing glue.
#[napi]
pub struct NativeRegistry {
    registry: Arc<Registry>,
    cdp: Arc<CdpSessions>,
}

fn status_arg(status: &str) -> Result<()> {
    if status.is_empty() || status.len() > 64 {
        return Err(invalid("status must be 1 to 64 characters"));
    }
    Ok(())
}

#[napi]
impl NativeRegistry {
    /// Creates a registry. `host` receives every `HostEvent` and must return a promise.
    #[napi(constructor)]
    pub fn new(host: HostCallback, options: Option<NativeRegistryOptions>) -> Result<Self> {
        let config = options.unwrap_or_default().into_config()?;
        let runtime =
            napi::bindgen_prelude::within_runtime_if_available(tokio::runtime::Handle::current);
        let cdp = Arc::new(CdpSessions::default());
        let host = Arc::new(JsHost {
            callback: Arc::new(host),
            cdp: cdp.clone(),
        });
        Ok(NativeRegistry {
            registry: Registry::new(config, host, runtime),
            cdp,
        })
    }

    /// Why a viewer of channel `key` would be refused now, or null if it would be admitted.
    /// Called before the upgrade so that a refusal is an HTTP 503; such a refusal counts in
    /// `stats().admissionsRefused` unless `countRefusal` is false (a second look at a refusal
    /// already counted). Throws for a string that is not a channel key.
    #[napi]
    pub fn check_admission(
        &self,
        key: String,
        count_refusal: Option<bool>,
    ) -> Result<Option<String>> {
        let id = channel_id(&key)?;
        Ok(self
            .registry
            .check_admission(&id, count_refusal.unwrap_or(true))
            .err()
            .map(|e| e.to_string()))
    }

    /// Takes over an upgraded TCP socket by file descriptor as a viewer of channel `key`: the
    /// fd is duplicated here, so the caller must `socket.destroy()` in the same tick. Writes
    /// the `101` from Rust (echoing the extended subprotocol when `options.protocol` chose it)
    /// and serves the viewer natively. `head` is what Node read past the request. Returns the
    /// viewer id.
    #[napi]
    pub fn adopt_socket(
        &self,
        fd: i32,
        websocket_key: String,
        head: Option<Buffer>,
        key: String,
        options: Option<ViewerOptions>,
    ) -> Result<u32> {
        let id = channel_id(&key)?;
        check_websocket_key(&websocket_key).map_err(|e| invalid(e.to_string()))?;
        let join = options.unwrap_or_default().into_join(true)?;
        let stream = dup_tcp_socket(fd)?;
        let slot = self
            .registry
            .admit_with(&id, Transport::Native, join)
            .map_err(|e| Error::from_reason(e.to_string()))?;
        let viewer_id = slot.id;
        let head = head.map_or_else(Bytes::new, |h| Bytes::copy_from_slice(&h));
        self.registry.runtime().spawn(serve_native(
            self.registry.clone(),
            slot,
            stream,
            websocket_key,
            head,
        ));
        Ok(viewer_id)
    }

    /// Registers a viewer of channel `key` whose socket stays in JS; its writes arrive as
    /// `send`/`close` host events. `sendConnected` queues `{status:'connected'}` first
    /// (compat). Returns the viewer id.
    #[napi]
    pub fn attach_bridged(
        &self,
        key: String,
        send_connected: bool,
        options: Option<ViewerOptions>,
    ) -> Result<u32> {
        let id = channel_id(&key)?;
        let join = options.unwrap_or_default().into_join(send_connected)?;
        let slot = self
            .registry
            .admit_with(&id, Transport::Bridged, join)
            .map_err(|e| Error::from_reason(e.to_string()))?;
        let viewer_id = slot.id;
        self.registry
            .runtime()
            .spawn(serve_bridged(self.registry.clone(), slot));
        Ok(viewer_id)
    }

    /// A TEXT message received by a JS-bridged viewer. False if the viewer is unknown.
    #[napi]
    pub fn bridged_message(&self, viewer_id: u32, text: String) -> bool {
        match self.registry.viewer_link(viewer_id) {
            Some((channel, link)) => {
                self.registry.on_client_text(&channel, &link, &text);
                true
            }
            None => false,
        }
    }

    /// A binary message received by a JS-bridged viewer (no mode accepts one: counted, and
    /// answered `bad_message` in extended mode).
    #[napi]
    pub fn bridged_binary(&self, viewer_id: u32) -> bool {
        match self.registry.viewer_link(viewer_id) {
            Some((channel, link)) => {
                self.registry.on_client_binary(&channel, &link);
                true
            }
            None => false,
        }
    }

    /// Publishes an agent event (the text of a JSON object with a string `type`) to the
    /// extended viewers of `key`: numbered, kept for resume, `text_delta`s merged over
    /// `eventBatchMs`. False when nobody watches `key` (no channel).
    #[napi]
    pub fn publish_event(&self, key: String, json: String) -> Result<bool> {
        self.registry
            .publish_event(&key, json)
            .map_err(|e| invalid(e.to_string()))
    }

    /// The registry's counters and gauges as Prometheus text (OpenMetrics exposition).
    #[napi]
    pub fn metrics(&self) -> Result<String> {
        metrics::exposition(&self.registry, &self.cdp)
            .map_err(|e| invalid(format!("the metrics could not be written: {e}")))
    }

    /// Publishes one event (JSON object text) to every channel of this registry, each
    /// numbering it and keeping it for resume. Returns how many channels it went to.
    #[napi]
    pub fn broadcast_event(&self, json: String) -> Result<u32> {
        self.registry
            .broadcast_event(json)
            .map(|sent| sent as u32)
            .map_err(|e| invalid(e.to_string()))
    }

    /// Takes control of `key`'s page back from whoever holds it (a controller in its grace
    /// period too): every extended viewer gets `control` with `reason`. False when nobody
    /// held it. Throws for a reason over 200 bytes or with control characters.
    #[napi]
    pub fn release_control(&self, key: String, reason: String) -> Result<bool> {
        crate::registry::control_lease::check_reason(&reason).map_err(invalid)?;
        Ok(self.registry.release_control(&key, &reason))
    }

    /// Makes the channel of `agentId` and `threadId` private (`reason` given) or public
    /// again (`null`); without a thread, the agent and every thread of it. While private no
    /// frame of it is taken in or sent, viewers get `{status:"private",reason}` and input is
    /// refused. Kept for channels nobody watches yet. Throws for bad ids or a bad reason (as
    /// `releaseControl`).
    #[napi]
    pub fn set_privacy(
        &self,
        agent_id: String,
        thread_id: Option<String>,
        reason: Option<String>,
    ) -> Result<()> {
        ChannelId::checked(&agent_id, thread_id.as_deref()).map_err(invalid)?;
        if let Some(reason) = &reason {
            crate::registry::control_lease::check_reason(reason).map_err(invalid)?;
        }
        self.registry
            .set_privacy(&agent_id, thread_id.as_deref(), reason.as_deref());
        Ok(())
    }

    /// Whether `key` is private now (`setPrivacy`).
    #[napi]
    pub fn is_private(&self, key: String) -> bool {
        self.registry.is_private(&key)
    }

    /// Closes a viewer with a close frame of `code` (and `reason`); without `code` the viewer
    /// is only detached (its socket already closed, or the caller keeps it). False if unknown.
    #[napi]
    pub fn close_viewer(
        &self,
        viewer_id: u32,
        code: Option<u32>,
        reason: Option<String>,
    ) -> Result<bool> {
        let close = match code {
            None => None,
            Some(code @ (1000 | 1001 | 1008 | 1011 | 1013 | 3000..=4999)) => Some(code as u16),
            Some(code) => return Err(invalid(format!("close code {code} cannot be sent"))),
        };
        let reason = reason.unwrap_or_default();
        Ok(self
            .registry
            .close_viewer(viewer_id, close.map(|code| (code, reason.as_str()))))
    }

    /// Publishes a frame of `key`'s source: base64 image text (as CDP sends it) or the image
    /// bytes. `generation` (from the `start` event) makes pushes of an older session stale;
    /// omit it to push into whatever session is live. Returns `published`, `no_channel`,
    /// `stale` or `rejected`.
    #[napi]
    pub fn push_frame(
        &self,
        key: String,
        data: Either<String, Buffer>,
        metadata: Option<FrameMetadata>,
        generation: Option<u32>,
    ) -> PushResult {
        let text = match data {
            Either::A(text) => Bytes::from(text),
            Either::B(bytes) => {
                Bytes::from(base64::engine::general_purpose::STANDARD.encode(&bytes[..]))
            }
        };
        let meta = FrameMeta::from(metadata.unwrap_or_default());
        match self.registry.push_frame(&key, generation, text, meta) {
            PushOutcome::Published(_) => PushResult::Published,
            PushOutcome::NoChannel => PushResult::NoChannel,
            PushOutcome::Stale => PushResult::Stale,
            PushOutcome::Rejected(_) => PushResult::Rejected,
            PushOutcome::Withheld => PushResult::Withheld,
        }
    }

    /// Replays `images` (JPEG, PNG or WebP bytes) in a loop as the frames of source session
    /// `generation` of `key`, from the Rust runtime: a browser-less source for demos and the
    /// benchmark. Sets the status `streaming`; the replay stops by itself when the session ends.
    /// Returns false when `generation` is not the live session of `key`.
    #[napi]
    pub fn start_replay_source(
        &self,
        key: String,
        generation: u32,
        images: Vec<Buffer>,
        options: ReplaySourceOptions,
    ) -> Result<bool> {
        let schedule = ReplaySchedule {
            fps: options.fps,
            stamp: options.stamp_frames.unwrap_or(false),
            width: options.width.unwrap_or(0.0),
            height: options.height.unwrap_or(0.0),
        };
        check_schedule(&schedule).map_err(|e| invalid(e.to_string()))?;
        let images = ReplayImages::new(images.iter().map(|b| &b[..]), schedule.stamp)
            .map_err(|e| invalid(e.to_string()))?;
        if !self
            .registry
            .decide_source_kind(&key, generation, SourceKind::Local)
            || !self
                .registry
                .set_status(&key, Some(generation), protocol::Status::STREAMING)
        {
            return Ok(false);
        }
        let registry = self.registry.clone();
        self.registry
            .runtime()
            .spawn(run_replay(registry, key, generation, images, schedule));
        Ok(true)
    }

    /// Makes a native CDP session the source of session `generation` of `key`: it connects to
    /// the browser at `endpoint` (a `ws://…/devtools/browser/…` URL), shows the agent's page
    /// and publishes its screencast from Rust; input is relayed to the page from Rust too.
    /// Returns false when `generation` is not the live session of `key`.
    #[napi]
    pub fn start_cdp_source(
        &self,
        key: String,
        generation: u32,
        endpoint: String,
        options: Option<CdpSourceOptions>,
    ) -> Result<bool> {
        let options = options.unwrap_or_default().into_options(endpoint)?;
        let Some(channel) = self.registry.channel(&key) else {
            return Ok(false);
        };
        if !self
            .registry
            .decide_source_kind(&key, generation, SourceKind::Local)
        {
            return Ok(false);
        }
        let request = SourceRequest {
            key,
            agent_id: channel.id.agent_id.clone(),
            thread_id: channel.id.thread_id.clone(),
            generation,
        };
        self.cdp
            .start(self.registry.clone(), request.clone(), options);
        // A stop that ran between the check above and the start found no session to stop.
        if !self.registry.is_live(&request.key, generation) {
            self.cdp.stop(&request);
            return Ok(false);
        }
        Ok(true)
    }

    /// Session `generation` of `key` has its browser here (a toolset's, streamed from JS): the
    /// relay answers for it, and a resume waiting to know where the browser is goes on. The
    /// native sources say so themselves. False when the session is not live.
    #[napi]
    pub fn mark_local_source(&self, key: String, generation: u32) -> bool {
        self.registry
            .decide_source_kind(&key, generation, SourceKind::Local)
    }

    /// Starts the relay source of session `generation` of `key`: this instance has no browser
    /// for it, so its viewers watch the instance that has one, over the bus. False when the
    /// session is not live; throws when the registry has no `relay`.
    #[napi]
    pub fn start_relay_source(&self, key: String, generation: u32) -> Result<bool> {
        let Some(relay) = &self.registry.relay else {
            return Err(invalid("startRelaySource needs the relay option"));
        };
        let Some(channel) = self.registry.channel(&key) else {
            return Ok(false);
        };
        if !self.registry.is_live(&key, generation) {
            return Ok(false);
        }
        relay.start_source(channel.id.clone(), generation);
        Ok(true)
    }

    /// The host's answer to a `probe` event: whether this instance has that browser. False
    /// when the probe is no longer waiting (it timed out) or there is no relay.
    #[napi]
    pub fn answer_probe(&self, probe_id: u32, owns: bool) -> bool {
        self.registry
            .relay
            .as_ref()
            .is_some_and(|relay| relay.answer_probe(probe_id, owns))
    }

    /// Whether the registry has a relay (the `relay` option).
    #[napi(getter)]
    pub fn has_relay(&self) -> bool {
        self.registry.relay.is_some()
    }

    /// Tells the registry that session `generation` of `key` ended by itself (its browser is
    /// gone): the channel goes idle, keeps its viewers, and the next viewer or a `relaunch`
    /// starts a new session. False when `generation` is not the live session.
    #[napi]
    pub fn source_ended(&self, key: String, generation: u32) -> bool {
        self.cdp.stop_generation(&key, generation);
        self.registry.source_ended(&key, generation)
    }

    /// Sets and broadcasts `{status}` for `key`. False when stale or no channel.
    #[napi]
    pub fn set_status(&self, key: String, status: String, generation: Option<u32>) -> Result<bool> {
        status_arg(&status)?;
        Ok(self.registry.set_status(&key, generation, &status))
    }

    /// Sets and broadcasts `{url}` for `key` when it changed.
    #[napi]
    pub fn set_url(&self, key: String, url: String, generation: Option<u32>) -> Result<bool> {
        if url.len() > 8192 {
            return Err(invalid("url longer than 8192 bytes"));
        }
        Ok(self.registry.set_url(&key, generation, &url))
    }

    /// Broadcasts `{error, message}` to `key`'s viewers.
    #[napi]
    pub fn broadcast_error(
        &self,
        key: String,
        code: String,
        message: String,
        generation: Option<u32>,
    ) -> Result<bool> {
        status_arg(&code)?;
        Ok(self
            .registry
            .broadcast_error(&key, generation, &code, &message))
    }

    /// Broadcasts a JSON object text as it is; a `status` field also becomes the sticky
    /// status that late joiners get.
    #[napi]
    pub fn broadcast_json(&self, key: String, json: String) -> Result<bool> {
        match serde_json::from_str::<serde_json::Value>(&json) {
            Ok(serde_json::Value::Object(_)) => Ok(self.registry.broadcast_json(&key, &json)),
            _ => Err(invalid("broadcastJson takes the text of a JSON object")),
        }
    }

    /// Forgets url, viewport and newest frame of `key` (browser session over).
    #[napi]
    pub fn clear_page_state(&self, key: String) {
        self.registry.clear_page_state(&key);
    }

    /// Whether the registry holds a channel for `key` (it has viewers, or its source still
    /// runs or lingers). A channel the registry let go needs no bookkeeping in JS any more.
    #[napi]
    pub fn has_channel(&self, key: String) -> bool {
        self.registry.channel(&key).is_some()
    }

    /// Viewers of `key`.
    #[napi]
    pub fn viewer_count(&self, key: String) -> u32 {
        self.registry.viewer_count(&key) as u32
    }

    /// Whether `key`'s source is live and its status is `streaming`.
    #[napi]
    pub fn is_streaming(&self, key: String) -> bool {
        self.registry.is_streaming(&key)
    }

    /// Stats of every channel and viewer.
    #[napi]
    pub fn stats(&self) -> JsRegistryStats {
        let channels = self
            .registry
            .stats()
            .into_iter()
            .map(|channel| {
                let cdp = self.cdp.stats(&channel.id.key);
                JsChannelStats::new(channel, cdp.as_deref().map(JsCdpStats::from))
            })
            .collect();
        JsRegistryStats::new(
            channels,
            self.registry.viewer_total(),
            &self.registry.totals,
            self.registry.is_closed(),
            self.cdp.len(),
            self.registry
                .webrtc
                .as_ref()
                .map(|webrtc| webrtc.figures().into()),
            self.registry
                .relay
                .as_ref()
                .map(|relay| relay.figures().into()),
        )
    }

    /// Closes every viewer with 1001, stops every source and refuses new viewers.
    #[napi]
    pub fn close(&self) {
        self.registry.close();
        self.cdp.stop_all();
    }

    /// `close()`, then resolves once every viewer's close frame was written (a frame in
    /// progress is finished first, a socket that does not take it is cut) or `timeoutMs`
    /// passed. Resolves to the number of viewers still open then (0 normally). Await it before
    /// letting the process exit, or close frames may never leave.
    #[napi]
    pub async fn close_and_wait(&self, timeout_ms: u32) -> Result<u32> {
        self.close();
        let registry = self.registry.clone();
        let deadline = Duration::from_millis(timeout_ms.into());
        // Viewers, and sockets still draining after their close frame. Elapsing is not an
        // error: the count left says it.
        let _ = tokio::time::timeout(deadline, async {
            while registry.connections() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        Ok(registry.connections() as u32)
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, message.into())
}

/// The channel a key stands for (`channelKey` made it); every method names channels by key.
fn channel_id(key: &str) -> Result<ChannelId> {
    ChannelId::from_key(key).map_err(invalid)
}

/// The registry's key of an agent's channel (scoped to `threadId` when given): the key that
/// host events carry and that every `NativeRegistry` method takes. Unambiguous for any ids; for
/// ids without `:` and `%` it is the TypeScript module's `agentId:threadId`. Throws for ids
/// that break the id rules (1 to 256 bytes, no control characters).
/// The content type of `metrics()` (the Prometheus text format 0.0.4).
#[napi]
pub fn metrics_content_type() -> &'static str {
    metrics::CONTENT_TYPE
}

#[napi]
pub fn channel_key(agent_id: String, thread_id: Option<String>) -> Result<String> {
    Ok(ChannelId::checked(&agent_id, thread_id.as_deref())
        .map_err(invalid)?
        .key)
}
