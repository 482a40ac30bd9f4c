//! Control across instances. A viewer of a relayed channel whom its own instance allows
//! control (`authorizeControl` there) asks the owner: its control requests, releases, inputs
//! and its leaving travel in order as [`RemoteCommand`]s on the channel's control subject. The
//! owner decides under its own lock, with the rules of its local viewers, so two instances can
//! never both hand out control; it relays the inputs to its page, answers what needs an answer
//! on the asking instance's inbox, and says who holds control ([`ControlState`]) on the
//! channel's stream after every change, which each subscriber maps to ids of its own.
//!
//! Owns: the one ordered queue of what this instance publishes for control (commands, states),
//! its inbox, the owner each followed channel answers to, the owner's ids for viewers of other
//! instances and a subscriber's ids for viewers it does not have. Must not decide control: the
//! registry does, at the owner.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;

use async_nats::{Client, HeaderMap, Message};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};

use super::wire::{
    ChannelSubjects, ControlState, RemoteAnswer, RemoteCommand, RemoteOp, RemoteOutcome,
    ViewerName, KIND_CONTROL, KIND_HEADER,
};
use super::Relay;
use crate::host::LogLevel;
use crate::protocol::{self, ExtendedMessage};
use crate::registry::{lock, ControlRefusal, RemoteAsk, RemoteVerdict};

/// Commands waiting to be published; beyond, a command is refused (`rate_limited`) rather
/// than queued without bound.
const OUTGOING_CAPACITY: usize = 256;
/// Names of viewers of other instances one channel keeps an id for, at the owner or a
/// subscriber; past it the oldest are forgotten (a forged flood cannot grow them).
const MAX_NAMES_PER_CHANNEL: usize = 1024;

/// `leave`s that could not go (the bus away, the queue full, no owner followed) kept to send
/// once the owner answers again; past it the oldest are dropped (the owner gives control back
/// when the lease runs out anyway).
const MAX_LOST_LEAVES: usize = 1024;

/// One command for the bus (answered on this instance's inbox).
struct Outgoing {
    subject: String,
    payload: Bytes,
}

/// Ids for the names of viewers of other instances, per channel key.
#[derive(Default)]
struct Names {
    by_name: HashMap<String, HashMap<ViewerName, u32>>,
    by_id: HashMap<u32, (String, ViewerName)>,
}

impl Names {
    /// The id of `name` in `key`, given one (`reserve`) when it has none. Past the cap the
    /// oldest other name is forgotten, never `keep` (the controller: forgetting it would
    /// leave control with an id nobody can speak for).
    fn id_for(
        &mut self,
        key: &str,
        name: &ViewerName,
        keep: Option<u32>,
        reserve: impl FnOnce() -> u32,
    ) -> u32 {
        let names = self.by_name.entry(key.to_string()).or_default();
        if let Some(id) = names.get(name) {
            return *id;
        }
        if names.len() >= MAX_NAMES_PER_CHANNEL {
            // The oldest name goes (ids rise): one, so the others keep theirs.
            let oldest = names
                .iter()
                .filter(|(_, id)| Some(**id) != keep)
                .min_by_key(|(_, id)| **id)
                .map(|(n, id)| (n.clone(), *id));
            if let Some((name, id)) = oldest {
                names.remove(&name);
                self.by_id.remove(&id);
            }
        }
        let id = reserve();
        self.by_name
            .entry(key.to_string())
            .or_default()
            .insert(name.clone(), id);
        self.by_id.insert(id, (key.to_string(), name.clone()));
        id
    }

    fn id_of(&self, key: &str, name: &ViewerName) -> Option<u32> {
        self.by_name.get(key)?.get(name).copied()
    }

    fn name_of(&self, id: u32) -> Option<&ViewerName> {
        self.by_id.get(&id).map(|(_, name)| name)
    }

    fn forget_one(&mut self, key: &str, name: &ViewerName) {
        let Some(names) = self.by_name.get_mut(key) else {
            return;
        };
        if let Some(id) = names.remove(name) {
            self.by_id.remove(&id);
        }
        if names.is_empty() {
            self.by_name.remove(key);
        }
    }

    /// Forgets the names of `key` (of `instance` only, when given); their ids.
    fn forget(&mut self, key: &str, instance: Option<&str>) -> Vec<u32> {
        let Some(names) = self.by_name.get_mut(key) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        names.retain(|name, id| {
            let keep = instance.is_some_and(|instance| name.instance != instance);
            if !keep {
                ids.push(*id);
            }
            keep
        });
        if names.is_empty() {
            self.by_name.remove(key);
        }
        for id in &ids {
            self.by_id.remove(id);
        }
        ids
    }
}

/// The relay's control state.
pub(super) struct RemoteControl {
    outgoing: mpsc::Sender<Outgoing>,
    queued: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Stream subject → the newest [`ControlState`] not published yet: only the latest of a
    /// channel matters, so a burst of changes never fills a queue and loses the last one.
    states: Mutex<HashMap<String, Bytes>>,
    states_waiting: Notify,
    /// Channel key → the owner this instance follows for it.
    following: Mutex<HashMap<String, String>>,
    /// At the owner: this instance's ids for the remote viewers that asked.
    remotes: Mutex<Names>,
    /// At a subscriber: this instance's ids for controllers connected elsewhere.
    aliases: Mutex<Names>,
    /// (key, viewer) of `leave`s not sent yet, oldest first, each once: a controller that
    /// left during a short outage would otherwise hold control at the owner until something
    /// else changed it.
    lost_leaves: Mutex<VecDeque<(String, u32)>>,
}

impl Default for RemoteControl {
    fn default() -> RemoteControl {
        let (outgoing, queued) = mpsc::channel(OUTGOING_CAPACITY);
        RemoteControl {
            outgoing,
            queued: Mutex::new(Some(queued)),
            states: Mutex::default(),
            states_waiting: Notify::new(),
            following: Mutex::default(),
            remotes: Mutex::default(),
            aliases: Mutex::default(),
            lost_leaves: Mutex::default(),
        }
    }
}

impl Relay {
    /// Sends what viewer `viewer` of this instance asks of relayed channel `key` to its owner;
    /// why not when it cannot go now (no owner followed or the bus away: `Unreachable`; the
    /// queue full: `QueueFull`).
    pub fn forward(
        &self,
        key: &str,
        viewer: u32,
        ask: &RemoteAsk,
        compat: bool,
    ) -> Result<(), ControlRefusal> {
        let kept = |refusal: ControlRefusal| {
            if *ask == RemoteAsk::Leave {
                let mut lost = lock(&self.control.lost_leaves);
                let entry = (key.to_string(), viewer);
                if !lost.contains(&entry) {
                    if lost.len() >= MAX_LOST_LEAVES {
                        lost.pop_front();
                    }
                    lost.push_back(entry);
                }
            }
            refusal
        };
        let Some(owner) = lock(&self.control.following).get(key).cloned() else {
            // Between owners (or before the first answers): the next one hears it.
            return Err(kept(ControlRefusal::Unreachable));
        };
        if !self.connected.load(std::sync::atomic::Ordering::Relaxed) {
            // Commands queued in the client would reach the page late, after the outage.
            return Err(kept(ControlRefusal::Unreachable));
        }
        let (op, input) = match ask {
            RemoteAsk::Request => (RemoteOp::Request, None),
            RemoteAsk::Release => (RemoteOp::Release, None),
            RemoteAsk::Leave => (RemoteOp::Leave, None),
            RemoteAsk::Input(input) => (
                RemoteOp::Input,
                Some(protocol::relayed_input_message(input)),
            ),
        };
        let command = RemoteCommand {
            key: key.to_string(),
            owner,
            from: ViewerName {
                instance: self.instance.clone(),
                viewer,
            },
            op,
            compat,
            input,
        };
        let Ok(payload) = serde_json::to_vec(&command) else {
            return Err(ControlRefusal::Unreachable);
        };
        let subject = ChannelSubjects::new(&self.config.subject_prefix, key).control;
        self.control
            .outgoing
            .try_send(Outgoing {
                subject,
                payload: payload.into(),
            })
            .map_err(|_| kept(ControlRefusal::QueueFull))
    }

    /// Sends the `leave`s of `key` that could not go before: called when its owner has just
    /// answered (it follows it, or renewed the lease), so the owner is there to hear them. One
    /// that cannot go again is kept again (`forward`).
    pub(super) fn resend_lost_leaves(&self, key: &str) {
        let lost: Vec<u32> = {
            let mut lost = lock(&self.control.lost_leaves);
            let mut of_key = Vec::new();
            lost.retain(|(lost_key, viewer)| {
                let matches = lost_key == key;
                if matches {
                    of_key.push(*viewer);
                }
                !matches
            });
            of_key
        };
        for viewer in lost {
            let _ = self.forward(key, viewer, &RemoteAsk::Leave, false);
        }
    }

    /// Forgets the lost `leave`s of `key`: its session here is over, and the owner gives the
    /// control of this instance's viewers back when the lease it renewed runs out.
    pub(super) fn forget_lost_leaves(&self, key: &str) {
        lock(&self.control.lost_leaves).retain(|(lost_key, _)| lost_key != key);
    }

    /// Tells the subscribers of `key` (if this instance streams it) who holds control now
    /// (`controller` an id of this instance). Called under the channel's state lock, so the
    /// newest state waiting is the newest change.
    pub fn controller_changed(&self, key: &str, controller: Option<u32>) {
        if !lock(&self.owned.held).contains_key(key) {
            return;
        }
        self.publish_control_state(key, controller);
    }

    /// Queues `key`'s [`ControlState`] on its stream, replacing one not published yet. Called
    /// under the channel's state lock (see `controller_changed`).
    fn publish_control_state(&self, key: &str, controller: Option<u32>) {
        let controller = controller.map(|id| {
            lock(&self.control.remotes)
                .name_of(id)
                .cloned()
                .unwrap_or_else(|| ViewerName {
                    instance: self.instance.clone(),
                    viewer: id,
                })
        });
        let Ok(payload) = serde_json::to_vec(&ControlState { controller }) else {
            return;
        };
        let subject = ChannelSubjects::new(&self.config.subject_prefix, key).stream;
        lock(&self.control.states).insert(subject, payload.into());
        self.control.states_waiting.notify_one();
    }

    /// The owner this instance follows for `key`, if any now.
    pub(super) fn followed_owner(&self, key: &str) -> Option<String> {
        lock(&self.control.following).get(key).cloned()
    }

    /// This instance follows `owner` for `key` (`None`: no longer); its ids for viewers
    /// elsewhere are forgotten when it stops.
    pub(super) fn follow_owner(&self, key: &str, owner: Option<&str>) {
        let mut following = lock(&self.control.following);
        match owner {
            Some(owner) => {
                following.insert(key.to_string(), owner.to_string());
            }
            None => {
                following.remove(key);
                lock(&self.control.aliases).forget(key, None);
            }
        }
    }

    /// This instance's id for `state`'s controller of `key`: its own viewer, or an id it
    /// gives a viewer of another instance.
    pub(super) fn local_controller(&self, key: &str, state: &ControlState) -> Option<u32> {
        let name = state.controller.as_ref()?;
        if name.instance == self.instance {
            return Some(name.viewer);
        }
        let registry = self.registry()?;
        // Read before the alias lock: the registry takes its channel lock (which is held
        // while names are read, as in `publish_control_state`).
        let controller = registry.controller(key);
        Some(
            lock(&self.control.aliases)
                .id_for(key, name, controller, || registry.reserve_viewer_id()),
        )
    }

    /// Gives back control held by viewers of `instance` (every other instance when `None`)
    /// on `key`: their instance stopped renewing its lease.
    pub(super) fn forget_remotes(&self, key: &str, instance: Option<&str>) {
        let ids = lock(&self.control.remotes).forget(key, instance);
        let Some(registry) = self.registry() else {
            return;
        };
        for id in ids {
            registry.remote_control(key, id, RemoteAsk::Leave, false);
        }
    }
}

/// Publishes the control queue in order and reads the owner's answers on this instance's
/// inbox, for as long as the client lives.
pub(super) async fn publish(relay: Arc<Relay>, client: Client) {
    let Some(mut queued) = lock(&relay.control.queued).take() else {
        return;
    };
    let inbox = client.new_inbox();
    let answers = match client.subscribe(inbox.clone()).await {
        Ok(answers) => answers,
        Err(error) => {
            relay.log(
                LogLevel::Warn,
                format!("relay: cannot listen for control answers: {error}"),
            );
            return;
        }
    };
    let answering = relay.clone();
    let reader = relay
        .runtime
        .spawn(async move { read_answers(answering, answers).await });
    loop {
        let sent = tokio::select! {
            outgoing = queued.recv() => {
                let Some(outgoing) = outgoing else { break };
                client
                    .publish_with_reply(outgoing.subject, inbox.clone(), outgoing.payload)
                    .await
            }
            () = relay.control.states_waiting.notified() => {
                publish_states(&relay, &client).await
            }
        };
        if sent.is_err() {
            // The client is closing.
            break;
        }
    }
    reader.abort();
}

/// Publishes the newest control state of every channel that has one waiting.
async fn publish_states(relay: &Relay, client: &Client) -> Result<(), async_nats::PublishError> {
    let states = std::mem::take(&mut *lock(&relay.control.states));
    for (subject, payload) in states {
        let mut headers = HeaderMap::new();
        headers.insert(KIND_HEADER, KIND_CONTROL);
        client
            .publish_with_headers(subject, headers, payload)
            .await?;
    }
    Ok(())
}

async fn read_answers(relay: Arc<Relay>, mut answers: async_nats::Subscriber) {
    while let Some(message) = answers.next().await {
        let Ok(answer) = serde_json::from_slice::<RemoteAnswer>(&message.payload) else {
            continue;
        };
        let Some(registry) = relay.registry() else {
            return;
        };
        // Only for a channel this instance still follows.
        if !lock(&relay.control.following).contains_key(&answer.key) {
            continue;
        }
        let verdict = match answer.outcome {
            RemoteOutcome::Held => RemoteVerdict::Held,
            RemoteOutcome::Refused { reason } => RemoteVerdict::Refused(reason),
            RemoteOutcome::Busy { holder }
                if holder.instance == relay.instance
                    && registry.viewer_link(holder.viewer).is_none() =>
            {
                // The owner says a viewer of this instance that is gone holds control (its
                // `leave` was lost): send it, then ask again for the asker if it is still
                // here, in that order.
                let _ = relay.forward(&answer.key, holder.viewer, &RemoteAsk::Leave, false);
                if registry.viewer_link(answer.viewer).is_none() {
                    continue;
                }
                match relay.forward(&answer.key, answer.viewer, &RemoteAsk::Request, false) {
                    Ok(()) => continue,
                    Err(refusal) => RemoteVerdict::Refused(refusal),
                }
            }
            RemoteOutcome::Busy { holder } => {
                let state = ControlState {
                    controller: Some(holder),
                };
                match relay.local_controller(&answer.key, &state) {
                    Some(holder) => RemoteVerdict::Busy(holder),
                    None => continue,
                }
            }
        };
        registry.answer_remote(answer.viewer, verdict);
    }
}

/// At the owner: applies the commands of other instances' viewers, one at a time in the
/// order they arrive, for as long as the subscription lives.
pub(super) async fn serve_commands(
    relay: Arc<Relay>,
    client: Client,
    mut commands: async_nats::Subscriber,
) {
    while let Some(message) = commands.next().await {
        let Some((command, reply)) = read_command(&relay, &message) else {
            continue;
        };
        let Some(verdict) = apply(&relay, &command) else {
            continue;
        };
        let outcome = match verdict {
            RemoteVerdict::Held => RemoteOutcome::Held,
            RemoteVerdict::Refused(reason) => RemoteOutcome::Refused { reason },
            RemoteVerdict::Busy(holder) => {
                let name = lock(&relay.control.remotes).name_of(holder).cloned();
                RemoteOutcome::Busy {
                    holder: name.unwrap_or_else(|| ViewerName {
                        instance: relay.instance.clone(),
                        viewer: holder,
                    }),
                }
            }
        };
        let answer = RemoteAnswer {
            key: command.key,
            viewer: command.from.viewer,
            outcome,
        };
        if let Ok(json) = serde_json::to_vec(&answer) {
            let _ = client.publish(reply, json.into()).await;
        }
    }
}

/// A well-formed command for this owner, from another instance, on its channel's subject.
fn read_command(relay: &Relay, message: &Message) -> Option<(RemoteCommand, async_nats::Subject)> {
    let reply = message.reply.clone()?;
    let command: RemoteCommand = serde_json::from_slice(&message.payload).ok()?;
    let subject = ChannelSubjects::new(&relay.config.subject_prefix, &command.key).control;
    if subject != message.subject.as_str()
        || command.owner != relay.instance
        || command.from.instance == relay.instance
    {
        return None;
    }
    Some((command, reply))
}

/// Applies one command; what to answer, if anything.
fn apply(relay: &Relay, command: &RemoteCommand) -> Option<RemoteVerdict> {
    let unreachable = Some(RemoteVerdict::Refused(ControlRefusal::Unreachable));
    // Only an instance that holds a lease on the channel (it streams it from here) asks.
    let leased = lock(&relay.owned.held)
        .get(&command.key)
        .is_some_and(|held| held.leases.contains_key(&command.from.instance));
    let registry = relay.registry()?;
    if command.op == RemoteOp::Leave {
        let id = lock(&relay.control.remotes).id_of(&command.key, &command.from);
        if let Some(id) = id {
            registry.remote_control(&command.key, id, RemoteAsk::Leave, false);
            lock(&relay.control.remotes).forget_one(&command.key, &command.from);
        }
        return None;
    }
    if !leased {
        return unreachable;
    }
    let ask = match command.op {
        RemoteOp::Request => RemoteAsk::Request,
        RemoteOp::Release => RemoteAsk::Release,
        RemoteOp::Leave => RemoteAsk::Leave,
        RemoteOp::Input => {
            let input = command
                .input
                .as_deref()
                .map(protocol::parse_extended_message);
            match input {
                Some(Ok(ExtendedMessage::Input { input, .. })) => RemoteAsk::Input(input),
                _ => return unreachable,
            }
        }
    };
    // Read before the names lock, as in `local_controller`.
    let controller = registry.controller(&command.key);
    let id = lock(&relay.control.remotes).id_for(&command.key, &command.from, controller, || {
        registry.reserve_viewer_id()
    });
    registry.remote_control(&command.key, id, ask, command.compat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(instance: &str, viewer: u32) -> ViewerName {
        ViewerName {
            instance: instance.into(),
            viewer,
        }
    }

    #[test]
    fn names_get_one_id_each_and_are_forgotten_by_instance() {
        let mut names = Names::default();
        let mut next = 100;
        let mut reserve = || {
            next += 1;
            next
        };
        let a1 = names.id_for("k", &name("a", 1), None, &mut reserve);
        assert_eq!(names.id_for("k", &name("a", 1), None, &mut reserve), a1);
        let a2 = names.id_for("k", &name("a", 2), None, &mut reserve);
        let b1 = names.id_for("k", &name("b", 1), None, &mut reserve);
        let other = names.id_for("other", &name("a", 1), None, &mut reserve);
        assert!(a1 != a2 && a2 != b1 && b1 != other);
        assert_eq!(names.name_of(b1), Some(&name("b", 1)));
        let mut gone = names.forget("k", Some("a"));
        gone.sort_unstable();
        assert_eq!(gone, vec![a1, a2]);
        assert_eq!(names.id_of("k", &name("a", 1)), None);
        assert_eq!(names.name_of(a1), None);
        assert_eq!(names.id_of("k", &name("b", 1)), Some(b1));
        assert_eq!(names.id_of("other", &name("a", 1)), Some(other));
        names.forget_one("other", &name("a", 1));
        assert_eq!(names.name_of(other), None);
        assert_eq!(names.forget("k", None), vec![b1]);
        assert!(names.by_name.is_empty(), "{:?}", names.by_name);
        assert!(names.by_id.is_empty(), "{:?}", names.by_id);
    }

    #[test]
    fn names_of_one_channel_are_bounded() {
        let mut names = Names::default();
        let mut next = 0;
        // The first name holds control: it is never the one forgotten.
        let controller = Some(1);
        for viewer in 0..(MAX_NAMES_PER_CHANNEL as u32 + 10) {
            names.id_for("k", &name("flood", viewer), controller, || {
                next += 1;
                next
            });
        }
        assert_eq!(names.by_name["k"].len(), MAX_NAMES_PER_CHANNEL);
        assert_eq!(names.by_id.len(), names.by_name["k"].len());
        // Only the oldest after the controller went: the newest keep their ids.
        assert_eq!(names.id_of("k", &name("flood", 0)), Some(1));
        assert_eq!(names.name_of(1), Some(&name("flood", 0)));
        assert_eq!(names.id_of("k", &name("flood", 1)), None);
        assert_eq!(names.id_of("k", &name("flood", 10)), None);
        assert_eq!(names.id_of("k", &name("flood", 11)), Some(12));
        let last = MAX_NAMES_PER_CHANNEL as u32 + 9;
        assert_eq!(names.id_of("k", &name("flood", last)), Some(last + 1));
    }
}
