//! The native frame source: a Chromium page's screencast, read over the DevTools protocol in
//! Rust and published straight into the registry, so frames never touch JS.
//!
//! Owns: the DevTools connection of each CDP source session (chromiumoxide's `Connection` and
//! its typed CDP messages), the choice of the page to show and following it (a new tab, a
//! navigation, a closed tab), the screencast with its per-frame acks (Chrome's flow control),
//! the screenshot fallback for a page that sends no frame, relaying viewer input to the page
//! in order, and reporting a crash or a lost connection. Must not touch sockets or viewers: it
//! talks to the registry like any other source (`push_frame`, `set_status`, `set_url`,
//! `broadcast_*`, `source_ended`).
//!
//! chromiumoxide's `Browser`/`Handler` are deliberately not used: on connect they attach to
//! every tab and change it (network and log domains, auto-attach that pauses new frames, a
//! tab closed when its set-up times out). This source shares the agent's browser, so it
//! attaches to the one page it shows and sends only what the screencast needs.

pub(crate) mod input;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams, EventFrameNavigated,
    EventNavigatedWithinDocument, EventScreencastFrame, EventScreencastVisibilityChanged,
    StartScreencastFormat, StartScreencastParams,
};
use chromiumoxide::cdp::browser_protocol::target::{
    AttachToTargetParams, EventDetachedFromTarget, EventTargetCrashed, EventTargetCreated,
    EventTargetDestroyed, GetTargetsParams, SessionId, SetDiscoverTargetsParams, TargetInfo,
};
use chromiumoxide::error::CdpError;
use chromiumoxide::types::{CallId, Command, EventMessage, Message, Method, MethodId};
use chromiumoxide::Connection;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::input::{insert_text_command, keyboard_command, mouse_command, CdpCommand};
use crate::clock::{sleep_until, wall_clock_ms};
use crate::frame::FrameMeta;
use crate::host::{HostFuture, SourceRequest};
use crate::protocol::{ClientMessage, ErrorCode};
use crate::registry::{PushOutcome, Registry};

/// Default of `CdpOptions::timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence of the browser before the session asks whether it still answers.
const MAX_BROWSER_HEARTBEAT: Duration = Duration::from_secs(5);
/// Least time the browser gets to answer that question.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a session checks that the registry still runs its generation.
const LIVENESS_CHECK: Duration = Duration::from_secs(2);
/// A page that has sent no frame this long after the screencast started gets a screenshot.
const SCREENSHOT_FALLBACK_AFTER: Duration = Duration::from_millis(500);

/// Image format of the screencast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG (the default; what Studio expects).
    Jpeg,
    /// PNG.
    Png,
}

/// What one CDP source session connects to and how it captures.
#[derive(Debug, Clone, PartialEq)]
pub struct CdpOptions {
    /// The browser's DevTools WebSocket URL (`ws://host:port/devtools/browser/…`).
    pub endpoint: String,
    /// The page target to show; the most recently opened page when absent.
    pub target_id: Option<String>,
    /// Screencast image format.
    pub format: ImageFormat,
    /// JPEG quality, 0–100.
    pub quality: u8,
    /// Largest frame width (Chrome scales down to fit).
    pub max_width: Option<u32>,
    /// Largest frame height.
    pub max_height: Option<u32>,
    /// Send every n-th frame.
    pub every_nth_frame: u32,
    /// Switch to a page the agent opens (a new tab).
    pub follow_new_tabs: bool,
    /// How long connecting, or any one call, may take before the browser counts as gone; the
    /// session also checks this often (at most every 5 s) that the browser still answers.
    pub timeout: Duration,
}

impl Default for CdpOptions {
    fn default() -> Self {
        CdpOptions {
            endpoint: String::new(),
            target_id: None,
            format: ImageFormat::Jpeg,
            quality: 80,
            max_width: None,
            max_height: None,
            every_nth_frame: 1,
            follow_new_tabs: true,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Counters and state of one session, read by `stats()`.
#[derive(Debug, Default)]
pub struct CdpSessionStats {
    /// Whether the DevTools connection is up.
    pub connected: AtomicBool,
    /// Whether the page reports itself visible (`Page.screencastVisibilityChanged`).
    pub visible: AtomicBool,
    /// Page attachments made (1 + re-targets and relaunches).
    pub attaches: AtomicU64,
    /// Screencast frames received and acknowledged.
    pub frames_acked: AtomicU64,
    /// Frames taken with `Page.captureScreenshot` because the page sent none.
    pub screenshots: AtomicU64,
    /// Inputs dispatched to the page.
    pub inputs_dispatched: AtomicU64,
    /// The page shown and its URL.
    page: Mutex<(Option<String>, Option<String>)>,
}

impl CdpSessionStats {
    /// `(target id, url)` of the page shown.
    pub fn page(&self) -> (Option<String>, Option<String>) {
        lock(&self.page).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A request to a running session.
enum SessionCommand {
    /// Relay a viewer's input; the reply says when Chrome applied it.
    Input(ClientMessage, oneshot::Sender<Result<(), String>>),
    /// A viewer wants a frame and the channel has none: take a screenshot.
    Capture,
}

/// Tells session tasks apart (a generation may be started twice by a confused caller).
static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

struct SessionHandle {
    id: u64,
    generation: u32,
    commands: mpsc::Sender<SessionCommand>,
    stop: CancellationToken,
    stats: Arc<CdpSessionStats>,
}

/// The live CDP source sessions, by channel key. The registry's host asks it first when a
/// source must stop or an input must be relayed.
#[derive(Default)]
pub struct CdpSessions {
    sessions: Mutex<HashMap<String, SessionHandle>>,
}

impl CdpSessions {
    /// Starts the session `request` (replacing, and stopping, an older one of the same key).
    pub fn start(
        self: &Arc<Self>,
        registry: Arc<Registry>,
        request: SourceRequest,
        options: CdpOptions,
    ) {
        let (commands, commands_rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let stats = Arc::new(CdpSessionStats::default());
        let id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
        let handle = SessionHandle {
            id,
            generation: request.generation,
            commands,
            stop: stop.clone(),
            stats: stats.clone(),
        };
        if let Some(old) = lock(&self.sessions).insert(request.key.clone(), handle) {
            old.stop.cancel();
        }
        let sessions = Arc::downgrade(self);
        let runtime = registry.runtime().clone();
        runtime.spawn(async move {
            let key = request.key.clone();
            run_session(registry, request, options, commands_rx, stop, stats).await;
            if let Some(sessions) = sessions.upgrade() {
                let mut map = lock(&sessions.sessions);
                if map.get(&key).is_some_and(|h| h.id == id) {
                    map.remove(&key);
                }
            }
        });
    }

    /// Stops the session of `request` if it is the live one. True if there was one.
    pub fn stop(&self, request: &SourceRequest) -> bool {
        self.stop_generation(&request.key, request.generation)
    }

    /// Stops `key`'s session if it serves `generation`. True if there was one.
    pub fn stop_generation(&self, key: &str, generation: u32) -> bool {
        let mut map = lock(&self.sessions);
        match map.get(key) {
            Some(handle) if handle.generation == generation => {
                handle.stop.cancel();
                map.remove(key);
                true
            }
            _ => false,
        }
    }

    /// Relays `input` to the session of `request`; hands the input back when no CDP session
    /// serves it, so the caller relays it elsewhere without a copy.
    pub fn relay(
        &self,
        request: &SourceRequest,
        input: ClientMessage,
    ) -> Result<HostFuture, ClientMessage> {
        let commands = {
            let map = lock(&self.sessions);
            match map.get(&request.key) {
                Some(handle) if handle.generation == request.generation => handle.commands.clone(),
                _ => return Err(input),
            }
        };
        Ok(Box::pin(async move {
            let (reply, replied) = oneshot::channel();
            commands
                .send(SessionCommand::Input(input, reply))
                .await
                .map_err(|_| "the browser session ended".to_string())?;
            replied
                .await
                .map_err(|_| "the browser session ended".to_string())?
        }))
    }

    /// Asks the session of `request` for a fresh frame (a screenshot). False if none serves it.
    pub fn capture(&self, request: &SourceRequest) -> bool {
        let map = lock(&self.sessions);
        match map.get(&request.key) {
            Some(handle) if handle.generation == request.generation => {
                handle.commands.try_send(SessionCommand::Capture).is_ok()
            }
            _ => false,
        }
    }

    /// The stats of `key`'s session, if one runs.
    pub fn stats(&self, key: &str) -> Option<Arc<CdpSessionStats>> {
        lock(&self.sessions).get(key).map(|h| h.stats.clone())
    }

    /// Number of live sessions (one DevTools connection each).
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Stops every session (registry close).
    pub fn stop_all(&self) {
        for (_, handle) in lock(&self.sessions).drain() {
            handle.stop.cancel();
        }
    }
}

// ---- the DevTools connection -------------------------------------------------------------

/// One CDP event as received: chromiumoxide's generic event type does not read the message's
/// top-level `sessionId` (which flattened sessions rely on), so this one does.
#[derive(Debug, serde::Deserialize)]
struct CdpEvent {
    method: MethodId,
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
    #[serde(default)]
    params: Value,
}

impl Method for CdpEvent {
    fn identifier(&self) -> MethodId {
        self.method.clone()
    }
}

impl EventMessage for CdpEvent {
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

struct Call {
    method: Cow<'static, str>,
    session: Option<String>,
    params: Value,
    reply: Option<oneshot::Sender<Result<Value, String>>>,
}

/// A DevTools connection driven by its own task: calls with replies, and a stream of events.
/// Dropping the client ends the connection.
#[derive(Clone)]
struct CdpClient {
    calls: mpsc::UnboundedSender<Call>,
    /// How long a call may take.
    timeout: Duration,
    /// When the browser last sent anything (answer or event).
    last_heard: Arc<Mutex<Instant>>,
}

impl CdpClient {
    async fn connect(
        endpoint: &str,
        timeout: Duration,
    ) -> Result<(CdpClient, mpsc::UnboundedReceiver<CdpEvent>), String> {
        let connection = tokio::time::timeout(timeout, Connection::<CdpEvent>::connect(endpoint))
            .await
            .map_err(|_| format!("no answer from {endpoint} within {timeout:?}"))?
            .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
        let (calls, calls_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let last_heard = Arc::new(Mutex::new(Instant::now()));
        tokio::spawn(drive(connection, calls_rx, events, last_heard.clone()));
        let client = CdpClient {
            calls,
            timeout,
            last_heard,
        };
        Ok((client, events_rx))
    }

    /// How long the browser has been silent.
    fn silent_for(&self) -> Duration {
        lock(&self.last_heard).elapsed()
    }

    /// Asks the browser something cheap and waits up to `timeout` for any answer: an error
    /// answer proves it alive too. Err only when it does not answer or the connection closed.
    async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.calls
            .send(Call {
                method: Cow::Borrowed("Browser.getVersion"),
                session: None,
                params: json!({}),
                reply: Some(reply),
            })
            .map_err(|_| "the DevTools connection is closed".to_string())?;
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(Err(_)) => Err("the DevTools connection is closed".to_string()),
            Ok(Ok(_answered)) => Ok(()),
        }
    }

    /// Sends a call without waiting for its answer (screencast acks).
    fn send(&self, method: &'static str, session: Option<&str>, params: Value) {
        let _ = self.calls.send(Call {
            method: Cow::Borrowed(method),
            session: session.map(str::to_string),
            params,
            reply: None,
        });
    }

    async fn call(
        &self,
        method: Cow<'static, str>,
        session: Option<&str>,
        params: Value,
    ) -> Result<Value, String> {
        let (reply, answer) = oneshot::channel();
        let label = method.clone();
        self.calls
            .send(Call {
                method,
                session: session.map(str::to_string),
                params,
                reply: Some(reply),
            })
            .map_err(|_| "the DevTools connection is closed".to_string())?;
        match tokio::time::timeout(self.timeout, answer).await {
            Err(_) => Err(format!("{label}: no answer within {:?}", self.timeout)),
            Ok(Err(_)) => Err("the DevTools connection is closed".to_string()),
            Ok(Ok(result)) => result.map_err(|e| format!("{label}: {e}")),
        }
    }

    async fn command<C: Command>(
        &self,
        session: Option<&str>,
        command: C,
    ) -> Result<C::Response, String> {
        let method = command.identifier();
        let params = serde_json::to_value(&command).map_err(|e| e.to_string())?;
        let result = self.call(method.clone(), session, params).await?;
        C::response_from_value(result).map_err(|e| format!("{method}: unexpected answer: {e}"))
    }

    async fn run(&self, session: Option<&str>, command: CdpCommand) -> Result<Value, String> {
        self.call(Cow::Borrowed(command.method), session, command.params)
            .await
    }
}

/// Moves calls to the socket and answers and events back until either side is gone.
async fn drive(
    mut connection: Connection<CdpEvent>,
    mut calls: mpsc::UnboundedReceiver<Call>,
    events: mpsc::UnboundedSender<CdpEvent>,
    last_heard: Arc<Mutex<Instant>>,
) {
    let mut pending: HashMap<CallId, oneshot::Sender<Result<Value, String>>> = HashMap::new();
    loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { return };
                let session = call.session.map(SessionId::new);
                match connection.submit_command(call.method, session, call.params) {
                    Ok(id) => {
                        if let Some(reply) = call.reply {
                            pending.insert(id, reply);
                        }
                    }
                    Err(e) => {
                        if let Some(reply) = call.reply {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
            message = connection.next() => {
                if message.is_some() {
                    *lock(&last_heard) = Instant::now();
                }
                match message {
                Some(Ok(Message::Response(response))) => {
                    if let Some(reply) = pending.remove(&response.id) {
                        let result = match (response.result, response.error) {
                            (_, Some(error)) => Err(format!("{} ({})", error.message, error.code)),
                            (result, None) => Ok(result.unwrap_or(Value::Null)),
                        };
                        let _ = reply.send(result);
                    }
                }
                Some(Ok(Message::Event(event))) => {
                    if events.send(event).is_err() {
                        return;
                    }
                }
                // A message this client cannot read (a newer protocol): skip it.
                Some(Err(CdpError::InvalidMessage(..))) | Some(Err(CdpError::Serde(_))) => {}
                Some(Err(_)) | None => return,
                }
            }
        }
    }
}

// ---- one source session ------------------------------------------------------------------

/// The page the session shows.
struct Attached {
    target_id: String,
    session_id: String,
    main_frame_id: Option<String>,
}

/// Why a session ended.
enum Ending {
    /// Asked to stop (last viewer gone, registry closed, a newer session).
    Stopped,
    /// The registry no longer takes this session's frames.
    Stale,
    /// The browser went away: crash or lost connection.
    Crashed(String),
    /// Could not start.
    Failed(String),
}

struct Session {
    registry: Arc<Registry>,
    key: String,
    generation: u32,
    options: CdpOptions,
    client: CdpClient,
    stats: Arc<CdpSessionStats>,
    /// Page targets known from discovery, newest first.
    pages: Vec<TargetInfo>,
    attached: Option<Attached>,
    /// When to take a screenshot if no frame came since the screencast started.
    screenshot_at: Option<Instant>,
}

async fn run_session(
    registry: Arc<Registry>,
    request: SourceRequest,
    options: CdpOptions,
    mut commands: mpsc::Receiver<SessionCommand>,
    stop: CancellationToken,
    stats: Arc<CdpSessionStats>,
) {
    let key = request.key.clone();
    let generation = request.generation;
    registry.set_status(&key, Some(generation), "browser_starting");
    let connected = tokio::select! {
        _ = stop.cancelled() => return,
        connected = CdpClient::connect(&options.endpoint, options.timeout) => connected,
    };
    let (client, mut events) = match connected {
        Ok(connected) => connected,
        Err(message) => return finish(&registry, &key, generation, Ending::Failed(message)),
    };
    stats.connected.store(true, Ordering::Relaxed);
    stats.visible.store(true, Ordering::Relaxed);
    let mut session = Session {
        registry: registry.clone(),
        key: key.clone(),
        generation,
        options,
        client,
        stats: stats.clone(),
        pages: Vec::new(),
        attached: None,
        screenshot_at: None,
    };
    let ending = tokio::select! {
        _ = stop.cancelled() => Ending::Stopped,
        ending = session.run(&mut events, &mut commands) => ending,
    };
    if matches!(ending, Ending::Stopped | Ending::Stale) {
        session.detach().await;
    }
    stats.connected.store(false, Ordering::Relaxed);
    finish(&registry, &key, generation, ending);
}

/// Reports how a session ended to its viewers, and frees the channel for a new start.
fn finish(registry: &Registry, key: &str, generation: u32, ending: Ending) {
    let (error, message) = match ending {
        Ending::Stopped | Ending::Stale => return,
        Ending::Crashed(message) => (ErrorCode::BROWSER_CRASHED, message),
        Ending::Failed(message) => (ErrorCode::SCREENCAST_FAILED, message),
    };
    registry.broadcast_error(key, Some(generation), error, &message);
    registry.set_status(key, Some(generation), "browser_closed");
    registry.source_ended(key, generation);
}

impl Session {
    async fn run(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<CdpEvent>,
        commands: &mut mpsc::Receiver<SessionCommand>,
    ) -> Ending {
        if let Err(message) = self.start().await {
            return Ending::Failed(message);
        }
        // Backstop: a session whose generation the registry no longer runs ends even on a page
        // that sends nothing (a stop can slip between the liveness check and the start).
        let mut liveness = tokio::time::interval(LIVENESS_CHECK);
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A browser that hangs keeps its socket open and sends nothing, like a static page:
        // only asking tells them apart. A browser that sends anything is alive; a silent one
        // is asked, and given at least `MIN_PROBE_TIMEOUT` to answer (its answer may queue
        // behind frames on the same socket).
        let every = self
            .options
            .timeout
            .clamp(Duration::from_millis(100), MAX_BROWSER_HEARTBEAT);
        let probe_timeout = self.options.timeout.max(MIN_PROBE_TIMEOUT);
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let screenshot_at = self.screenshot_at;
            tokio::select! {
                _ = liveness.tick() => {
                    if !self.registry.is_live(&self.key, self.generation) {
                        return Ending::Stale;
                    }
                }
                _ = heartbeat.tick() => {
                    if self.client.silent_for() >= every {
                        if let Err(error) = self.client.probe(probe_timeout).await {
                            return Ending::Crashed(format!(
                                "the browser stopped answering ({error})"
                            ));
                        }
                    }
                }
                event = events.recv() => {
                    let Some(event) = event else {
                        return Ending::Crashed("the browser's DevTools connection closed".into());
                    };
                    if let Some(ending) = self.on_event(event).await {
                        return ending;
                    }
                }
                command = commands.recv() => match command {
                    None => return Ending::Stopped,
                    Some(SessionCommand::Input(input, reply)) => {
                        let result = self.on_input(input).await;
                        let _ = reply.send(result);
                    }
                    Some(SessionCommand::Capture) => {
                        if let Err(ending) = self.screenshot().await {
                            return ending;
                        }
                    }
                },
                _ = sleep_until(screenshot_at), if screenshot_at.is_some() => {
                    self.screenshot_at = None;
                    if let Err(ending) = self.screenshot().await {
                        return ending;
                    }
                }
            }
        }
    }

    async fn start(&mut self) -> Result<(), String> {
        self.client
            .command(None, SetDiscoverTargetsParams::new(true))
            .await?;
        let targets = self
            .client
            .command(None, GetTargetsParams::default())
            .await?;
        self.pages = targets.target_infos.into_iter().filter(is_page).collect();
        let target = match &self.options.target_id {
            Some(wanted) => self
                .pages
                .iter()
                .find(|p| p.target_id.as_ref() == wanted.as_str())
                .cloned()
                .ok_or_else(|| format!("the browser has no page target {wanted}"))?,
            None => match self.preferred_page() {
                Some(page) => page,
                None => {
                    // No page yet: keep the viewers and show the first one the agent opens.
                    self.registry
                        .set_status(&self.key, Some(self.generation), "browser_closed");
                    return Ok(());
                }
            },
        };
        self.attach(target).await
    }

    /// The page to show when none is asked for: the most recently opened one (`pages` is kept
    /// newest first, the order of `Target.getTargets`).
    fn preferred_page(&self) -> Option<TargetInfo> {
        self.pages.first().cloned()
    }

    /// Attaches to `target`, starts its screencast and publishes its URL.
    async fn attach(&mut self, target: TargetInfo) -> Result<(), String> {
        let attach = AttachToTargetParams::builder()
            .target_id(target.target_id.clone())
            .flatten(true)
            .build()
            .map_err(|e| e.to_string())?;
        let session_id = self.client.command(None, attach).await?.session_id;
        let session = session_id.as_ref().to_string();
        self.stats.attaches.fetch_add(1, Ordering::Relaxed);
        self.attached = Some(Attached {
            target_id: target.target_id.as_ref().to_string(),
            session_id: session.clone(),
            main_frame_id: None,
        });
        *lock(&self.stats.page) = (
            Some(target.target_id.as_ref().to_string()),
            Some(target.url.clone()),
        );
        self.client
            .call("Page.enable".into(), Some(&session), json!({}))
            .await?;
        let format = match self.options.format {
            ImageFormat::Jpeg => StartScreencastFormat::Jpeg,
            ImageFormat::Png => StartScreencastFormat::Png,
        };
        let mut screencast = StartScreencastParams::builder()
            .format(format)
            .every_nth_frame(self.options.every_nth_frame.max(1) as i64);
        if self.options.format == ImageFormat::Jpeg {
            screencast = screencast.quality(self.options.quality.min(100) as i64);
        }
        if let Some(width) = self.options.max_width {
            screencast = screencast.max_width(width as i64);
        }
        if let Some(height) = self.options.max_height {
            screencast = screencast.max_height(height as i64);
        }
        self.client
            .command(Some(&session), screencast.build())
            .await?;
        self.screenshot_at = Some(Instant::now() + SCREENSHOT_FALLBACK_AFTER);
        if !target.url.is_empty() {
            self.registry
                .set_url(&self.key, Some(self.generation), &target.url);
        }
        self.registry
            .set_status(&self.key, Some(self.generation), "streaming");
        Ok(())
    }

    /// Stops the screencast and detaches from the page shown (best effort).
    async fn detach(&mut self) {
        let Some(attached) = self.attached.take() else {
            return;
        };
        let session = Some(attached.session_id.as_str());
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.client
                .call("Page.stopScreencast".into(), session, json!({})),
        )
        .await;
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.client.call(
                "Target.detachFromTarget".into(),
                None,
                json!({ "sessionId": attached.session_id }),
            ),
        )
        .await;
    }

    /// Shows another page: the one given, else the most recent one left. A page that cannot
    /// be attached (e.g. a popup already gone) is skipped; with none left the viewers are told
    /// `browser_closed` and the session waits for the agent to open a page. Never ends the
    /// session: only a lost connection or a crash does.
    async fn retarget(&mut self, target: Option<TargetInfo>) -> Option<Ending> {
        self.detach().await;
        let mut candidate = target.or_else(|| self.preferred_page());
        while let Some(target) = candidate {
            if self.attach(target.clone()).await.is_ok() {
                return None;
            }
            self.attached = None;
            self.pages.retain(|p| p.target_id != target.target_id);
            candidate = self.preferred_page();
        }
        self.registry
            .set_status(&self.key, Some(self.generation), "browser_closed");
        None
    }

    fn is_ours(&self, event_session: Option<&str>) -> bool {
        match (&self.attached, event_session) {
            (Some(attached), Some(session)) => attached.session_id == session,
            _ => false,
        }
    }

    async fn on_event(&mut self, event: CdpEvent) -> Option<Ending> {
        let ours = self.is_ours(event.session_id.as_deref());
        match (event.method.as_ref(), ours) {
            (EventScreencastFrame::IDENTIFIER, true) => {
                let frame: EventScreencastFrame = serde_json::from_value(event.params).ok()?;
                return self.on_frame(frame);
            }
            (EventFrameNavigated::IDENTIFIER, true) => {
                let navigated: EventFrameNavigated = serde_json::from_value(event.params).ok()?;
                if navigated.frame.parent_id.is_none() {
                    if let Some(attached) = &mut self.attached {
                        attached.main_frame_id = Some(navigated.frame.id.as_ref().to_string());
                    }
                    self.set_url(&navigated.frame.url);
                }
            }
            (EventNavigatedWithinDocument::IDENTIFIER, true) => {
                let navigated: EventNavigatedWithinDocument =
                    serde_json::from_value(event.params).ok()?;
                let main = self.attached.as_ref()?.main_frame_id.as_deref();
                if main.is_none_or(|main| main == navigated.frame_id.as_ref()) {
                    self.set_url(&navigated.url);
                }
            }
            (EventScreencastVisibilityChanged::IDENTIFIER, true) => {
                let changed: EventScreencastVisibilityChanged =
                    serde_json::from_value(event.params).ok()?;
                self.stats.visible.store(changed.visible, Ordering::Relaxed);
                let visibility = if changed.visible { "visible" } else { "hidden" };
                if self.registry.is_live(&self.key, self.generation) {
                    let message = json!({ "visibility": visibility }).to_string();
                    self.registry.broadcast_json(&self.key, &message);
                }
            }
            ("Inspector.targetCrashed", true) => {
                return Some(Ending::Crashed("the page's renderer crashed".into()));
            }
            (EventTargetCreated::IDENTIFIER, _) => {
                let created: EventTargetCreated = serde_json::from_value(event.params).ok()?;
                let info = created.target_info;
                if is_page(&info) && !self.pages.iter().any(|p| p.target_id == info.target_id) {
                    self.pages.insert(0, info.clone());
                    let showing = self.attached.is_some();
                    if self.options.follow_new_tabs || !showing {
                        return self.retarget(Some(info)).await;
                    }
                }
            }
            ("Target.targetInfoChanged", _) => {
                let info = event.params.get("targetInfo")?;
                let info = serde_json::from_value::<TargetInfo>(info.clone()).ok()?;
                // The browser-level view of a navigation: it also covers a navigation that
                // started before this session's `Page.enable` took effect (a brand-new tab).
                let shown = self
                    .attached
                    .as_ref()
                    .is_some_and(|a| a.target_id == info.target_id.as_ref());
                if shown && !info.url.is_empty() {
                    self.set_url(&info.url);
                }
                if let Some(known) = self
                    .pages
                    .iter_mut()
                    .find(|p| p.target_id == info.target_id)
                {
                    *known = info;
                }
            }
            (EventTargetDestroyed::IDENTIFIER, _) => {
                let destroyed: EventTargetDestroyed = serde_json::from_value(event.params).ok()?;
                self.pages.retain(|p| p.target_id != destroyed.target_id);
                let shown = self.attached.as_ref()?.target_id == destroyed.target_id.as_ref();
                if shown {
                    self.attached = None;
                    return self.retarget(None).await;
                }
            }
            (EventDetachedFromTarget::IDENTIFIER, _) => {
                let detached: EventDetachedFromTarget =
                    serde_json::from_value(event.params).ok()?;
                let shown = self.attached.as_ref()?.session_id == detached.session_id.as_ref();
                if shown {
                    // Someone else detached us, or the page went away: show what is left.
                    let target_id = self.attached.take().map(|a| a.target_id);
                    self.pages
                        .retain(|p| Some(p.target_id.as_ref()) != target_id.as_deref());
                    return self.retarget(None).await;
                }
            }
            (EventTargetCrashed::IDENTIFIER, _) => {
                let crashed: EventTargetCrashed = serde_json::from_value(event.params).ok()?;
                let shown = self.attached.as_ref()?.target_id == crashed.target_id.as_ref();
                if shown {
                    return Some(Ending::Crashed(format!(
                        "the page's renderer crashed ({})",
                        crashed.status
                    )));
                }
            }
            _ => {}
        }
        None
    }

    fn on_frame(&mut self, frame: EventScreencastFrame) -> Option<Ending> {
        let session = self.attached.as_ref()?.session_id.clone();
        // Ack first: Chrome sends the next frame only after the ack of this one.
        self.client.send(
            "Page.screencastFrameAck",
            Some(&session),
            json!({ "sessionId": frame.session_id }),
        );
        self.stats.frames_acked.fetch_add(1, Ordering::Relaxed);
        self.screenshot_at = None;
        let metadata = &frame.metadata;
        let meta = FrameMeta {
            device_width: metadata.device_width,
            device_height: metadata.device_height,
            page_scale_factor: metadata.page_scale_factor,
            offset_top: metadata.offset_top,
            scroll_offset_x: metadata.scroll_offset_x,
            scroll_offset_y: metadata.scroll_offset_y,
            timestamp_ms: metadata
                .timestamp
                .as_ref()
                .map_or_else(wall_clock_ms, |t| *t.inner() * 1000.0),
        };
        let text = Bytes::from(String::from(frame.data));
        match self
            .registry
            .push_frame(&self.key, Some(self.generation), text, meta)
        {
            PushOutcome::NoChannel | PushOutcome::Stale => Some(Ending::Stale),
            PushOutcome::Published(_) | PushOutcome::Rejected(_) => None,
        }
    }

    /// A frame taken on demand, for a page that sends none (nothing changes on it).
    async fn screenshot(&mut self) -> Result<(), Ending> {
        let Some(attached) = &self.attached else {
            return Ok(());
        };
        let session = attached.session_id.clone();
        let mut params = CaptureScreenshotParams::builder();
        params = match self.options.format {
            ImageFormat::Jpeg => params
                .format(CaptureScreenshotFormat::Jpeg)
                .quality(self.options.quality.min(100) as i64),
            ImageFormat::Png => params.format(CaptureScreenshotFormat::Png),
        };
        let shot = match self.client.command(Some(&session), params.build()).await {
            Ok(shot) => shot,
            // A page that cannot be captured now (e.g. navigating) will send frames anyway.
            Err(_) => return Ok(()),
        };
        let metrics = self
            .client
            .call("Page.getLayoutMetrics".into(), Some(&session), json!({}))
            .await
            .unwrap_or(Value::Null);
        let viewport = &metrics["cssVisualViewport"];
        let meta = FrameMeta {
            device_width: viewport["clientWidth"].as_f64().unwrap_or(0.0),
            device_height: viewport["clientHeight"].as_f64().unwrap_or(0.0),
            page_scale_factor: viewport["scale"].as_f64().unwrap_or(1.0),
            timestamp_ms: wall_clock_ms(),
            ..FrameMeta::default()
        };
        self.stats.screenshots.fetch_add(1, Ordering::Relaxed);
        let text = Bytes::from(String::from(shot.data));
        match self
            .registry
            .push_frame(&self.key, Some(self.generation), text, meta)
        {
            PushOutcome::NoChannel | PushOutcome::Stale => Err(Ending::Stale),
            _ => Ok(()),
        }
    }

    async fn on_input(&mut self, input: ClientMessage) -> Result<(), String> {
        let command = match input {
            ClientMessage::Mouse(mouse) => mouse_command(&mouse),
            ClientMessage::Keyboard(key) => keyboard_command(&key),
            ClientMessage::InsertText(text) => insert_text_command(&text),
            ClientMessage::Relaunch => {
                // Re-attach to the agent's current page (e.g. after it changed tabs).
                let targets = self
                    .client
                    .command(None, GetTargetsParams::default())
                    .await?;
                self.pages = targets.target_infos.into_iter().filter(is_page).collect();
                return match self.retarget(None).await {
                    Some(Ending::Crashed(message)) => Err(message),
                    _ => Ok(()),
                };
            }
        };
        let session = self
            .attached
            .as_ref()
            .map(|a| a.session_id.clone())
            .ok_or_else(|| "no page is shown".to_string())?;
        self.client.run(Some(&session), command).await?;
        self.stats.inputs_dispatched.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn set_url(&self, url: &str) {
        lock(&self.stats.page).1 = Some(url.to_string());
        self.registry.set_url(&self.key, Some(self.generation), url);
    }
}

fn is_page(info: &TargetInfo) -> bool {
    info.r#type == "page" && !info.url.starts_with("devtools://")
}
