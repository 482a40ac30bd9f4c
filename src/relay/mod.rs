//! Scale-out over NATS: a viewer on any instance watches an agent whose browser lives on
//! another. The instance that has the browser (its owner) streams the channel once on the
//! bus, as one more viewer of its own; every other instance with viewers of that channel
//! subscribes once and fans out locally through its own registry, as from any source.
//!
//! Owns: the bus connection of one registry (connect, reconnect, credentials, TLS, its events
//! in the log), the instance's id on the bus, and the probes it sends its host ("do you have
//! this browser?"). Its rooms: [`config`] (settings and checks), [`wire`] (subjects and
//! messages), [`owner`] (answering for the channels this instance has the browser of, and
//! streaming them), [`subscriber`] (the relay source of a channel whose browser is elsewhere),
//! [`video`] (the owner's H.264 chunks fanned out by every subscriber, encoded once).
//! Must not touch sockets or channel state: it admits a viewer and pushes like a source.

pub(crate) mod config;
mod control;
mod owner;
pub(crate) mod ring;
mod subscriber;
mod video;
pub(crate) mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

use crate::host::{LogLevel, ProbeRequest};
use crate::logging::log;
use crate::registry::{lock, ChannelId, Registry};
use config::{RelayAuth, RelayConfig};

/// Messages a subscription holds before the client drops the newest (and counts a slow
/// consumer): frames are latest-wins, so a subscriber that falls behind loses frames instead
/// of buffering them.
const SUBSCRIPTION_CAPACITY: usize = 64;
/// Commands (publishes, requests) the client holds while the bus is slow or away; a
/// publisher waits beyond that, so an owner's relay viewer skips to the newest frame.
const CLIENT_CAPACITY: usize = 128;

/// Counters of one registry's relay, for `stats().relay`.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Owner questions this instance answered (it had the browser).
    pub questions_answered: AtomicU64,
    /// Channels this instance started streaming to the bus.
    pub streams_started: AtomicU64,
    /// Messages a relay source received from an owner's stream.
    pub messages_received: AtomicU64,
    /// Frames a relay source pushed into its channel.
    pub frames_relayed: AtomicU64,
    /// Times an owner stopped answering a relay source's leases.
    pub owners_lost: AtomicU64,
    /// Slow-consumer reports of the client: a subscription fell behind and messages were
    /// dropped (frames on purpose; latest-wins).
    pub slow_consumer_drops: AtomicU64,
    /// Frames the owner did not publish: the bus was away, or over its `max_payload`.
    pub frames_dropped: AtomicU64,
    /// Probes answered "no" without asking the host (too many in flight).
    pub probes_refused: AtomicU64,
    /// Video chunks of an owner fed to this instance's video viewers.
    pub chunks_relayed: AtomicU64,
    /// Channels whose video this instance started publishing to the bus.
    pub video_streams_started: AtomicU64,
}

/// A snapshot of a relay's state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayFigures {
    pub instance: String,
    pub connected: bool,
    /// Channels streamed to the bus now.
    pub streaming: usize,
    pub questions_answered: u64,
    pub streams_started: u64,
    pub messages_received: u64,
    pub frames_relayed: u64,
    pub owners_lost: u64,
    pub slow_consumer_drops: u64,
    pub frames_dropped: u64,
    pub probes_refused: u64,
    /// Channels whose video is published to the bus now.
    pub video_streaming: usize,
    pub chunks_relayed: u64,
}

/// Probes of the host in flight at once; beyond, a question is answered "no" (a flood of
/// questions from the bus must not become a flood of `getToolset` calls).
const MAX_PROBES_IN_FLIGHT: usize = 32;

/// Where the bus client is.
#[derive(Clone)]
enum ClientState {
    /// Being set up (a `.creds` file read, the options built).
    Pending,
    /// Created: it connects and reconnects by itself.
    Ready(async_nats::Client),
    /// Could not be set up (the log says why): the relay never connects.
    Failed,
    /// The registry closed.
    Closed,
}

/// A registry's link to the bus.
pub struct Relay {
    config: RelayConfig,
    /// This instance's id on the bus.
    instance: String,
    runtime: Handle,
    registry: OnceLock<Weak<Registry>>,
    client: watch::Sender<ClientState>,
    connected: AtomicBool,
    probes: Mutex<HashMap<u32, oneshot::Sender<bool>>>,
    next_probe: AtomicU32,
    owned: owner::Owned,
    control: control::RemoteControl,
    video: video::RelayVideo,
    pub counters: RelayCounters,
}

impl Relay {
    pub fn new(config: RelayConfig, runtime: Handle) -> Arc<Relay> {
        Arc::new(Relay {
            config,
            instance: nuid::next().to_string(),
            runtime,
            registry: OnceLock::new(),
            client: watch::Sender::new(ClientState::Pending),
            connected: AtomicBool::new(false),
            probes: Mutex::new(HashMap::new()),
            next_probe: AtomicU32::new(1),
            owned: owner::Owned::default(),
            control: control::RemoteControl::default(),
            video: video::RelayVideo::default(),
            counters: RelayCounters::default(),
        })
    }

    /// Connects in the background and starts answering for this instance's channels.
    pub fn start(self: &Arc<Self>, registry: Weak<Registry>) {
        let _ = self.registry.set(registry);
        let relay = self.clone();
        self.runtime.spawn(async move {
            match relay.connect().await {
                Ok(client) => {
                    let closed = relay.client.send_if_modified(|state| {
                        if matches!(state, ClientState::Closed) {
                            return false;
                        }
                        *state = ClientState::Ready(client.clone());
                        true
                    });
                    if !closed {
                        // The registry closed while the client was being set up.
                        let _ = client.drain().await;
                        return;
                    }
                    owner::serve(relay, client).await;
                }
                Err(error) => {
                    relay.client.send_replace(ClientState::Failed);
                    relay.log(
                        LogLevel::Warn,
                        format!("relay: the NATS connection could not be set up: {error}"),
                    );
                }
            }
        });
    }

    /// The relay's state and counters now.
    pub fn figures(&self) -> RelayFigures {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        RelayFigures {
            instance: self.instance.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            streaming: self.owned.streaming(),
            questions_answered: count(&counters.questions_answered),
            streams_started: count(&counters.streams_started),
            messages_received: count(&counters.messages_received),
            frames_relayed: count(&counters.frames_relayed),
            owners_lost: count(&counters.owners_lost),
            slow_consumer_drops: count(&counters.slow_consumer_drops),
            frames_dropped: count(&counters.frames_dropped),
            probes_refused: count(&counters.probes_refused),
            video_streaming: video::video_streaming(self),
            chunks_relayed: count(&counters.chunks_relayed),
        }
    }

    fn registry(&self) -> Option<Arc<Registry>> {
        self.registry.get()?.upgrade()
    }

    fn log(&self, level: LogLevel, line: String) {
        if let Some(registry) = self.registry() {
            match level {
                LogLevel::Info => log!(registry, info, "{line}"),
                LogLevel::Warn => log!(registry, warn, "{line}"),
                LogLevel::Error => log!(registry, error, "{line}"),
            }
        }
    }

    /// The client, waiting while it is being set up; `None` when it never will be.
    async fn client(&self) -> Option<async_nats::Client> {
        let mut client = self.client.subscribe();
        let state = client
            .wait_for(|state| !matches!(state, ClientState::Pending))
            .await
            .ok()?
            .clone();
        match state {
            ClientState::Ready(client) => Some(client),
            _ => None,
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<async_nats::Client, String> {
        let config = &self.config;
        let mut options = match &config.auth {
            RelayAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| format!("relay.nats.credsFile cannot be read: {e}"))?,
            _ => async_nats::ConnectOptions::new(),
        };
        options = match &config.auth {
            RelayAuth::Token(token) => options.token(token.clone()),
            RelayAuth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
            RelayAuth::NKey(seed) => options.nkey(seed.clone()),
            RelayAuth::None | RelayAuth::CredsFile(_) => options,
        };
        if config.tls.required {
            options = options.require_tls(true);
        }
        if let Some(ca) = &config.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &config.tls.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(name) = &config.name {
            options = options.name(name);
        }
        let events = Arc::downgrade(self);
        options = options
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * attempts as u64).min(2_000))
            })
            .connection_timeout(Duration::from_secs(5))
            .ping_interval(Duration::from_secs(5))
            .request_timeout(Some(config.owner_timeout))
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .client_capacity(CLIENT_CAPACITY)
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    if let Some(relay) = events.upgrade() {
                        relay.on_event(event);
                    }
                }
            });
        options
            .connect(config.servers.clone())
            .await
            .map_err(|e| e.to_string())
    }

    fn on_event(&self, event: async_nats::Event) {
        match event {
            async_nats::Event::Connected => {
                self.connected.store(true, Ordering::Relaxed);
                self.log(LogLevel::Info, "relay: connected to NATS".into());
            }
            async_nats::Event::Disconnected => {
                self.connected.store(false, Ordering::Relaxed);
                self.log(
                    LogLevel::Warn,
                    "relay: disconnected from NATS; reconnecting".into(),
                );
            }
            async_nats::Event::SlowConsumer(_) => {
                // Expected under load (frames are dropped on purpose): counted, not logged.
                self.counters
                    .slow_consumer_drops
                    .fetch_add(1, Ordering::Relaxed);
            }
            async_nats::Event::ServerError(error) => {
                self.log(LogLevel::Warn, format!("relay: NATS server error: {error}"));
            }
            async_nats::Event::ClientError(error) => {
                self.log(LogLevel::Warn, format!("relay: NATS client error: {error}"));
            }
            async_nats::Event::LameDuckMode
            | async_nats::Event::Draining
            | async_nats::Event::Closed => {}
        }
    }

    /// Asks the host whether this instance has the browser of `id`; no answer within the
    /// owner timeout is a no.
    async fn probe(&self, id: &ChannelId) -> bool {
        let Some(registry) = self.registry() else {
            return false;
        };
        let probe_id = self.next_probe.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut probes = lock(&self.probes);
            if probes.len() >= MAX_PROBES_IN_FLIGHT {
                self.counters.probes_refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            probes.insert(probe_id, answer);
        }
        registry.host().probe_source(ProbeRequest {
            probe_id,
            key: id.key.clone(),
            agent_id: id.agent_id.clone(),
            thread_id: id.thread_id.clone(),
        });
        let owns = tokio::time::timeout(self.config.owner_timeout, answered).await;
        lock(&self.probes).remove(&probe_id);
        matches!(owns, Ok(Ok(true)))
    }

    /// The host's answer to probe `probe_id`; false when that probe is no longer waiting.
    pub fn answer_probe(&self, probe_id: u32, owns: bool) -> bool {
        match lock(&self.probes).remove(&probe_id) {
            Some(answer) => answer.send(owns).is_ok(),
            None => false,
        }
    }

    /// Leaves the bus (the registry is closing): the client drains, so the listening tasks
    /// end and the owner's subscribers find their leases unanswered.
    pub fn close(&self) {
        if let ClientState::Ready(client) = self.client.send_replace(ClientState::Closed) {
            self.runtime.spawn(async move {
                let _ = client.drain().await;
            });
        }
        // Waiting probes answer no now rather than at their timeout.
        lock(&self.probes).clear();
    }

    /// Starts the relay source of session `generation` of `id`: this instance has no browser
    /// for it, so the owner's stream is looked for on the bus and fanned out here.
    pub fn start_source(self: &Arc<Self>, id: ChannelId, generation: u32) {
        let relay = self.clone();
        self.runtime
            .spawn(async move { subscriber::follow(relay, id, generation).await });
    }
}
