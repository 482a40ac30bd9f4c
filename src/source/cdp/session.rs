//! One CDP source session: choosing the page to show and following it (a new tab, a
//! navigation, a closed tab), the screencast with its per-frame acks (Chrome's flow control),
//! the screenshot fallback for a page that sends no frame, relaying viewer input to the page in
//! order, and how the session ends (stopped, crashed, connection lost).
//! Must not touch sockets or viewers: it talks to the registry like any other source.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chromiumoxide::cdp::browser_protocol::inspector::EventTargetCrashed as EventTargetCrashedInspector;
use chromiumoxide::cdp::browser_protocol::page::{
    self, CaptureScreenshotFormat, CaptureScreenshotParams, EventFrameNavigated,
    EventLoadEventFired, EventNavigatedWithinDocument, EventScreencastFrame,
    EventScreencastVisibilityChanged, StartScreencastFormat, StartScreencastParams,
};
use chromiumoxide::cdp::browser_protocol::target::{
    AttachToTargetParams, DetachFromTargetParams, EventDetachedFromTarget, EventTargetCrashed,
    EventTargetCreated, EventTargetDestroyed, EventTargetInfoChanged, GetTargetsParams, SessionId,
    SetDiscoverTargetsParams, TargetInfo,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{CdpClient, CdpEvent};
use super::input::{insert_text_command, keyboard_command, mouse_command};
use super::{CdpOptions, CdpSessionStats, ImageFormat, SessionCommand};
use crate::clock::{sleep_until, wall_clock_ms};
use crate::frame::FrameMeta;
use crate::host::SourceRequest;
use crate::protocol::{ClientMessage, ErrorCode, Status};
use crate::registry::tabs::{Tab, MAX_TABS};
use crate::registry::{PushOutcome, Registry};
use crate::sync::lock;

/// Longest silence of the browser before the session asks whether it still answers.
pub(super) const MAX_BROWSER_HEARTBEAT: Duration = Duration::from_secs(5);
/// Least time the browser gets to answer that question.
pub(super) const MIN_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a session checks that the registry still runs its generation.
pub(super) const LIVENESS_CHECK: Duration = Duration::from_secs(2);
/// A page that has sent no frame this long after the screencast started gets a screenshot.
pub(super) const SCREENSHOT_FALLBACK_AFTER: Duration = Duration::from_millis(500);

/// The page the session shows.
pub(super) struct Attached {
    pub(super) target_id: String,
    pub(super) session_id: String,
    pub(super) main_frame_id: Option<String>,
}

/// Why a session ended.
pub(super) enum Ending {
    /// Asked to stop (last viewer gone, registry closed, a newer session).
    Stopped,
    /// The registry no longer takes this session's frames.
    Stale,
    /// The browser went away: crash or lost connection.
    Crashed(String),
    /// Could not start.
    Failed(String),
}

pub(super) struct Session {
    pub(super) registry: Arc<Registry>,
    pub(super) key: String,
    pub(super) generation: u32,
    pub(super) options: CdpOptions,
    pub(super) client: CdpClient,
    pub(super) stats: Arc<CdpSessionStats>,
    /// Page targets known from discovery, newest first.
    pub(super) pages: Vec<TargetInfo>,
    pub(super) attached: Option<Attached>,
    /// When to take a screenshot if no frame came since the screencast started.
    pub(super) screenshot_at: Option<Instant>,
    /// The last screencast frame published, while a refinement of it is the newest frame:
    /// Chrome repaints for a screenshot and sends the same picture again, which must not
    /// replace the sharper one (nor start another quiet period, and so another refinement).
    pub(super) refined_from: Option<Bytes>,
    /// The last screencast frame published.
    pub(super) last_screencast: Option<Bytes>,
    /// Target id → the number viewers know the page by (`tabs`): a DevTools target id is
    /// the browser's, not for viewers. Pruned with `pages`.
    pub(super) tab_ids: HashMap<String, u32>,
    pub(super) next_tab_id: u32,
}

pub(super) async fn run_session(
    registry: Arc<Registry>,
    request: SourceRequest,
    options: CdpOptions,
    mut commands: mpsc::Receiver<SessionCommand>,
    stop: CancellationToken,
    stats: Arc<CdpSessionStats>,
) {
    let key = request.key.clone();
    let generation = request.generation;
    registry.set_status(&key, Some(generation), Status::BROWSER_STARTING);
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
        refined_from: None,
        last_screencast: None,
        tab_ids: HashMap::new(),
        next_tab_id: 1,
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
pub(super) fn finish(registry: &Registry, key: &str, generation: u32, ending: Ending) {
    let (error, message) = match ending {
        Ending::Stopped | Ending::Stale => return,
        Ending::Crashed(message) => (ErrorCode::BROWSER_CRASHED, message),
        Ending::Failed(message) => (ErrorCode::SCREENCAST_FAILED, message),
    };
    registry.broadcast_error(key, Some(generation), error, &message);
    registry.set_status(key, Some(generation), Status::BROWSER_CLOSED);
    registry.source_ended(key, generation);
}

impl Session {
    pub(super) async fn run(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<CdpEvent>,
        commands: &mut mpsc::Receiver<SessionCommand>,
    ) -> Ending {
        if let Err(message) = self.start().await {
            return Ending::Failed(message);
        }
        self.publish_tabs();
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
                    let pages_may_change = event.method.starts_with("Target.");
                    if let Some(ending) = self.on_event(event).await {
                        return ending;
                    }
                    if pages_may_change {
                        self.publish_tabs();
                    }
                }
                command = commands.recv() => match command {
                    None => return Ending::Stopped,
                    Some(SessionCommand::Input(input, reply)) => {
                        let result = self.on_input(input).await;
                        let _ = reply.send(result);
                    }
                    Some(SessionCommand::SelectTab(id)) => {
                        self.select_tab(id).await;
                        self.publish_tabs();
                    }
                    Some(SessionCommand::Capture) => {
                        if let Err(ending) = self.screenshot(None).await {
                            return ending;
                        }
                    }
                    Some(SessionCommand::Refine(quality)) => {
                        if let Err(ending) = self.screenshot(Some(quality)).await {
                            return ending;
                        }
                    }
                },
                _ = sleep_until(screenshot_at), if screenshot_at.is_some() => {
                    self.screenshot_at = None;
                    if let Err(ending) = self.screenshot(None).await {
                        return ending;
                    }
                }
            }
        }
    }

    pub(super) async fn start(&mut self) -> Result<(), String> {
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
                    self.registry.set_status(
                        &self.key,
                        Some(self.generation),
                        Status::BROWSER_CLOSED,
                    );
                    return Ok(());
                }
            },
        };
        self.attach(target).await
    }

    /// The page to show when none is asked for: the most recently opened one (`pages` is kept
    /// newest first, the order of `Target.getTargets`).
    pub(super) fn preferred_page(&self) -> Option<TargetInfo> {
        self.pages.first().cloned()
    }

    /// Attaches to `target`, starts its screencast and publishes its URL.
    pub(super) async fn attach(&mut self, target: TargetInfo) -> Result<(), String> {
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
            .command(Some(&session), page::EnableParams::default())
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
            .set_status(&self.key, Some(self.generation), Status::STREAMING);
        Ok(())
    }

    /// Stops the screencast and detaches from the page shown (best effort).
    pub(super) async fn detach(&mut self) {
        let Some(attached) = self.attached.take() else {
            return;
        };
        let session = Some(attached.session_id.as_str());
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.client
                .command(session, page::StopScreencastParams::default()),
        )
        .await;
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.client.command(
                None,
                DetachFromTargetParams {
                    session_id: Some(SessionId::from(attached.session_id.clone())),
                },
            ),
        )
        .await;
    }

    /// Shows another page: the one given, else the most recent one left. A page that cannot
    /// be attached (e.g. a popup already gone) is skipped; with none left the viewers are told
    /// `browser_closed` and the session waits for the agent to open a page. Never ends the
    /// session: only a lost connection or a crash does.
    pub(super) async fn retarget(&mut self, target: Option<TargetInfo>) -> Option<Ending> {
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
            .set_status(&self.key, Some(self.generation), Status::BROWSER_CLOSED);
        None
    }

    /// Tells the registry the pages there are (`tabs`), oldest first, and which one is shown.
    pub(super) fn publish_tabs(&mut self) {
        let pages = &self.pages;
        self.tab_ids.retain(|target, _| {
            pages
                .iter()
                .any(|p| p.target_id.as_ref() == target.as_str())
        });
        let shown = self.attached.as_ref().map(|a| a.target_id.as_str());
        let mut tabs: Vec<Tab> = Vec::with_capacity(pages.len());
        for page in pages {
            let id = *self
                .tab_ids
                .entry(page.target_id.as_ref().to_string())
                .or_insert_with(|| {
                    let id = self.next_tab_id;
                    self.next_tab_id = self.next_tab_id.wrapping_add(1).max(1);
                    id
                });
            tabs.push(Tab {
                id,
                url: page.url.clone(),
                title: page.title.clone(),
                shown: shown == Some(page.target_id.as_ref()),
            });
        }
        // Past the bound, the shown page and the newest (highest ids) stay listed.
        tabs.sort_by_key(|tab| (!tab.shown, std::cmp::Reverse(tab.id)));
        tabs.truncate(MAX_TABS);
        tabs.sort_by_key(|tab| tab.id);
        self.registry.set_tabs(&self.key, self.generation, &tabs);
    }

    /// Shows the page viewers know as tab `id` (the controller's `tab-select`); a page gone
    /// meanwhile is left (the next list tells).
    async fn select_tab(&mut self, id: u32) {
        let target = self
            .pages
            .iter()
            .find(|page| self.tab_ids.get(page.target_id.as_ref()) == Some(&id));
        let Some(target) = target.cloned() else {
            return;
        };
        let shown = self
            .attached
            .as_ref()
            .is_some_and(|a| a.target_id == target.target_id.as_ref());
        if !shown {
            self.retarget(Some(target)).await;
        }
    }

    pub(super) fn is_ours(&self, event_session: Option<&str>) -> bool {
        match (&self.attached, event_session) {
            (Some(attached), Some(session)) => attached.session_id == session,
            _ => false,
        }
    }

    pub(super) async fn on_event(&mut self, event: CdpEvent) -> Option<Ending> {
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
            (EventLoadEventFired::IDENTIFIER, true) => {
                // Chrome does not always tell a new title by `targetInfoChanged`: the pages
                // are read again once the shown one loaded.
                if let Ok(targets) = self.client.command(None, GetTargetsParams::default()).await {
                    for info in targets.target_infos.into_iter().filter(is_page) {
                        if let Some(known) = self
                            .pages
                            .iter_mut()
                            .find(|p| p.target_id == info.target_id)
                        {
                            *known = info;
                        }
                    }
                    self.publish_tabs();
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
            (EventTargetCrashedInspector::IDENTIFIER, true) => {
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
            (EventTargetInfoChanged::IDENTIFIER, _) => {
                let changed: EventTargetInfoChanged = serde_json::from_value(event.params).ok()?;
                let info = changed.target_info;
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

    pub(super) fn on_frame(&mut self, frame: EventScreencastFrame) -> Option<Ending> {
        let session = self.attached.as_ref()?.session_id.clone();
        // Ack first: Chrome sends the next frame only after the ack of this one.
        self.client.send(
            Some(&session),
            &page::ScreencastFrameAckParams::new(frame.session_id),
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
            refined: false,
        };
        let text = Bytes::from(String::from(frame.data));
        if self.refined_from.as_ref() == Some(&text) {
            return None;
        }
        self.refined_from = None;
        self.last_screencast = Some(text.clone());
        match self
            .registry
            .push_frame(&self.key, Some(self.generation), text, meta)
        {
            PushOutcome::NoChannel | PushOutcome::Stale => Some(Ending::Stale),
            PushOutcome::Published(_) | PushOutcome::Rejected(_) | PushOutcome::Withheld => None,
        }
    }

    /// A frame taken on demand, for a page that sends none (nothing changes on it); with
    /// `refine_quality`, a JPEG at that quality published as a refinement of a quiet page.
    pub(super) async fn screenshot(&mut self, refine_quality: Option<u32>) -> Result<(), Ending> {
        let Some(attached) = &self.attached else {
            return Ok(());
        };
        let session = attached.session_id.clone();
        let mut params = CaptureScreenshotParams::builder();
        params = match (self.options.format, refine_quality) {
            (_, Some(quality)) => params
                .format(CaptureScreenshotFormat::Jpeg)
                .quality(quality.min(100) as i64),
            (ImageFormat::Jpeg, None) => params
                .format(CaptureScreenshotFormat::Jpeg)
                .quality(self.options.quality.min(100) as i64),
            (ImageFormat::Png, None) => params.format(CaptureScreenshotFormat::Png),
        };
        let shot = match self.client.command(Some(&session), params.build()).await {
            Ok(shot) => shot,
            // A page that cannot be captured now (e.g. navigating) will send frames anyway.
            Err(_) => return Ok(()),
        };
        let viewport = self
            .client
            .command(Some(&session), page::GetLayoutMetricsParams::default())
            .await
            .ok()
            .map(|metrics| metrics.css_visual_viewport);
        let meta = FrameMeta {
            device_width: viewport.as_ref().map_or(0.0, |v| v.client_width),
            device_height: viewport.as_ref().map_or(0.0, |v| v.client_height),
            page_scale_factor: viewport.as_ref().map_or(1.0, |v| v.scale),
            timestamp_ms: wall_clock_ms(),
            refined: refine_quality.is_some(),
            ..FrameMeta::default()
        };
        self.stats.screenshots.fetch_add(1, Ordering::Relaxed);
        if refine_quality.is_some() {
            self.refined_from = self.last_screencast.clone();
        }
        let text = Bytes::from(String::from(shot.data));
        match self
            .registry
            .push_frame(&self.key, Some(self.generation), text, meta)
        {
            PushOutcome::NoChannel | PushOutcome::Stale => Err(Ending::Stale),
            _ => Ok(()),
        }
    }

    pub(super) async fn on_input(&mut self, input: ClientMessage) -> Result<(), String> {
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

    pub(super) fn set_url(&self, url: &str) {
        lock(&self.stats.page).1 = Some(url.to_string());
        self.registry.set_url(&self.key, Some(self.generation), url);
    }
}

pub(super) fn is_page(info: &TargetInfo) -> bool {
    info.r#type == "page" && !info.url.starts_with("devtools://")
}
