//! A registry's tunables: `RegistryConfig`, its defaults, and the option table through which
//! the JS side names, validates and documents them (the one owner of every option's name,
//! default and range).
//! Must not act on the options: each is enforced where it applies.

use std::time::Duration;

use super::event_log::EventLimits;

/// Tunables of a registry; every limit is enforced, none grows memory without bound.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
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
    /// Limits of the agent event channel.
    pub events: EventLimits,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            linger: Duration::from_secs(3),
            max_viewers_per_agent: 100,
            max_agents: 1000,
            max_viewers_total: 10_000,
            max_message_bytes: 64 * 1024,
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(45),
            max_queued_messages: 256,
            max_pending_inputs: 256,
            max_inputs_per_second: 200,
            implicit_control: false,
            events: EventLimits::default(),
        }
    }
}
