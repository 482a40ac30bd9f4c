//! How long control lasts: a controller's tenure (its last input, the reclaim token of a grace
//! period, when its connection dropped), the per-channel watchdog that ends a tenure on
//! `controlIdleMs` or at the end of `controlGraceMs`, and the deployer's `releaseControl`.
//! Must not decide who may take control (that is `control`) nor touch sockets.

use std::sync::{Arc, Weak};

use tokio::sync::Notify;
// Tokio's clock (not std's), so that tests can run the timeouts on a paused clock.
use tokio::time::Instant;

use super::{lock, Channel, Registry};

/// Why the server (or the deployer) ended a control: the `reason` of the `control` message.
pub(crate) mod reason {
    /// No input from the controller for `controlIdleMs`.
    pub const IDLE: &str = "idle";
    /// The controller's connection dropped and it did not come back within `controlGraceMs`.
    pub const CONTROLLER_LEFT: &str = "controller_left";
}

/// Longest reason the deployer may give `releaseControl` or `setPrivacy` (bytes).
pub const MAX_REASON_BYTES: usize = 200;

/// A reason given by the deployer, checked: it reaches every viewer as it is.
pub fn check_reason(reason: &str) -> Result<(), String> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(format!("reason is longer than {MAX_REASON_BYTES} bytes"));
    }
    if reason.chars().any(char::is_control) {
        return Err("reason must not contain control characters".into());
    }
    Ok(())
}

/// The current controller's tenure (reset whenever control changes hands).
#[derive(Debug)]
pub(super) struct Tenure {
    /// The controller's last input (or when it took control).
    pub(super) last_input: Instant,
    /// The token the controller may take control back with after its connection dropped
    /// (only with a grace period, and only for a viewer of this instance).
    pub(super) reclaim: Option<String>,
    /// When the controller's connection dropped: control is kept for it until the grace ends.
    pub(super) left_at: Option<Instant>,
}

impl Tenure {
    pub(super) fn new(now: Instant) -> Tenure {
        Tenure {
            last_input: now,
            reclaim: None,
            left_at: None,
        }
    }
}

/// Whether `offered` is the tenure's reclaim token, compared in constant time.
pub(super) fn reclaim_matches(tenure: &Tenure, offered: Option<&str>) -> bool {
    let (Some(token), Some(offered)) = (tenure.reclaim.as_deref(), offered) else {
        return false;
    };
    token.len() == offered.len()
        && token
            .bytes()
            .zip(offered.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// 128 random bits as hex: a reclaim token, which only its holder is sent.
pub(super) fn new_reclaim_token() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Registry {
    /// When the current tenure of `channel` ends by itself, if it does: the end of the grace
    /// of a controller that left, else its idle deadline. A relayed channel's owner decides.
    fn control_deadline(&self, channel: &Channel) -> Option<Instant> {
        let state = lock(&channel.state);
        if state.controller.is_none() || Channel::is_relayed(&state) {
            return None;
        }
        match state.tenure.left_at {
            Some(left) => Some(left + self.config.control_grace),
            None if !self.config.control_idle.is_zero() => {
                Some(state.tenure.last_input + self.config.control_idle)
            }
            None => None,
        }
    }

    /// Ends the tenure of `channel` if its deadline passed by `now`.
    fn expire_control(&self, channel: &Channel, now: Instant) {
        let mut state = lock(&channel.state);
        if state.controller.is_none() || Channel::is_relayed(&state) {
            return;
        }
        let expired = match state.tenure.left_at {
            Some(left) => {
                (now >= left + self.config.control_grace).then_some(reason::CONTROLLER_LEFT)
            }
            None if !self.config.control_idle.is_zero() => {
                (now >= state.tenure.last_input + self.config.control_idle).then_some(reason::IDLE)
            }
            None => None,
        };
        if let Some(why) = expired {
            self.change_controller(channel, &mut state, None, Some(why));
        }
    }

    /// The deployer takes control back (`releaseControl`): whoever holds control of `key`
    /// loses it (a controller in its grace period too), every viewer told `reason`. False
    /// when nobody held it, or no such channel, or its browser is on another instance (the
    /// lock is that instance's: call it there).
    pub fn release_control(&self, key: &str, why: &str) -> bool {
        let Some(channel) = self.channel(key) else {
            return false;
        };
        let mut state = lock(&channel.state);
        if state.controller.is_none() || Channel::is_relayed(&state) {
            return false;
        }
        self.change_controller(&channel, &mut state, None, Some(why));
        true
    }
}

/// The watchdog of one channel's control tenure: sleeps until the tenure's deadline, woken
/// early by every change of control (`Channel::control_wake`). Ends with the channel.
pub(super) async fn watch_control(
    registry: Weak<Registry>,
    channel: Weak<Channel>,
    wake: Arc<Notify>,
) {
    loop {
        let deadline = {
            let (Some(registry), Some(channel)) = (registry.upgrade(), channel.upgrade()) else {
                return;
            };
            registry.control_deadline(&channel)
        };
        match deadline {
            // An input moved the idle deadline later: the task wakes at the old one and
            // sleeps again until the new one.
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
        let (Some(registry), Some(channel)) = (registry.upgrade(), channel.upgrade()) else {
            return;
        };
        registry.expire_control(&channel, Instant::now());
    }
}
