//! Rust's diagnostics: `tracing` events, each registry's routed by a dispatch of its own to
//! its host (the deployer's `logger`), with their level, message and structured fields
//! (`agent`, `thread`, `viewer`, `reason`…). Lines of one call site about one viewer (a
//! `viewer` field) are rate-limited: a misbehaving viewer must not flood the log; the next
//! line let through says how many were suppressed. Lines about no viewer are not limited. Owns the bridge (a `tracing_subscriber` layer) and the limit.
//! Must not decide what is logged (call sites do) nor log a credential: a field is a fact of
//! ours (ids, codes, counts), never a peer's raw text.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::host::{Host, LogLevel, LogRecord};
use crate::sync::lock;

/// Lines one call site may log about one viewer per window.
pub const LINES_PER_WINDOW: u32 = 5;
/// Lines one call site may log about all viewers together per window: viewers that come and
/// go (each with a new id) must not get around the limit.
pub const SITE_LINES_PER_WINDOW: u32 = 50;
/// The window of the limits.
pub const WINDOW: Duration = Duration::from_secs(10);
/// (Call site, viewer) keys the limiter remembers; past it, expired ones are dropped, and a
/// new key is refused while none has expired (the call site's limit still holds).
const MAX_KEYS: usize = 4096;

/// Logs an event to `registry`'s host through its dispatch: `log!(registry, warn, field =
/// value, …, "message {}", arg)`, fields as in `tracing`.
macro_rules! log {
    ($registry:expr, $level:ident, $($arg:tt)+) => {
        tracing::dispatcher::with_default($registry.log_dispatch(), || tracing::$level!($($arg)+))
    };
}
pub(crate) use log;

/// How many lines of one key went out in the current window, and how many were held back.
struct Budget {
    window_start: Instant,
    sent: u32,
    suppressed: u64,
}

impl Budget {
    fn new(now: Instant) -> Budget {
        Budget {
            window_start: now,
            sent: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line fits this window (counted if so, else held back).
    fn take(&mut self, now: Instant, limit: u32) -> bool {
        if now.duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.sent = 0;
        }
        if self.sent >= limit {
            self.suppressed += 1;
            return false;
        }
        self.sent += 1;
        true
    }
}

type Site = tracing::callsite::Identifier;

/// The rate limit of log lines about viewers: per (call site, viewer) and per call site.
#[derive(Default)]
struct Limiter {
    viewers: HashMap<(Site, String), Budget>,
    sites: HashMap<Site, Budget>,
}

impl Limiter {
    /// `None`: hold this line back; `Some(n)`: send it, `n` lines of its call site having
    /// been held back since the last one sent.
    fn admit(&mut self, site: Site, viewer: String, now: Instant) -> Option<u64> {
        let key = (site.clone(), viewer);
        if self.viewers.len() >= MAX_KEYS && !self.viewers.contains_key(&key) {
            self.viewers
                .retain(|_, budget| now.duration_since(budget.window_start) < WINDOW);
        }
        let site_budget = self.sites.entry(site).or_insert_with(|| Budget::new(now));
        let room = self.viewers.len() < MAX_KEYS || self.viewers.contains_key(&key);
        if !room {
            site_budget.suppressed += 1;
            return None;
        }
        let viewer_budget = self.viewers.entry(key).or_insert_with(|| Budget::new(now));
        if !viewer_budget.take(now, LINES_PER_WINDOW) {
            return None;
        }
        if !site_budget.take(now, SITE_LINES_PER_WINDOW) {
            return None;
        }
        Some(
            std::mem::take(&mut viewer_budget.suppressed)
                + std::mem::take(&mut site_budget.suppressed),
        )
    }
}

/// The layer that hands events to a host.
struct HostLayer {
    host: Weak<dyn Host>,
    limiter: Mutex<Limiter>,
}

/// The message and fields of an event.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
}

impl<S: Subscriber> Layer<S> for HostLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = match *event.metadata().level() {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            // Debug and trace are for development, not a deployer's log.
            _ => return,
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let viewer = fields
            .fields
            .iter()
            .find(|(name, _)| name == "viewer")
            .map(|(_, value)| value.clone());
        let suppressed = match viewer {
            Some(viewer) => {
                let site = event.metadata().callsite();
                let Some(suppressed) = lock(&self.limiter).admit(site, viewer, Instant::now())
                else {
                    return;
                };
                suppressed
            }
            None => 0,
        };
        if suppressed > 0 {
            fields
                .fields
                .push(("suppressed".into(), suppressed.to_string()));
        }
        if let Some(host) = self.host.upgrade() {
            host.log(LogRecord {
                level,
                message: fields.message,
                fields: fields.fields,
            });
        }
    }
}

/// A dispatch whose events go to `host` (held weakly: the registry owns both).
pub fn dispatch_to(host: &Arc<dyn Host>) -> tracing::Dispatch {
    let layer = HostLayer {
        host: Arc::downgrade(host),
        limiter: Mutex::new(Limiter::default()),
    };
    tracing::Dispatch::new(tracing_subscriber::registry().with(layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recording {
        records: Mutex<Vec<LogRecord>>,
    }

    impl Host for Recording {
        fn start_source(&self, _: crate::host::SourceRequest) {}
        fn stop_source(&self, _: crate::host::SourceRequest) {}
        fn relay_input(
            &self,
            _: crate::host::SourceRequest,
            _: crate::protocol::ClientMessage,
        ) -> crate::host::HostFuture {
            Box::pin(async { Ok(()) })
        }
        fn bridged_send(&self, _: u32, _: crate::host::BridgedOutbound) -> crate::host::HostFuture {
            Box::pin(async { Ok(()) })
        }
        fn log(&self, record: LogRecord) {
            lock(&self.records).push(record);
        }
    }

    struct Registryish(tracing::Dispatch);
    impl Registryish {
        fn log_dispatch(&self) -> &tracing::Dispatch {
            &self.0
        }
    }

    #[test]
    fn events_reach_the_host_with_fields_and_per_viewer_noise_is_limited() {
        let recording = Arc::new(Recording::default());
        let host: Arc<dyn Host> = recording.clone();
        let registry = Registryish(dispatch_to(&host));
        log!(
            registry,
            warn,
            agent = "a1",
            reason = "bad_sdp",
            "offer refused"
        );
        log!(registry, debug, "not for the deployer");
        for _ in 0..20 {
            log!(registry, info, viewer = 7u32, "noisy");
        }
        log!(registry, info, viewer = 8u32, "noisy");
        for _ in 0..20 {
            log!(registry, info, "about no viewer");
        }
        let records = lock(&recording.records);
        assert_eq!(records[0].level, LogLevel::Warn);
        assert_eq!(records[0].message, "offer refused");
        assert_eq!(
            records[0].fields,
            vec![
                ("agent".into(), "a1".into()),
                ("reason".into(), "bad_sdp".into())
            ]
        );
        let noisy7 = records
            .iter()
            .filter(|r| r.fields.iter().any(|(k, v)| k == "viewer" && v == "7"))
            .count();
        assert_eq!(
            noisy7 as u32, LINES_PER_WINDOW,
            "one viewer's noise is limited"
        );
        assert!(records
            .iter()
            .any(|r| r.fields.iter().any(|(k, v)| k == "viewer" && v == "8")));
        assert!(!records
            .iter()
            .any(|r| r.message.contains("not for the deployer")));
        let unlimited = records
            .iter()
            .filter(|r| r.message == "about no viewer")
            .count();
        assert_eq!(unlimited, 20, "lines about no viewer are not limited");
    }

    #[test]
    fn the_next_line_after_a_window_tells_how_many_were_held_back() {
        let mut limiter = Limiter::default();
        let site = || tracing::callsite::Identifier(&CALLSITE);
        let start = Instant::now();
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(limiter.admit(site(), "1".into(), start), Some(0));
        }
        assert_eq!(limiter.admit(site(), "1".into(), start), None);
        assert_eq!(limiter.admit(site(), "1".into(), start), None);
        assert_eq!(limiter.admit(site(), "1".into(), start + WINDOW), Some(2));
    }

    #[test]
    fn viewers_with_new_ids_do_not_get_around_the_call_site_limit() {
        let mut limiter = Limiter::default();
        let site = || tracing::callsite::Identifier(&CALLSITE);
        let now = Instant::now();
        let sent = (0..1000)
            .filter(|viewer| limiter.admit(site(), viewer.to_string(), now).is_some())
            .count();
        assert_eq!(sent as u32, SITE_LINES_PER_WINDOW);
        let later = now + WINDOW;
        let told = limiter.admit(site(), "new".into(), later);
        assert_eq!(told, Some(1000 - u64::from(SITE_LINES_PER_WINDOW)));
    }

    struct Site;
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("not asked in these tests")
        }
    }
    static CALLSITE: Site = Site;
}
