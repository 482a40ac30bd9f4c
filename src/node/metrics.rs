//! `registry.metrics()`: the registry's counters and gauges in the Prometheus text exposition
//! (format 0.0.4), from a snapshot taken at each scrape and written by the `prometheus`
//! crate's text encoder. Registry-wide sums include what channels and viewers that went
//! away counted (`stats::Retired`), so a counter never goes back. Low-cardinality by default:
//! labels are modes, transports, outcomes and reasons; per-channel series (`agent`,
//! `thread`) only with `metricsPerAgent`.
//! Owns the metric names, their help and labels. Must not change state: it only reads.

use std::sync::atomic::Ordering;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::TextEncoder;

use crate::protocol::Mode;
use crate::registry::{ChannelStats, Registry, Transport, ViewerStats};
use crate::source::cdp::CdpSessions;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Label pairs of one sample.
type Labels = Vec<(&'static str, String)>;

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(format!("browser_stream_{name}"));
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn labelled(labels: Labels) -> Metric {
    let pairs = labels
        .into_iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value);
            pair
        })
        .collect();
    Metric::from_label(pairs)
}

/// A family of `kind`, one sample per label set, each value set on its metric by `set`.
fn samples<V>(
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Labels, V)>,
    set: impl Fn(&mut Metric, V),
) -> MetricFamily {
    let metrics = samples
        .into_iter()
        .map(|(labels, value)| {
            let mut metric = labelled(labels);
            set(&mut metric, value);
            metric
        })
        .collect();
    family(name, help, kind, metrics)
}

/// A counter family: one sample per label set.
fn counters(name: &str, help: &str, values: Vec<(Labels, u64)>) -> MetricFamily {
    samples(name, help, MetricType::COUNTER, values, |metric, value| {
        let mut counter = Counter::default();
        counter.set_value(value as f64);
        metric.set_counter(counter);
    })
}

fn counter(name: &str, help: &str, value: u64) -> MetricFamily {
    counters(name, help, vec![(Vec::new(), value)])
}

/// A gauge family: one sample per label set.
fn gauges(name: &str, help: &str, values: Vec<(Labels, f64)>) -> MetricFamily {
    samples(name, help, MetricType::GAUGE, values, |metric, value| {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    })
}

fn gauge(name: &str, help: &str, value: f64) -> MetricFamily {
    gauges(name, help, vec![(Vec::new(), value)])
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Compat => "compat",
        Mode::Extended => "extended",
    }
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Native => "native",
        Transport::Bridged => "bridged",
        Transport::Relay => "relay",
    }
}

/// The text exposition of `registry` (and its CDP sessions) now.
pub fn exposition(registry: &Registry, cdp: &CdpSessions) -> prometheus::Result<String> {
    // One moment of the books: every count is live or retired, not both, not neither.
    let books = registry
        .books
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let channels = registry.stats();
    let gone = registry.retired.channels.snapshot();
    let retired = crate::registry::RetiredSnapshot::of(&registry.retired);
    drop(books);
    let viewers = || channels.iter().flat_map(|c| c.viewers.iter());
    let totals = registry.totals.snapshot();
    let live = |f: fn(&ChannelStats) -> u64| channels.iter().map(f).sum::<u64>();
    let sent = |f: fn(&ViewerStats) -> u64| viewers().map(f).sum::<u64>();
    let mut families = Vec::new();

    // Every combination, zeros included, so series do not come and go.
    let mut by_kind = Vec::new();
    for mode in [Mode::Compat, Mode::Extended] {
        for transport in [Transport::Native, Transport::Bridged, Transport::Relay] {
            let n = viewers()
                .filter(|v| v.mode == mode && v.transport == transport)
                .count();
            let labels = vec![
                ("mode", mode_name(mode).to_string()),
                ("transport", transport_name(transport).to_string()),
            ];
            by_kind.push((labels, n as f64));
        }
    }
    families.push(gauges(
        "viewers",
        "Viewers connected now, by wire mode and transport (native: a socket served by Rust; bridged: kept in JS; relay: another instance's viewers, through the NATS relay).",
        by_kind,
    ));
    families.push(gauge(
        "channels",
        "Agent channels (an agent, or a thread of one) held now.",
        channels.len() as f64,
    ));
    families.push(gauge(
        "video_viewers",
        "Viewers receiving H.264 video over their WebSocket now.",
        viewers().filter(|v| v.video).count() as f64,
    ));
    families.push(gauge(
        "private_channels",
        "Channels kept private now (setPrivacy).",
        channels.iter().filter(|c| c.private).count() as f64,
    ));
    families.push(counter(
        "frames_received_total",
        "Frames taken in from sources.",
        gone.frames_in + live(|c| c.counters.frames_in),
    ));
    families.push(counter(
        "received_bytes_total",
        "Bytes of frames taken in from sources.",
        gone.bytes_in + live(|c| c.counters.bytes_in),
    ));
    families.push(counter(
        "frames_rejected_total",
        "Payloads refused as frames (not an image).",
        gone.frames_rejected + live(|c| c.counters.frames_rejected),
    ));
    families.push(counter(
        "frames_withheld_total",
        "Frames dropped unseen while their channel was private.",
        gone.frames_withheld + live(|c| c.counters.frames_withheld),
    ));
    families.push(counter(
        "frames_sent_total",
        "Frames written to viewers.",
        retired.frames_sent + sent(|v| v.frames_sent),
    ));
    families.push(counter(
        "frames_skipped_total",
        "Frames a busy viewer skipped (a newer one replaced them).",
        retired.frames_skipped + sent(|v| v.frames_skipped_counted),
    ));
    families.push(counter(
        "sent_bytes_total",
        "Bytes written to viewers (frames, video chunks and messages).",
        retired.bytes_sent + sent(|v| v.bytes_sent),
    ));
    families.push(counter(
        "video_chunks_sent_total",
        "H.264 chunks written to viewers' WebSockets.",
        retired.video_chunks_sent + sent(|v| v.video_chunks_sent),
    ));
    families.push(counter(
        "viewers_admitted_total",
        "Viewers admitted.",
        totals.viewers_admitted,
    ));
    families.push(counter(
        "viewer_replies_total",
        "Viewers' replies to agent events handed to onViewerReply.",
        gone.replies + live(|c| c.counters.replies),
    ));
    let outcomes = [
        (
            "relayed",
            gone.inputs_relayed + live(|c| c.counters.inputs_relayed),
        ),
        (
            "refused",
            gone.inputs_refused + live(|c| c.counters.inputs_refused),
        ),
        (
            "rate_limited",
            gone.inputs_rate_limited + live(|c| c.counters.inputs_rate_limited),
        ),
        (
            "dropped",
            gone.inputs_dropped + live(|c| c.counters.inputs_dropped),
        ),
        (
            "failed",
            gone.inputs_failed + live(|c| c.counters.inputs_failed),
        ),
    ];
    families.push(counters(
        "inputs_total",
        "Viewers' input by outcome: relayed to the page, refused (not the controller, view-only, private), over a rate limit, dropped (queue full), failed at the page.",
        outcomes.iter().map(|(outcome, v)| (vec![("outcome", outcome.to_string())], *v)).collect(),
    ));
    let reasons = [
        ("closed", totals.refused_closed),
        ("viewers_total", totals.refused_viewers_total),
        ("agents", totals.refused_agents),
        ("viewers_per_agent", totals.refused_viewers_per_agent),
    ];
    families.push(counters(
        "admissions_refused_total",
        "Viewers refused admission by a limit (answered 503), by reason.",
        reasons
            .iter()
            .map(|(reason, v)| (vec![("reason", reason.to_string())], *v))
            .collect(),
    ));
    families.push(counter(
        "source_starts_total",
        "Source sessions started (screencasts, CDP sessions, relays).",
        totals.starts,
    ));
    families.push(counter(
        "cdp_sessions_started_total",
        "Native CDP sessions started; each reconnect after a crash or a lost connection is one more.",
        cdp.started.load(Ordering::Relaxed),
    ));
    families.push(gauge(
        "cdp_sessions",
        "Native CDP sessions (DevTools connections) open now.",
        cdp.len() as f64,
    ));
    let (sum, count, buckets) = registry.encode_times.snapshot();
    if count > 0 {
        let mut histogram = Histogram::default();
        histogram.set_sample_sum(sum);
        histogram.set_sample_count(count);
        histogram.set_bucket(
            buckets
                .into_iter()
                .map(|(bound, cumulative)| {
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(bound);
                    bucket.set_cumulative_count(cumulative);
                    bucket
                })
                .collect(),
        );
        let mut metric = Metric::default();
        metric.set_histogram(histogram);
        families.push(family(
            "video_encode_seconds",
            "Time to decode, convert and encode one frame to H.264.",
            MetricType::HISTOGRAM,
            vec![metric],
        ));
    }
    if registry.config().metrics_per_agent {
        let ids = |c: &ChannelStats| {
            vec![
                ("agent", c.id.agent_id.clone()),
                ("thread", c.id.thread_id.clone().unwrap_or_default()),
            ]
        };
        families.push(gauges(
            "channel_viewers",
            "Viewers of one channel now.",
            channels
                .iter()
                .map(|c| (ids(c), c.viewers.len() as f64))
                .collect(),
        ));
        families.push(counters(
            "channel_frames_received_total",
            "Frames one channel took in (since the channel was created).",
            channels
                .iter()
                .map(|c| (ids(c), c.counters.frames_in))
                .collect(),
        ));
        families.push(counters(
            "channel_frames_sent_total",
            "Frames written to one channel's viewers connected now.",
            channels
                .iter()
                .map(|c| (ids(c), c.viewers.iter().map(|v| v.frames_sent).sum()))
                .collect(),
        ));
    }
    let mut text = String::new();
    TextEncoder::new().encode_utf8(&families, &mut text)?;
    Ok(text)
}
