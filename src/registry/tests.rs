//! Unit tests of the registry and the fixtures other modules' tests share.

use std::time::Duration;

use super::*;
use crate::frame::FrameMeta;
use crate::host::{BridgedOutbound, ControlChange, HostFuture};
use crate::protocol::ClientMessage;
use crate::ws::codec::CLOSE_SLOW_CONSUMER;

/// A host that records what the registry asked of it.
#[derive(Default)]
pub(crate) struct RecordingHost {
    pub starts: Mutex<Vec<SourceRequest>>,
    pub stops: Mutex<Vec<SourceRequest>>,
    pub inputs: Mutex<Vec<ClientMessage>>,
    pub bridged: Mutex<Vec<(u32, BridgedOutbound)>>,
    pub controls: Mutex<Vec<Option<u32>>>,
}

impl Host for RecordingHost {
    fn start_source(&self, request: SourceRequest) {
        lock(&self.starts).push(request);
    }
    fn stop_source(&self, request: SourceRequest) {
        lock(&self.stops).push(request);
    }
    fn relay_input(&self, _request: SourceRequest, input: ClientMessage) -> HostFuture {
        lock(&self.inputs).push(input);
        Box::pin(async { Ok(()) })
    }
    fn bridged_send(&self, viewer_id: u32, message: BridgedOutbound) -> HostFuture {
        lock(&self.bridged).push((viewer_id, message));
        Box::pin(async { Ok(()) })
    }
    fn control_changed(&self, change: ControlChange) {
        lock(&self.controls).push(change.controller);
    }
}

fn extended(can_control: bool) -> JoinOptions {
    JoinOptions {
        mode: Mode::Extended,
        can_control,
        send_connected: false,
    }
}

#[test]
fn channel_ids_are_opaque_but_bounded() {
    assert_eq!(
        ChannelId::checked("agent", Some("t1")).map(|id| id.key),
        Ok("agent:t1".to_string())
    );
    for (agent, thread) in [
        ("", None),
        ("a\u{0}b", None),
        ("a\nb", None),
        ("a", Some("x\u{7f}y")),
        ("a", Some("")),
    ] {
        assert!(
            ChannelId::checked(agent, thread).is_err(),
            "{agent:?} {thread:?}"
        );
    }
    let long = "x".repeat(ChannelId::MAX_ID_BYTES + 1);
    assert!(ChannelId::checked(&long, None).is_err());
    for (agent, thread) in [
        ("agent.v2-ü", Some("thread:1")),
        ("a", Some("thread/1 2")),
        ("../etc", None),
        ("a:b", None),
        ("..", Some("..")),
    ] {
        let id = ChannelId::checked(agent, thread).expect("opaque ids are accepted");
        assert_eq!(id.agent_id, agent);
        assert_eq!(id.thread_id.as_deref(), thread);
    }
}

#[test]
fn channel_keys_decode_to_the_ids_they_were_made_of_and_nothing_else_is_a_key() {
    for (agent, thread) in [
        ("agent", None),
        ("agent", Some("thread/1 2")),
        ("a:b%c", Some("t:%3A")),
        ("%3A", None),
        ("é", Some("ü")),
    ] {
        let id = ChannelId::checked(agent, thread).expect("valid ids");
        assert_eq!(
            ChannelId::from_key(&id.key),
            Ok(id.clone()),
            "{agent:?} {thread:?}"
        );
    }
    for not_a_key in ["", "a:", "%", "a%3", "a%2F", "%3a", ":thread", "a\u{1}"] {
        assert!(ChannelId::from_key(not_a_key).is_err(), "{not_a_key:?}");
    }
    assert!(ChannelId::from_key(&"a".repeat(ChannelId::MAX_ID_BYTES + 1)).is_err());
}

#[test]
fn channel_keys_never_collide() {
    // Pairs that one `agentId:threadId` string would confuse.
    let ids = [
        ("a:b", None),
        ("a", Some("b")),
        ("a:b", Some("c")),
        ("a", Some("b:c")),
        ("a%3Ab", None),
        ("a%3Ab", Some("c")),
        ("a%", Some("3Ab")),
    ];
    let keys: std::collections::HashSet<String> = ids
        .iter()
        .map(|(agent, thread)| ChannelId::key_of(agent, *thread))
        .collect();
    assert_eq!(keys.len(), ids.len(), "{keys:?}");
    // Plain ids keep the TypeScript module's key.
    assert_eq!(
        ChannelId::key_of("agent-1", Some("thread/1 2")),
        "agent-1:thread/1 2"
    );
    assert_eq!(ChannelId::key_of("agent-1", None), "agent-1");
}

#[tokio::test]
async fn one_controller_at_a_time_and_leaving_releases() {
    let (registry, host) = registry_with(RegistryConfig::default());
    let id = ChannelId::new("agent", None);
    let mut a = registry
        .admit_with(&id, Transport::Native, extended(true))
        .expect("admitted");
    let mut b = registry
        .admit_with(&id, Transport::Native, extended(true))
        .expect("admitted");
    let mut watcher = registry
        .admit_with(&id, Transport::Native, extended(false))
        .expect("admitted");
    let meta: serde_json::Value =
        serde_json::from_str(&drain_texts(&mut watcher)[0]).expect("json");
    assert_eq!(meta["type"], "session-meta");
    assert_eq!(meta["canControl"], false);
    drain_texts(&mut a);
    drain_texts(&mut b);
    let press = r#"{"type":"input","kind":"mouse","eventType":"mousePressed","x":1,"y":1}"#;
    // Input needs control first.
    registry.on_client_text(&b.channel, &b.link, press);
    assert!(drain_texts(&mut b)[0].contains("not_controller"));
    registry.on_client_text(&a.channel, &a.link, r#"{"type":"control-request"}"#);
    assert_eq!(
        drain_texts(&mut a),
        vec![r#"{"controller":1,"type":"control","you":true}"#]
    );
    assert_eq!(
        drain_texts(&mut b),
        vec![r#"{"controller":1,"type":"control","you":false}"#]
    );
    registry.on_client_text(&b.channel, &b.link, r#"{"type":"control-request"}"#);
    assert!(drain_texts(&mut b)[0].contains("control_busy"));
    registry.on_client_text(
        &watcher.channel,
        &watcher.link,
        r#"{"type":"control-request"}"#,
    );
    assert!(drain_texts(&mut watcher)
        .iter()
        .any(|t| t.contains("control_denied")));
    registry.on_client_text(&a.channel, &a.link, press);
    registry.on_client_text(&b.channel, &b.link, press);
    assert!(drain_texts(&mut b)[0].contains("not_controller"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(lock(&host.inputs).len(), 1, "only the controller's input");
    registry.release(&a.channel, a.id);
    assert_eq!(
        drain_texts(&mut b),
        vec![r#"{"controller":null,"type":"control","you":false}"#]
    );
    assert_eq!(*lock(&host.controls), vec![Some(1), None]);
    let stats = registry.stats();
    assert_eq!(stats[0].counters.inputs_refused, 2);
}

#[tokio::test]
async fn frame_pixels_map_to_the_page_through_the_frame_seen() {
    let (registry, host) = registry_with(RegistryConfig {
        implicit_control: true,
        ..RegistryConfig::default()
    });
    let id = ChannelId::new("agent", None);
    let viewer = registry
        .admit_with(&id, Transport::Native, extended(true))
        .expect("admitted");
    // 1x1 JPEG header claiming 320x240, shown on a 1280x960 page.
    let jpeg = [
        0xFFu8, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00, 0xF0, 0x01, 0x40, 0x03, 0, 0, 0, 0,
    ];
    let text = base64::engine::general_purpose::STANDARD.encode(jpeg);
    use base64::Engine;
    let meta = FrameMeta {
        device_width: 1280.0,
        device_height: 960.0,
        ..FrameMeta::default()
    };
    let PushOutcome::Published(seq) = registry.push_frame("agent", None, text.into(), meta) else {
        panic!("published")
    };
    registry.on_client_text(
        &viewer.channel,
        &viewer.link,
        &format!(
            r#"{{"type":"input","kind":"mouse","eventType":"mousePressed","x":160,"y":120,"frameSeq":{seq}}}"#
        ),
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let inputs = lock(&host.inputs).clone();
    assert!(
        matches!(&inputs[..], [ClientMessage::Mouse(m)] if (m.x, m.y) == (640.0, 480.0)),
        "{inputs:?}"
    );
    assert_eq!(registry.stats()[0].controller, Some(viewer.id));
}

#[tokio::test]
async fn events_are_numbered_after_frames_and_rate_limits_answer() {
    let (registry, _host) = registry_with(RegistryConfig {
        max_inputs_per_second: 5,
        ..RegistryConfig::default()
    });
    let id = ChannelId::new("agent", None);
    let mut viewer = registry
        .admit_with(&id, Transport::Native, extended(true))
        .expect("admitted");
    drain_texts(&mut viewer);
    let PushOutcome::Published(frame_seq) =
        registry.push_frame("agent", None, JPEG.into(), FrameMeta::default())
    else {
        panic!("published")
    };
    assert_eq!(
        registry.publish_event("agent", r#"{"type":"tool_start"}"#.into()),
        Ok(true)
    );
    assert_eq!(
        registry.publish_event("nobody", r#"{"type":"tool_start"}"#.into()),
        Ok(false)
    );
    assert!(registry.publish_event("agent", "[]".into()).is_err());
    let events = viewer.channel.events_after(Some(frame_seq), 10);
    assert_eq!(events.events.len(), 1);
    assert!(events.events[0].seq > frame_seq);
    for _ in 0..20 {
        registry.on_client_text(&viewer.channel, &viewer.link, "{");
    }
    let answers = drain_texts(&mut viewer);
    assert_eq!(
        answers.iter().filter(|t| t.contains("bad_message")).count(),
        5
    );
    assert_eq!(
        answers
            .iter()
            .filter(|t| t.contains("rate_limited"))
            .count(),
        1
    );
    assert_eq!(registry.stats()[0].counters.inputs_rate_limited, 15);
}

pub(crate) fn registry_with(config: RegistryConfig) -> (Arc<Registry>, Arc<RecordingHost>) {
    let host = Arc::new(RecordingHost::default());
    let registry = Registry::new(config, host.clone(), Handle::current());
    (registry, host)
}

fn drain_texts(slot: &mut ViewerSlot) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(Outbound::Text { text, .. }) = slot.outbox.try_recv() {
        out.push(String::from_utf8(text.to_vec()).expect("utf8"));
    }
    out
}

const JPEG: &str = "/9j/4AAQSkZJRgABAQ==";

#[tokio::test]
async fn first_viewer_starts_once_last_viewer_stops_after_linger() {
    let config = RegistryConfig {
        linger: Duration::from_millis(50),
        ..RegistryConfig::default()
    };
    let (registry, host) = registry_with(config);
    let id = ChannelId::new("agent", None);
    let slots: Vec<ViewerSlot> = (0..50)
        .map(|_| {
            registry
                .admit_with(&id, Transport::Native, JoinOptions::compat(true))
                .expect("admitted")
        })
        .collect();
    assert_eq!(lock(&host.starts).len(), 1);
    assert_eq!(registry.viewer_count("agent"), 50);
    for slot in &slots {
        registry.release(&slot.channel, slot.id);
    }
    assert!(lock(&host.stops).is_empty(), "stop waits for the linger");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(lock(&host.stops).len(), 1);
    assert!(
        registry.channel("agent").is_none(),
        "idle channel forgotten"
    );
    assert_eq!(registry.totals.starts.load(Ordering::Relaxed), 1);
    assert_eq!(registry.totals.stops.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn rejoin_during_linger_keeps_the_source() {
    let config = RegistryConfig {
        linger: Duration::from_millis(80),
        ..RegistryConfig::default()
    };
    let (registry, host) = registry_with(config);
    let id = ChannelId::new("a", Some("t1"));
    assert_eq!(id.key, "a:t1");
    let first = registry
        .admit_with(&id, Transport::Native, JoinOptions::compat(true))
        .expect("admitted");
    registry.release(&first.channel, first.id);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = registry
        .admit_with(&id, Transport::Native, JoinOptions::compat(true))
        .expect("admitted");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(lock(&host.starts).len(), 1);
    assert!(lock(&host.stops).is_empty());
    registry.release(&second.channel, second.id);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(lock(&host.stops).len(), 1);
    // A new session gets a new generation, so late pushes of the old one are stale.
    let third = registry
        .admit_with(&id, Transport::Native, JoinOptions::compat(true))
        .expect("admitted");
    let starts = lock(&host.starts).clone();
    assert_eq!(starts.len(), 2);
    assert!(starts[1].generation > starts[0].generation);
    assert_eq!(
        registry.push_frame(
            "a:t1",
            Some(starts[0].generation),
            JPEG.into(),
            FrameMeta::default()
        ),
        PushOutcome::Stale
    );
    registry.release(&third.channel, third.id);
}

#[tokio::test]
async fn late_joiner_gets_state_then_newest_frame() {
    let (registry, _host) = registry_with(RegistryConfig::default());
    let id = ChannelId::new("agent", None);
    let mut first = registry
        .admit_with(&id, Transport::Native, JoinOptions::compat(true))
        .expect("admitted");
    assert!(registry.set_status("agent", None, "browser_starting"));
    assert!(registry.set_status("agent", None, "streaming"));
    assert!(registry.set_url("agent", None, "https://example.test/"));
    let meta = FrameMeta {
        device_width: 800.0,
        device_height: 600.0,
        ..FrameMeta::default()
    };
    let PushOutcome::Published(seq) = registry.push_frame("agent", None, JPEG.into(), meta) else {
        panic!("published")
    };
    assert_eq!(
        drain_texts(&mut first),
        vec![
            r#"{"status":"connected"}"#,
            // Statuses are latest-wins per viewer: `browser_starting` was replaced before
            // this viewer read it.
            r#"{"status":"streaming"}"#,
            r#"{"url":"https://example.test/"}"#,
            r#"{"viewport":{"width":800,"height":600}}"#,
        ]
    );
    let mut late = registry
        .admit_with(&id, Transport::Native, JoinOptions::compat(true))
        .expect("admitted");
    assert_eq!(
        drain_texts(&mut late),
        vec![
            r#"{"status":"connected"}"#,
            r#"{"status":"streaming"}"#,
            r#"{"url":"https://example.test/"}"#,
            r#"{"viewport":{"width":800,"height":600}}"#,
        ]
    );
    assert!(late.frames.has_changed().expect("sender alive"));
    assert_eq!(late.frames.borrow().as_ref().map(|f| f.seq), Some(seq));
    assert_eq!(late.counters.seen_seq.load(Ordering::Relaxed), seq - 1);
    assert_eq!(late.counters.seen_index.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn invalid_frames_are_rejected_and_reported_once() {
    let (registry, _host) = registry_with(RegistryConfig::default());
    let id = ChannelId::new("agent", None);
    let mut slot = registry
        .admit_with(&id, Transport::Native, JoinOptions::compat(false))
        .expect("admitted");
    for _ in 0..3 {
        assert!(matches!(
            registry.push_frame("agent", None, "{\"oops\":1}".into(), FrameMeta::default()),
            PushOutcome::Rejected(_)
        ));
    }
    let texts = drain_texts(&mut slot);
    assert_eq!(texts.len(), 1);
    assert!(texts[0].contains("screencast_failed"));
    let stats = registry.stats();
    assert_eq!(stats[0].counters.frames_rejected, 3);
    assert_eq!(stats[0].counters.frames_in, 0);
}

#[tokio::test]
async fn limits_refuse_admission() {
    let config = RegistryConfig {
        max_viewers_per_agent: 2,
        max_agents: 1,
        ..RegistryConfig::default()
    };
    let (registry, _host) = registry_with(config);
    let a = ChannelId::new("a", None);
    let _v1 = registry
        .admit_with(&a, Transport::Native, JoinOptions::compat(true))
        .expect("admitted");
    let _v2 = registry
        .admit_with(&a, Transport::Native, JoinOptions::compat(true))
        .expect("admitted");
    assert_eq!(
        registry
            .admit_with(&a, Transport::Native, JoinOptions::compat(true))
            .err(),
        Some(AdmitError::TooManyViewers)
    );
    assert_eq!(
        registry.check_admission(&ChannelId::new("b", None), false),
        Err(AdmitError::TooManyAgents)
    );
    registry.close();
    assert_eq!(
        registry
            .admit_with(&a, Transport::Native, JoinOptions::compat(true))
            .err(),
        Some(AdmitError::Closed)
    );
}

#[tokio::test]
async fn full_queue_closes_the_slow_viewer_only() {
    let config = RegistryConfig {
        max_queued_messages: 3,
        ..RegistryConfig::default()
    };
    let (registry, _host) = registry_with(config);
    let id = ChannelId::new("agent", None);
    let stalled = registry
        .admit_with(&id, Transport::Native, JoinOptions::compat(false))
        .expect("admitted");
    let mut healthy = registry
        .admit_with(&id, Transport::Native, JoinOptions::compat(false))
        .expect("admitted");
    for i in 0..20 {
        // Messages that are not sticky state queue one by one.
        registry.broadcast_json("agent", &format!(r#"{{"note":{i}}}"#));
        drain_texts(&mut healthy);
    }
    assert!(stalled.closer.is_cancelled());
    assert_eq!(
        stalled.closer.request().map(|r| r.0),
        Some(CLOSE_SLOW_CONSUMER)
    );
    assert!(!healthy.closer.is_cancelled());
}

#[tokio::test]
async fn bursts_of_sticky_state_are_latest_wins_and_close_nobody() {
    let config = RegistryConfig {
        max_queued_messages: 3,
        ..RegistryConfig::default()
    };
    let (registry, _host) = registry_with(config);
    let id = ChannelId::new("agent", None);
    let mut reading_late = registry
        .admit_with(&id, Transport::Native, JoinOptions::compat(false))
        .expect("admitted");
    for i in 0..500 {
        registry.set_url("agent", None, &format!("https://x.test/{i}"));
        registry.set_status("agent", None, if i % 2 == 0 { "a" } else { "b" });
        registry.broadcast_error("agent", None, "screencast_failed", &format!("detail {i}"));
        registry.broadcast_error("agent", None, "browser_crashed", "ws://secret-endpoint");
    }
    assert!(!reading_late.closer.is_cancelled());
    assert_eq!(
        drain_texts(&mut reading_late),
        vec![
            r#"{"url":"https://x.test/499"}"#.to_string(),
            r#"{"status":"b"}"#.to_string(),
            protocol::error_message(
                "screencast_failed",
                protocol::viewer_error_text("screencast_failed")
            ),
            protocol::error_message(
                "browser_crashed",
                protocol::viewer_error_text("browser_crashed")
            ),
        ]
    );
    // The next value of a kind taken already is queued again.
    registry.set_url("agent", None, "https://x.test/next");
    assert_eq!(
        drain_texts(&mut reading_late),
        vec![r#"{"url":"https://x.test/next"}"#.to_string()]
    );
}

#[tokio::test]
async fn inputs_are_relayed_in_order_and_malformed_counted() {
    let (registry, host) = registry_with(RegistryConfig::default());
    let id = ChannelId::new("agent", None);
    let slot = registry
        .admit_with(&id, Transport::Native, JoinOptions::compat(false))
        .expect("admitted");
    for x in 0..5 {
        registry.on_client_text(
            &slot.channel,
            &slot.link,
            &format!(r#"{{"type":"mouse","eventType":"mousePressed","x":{x},"y":1}}"#),
        );
    }
    registry.on_client_text(&slot.channel, &slot.link, "garbage");
    registry.on_client_text(
        &slot.channel,
        &slot.link,
        r#"{"type":"mouse","eventType":"mouseMoved","x":-5,"y":1}"#,
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let xs: Vec<f64> = lock(&host.inputs)
        .iter()
        .map(|input| match input {
            ClientMessage::Mouse(m) => m.x,
            _ => -1.0,
        })
        .collect();
    assert_eq!(xs, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(registry.stats()[0].counters.malformed_messages, 2);
}

#[tokio::test]
async fn close_stops_sources_and_closes_viewers_with_1001() {
    let (registry, host) = registry_with(RegistryConfig::default());
    let slot = registry
        .admit_with(
            &ChannelId::new("agent", None),
            Transport::Native,
            JoinOptions::compat(true),
        )
        .expect("admitted");
    registry.close();
    assert_eq!(slot.closer.request().map(|r| r.0), Some(CLOSE_GOING_AWAY));
    assert_eq!(lock(&host.stops).len(), 1);
    registry.release(&slot.channel, slot.id);
    assert!(registry.stats().is_empty());
    assert_eq!(lock(&host.stops).len(), 1, "no second stop");
}

#[tokio::test(start_paused = true)]
async fn a_session_is_undecided_until_its_host_says_where_the_browser_is() {
    let (registry, host) = registry_with(RegistryConfig::default());
    let id = ChannelId::new("agent", None);
    let viewer = registry
        .admit_with(&id, Transport::Native, extended(false))
        .expect("admitted");
    let first = lock(&host.starts)[0].generation;
    let channel = viewer.channel.clone();
    // Undecided: neither kind, and a waiter gives up at its bound.
    assert!(!registry.has_local_source(&id.key));
    assert!(!Channel::is_relayed(&lock(&channel.state)));
    assert_eq!(
        channel.decided_source_kind(Duration::from_millis(50)).await,
        None
    );
    // A waiter is woken by the decision, and a stale generation decides nothing.
    let waiting = tokio::spawn({
        let channel = channel.clone();
        async move { channel.decided_source_kind(Duration::from_secs(10)).await }
    });
    tokio::task::yield_now().await;
    assert!(!registry.decide_source_kind(&id.key, first + 1, SourceKind::Local));
    assert!(registry.decide_source_kind(&id.key, first, SourceKind::Relayed));
    assert_eq!(waiting.await.expect("joined"), Some(SourceKind::Relayed));
    assert!(Channel::is_relayed(&lock(&channel.state)));
    assert!(!registry.has_local_source(&id.key));
    // The next session is undecided again; when it ends undecided, a waiter returns at once.
    assert!(registry.restart_source(&id.key, first));
    let second = lock(&host.starts).last().expect("restarted").generation;
    assert_ne!(second, first);
    assert!(!Channel::is_relayed(&lock(&channel.state)));
    let waiting = tokio::spawn({
        let channel = channel.clone();
        async move { channel.decided_source_kind(Duration::from_secs(10)).await }
    });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    assert!(registry.source_ended(&id.key, second));
    assert_eq!(waiting.await.expect("joined"), None);
    assert!(started.elapsed() < Duration::from_secs(1));
    registry.restart_idle_source(&channel);
    let third = lock(&host.starts).last().expect("restarted").generation;
    assert!(registry.decide_source_kind(&id.key, third, SourceKind::Local));
    assert!(registry.has_local_source(&id.key));
    assert_eq!(
        channel.decided_source_kind(Duration::ZERO).await,
        Some(SourceKind::Local)
    );
}

#[tokio::test]
async fn a_private_channel_takes_no_frame_refuses_input_and_tells_why() {
    let (registry, host) = registry_with(RegistryConfig {
        implicit_control: true,
        ..RegistryConfig::default()
    });
    let id = ChannelId::new("agent", Some("t1"));
    let mut viewer = registry
        .admit_with(&id, Transport::Native, extended(true))
        .expect("admitted");
    assert!(registry.set_status(&id.key, None, "streaming"));
    let PushOutcome::Published(before) =
        registry.push_frame(&id.key, None, JPEG.into(), FrameMeta::default())
    else {
        panic!("published")
    };
    drain_texts(&mut viewer);
    // The agent-wide switch covers its threads' channels.
    registry.set_privacy("agent", None, Some("typing a password"));
    assert!(registry.is_private(&id.key));
    assert_eq!(
        drain_texts(&mut viewer),
        vec![r#"{"reason":"typing a password","status":"private"}"#]
    );
    assert!(
        viewer.frames.borrow().is_none(),
        "the cached frame is withdrawn"
    );
    assert!(viewer.channel.cleared_through.load(Ordering::Relaxed) >= before);
    assert_eq!(
        registry.push_frame(&id.key, None, JPEG.into(), FrameMeta::default()),
        PushOutcome::Withheld
    );
    assert!(viewer.frames.borrow().is_none());
    // The source's status changes are kept for after; input and snapshots are refused.
    assert!(registry.set_status(&id.key, None, "browser_starting"));
    let press = r#"{"type":"input","kind":"mouse","eventType":"mousePressed","x":1,"y":1}"#;
    registry.on_client_text(&viewer.channel, &viewer.link, press);
    registry.on_client_text(
        &viewer.channel,
        &viewer.link,
        r#"{"type":"snapshot-request"}"#,
    );
    let answers = drain_texts(&mut viewer);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers.iter().all(|a| a.contains(r#""error":"private""#)),
        "{answers:?}"
    );
    // A joiner finds it private, without a frame.
    let mut joiner = registry
        .admit_with(&id, Transport::Native, extended(true))
        .expect("admitted");
    let joined = drain_texts(&mut joiner);
    assert!(joined[0].contains(r#""status":"private""#), "{joined:?}");
    assert!(
        joined.iter().any(|t| t.contains("typing a password")),
        "{joined:?}"
    );
    assert!(joiner.frames.borrow().is_none());
    // A thread switch and the agent switch: public only once both ended.
    registry.set_privacy("agent", Some("t1"), Some("card number"));
    registry.set_privacy("agent", None, None);
    assert!(registry.is_private(&id.key));
    registry.set_privacy("agent", Some("t1"), None);
    assert!(!registry.is_private(&id.key));
    let texts = drain_texts(&mut viewer);
    assert_eq!(
        texts.last().map(String::as_str),
        Some(r#"{"status":"browser_starting"}"#),
        "{texts:?}"
    );
    let PushOutcome::Published(after) =
        registry.push_frame(&id.key, None, JPEG.into(), FrameMeta::default())
    else {
        panic!("published once public")
    };
    assert!(after > before);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(lock(&host.inputs).is_empty(), "no input reached the page");
    assert_eq!(registry.stats()[0].counters.frames_withheld, 1);
    // Made private before anyone watches: the first viewer finds it so.
    registry.set_privacy("other", None, Some("later"));
    let other = ChannelId::new("other", None);
    let mut first = registry
        .admit_with(&other, Transport::Native, extended(true))
        .expect("admitted");
    assert!(drain_texts(&mut first)[0].contains(r#""status":"private""#));
    assert_eq!(
        registry.push_frame(&other.key, None, JPEG.into(), FrameMeta::default()),
        PushOutcome::Withheld
    );
}

#[tokio::test(start_paused = true)]
async fn control_ends_when_idle_and_a_dropped_controller_reclaims_it_within_the_grace() {
    let (registry, host) = registry_with(RegistryConfig {
        control_idle: Duration::from_secs(10),
        control_grace: Duration::from_secs(5),
        ..RegistryConfig::default()
    });
    let id = ChannelId::new("agent", None);
    let join = || {
        let mut slot = registry
            .admit_with(&id, Transport::Native, extended(true))
            .expect("admitted");
        drain_texts(&mut slot);
        slot
    };
    let json = |text: &str| -> serde_json::Value { serde_json::from_str(text).expect("json") };
    let request = |slot: &ViewerSlot, token: Option<&str>| {
        let text = match token {
            Some(token) => format!(r#"{{"type":"control-request","reclaim":"{token}"}}"#),
            None => r#"{"type":"control-request"}"#.to_string(),
        };
        registry.on_client_text(&slot.channel, &slot.link, &text);
    };
    let (mut a, mut b) = (join(), join());
    request(&a, None);
    let granted = json(&drain_texts(&mut a)[0]);
    let first_token = granted["reclaim"].as_str().expect("a token").to_string();
    assert_eq!(first_token.len(), 32);
    assert!(
        !drain_texts(&mut b)[0].contains("reclaim"),
        "only the holder gets the token"
    );
    // Input keeps control past the idle time.
    let mv = r#"{"type":"input","kind":"mouse","eventType":"mouseMoved","x":1,"y":1}"#;
    tokio::time::sleep(Duration::from_secs(8)).await;
    registry.on_client_text(&a.channel, &a.link, mv);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(registry.controller(&id.key), Some(a.id));
    // The holder drops: control is kept for it, and another viewer cannot take it.
    registry.release(&a.channel, a.id);
    assert!(
        drain_texts(&mut b).is_empty(),
        "nobody is told of a drop within the grace"
    );
    request(&b, None);
    assert!(drain_texts(&mut b)[0].contains("control_busy"));
    // A wrong token is an ordinary request; the right one takes control back.
    let mut a2 = join();
    request(&a2, Some("00"));
    assert!(drain_texts(&mut a2)[0].contains("control_busy"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    request(&a2, Some(&first_token));
    let back = json(&drain_texts(&mut a2)[0]);
    assert_eq!(
        (back["controller"].clone(), back["you"].clone()),
        (a2.id.into(), true.into())
    );
    let second_token = back["reclaim"].as_str().expect("a new token").to_string();
    assert_ne!(second_token, first_token, "a new tenure, a new token");
    // The first token is spent: with a2 gone too, it takes nothing.
    registry.release(&a2.channel, a2.id);
    request(&b, Some(&first_token));
    assert!(drain_texts(&mut b)
        .iter()
        .any(|t| t.contains("control_busy")));
    // A token reclaims even while its holder's connection still looks open (a silent drop
    // is noticed only at the heartbeat timeout): the old connection loses control.
    let mut a3 = join();
    request(&a3, Some(&second_token));
    let third = json(&drain_texts(&mut a3)[0]);
    assert_eq!(third["you"], true);
    let third_token = third["reclaim"].as_str().expect("a token").to_string();
    let mut a4 = join();
    request(&a4, Some(&third_token));
    assert_eq!(json(&drain_texts(&mut a4)[0])["you"], true);
    let moved = json(drain_texts(&mut a3).last().expect("told"));
    assert_eq!(
        (moved["you"].clone(), moved["controller"].clone()),
        (false.into(), a4.id.into())
    );
    drain_texts(&mut b);
    // No input for the idle time: released, everyone told why.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(registry.controller(&id.key), None);
    let idle = json(drain_texts(&mut b).last().expect("told"));
    assert_eq!(
        (idle["controller"].clone(), idle["reason"].clone()),
        (serde_json::Value::Null, "idle".into())
    );
    // A holder that does not come back loses control at the end of the grace.
    request(&b, None);
    registry.release(&b.channel, b.id);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(registry.controller(&id.key), None);
    let left = json(drain_texts(&mut a4).last().expect("told"));
    assert_eq!(left["reason"], "controller_left");
    // The deployer takes control back with its reason.
    request(&a4, None);
    assert!(registry.release_control(&id.key, "agent resumed"));
    assert!(
        !registry.release_control(&id.key, "agent resumed"),
        "nobody holds it now"
    );
    let taken = json(drain_texts(&mut a4).last().expect("told"));
    assert_eq!(
        (taken["you"].clone(), taken["reason"].clone()),
        (false.into(), "agent resumed".into())
    );
    assert_eq!(
        *lock(&host.controls),
        vec![
            Some(a.id),
            Some(a2.id),
            Some(a3.id),
            Some(a4.id),
            None,
            Some(b.id),
            None,
            Some(a4.id),
            None
        ]
    );
    drop(a3);
}

#[tokio::test(start_paused = true)]
async fn a_controller_that_left_last_keeps_its_session_through_the_grace_then_loses_control() {
    let (registry, host) = registry_with(RegistryConfig {
        linger: Duration::from_secs(1),
        control_grace: Duration::from_secs(5),
        ..RegistryConfig::default()
    });
    let id = ChannelId::new("agent", None);
    let a = registry
        .admit_with(&id, Transport::Native, extended(true))
        .expect("admitted");
    registry.on_client_text(&a.channel, &a.link, r#"{"type":"control-request"}"#);
    registry.release(&a.channel, a.id);
    // Past the linger, within the grace: the session and the control are kept.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        lock(&host.stops).is_empty(),
        "the session lingers through the grace"
    );
    assert_eq!(registry.controller(&id.key), Some(a.id));
    // The grace ends: control first, then the session; the deployer is told.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lock(&host.stops).len(), 1);
    assert_eq!(*lock(&host.controls), vec![Some(a.id), None]);
}
