//! Client messages: compat inputs and extended commands, who controls the page, rate limits,
//! coordinate mapping, and the task relaying each channel's inputs to the host in order.
//! Must not write to sockets: answers go through the viewer's link.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::input_flow::Enqueued;
use super::{lock, Channel, ChannelState, Outbound, Registry, ViewerLink, SOURCE_KIND_WAIT};
use crate::codec::pick_codec;
use crate::codec::pipeline::{VideoPipeline, VideoSubscription};
use crate::host::ControlChange;
use crate::logging::log;
use crate::protocol::{
    self, parse_client_message, parse_extended_message, ClientMessage, ExtendedMessage, Mode,
};

/// Why a viewer may not do what it asked of the page; decided at the instance that has the
/// browser, answered (code and fixed text) at the viewer's own. It travels on the bus for
/// viewers of other instances, so nothing of the deciding instance's text crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlRefusal {
    /// The viewer's own instance allows it to watch only (`authorizeControl`).
    WatchOnly,
    /// Another viewer holds control.
    HeldByOther,
    /// Nobody holds control and it is not taken implicitly: ask first.
    RequestFirst,
    /// A release from a viewer that does not hold control.
    NotHolder,
    /// The page is not keeping up with input: this input was dropped.
    QueueFull,
    /// The browser is on another instance that cannot be asked now (the bus is away, or no
    /// owner streams the channel).
    Unreachable,
    /// The deployer made the page private (`setPrivacy`): no input until it ends.
    Private,
}

impl ControlRefusal {
    /// The error code and text the viewer gets.
    pub fn answer(self) -> (&'static str, &'static str) {
        match self {
            ControlRefusal::WatchOnly => ("control_denied", "this viewer may only watch"),
            ControlRefusal::HeldByOther => ("not_controller", "another viewer controls the page"),
            ControlRefusal::RequestFirst => (
                "not_controller",
                "send {\"type\":\"control-request\"} before input",
            ),
            ControlRefusal::NotHolder => ("not_controller", "this viewer does not hold control"),
            ControlRefusal::QueueFull => (
                "rate_limited",
                "the page is not keeping up with input; this input was dropped",
            ),
            ControlRefusal::Unreachable => (
                "control_unavailable",
                "this browser is streamed from another server, which cannot be reached now",
            ),
            ControlRefusal::Private => ("private", "the page is private for now; input is paused"),
        }
    }
}

/// What a viewer of another instance asks of this instance's control lock (the relay
/// carries it here).
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteAsk {
    Request,
    Release,
    Input(ClientMessage),
    /// The viewer left its instance.
    Leave,
}

/// The owner's answer to a [`RemoteAsk`], when it has one (a change of controller is told
/// to every viewer instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteVerdict {
    /// The asker already holds control.
    Held,
    /// This viewer (an id of this instance) holds control.
    Busy(u32),
    Refused(ControlRefusal),
}

/// Where an allowed input goes.
enum InputRoute {
    /// Into this channel's input queue, for the page here.
    Page,
    /// To the instance that has the browser.
    Owner,
}

impl Registry {
    /// Handles one TEXT message of a viewer, in its mode: compat messages are inputs (invalid
    /// ones counted, never answered); extended messages are answered as docs/PROTOCOL.md says.
    pub fn on_client_text(
        self: &Arc<Self>,
        channel: &Arc<Channel>,
        link: &Arc<ViewerLink>,
        text: &str,
    ) {
        match link.mode {
            Mode::Compat => match parse_client_message(text) {
                Ok(input) => {
                    if self.take_tokens(channel, link, 1, input.is_mouse_move()) {
                        self.submit_input(channel, link, input, false, None);
                    }
                }
                Err(_) => {
                    channel.count_malformed();
                    // Silence is the compat answer to what it does not know, but a viewer
                    // asking for video must learn why it gets none.
                    if protocol::asks_for_video(text) && self.take_tokens(channel, link, 1, false) {
                        link.send(protocol::error_message(
                            "protocol_required",
                            "video needs the browser-stream.v1 subprotocol",
                        ));
                    }
                }
            },
            Mode::Extended => self.on_extended_text(channel, link, text),
        }
    }

    /// Handles a binary message of a viewer: no mode accepts one.
    pub fn on_client_binary(&self, channel: &Channel, link: &ViewerLink) {
        channel.count_malformed();
        if self.take_tokens(channel, link, 1, false) {
            link.answer_error("bad_message", "binary messages are not accepted");
        }
    }

    fn on_extended_text(
        self: &Arc<Self>,
        channel: &Arc<Channel>,
        link: &Arc<ViewerLink>,
        text: &str,
    ) {
        let message = match parse_extended_message(text) {
            Ok(ExtendedMessage::Ack { seq }) => {
                // Acks are paced by the frames they answer: no token.
                link.acked_seq.fetch_max(seq, Ordering::Relaxed);
                link.acked.notify_one();
                return;
            }
            Ok(message) => message,
            Err(error) => {
                channel.count_malformed();
                if self.take_tokens(channel, link, 1, false) {
                    link.answer_error("bad_message", &error.to_string());
                }
                return;
            }
        };
        let is_move =
            matches!(&message, ExtendedMessage::Input { input, .. } if input.is_mouse_move());
        // Messages that make the server do much (replay a ring, send a frame, tell every
        // viewer and the deployer) cost more of the viewer's budget.
        let cost = match &message {
            ExtendedMessage::Resume { .. } => 20,
            ExtendedMessage::SnapshotRequest => 10,
            ExtendedMessage::ControlRequest { .. } | ExtendedMessage::ControlRelease => 5,
            // Starting video may start an encoder; an offer also starts a peer.
            ExtendedMessage::Config {
                video: Some(Some(_)),
                ..
            } => 20,
            ExtendedMessage::WebRtcOffer { .. } => 20,
            // Each reply reaches the deployer's code: at most 10 a second per viewer.
            ExtendedMessage::Reply { .. } => 20,
            // Each switch re-attaches the screencast to another page.
            ExtendedMessage::TabSelect { .. } => 10,
            _ => 1,
        };
        if !self.take_tokens(channel, link, cost, is_move) {
            return;
        }
        match message {
            ExtendedMessage::Input {
                input,
                frame_pixels,
                frame_seq,
            } => self.submit_input(channel, link, input, frame_pixels, frame_seq),
            ExtendedMessage::Resume { last_seq } => link.queue(Outbound::Resume { last_seq }),
            ExtendedMessage::SnapshotRequest => {
                if lock(&channel.state).privacy.is_some() {
                    link.answer_error("private", crate::registry::privacy::PRIVATE_TEXT);
                    return;
                }
                let no_frame = channel.latest_frame().is_none();
                if no_frame && !channel.capture_requested.swap(true, Ordering::Relaxed) {
                    let live = self.with_live_source(&channel.id.key, None, |channel, state| {
                        channel.source_request(state.generation)
                    });
                    if let Some(request) = live {
                        self.host.capture_frame(request);
                    }
                }
                link.queue(Outbound::Snapshot);
            }
            ExtendedMessage::Config {
                max_fps,
                ack,
                video,
            } => {
                if max_fps.is_some() || ack.is_some() {
                    link.queue(Outbound::Pacing { max_fps, ack });
                }
                match video {
                    None => {}
                    Some(None) => {
                        link.video_requests.fetch_add(1, Ordering::Relaxed);
                        link.queue(Outbound::Video(None));
                    }
                    Some(Some(codecs)) => self.start_video(channel, link, &codecs),
                }
            }
            ExtendedMessage::ControlRequest { reclaim } => {
                self.request_control(channel, link, reclaim.as_deref())
            }
            ExtendedMessage::ControlRelease => {
                let mut state = lock(&channel.state);
                if Channel::is_relayed(&state) && link.can_control {
                    drop(state);
                    self.ask_owner(channel, link, RemoteAsk::Release);
                } else if state.controller == Some(link.id) {
                    self.set_controller(channel, &mut state, None);
                } else {
                    drop(state);
                    let (code, message) = ControlRefusal::NotHolder.answer();
                    link.answer_error(code, message);
                }
            }
            ExtendedMessage::WebRtcOffer { sdp } => {
                // Where the peer's video is encoded depends on where the browser is (see
                // `start_video`): an offer during the lookup is answered once it is known.
                if self.relay.is_some() && channel.source_undecided() {
                    let (registry, channel, link) = (self.clone(), channel.clone(), link.clone());
                    self.runtime.spawn(async move {
                        channel.decided_source_kind(SOURCE_KIND_WAIT).await;
                        if !link.closer.is_cancelled() {
                            registry.start_webrtc(&channel, &link, &sdp);
                        }
                    });
                } else {
                    self.start_webrtc(channel, link, &sdp);
                }
            }
            ExtendedMessage::WebRtcCandidate { candidate } => {
                let peer = lock(&link.webrtc);
                let Some(peer) = peer.as_ref() else {
                    link.answer_error(
                        "webrtc_inactive",
                        "no WebRTC peer to add a candidate to; send webrtc-offer first",
                    );
                    return;
                };
                let Some(candidate) = candidate else { return };
                let count = peer.count_candidate();
                if count > crate::webrtc::MAX_CANDIDATES_PER_PEER {
                    // Told once; later ones are dropped silently.
                    if count == crate::webrtc::MAX_CANDIDATES_PER_PEER + 1 {
                        link.answer_error(
                            "too_many_candidates",
                            "more ICE candidates than a peer takes; later ones are ignored",
                        );
                    }
                    return;
                }
                if let Err(message) = crate::webrtc::check_candidate(&candidate) {
                    channel.count_malformed();
                    link.answer_error("bad_candidate", message);
                }
            }
            ExtendedMessage::WebRtcClose => {
                let peer = lock(&link.webrtc).take();
                if peer.is_none() {
                    link.answer_error("webrtc_inactive", "this viewer has no WebRTC peer");
                }
            }
            ExtendedMessage::Reply { to, reply } => self.viewer_reply(channel, link, to, reply),
            ExtendedMessage::TabSelect { id } => self.select_tab(channel, link, id),
            ExtendedMessage::Ack { .. } => {}
        }
    }

    /// Answers a viewer's WebRTC offer with a peer fed by its channel's encoder (replacing
    /// the viewer's previous peer), or says why not: `webrtc_unavailable` (not configured, or
    /// video is off), `video_failed`, `bad_sdp`, `unsupported_codec`, `webrtc_busy`. Details
    /// go to the deployer's log only.
    fn start_webrtc(&self, channel: &Channel, link: &Arc<ViewerLink>, sdp: &str) {
        let Some(webrtc) = &self.webrtc else {
            link.answer_error("webrtc_unavailable", "this server does not offer WebRTC");
            return;
        };
        let events = Arc::new(ViewerPeerEvents { link: link.clone() });
        let video = || self.subscribe_video(channel).ok();
        match webrtc.open(sdp, video, events, &link.closer.token) {
            Ok((answer, peer)) => {
                // Only a working new offer replaces the previous peer.
                if let Some(previous) = lock(&link.webrtc).replace(peer) {
                    previous.end(crate::webrtc::peer::EndReason::Replaced);
                }
                link.send(crate::webrtc::answer_message(&answer));
            }
            Err(refusal) => {
                if let Some(detail) = refusal.detail {
                    // Parser errors span lines; a log line should not.
                    let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
                    log!(
                        self,
                        warn,
                        agent = %channel.id.agent_id,
                        thread = channel.id.thread_id.as_deref(),
                        viewer = link.id,
                        reason = refusal.code,
                        "WebRTC offer of viewer {} on channel {} refused: {detail}",
                        link.id,
                        channel.id.key,
                    );
                }
                link.answer_error(refusal.code, refusal.message);
            }
        }
    }

    /// Subscribes `link` to its channel's video (starting the channel's pipeline if none
    /// runs), or answers why not: video is off (`video_unavailable`), no offered codec is
    /// served (`unsupported_codec`), or the encoder could not start (`video_failed`, the
    /// detail logged for the deployer only).
    fn start_video(
        self: &Arc<Self>,
        channel: &Arc<Channel>,
        link: &Arc<ViewerLink>,
        codecs: &[String],
    ) {
        let request = link.video_requests.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.config.video {
            link.answer_error("video_unavailable", "this server does not send video");
            return;
        }
        if pick_codec(codecs).is_none() {
            link.answer_error(
                "unsupported_codec",
                "none of the offered codecs is served; the server encodes H.264 (avc1.*)",
            );
            return;
        }
        // With the relay, whether the chunks are encoded here or by the owner depends on
        // where the browser is: a session that does not know yet is waited for.
        if self.relay.is_some() && channel.source_undecided() {
            let (registry, channel, link) = (self.clone(), channel.clone(), link.clone());
            self.runtime.spawn(async move {
                channel.decided_source_kind(SOURCE_KIND_WAIT).await;
                let current = link.video_requests.load(Ordering::Relaxed) == request;
                if current && !link.closer.is_cancelled() {
                    registry.queue_video(&channel, &link);
                }
            });
            return;
        }
        self.queue_video(channel, link);
    }

    /// Queues the viewer's video subscription, or answers why it gets none.
    fn queue_video(&self, channel: &Channel, link: &ViewerLink) {
        match self.subscribe_video(channel) {
            Ok(subscription) => link.queue(Outbound::Video(Some(subscription))),
            Err(()) => link.answer_error("video_failed", "the video encoder could not start"),
        }
    }

    /// A subscription to the channel's pipeline, starting one if none runs; a failure to
    /// start is logged for the deployer (never sent to viewers). A relayed channel's pipeline
    /// is fed the owner's chunks: the owner encodes once for every instance.
    fn subscribe_video(&self, channel: &Channel) -> Result<VideoSubscription, ()> {
        let relay = self
            .relay
            .as_ref()
            .filter(|_| Channel::is_relayed(&lock(&channel.state)));
        let subscription = {
            let mut video = lock(&channel.video);
            // A running pipeline is joined whatever its kind: one that began encoding here
            // before the session was known to be relayed goes on (on the relayed frames) until
            // its viewers leave, rather than being cut off.
            match video.as_ref().and_then(|pipeline| pipeline.subscribe()) {
                Some(subscription) => Ok(subscription),
                None if relay.is_some() => {
                    let pipeline = VideoPipeline::relayed(self.config.encoder_settings());
                    let subscription = pipeline.subscribe().ok_or("the new pipeline stopped");
                    if let (Some(relay), Ok(_)) = (relay, &subscription) {
                        relay.start_video_feed(&channel.id.key, &pipeline);
                    }
                    *video = Some(pipeline);
                    subscription.map_err(String::from)
                }
                None => {
                    let times = self.encode_times.clone();
                    VideoPipeline::start(
                        self.config.encoder_settings(),
                        channel.latest_frame(),
                        times,
                    )
                    .and_then(|pipeline| {
                        let subscription =
                            pipeline.subscribe().ok_or("the new pipeline stopped")?;
                        *video = Some(pipeline);
                        Ok(subscription)
                    })
                }
            }
        };
        subscription.map_err(|detail| {
            log!(
                self,
                warn,
                agent = %channel.id.agent_id,
                thread = channel.id.thread_id.as_deref(),
                reason = "video_failed",
                "video for channel {} could not start: {detail}",
                channel.id.key
            );
        })
    }

    /// Takes `cost` tokens of the viewer's rate limit. Over the limit, a mouse move is dropped
    /// silently (the next one carries the position); anything else is answered
    /// `rate_limited`, at most once a second.
    fn take_tokens(&self, channel: &Channel, link: &ViewerLink, cost: u32, is_move: bool) -> bool {
        let now = Instant::now();
        let mut limiter = lock(&link.limiter);
        if limiter.try_take(now, cost) {
            return true;
        }
        channel
            .counters
            .inputs_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        let report = !is_move && limiter.may_report(now);
        drop(limiter);
        if report {
            link.answer_error(
                "rate_limited",
                &format!(
                    "more than {} messages per second; some were dropped",
                    self.config.max_inputs_per_second
                ),
            );
        }
        false
    }

    /// Relays `input` of `link` if it may control the page now (taking control implicitly when
    /// configured), mapping frame-pixel coordinates to the page; on a relayed channel the
    /// owner decides, after this instance's own `authorizeControl` allowed the viewer.
    fn submit_input(
        &self,
        channel: &Channel,
        link: &ViewerLink,
        input: ClientMessage,
        frame_pixels: bool,
        frame_seq: Option<u64>,
    ) {
        let mut input = input;
        let route = {
            let mut state = lock(&channel.state);
            let route = if !link.can_control {
                Err(ControlRefusal::WatchOnly)
            } else if state.privacy.is_some() {
                Err(ControlRefusal::Private)
            } else if Channel::is_relayed(&state) {
                Ok(InputRoute::Owner)
            } else {
                self.input_verdict(channel, &mut state, link.id, link.mode == Mode::Compat)
                    .map(|()| InputRoute::Page)
            };
            if route.is_ok() && frame_pixels {
                if let ClientMessage::Mouse(mouse) = &mut input {
                    // The frame named, if its geometry is still known; else the last frame
                    // this viewer was sent.
                    let seen = link.counters.seen_seq.load(Ordering::Relaxed);
                    let geometry = frame_seq
                        .and_then(|seq| Channel::geometry_at(&state, seq))
                        .or_else(|| Channel::geometry_at(&state, seen));
                    if let Some(geometry) = geometry {
                        (mouse.x, mouse.y) = geometry.to_page(mouse.x, mouse.y);
                    }
                }
            }
            route
        };
        match route {
            Err(refusal) => self.refuse(channel, link, refusal),
            Ok(InputRoute::Owner) => self.ask_owner(channel, link, RemoteAsk::Input(input)),
            Ok(InputRoute::Page) => {
                if let Err(refusal) = self.enqueue_input(channel, input) {
                    self.refuse(channel, link, refusal);
                }
            }
        }
    }

    /// Whether `viewer` may send input now (taking control implicitly when configured).
    /// Compat viewers can neither ask for control nor give it back: they act while nobody
    /// holds it, without taking it. Called under the channel's state lock.
    pub(super) fn input_verdict(
        &self,
        channel: &Channel,
        state: &mut ChannelState,
        viewer: u32,
        compat: bool,
    ) -> Result<(), ControlRefusal> {
        match state.controller {
            Some(holder) if holder == viewer => {
                state.tenure.last_input = tokio::time::Instant::now();
                Ok(())
            }
            Some(_) => Err(ControlRefusal::HeldByOther),
            None if compat => Ok(()),
            None if self.config.implicit_control => {
                self.set_controller(channel, state, Some(viewer));
                Ok(())
            }
            None => Err(ControlRefusal::RequestFirst),
        }
    }

    /// Queues an allowed input for the page.
    fn enqueue_input(&self, channel: &Channel, input: ClientMessage) -> Result<(), ControlRefusal> {
        let counters = &channel.counters;
        match channel.inputs.push(input) {
            Enqueued::Queued => Ok(()),
            Enqueued::Coalesced | Enqueued::MoveDropped | Enqueued::QueuedDroppingMove => {
                counters.moves_coalesced.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Enqueued::Full => {
                counters.inputs_dropped.fetch_add(1, Ordering::Relaxed);
                Err(ControlRefusal::QueueFull)
            }
        }
    }

    /// Answers a refused input or control message: counted; a full queue is told at most
    /// once a second, as any rate limit.
    fn refuse(&self, channel: &Channel, link: &ViewerLink, refusal: ControlRefusal) {
        let counters = &channel.counters;
        if refusal == ControlRefusal::QueueFull {
            counters.inputs_rate_limited.fetch_add(1, Ordering::Relaxed);
            if !lock(&link.limiter).may_report(Instant::now()) {
                return;
            }
        } else {
            counters.inputs_refused.fetch_add(1, Ordering::Relaxed);
        }
        let (code, message) = refusal.answer();
        link.answer_error(code, message);
    }

    /// Sends what `link` asks of a relayed page to the instance that has the browser.
    fn ask_owner(&self, channel: &Channel, link: &ViewerLink, ask: RemoteAsk) {
        let compat = link.mode == Mode::Compat;
        let sent = match &self.relay {
            Some(relay) => relay.forward(&channel.id.key, link.id, &ask, compat),
            None => Err(ControlRefusal::Unreachable),
        };
        if let Err(refusal) = sent {
            if ask != RemoteAsk::Leave {
                self.refuse(channel, link, refusal);
            }
        }
    }

    /// Applies what viewer `viewer` (this instance's id for a viewer of another instance)
    /// asks of `key`'s page, under the same lock and rules as a local viewer.
    pub fn remote_control(
        &self,
        key: &str,
        viewer: u32,
        ask: RemoteAsk,
        compat: bool,
    ) -> Option<RemoteVerdict> {
        let unavailable = Some(RemoteVerdict::Refused(ControlRefusal::Unreachable));
        let Some(channel) = self.channel(key) else {
            return (ask != RemoteAsk::Leave).then_some(unavailable).flatten();
        };
        let mut state = lock(&channel.state);
        if ask == RemoteAsk::Leave {
            if state.controller == Some(viewer) {
                self.set_controller(&channel, &mut state, None);
            }
            return None;
        }
        if state.source == super::SourceState::Idle || Channel::is_relayed(&state) {
            return unavailable;
        }
        // Counted where the viewer is (its instance's `refuse`), not here as well.
        let refused = |refusal| Some(RemoteVerdict::Refused(refusal));
        match ask {
            RemoteAsk::Request => match state.controller {
                None => {
                    self.set_controller(&channel, &mut state, Some(viewer));
                    None
                }
                Some(holder) if holder == viewer => {
                    state.tenure.last_input = tokio::time::Instant::now();
                    Some(RemoteVerdict::Held)
                }
                Some(holder) => Some(RemoteVerdict::Busy(holder)),
            },
            RemoteAsk::Release => {
                if state.controller == Some(viewer) {
                    self.set_controller(&channel, &mut state, None);
                    None
                } else {
                    refused(ControlRefusal::NotHolder)
                }
            }
            RemoteAsk::Input(_) if state.privacy.is_some() => refused(ControlRefusal::Private),
            RemoteAsk::Input(input) => {
                if let Err(refusal) = self.input_verdict(&channel, &mut state, viewer, compat) {
                    return refused(refusal);
                }
                drop(state);
                match self.enqueue_input(&channel, input) {
                    Ok(()) => None,
                    Err(refusal) => refused(refusal),
                }
            }
            RemoteAsk::Leave => None,
        }
    }

    /// The owner's answer to what viewer `viewer_id` of this instance asked (`Busy` names a
    /// viewer by this instance's id for it).
    pub fn answer_remote(&self, viewer_id: u32, verdict: RemoteVerdict) {
        let Some((channel, link)) = self.viewer_link(viewer_id) else {
            return;
        };
        match verdict {
            RemoteVerdict::Held => link.send(protocol::control_message(Some(viewer_id), true)),
            RemoteVerdict::Busy(holder) => link.send(protocol::control_busy_message(holder)),
            RemoteVerdict::Refused(refusal) => self.refuse(&channel, &link, refusal),
        }
    }

    /// Who holds control of `key` as its owner says (`controller` an id of this instance;
    /// `ours` when it names a viewer of this instance): this instance's viewers of session
    /// `generation` are told as of a local change. A viewer of ours that is no longer here
    /// holds nothing (its `leave` was lost, e.g. in a bus outage): nobody is mirrored, and its
    /// id is returned so that the caller tells the owner it left.
    pub fn mirror_controller(
        &self,
        key: &str,
        generation: u32,
        controller: Option<u32>,
        ours: bool,
    ) -> Option<u32> {
        self.with_live_source(key, Some(generation), |channel, state| {
            let gone = controller.filter(|id| ours && !state.viewers.contains_key(id));
            let controller = if gone.is_some() { None } else { controller };
            if state.controller != controller {
                self.set_controller(channel, state, controller);
            }
            gone
        })
        .flatten()
    }

    /// Who holds control of `key` now.
    pub fn controller(&self, key: &str) -> Option<u32> {
        lock(&self.channel(key)?.state).controller
    }

    /// Says again who holds control of `key` to the relay's subscribers (a new one asked),
    /// under the channel's lock like a change, so it cannot overtake a newer one.
    pub fn restate_controller(&self, key: &str) {
        let (Some(relay), Some(channel)) = (&self.relay, self.channel(key)) else {
            return;
        };
        let state = lock(&channel.state);
        relay.controller_changed(key, state.controller);
    }

    /// A viewer's `control-request`: takes control if nobody holds it, or with `reclaim`, the
    /// token of a controller in its grace period, takes that controller's control back.
    fn request_control(&self, channel: &Channel, link: &ViewerLink, reclaim: Option<&str>) {
        if !link.can_control {
            let (code, message) = ControlRefusal::WatchOnly.answer();
            link.answer_error(code, message);
            return;
        }
        let mut state = lock(&channel.state);
        if Channel::is_relayed(&state) {
            drop(state);
            self.ask_owner(channel, link, RemoteAsk::Request);
            return;
        }
        // Also while the old connection still looks open: after a silent network drop the
        // server notices only at the heartbeat timeout, long after the client reconnected.
        let reclaims = super::control_lease::reclaim_matches(&state.tenure, reclaim);
        match state.controller {
            None => self.set_controller(channel, &mut state, Some(link.id)),
            Some(_) if reclaims => self.set_controller(channel, &mut state, Some(link.id)),
            Some(holder) if holder == link.id => {
                state.tenure.last_input = tokio::time::Instant::now();
                let reclaim = state.tenure.reclaim.as_deref();
                link.send(protocol::control_change_message(
                    Some(holder),
                    true,
                    None,
                    reclaim,
                ));
            }
            // Answered under the lock, so it cannot arrive after a later `control` message.
            Some(holder) => link.send(protocol::control_busy_message(holder)),
        }
    }

    /// Gives control to `controller` (or nobody): every extended viewer is told, and the host
    /// (`onControlChange`). Called under the channel's state lock, so changes reach both in
    /// the order they happened.
    pub(super) fn set_controller(
        &self,
        channel: &Channel,
        state: &mut ChannelState,
        controller: Option<u32>,
    ) {
        self.change_controller(channel, state, controller, None);
    }

    /// `set_controller`, telling `reason` when the server or the deployer ended a control. A
    /// new tenure starts: with a grace period, a local extended holder gets a reclaim token.
    pub(super) fn change_controller(
        &self,
        channel: &Channel,
        state: &mut ChannelState,
        controller: Option<u32>,
        reason: Option<&str>,
    ) {
        state.controller = controller;
        state.tenure = super::control_lease::Tenure::new(tokio::time::Instant::now());
        let holder = controller.and_then(|id| state.viewers.get(&id));
        if !self.config.control_grace.is_zero()
            && !Channel::is_relayed(state)
            && holder.is_some_and(|viewer| viewer.link.mode == Mode::Extended)
        {
            state.tenure.reclaim = super::control_lease::new_reclaim_token();
        }
        for (id, viewer) in &state.viewers {
            if viewer.link.mode == Mode::Extended {
                let you = controller == Some(*id);
                let reclaim = state.tenure.reclaim.as_deref().filter(|_| you);
                viewer.link.send(protocol::control_change_message(
                    controller, you, reason, reclaim,
                ));
            }
        }
        channel.control_wake.notify_one();
        if let Some(relay) = &self.relay {
            relay.controller_changed(&channel.id.key, controller);
        }
        self.host.control_changed(ControlChange {
            key: channel.id.key.clone(),
            agent_id: channel.id.agent_id.clone(),
            thread_id: channel.id.thread_id.clone(),
            controller,
            reason: reason.map(String::from),
        });
    }
}

/// How a viewer's WebRTC peer reaches the viewer: messages and the JPEG switch through its
/// queue, the pictures shown through its counters.
struct ViewerPeerEvents {
    link: Arc<ViewerLink>,
}

impl crate::webrtc::peer::PeerEvents for ViewerPeerEvents {
    fn message(&self, text: String) {
        self.link.send(text);
    }

    fn delivering(&self, on: bool) {
        self.link.queue(Outbound::WebRtcPictures(on));
    }

    fn shown(&self, seq: u64, index: u64) {
        self.link.counters.mark_seen_at(seq, index);
    }
}
