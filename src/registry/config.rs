//! A registry's tunables: `RegistryConfig`, and the option table (`for_registry_options!`)
//! that is the one owner of every option's JS name, config field, default, range and doc.
//! The table builds `RegistryConfig::default()`, the setter the napi face calls, and the spec
//! list JS reads (`registryOptions()`); the napi face builds its options object from the same
//! table. Adding an option is one row here (plus its field and a test).
//! Must not act on the options: each is enforced where it applies.

use std::time::Duration;

use super::event_log::EventLimits;

/// The option table, handed to `$m` (an X-macro: each user expands the same rows its own way).
/// A row: docs, the napi field (snake case of the JS name), the JS name, the `RegistryConfig`
/// field (`event_numbers`: the `EventLimits` field), `ms` (milliseconds into a `Duration`) or
/// `count`, the default and the inclusive range; flags: docs, field, JS name, config field
/// and default. `RegistryConfig::default()` is a struct literal built from the rows, so a
/// config field without a row does not compile.
macro_rules! for_registry_options {
    ($m:ident) => {
        $m! {
            numbers {
                #[doc = "Milliseconds a source keeps running after its last viewer left (a reload must"]
                #[doc = "not restart Chrome's encoder; default 3000)."]
                linger_ms "lingerMs" => linger: ms = 3000, 0..=4_294_967_295;
                #[doc = "Viewers per agent channel (default 100)."]
                max_viewers_per_agent "maxViewersPerAgent" => max_viewers_per_agent: count = 100, 1..=4_294_967_295;
                #[doc = "Agent channels (agent or agent:thread) the registry holds (default 1000)."]
                max_agents "maxAgents" => max_agents: count = 1000, 1..=4_294_967_295;
                #[doc = "Viewers in all (default 10000)."]
                max_viewers_total "maxViewersTotal" => max_viewers_total: count = 10000, 1..=4_294_967_295;
                #[doc = "Largest client message in bytes; larger closes with 1009 (default 65536)."]
                max_message_bytes "maxMessageBytes" => max_message_bytes: count = 65536, 1..=4_294_967_295;
                #[doc = "Milliseconds between server pings (default 15000)."]
                heartbeat_interval_ms "heartbeatIntervalMs" => heartbeat_interval: ms = 15000, 1..=4_294_967_295;
                #[doc = "Milliseconds of silence (no data, no pong) after which a viewer is closed with"]
                #[doc = "1001 (default 45000)."]
                heartbeat_timeout_ms "heartbeatTimeoutMs" => heartbeat_timeout: ms = 45000, 1..=4_294_967_295;
                #[doc = "Reliable messages (status, url, errors…) queued per viewer before it is closed"]
                #[doc = "with 4001 (default 256)."]
                max_queued_messages "maxQueuedMessages" => max_queued_messages: count = 256, 1..=4_294_967_295;
                #[doc = "Inputs waiting per channel before new ones are dropped (default 256)."]
                max_pending_inputs "maxPendingInputs" => max_pending_inputs: count = 256, 1..=4_294_967_295;
                #[doc = "Client messages per second one viewer may send (token bucket, one second of"]
                #[doc = "burst; default 200)."]
                max_inputs_per_second "maxInputsPerSecond" => max_inputs_per_second: count = 200, 1..=4_294_967_295;
                #[doc = "Target bitrate of a channel's H.264 video in bits per second (default 2000000;"]
                #[doc = "100000 to 50000000). One encoder per channel: every video viewer gets this."]
                video_bitrate "videoBitrate" => video_bitrate: count = 2000000, 100_000..=50_000_000;
                #[doc = "Longest milliseconds between two keyframes of a changing page (default 5000)."]
                video_keyframe_interval_ms "videoKeyframeIntervalMs" => video_keyframe_interval: ms = 5000, 250..=600_000;
                #[doc = "Milliseconds of a quiet page after which viewers get its picture again at a higher"]
                #[doc = "quality: video viewers a low-quantiser keyframe, JPEG viewers a screenshot at"]
                #[doc = "`refineJpegQuality` (native CDP source only; default 600; 0: never)."]
                refine_after_ms "refineAfterMs" => refine_after: ms = 600, 0..=60_000;
                #[doc = "JPEG quality of the refinement screenshot for JPEG viewers (default 90; 0: none)."]
                refine_jpeg_quality "refineJpegQuality" => refine_jpeg_quality: count = 90, 0..=100;
                #[doc = "Milliseconds without input from the viewer holding control after which control"]
                #[doc = "is released, everyone told with reason `idle` (default 0: never)."]
                control_idle_ms "controlIdleMs" => control_idle: ms = 0, 0..=4_294_967_295;
                #[doc = "Milliseconds control stays with a controller whose connection dropped: it takes"]
                #[doc = "it back with its reclaim token on reconnecting (default 0: released at once)."]
                control_grace_ms "controlGraceMs" => control_grace: ms = 0, 0..=600_000;
            }
            event_numbers {
                #[doc = "Milliseconds `text_delta` events are held to be merged (default 50; 0 sends each)."]
                event_batch_ms "eventBatchMs" => batch_window: ms = 50, 0..=4_294_967_295;
                #[doc = "Events the resume ring holds per channel (default 1000)."]
                resume_max_events "resumeMaxEvents" => max_events: count = 1000, 1..=4_294_967_295;
                #[doc = "Bytes the resume ring holds per channel (default 4194304, 4 MiB)."]
                resume_max_bytes "resumeMaxBytes" => max_bytes: count = 4194304, 1..=4_294_967_295;
                #[doc = "Milliseconds an event stays in the resume ring (default 60000)."]
                resume_max_age_ms "resumeMaxAgeMs" => max_age: ms = 60000, 0..=4_294_967_295;
                #[doc = "Largest event accepted by `publishEvent`, in bytes of JSON, and largest merged"]
                #[doc = "delta (default 262144, 256 KiB)."]
                max_event_bytes "maxEventBytes" => max_event_bytes: count = 262144, 1..=4_294_967_295;
            }
            flags {
                #[doc = "Input from a viewer allowed to control takes control when nobody holds it"]
                #[doc = "(default false: extended viewers send `control-request` first)."]
                implicit_control "implicitControl" => implicit_control = false;
                #[doc = "Extended viewers may ask for H.264 video (default true; false answers"]
                #[doc = "`video_unavailable` and encodes nothing)."]
                video "video" => video = true;
                #[doc = "View-only viewers may answer agent events with `reply` too (default false:"]
                #[doc = "only viewers allowed to control; others get `reply_denied`)."]
                view_only_replies "viewOnlyReplies" => view_only_replies = false;
                #[doc = "`metrics()` also has series per channel, labelled `agent` and `thread`"]
                #[doc = "(default false: a label per agent can overwhelm a metrics store)."]
                metrics_per_agent "metricsPerAgent" => metrics_per_agent = false;
            }
        }
    };
}
pub(crate) use for_registry_options;

/// What kind of value an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OptionKind {
    /// Milliseconds (a whole number).
    Millis,
    /// A count or a size (a whole number).
    Count,
    /// A boolean.
    Flag,
}

/// One row of the option table, as JS reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OptionSpec {
    /// The option's JS name.
    pub name: &'static str,
    /// Its kind.
    pub kind: OptionKind,
    /// Its default (0 or 1 for a flag).
    pub default: u32,
    /// Least value accepted.
    pub min: u32,
    /// Greatest value accepted.
    pub max: u32,
}

/// A number option's value in its config field's unit.
trait FromOption {
    fn from_option(value: u32) -> Self;
}

impl FromOption for Duration {
    fn from_option(value: u32) -> Self {
        Duration::from_millis(value.into())
    }
}

impl FromOption for usize {
    fn from_option(value: u32) -> Self {
        value as usize
    }
}

impl FromOption for u32 {
    fn from_option(value: u32) -> Self {
        value
    }
}

/// `value` in the option's unit, when it is a whole number in `min..=max`.
fn number_in_range<T: FromOption>(name: &str, value: f64, min: u32, max: u32) -> Result<T, String> {
    if value.fract() != 0.0 || !(f64::from(min)..=f64::from(max)).contains(&value) {
        return Err(format!(
            "option {name} must be an integer from {min} to {max}"
        ));
    }
    Ok(T::from_option(value as u32))
}

macro_rules! option_kind {
    (ms) => {
        OptionKind::Millis
    };
    (count) => {
        OptionKind::Count
    };
}

macro_rules! config_from_table {
    (
        numbers { $( $(#[doc = $doc:tt])* $field:ident $name:literal => $path:ident : $kind:ident = $default:literal, $min:literal..=$max:literal; )* }
        event_numbers { $( $(#[doc = $edoc:tt])* $efield:ident $ename:literal => $epath:ident : $ekind:ident = $edefault:literal, $emin:literal..=$emax:literal; )* }
        flags { $( $(#[doc = $fdoc:tt])* $ffield:ident $fname:literal => $fpath:ident = $fdefault:literal; )* }
    ) => {
        /// Every option, in the table's order.
        pub(crate) const REGISTRY_OPTIONS: &[OptionSpec] = &[
            $( OptionSpec { name: $name, kind: option_kind!($kind), default: $default, min: $min, max: $max }, )*
            $( OptionSpec { name: $ename, kind: option_kind!($ekind), default: $edefault, min: $emin, max: $emax }, )*
            $( OptionSpec { name: $fname, kind: OptionKind::Flag, default: $fdefault as u32, min: 0, max: 1 }, )*
        ];

        impl Default for RegistryConfig {
            fn default() -> Self {
                RegistryConfig {
                    $( $path: FromOption::from_option($default), )*
                    $( $fpath: $fdefault, )*
                    events: EventLimits {
                        $( $epath: FromOption::from_option($edefault), )*
                    },
                    // Structured, so not a row: `webrtc::config` owns its defaults and checks.
                    webrtc: None,
                    relay: None,
                    // Not the deployer's to set: whether it passed `onViewerReply`.
                    viewer_replies: false,
                }
            }
        }

        impl RegistryConfig {
            /// Sets number option `name` (its JS name) to `value`, in the option's range.
            pub(crate) fn set_number(&mut self, name: &str, value: f64) -> Result<(), String> {
                match name {
                    $( $name => self.$path = number_in_range($name, value, $min, $max)?, )*
                    $( $ename => self.events.$epath = number_in_range($ename, value, $emin, $emax)?, )*
                    _ => return Err(format!("unknown number option {name}")),
                }
                Ok(())
            }

            /// Sets flag option `name` (its JS name).
            pub(crate) fn set_flag(&mut self, name: &str, value: bool) -> Result<(), String> {
                match name {
                    $( $fname => {
                        self.$fpath = value;
                        Ok(())
                    } )*
                    _ => Err(format!("unknown flag option {name}")),
                }
            }
        }
    };
}

for_registry_options!(config_from_table);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_is_set_by_its_row_and_defaults_stay_in_range() {
        let defaults = RegistryConfig::default();
        assert_eq!(defaults.linger, Duration::from_secs(3));
        assert_eq!(defaults.max_message_bytes, 64 * 1024);
        assert_eq!(defaults.events.max_bytes, 4 * 1024 * 1024);
        for spec in REGISTRY_OPTIONS {
            assert!(
                (spec.min..=spec.max).contains(&spec.default),
                "{}",
                spec.name
            );
            // Each row writes its own field: setting it away from the default shows up.
            let mut config = RegistryConfig::default();
            let before = format!("{config:?}");
            match spec.kind {
                OptionKind::Flag => config.set_flag(spec.name, spec.default == 0).unwrap(),
                _ => config
                    .set_number(spec.name, f64::from(spec.default) + 1.0)
                    .unwrap(),
            }
            assert_ne!(format!("{config:?}"), before, "{} sets nothing", spec.name);
        }
        let names: std::collections::HashSet<_> = REGISTRY_OPTIONS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), REGISTRY_OPTIONS.len(), "names are unique");
    }

    #[test]
    fn numbers_outside_the_range_or_fractional_are_refused() {
        let mut config = RegistryConfig::default();
        assert_eq!(
            config.set_number("maxAgents", 0.0),
            Err("option maxAgents must be an integer from 1 to 4294967295".to_string())
        );
        assert!(config.set_number("lingerMs", 0.0).is_ok());
        assert!(config.set_number("lingerMs", 1.5).is_err());
        assert!(config.set_number("lingerMs", -1.0).is_err());
        assert!(config.set_number("lingerMs", 4_294_967_296.0).is_err());
        assert!(config.set_number("heartbeatIntervalMs", 0.0).is_err());
        assert!(config.set_number("noSuchOption", 1.0).is_err());
        assert!(config.set_flag("implicitControl", true).is_ok());
        assert!(config.implicit_control);
    }
}

impl RegistryConfig {
    /// The settings of a channel's video encoder.
    pub fn encoder_settings(&self) -> crate::codec::EncoderSettings {
        crate::codec::EncoderSettings {
            bitrate: self.video_bitrate,
            keyframe_interval: self.video_keyframe_interval,
            refine_after: self.refine_after,
        }
    }
}

/// Tunables of a registry; every limit is enforced, none grows memory without bound.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// WebRTC delivery, when the deployer configured it (`webrtc` option).
    pub webrtc: Option<crate::webrtc::config::WebRtcConfig>,
    /// Scale-out over NATS, when the deployer configured it (`relay.nats`).
    pub relay: Option<crate::relay::config::RelayConfig>,
    /// How long a source keeps running after its last viewer left (a reload must not restart
    /// Chrome's encoder).
    pub linger: Duration,
    /// Viewers one channel accepts.
    pub max_viewers_per_agent: usize,
    /// Channels (agent or agent:thread keys) the registry holds.
    pub max_agents: usize,
    /// Viewers across all channels.
    pub max_viewers_total: usize,
    /// Largest client message accepted (bytes); larger closes with 1009.
    pub max_message_bytes: usize,
    /// Interval of server pings.
    pub heartbeat_interval: Duration,
    /// A viewer silent for this long (no data, no pong) is closed with 1001.
    pub heartbeat_timeout: Duration,
    /// Reliable messages (status, url, errors…) queued per viewer before it is closed 4001.
    pub max_queued_messages: usize,
    /// Inputs waiting to be relayed per channel; more are dropped and counted.
    pub max_pending_inputs: usize,
    /// Client messages per second a viewer may send (token bucket, one second of burst).
    pub max_inputs_per_second: u32,
    /// Input from a viewer allowed to control takes control when nobody holds it.
    pub implicit_control: bool,
    /// Target bitrate of video, bits per second.
    pub video_bitrate: u32,
    /// Longest time between two keyframes of a changing page.
    pub video_keyframe_interval: Duration,
    /// Quiet time before a refinement (zero: none).
    pub refine_after: Duration,
    /// JPEG quality of refinement screenshots (0: none).
    pub refine_jpeg_quality: u32,
    /// Viewers may ask for video.
    pub video: bool,
    /// View-only viewers may `reply` too.
    pub view_only_replies: bool,
    /// `metrics()` has per-channel series too.
    pub metrics_per_agent: bool,
    /// The host takes viewers' replies (the deployer gave `onViewerReply`).
    pub viewer_replies: bool,
    /// Control released after this long without the controller's input (zero: never).
    pub control_idle: Duration,
    /// Control kept for a controller whose connection dropped, for it to reclaim (zero: none).
    pub control_grace: Duration,
    /// Limits of the agent event channel.
    pub events: EventLimits,
}
