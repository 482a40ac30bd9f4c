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

pub(crate) mod client;
pub(crate) mod input;
pub(crate) mod session;

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::host::{HostFuture, SourceRequest};
use crate::protocol::ClientMessage;
use crate::registry::Registry;
use crate::sync::lock;
use session::run_session;

/// Default of `CdpOptions::timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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

impl ImageFormat {
    /// Its name in `startCdpSource`'s options.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
        }
    }

    /// The format called `name`, if there is one.
    pub(crate) fn named(name: &str) -> Option<ImageFormat> {
        [ImageFormat::Jpeg, ImageFormat::Png]
            .into_iter()
            .find(|format| format.name() == name)
    }
}

impl CdpOptions {
    /// JPEG qualities accepted.
    pub const QUALITY: RangeInclusive<u32> = 0..=100;
    /// Largest frame widths and heights accepted, in pixels.
    pub const FRAME_SIZE: RangeInclusive<u32> = 16..=16384;
    /// Timeouts accepted, in milliseconds.
    pub const TIMEOUT_MS: RangeInclusive<u32> = 100..=600_000;
    /// `every_nth_frame` values accepted.
    pub const EVERY_NTH_FRAME: RangeInclusive<u32> = 1..=60;
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

/// A request to a running session.
enum SessionCommand {
    /// Relay a viewer's input; the reply says when Chrome applied it.
    Input(ClientMessage, oneshot::Sender<Result<(), String>>),
    /// A viewer wants a frame and the channel has none: take a screenshot.
    Capture,
    /// The page is quiet: a screenshot at this JPEG quality, published as a refinement.
    Refine(u32),
    /// The controller chose another tab (an id of the session's `tabs`).
    SelectTab(u32),
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
    /// DevTools sessions started: one per source start, so a reconnect after a crash or a
    /// lost connection counts one more.
    pub started: AtomicU64,
}

impl CdpSessions {
    /// Starts the session `request` (replacing, and stopping, an older one of the same key).
    pub fn start(
        self: &Arc<Self>,
        registry: Arc<Registry>,
        request: SourceRequest,
        options: CdpOptions,
    ) {
        self.started.fetch_add(1, Ordering::Relaxed);
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
        self.command(request, SessionCommand::Capture)
    }

    /// Asks the session of `request` for a refinement screenshot at JPEG `quality`.
    pub fn refine(&self, request: &SourceRequest, quality: u32) -> bool {
        self.command(request, SessionCommand::Refine(quality))
    }

    /// Asks the session of `request` to show tab `id`. False if none serves it.
    pub fn select_tab(&self, request: &SourceRequest, id: u32) -> bool {
        self.command(request, SessionCommand::SelectTab(id))
    }

    fn command(&self, request: &SourceRequest, command: SessionCommand) -> bool {
        let map = lock(&self.sessions);
        match map.get(&request.key) {
            Some(handle) if handle.generation == request.generation => {
                handle.commands.try_send(command).is_ok()
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
