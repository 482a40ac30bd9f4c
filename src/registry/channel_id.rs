//! Which channel a viewer watches (`ChannelId`: the id rules and the unambiguous key), and why
//! a viewer may be refused (`AdmitError`).
//! Must not hold channel state.

/// Which channel a viewer watches: an agent, or one thread of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelId {
    /// The channel's key, unambiguous by construction (`ChannelId::key_of`): the agent id, or
    /// `agentId:threadId` with any `%` and `:` of the agent id percent-encoded. For ids
    /// without those characters it is the key the TypeScript module uses.
    pub key: String,
    /// The agent.
    pub agent_id: String,
    /// The thread scope, if any.
    pub thread_id: Option<String>,
}

impl ChannelId {
    /// Longest agent or thread id, in bytes.
    pub const MAX_ID_BYTES: usize = 256;

    /// The id of peer-given ids, checked: 1 to 256 bytes each and no control characters.
    /// Otherwise ids are opaque, as in Mastra (Studio sends thread ids such as `thread/1 2`):
    /// the key keeps channels apart by its structure, not by refusing characters. The error
    /// is a message for the peer.
    pub fn checked(agent_id: &str, thread_id: Option<&str>) -> Result<ChannelId, String> {
        let check = |id: &str, name: &str| {
            if id.is_empty() || id.len() > Self::MAX_ID_BYTES {
                return Err(format!(
                    "{name} must be 1 to {} bytes long",
                    Self::MAX_ID_BYTES
                ));
            }
            if id.chars().any(char::is_control) {
                return Err(format!("{name} must not contain control characters"));
            }
            Ok(())
        };
        check(agent_id, "agentId")?;
        if let Some(thread_id) = thread_id {
            check(thread_id, "threadId")?;
        }
        Ok(ChannelId::new(agent_id, thread_id))
    }

    /// The id of `agent_id`, scoped to `thread_id` when given (and not empty).
    pub fn new(agent_id: &str, thread_id: Option<&str>) -> ChannelId {
        let thread_id = thread_id.filter(|t| !t.is_empty()).map(str::to_string);
        ChannelId {
            key: Self::key_of(agent_id, thread_id.as_deref()),
            agent_id: agent_id.to_string(),
            thread_id,
        }
    }

    /// The id a channel key stands for: the inverse of `key_of`, for keys `key_of` made of
    /// ids that pass `checked`. Anything else (a key JS built by hand, a non-canonical
    /// encoding) is refused, so every key the registry holds has exactly one spelling.
    pub fn from_key(key: &str) -> Result<ChannelId, String> {
        let refused = || format!("{key:?} is not a channel key (see channelKey)");
        let (encoded_agent, thread_id) = match key.split_once(':') {
            Some((agent, thread)) => (agent, Some(thread)),
            None => (key, None),
        };
        let mut agent_id = String::with_capacity(encoded_agent.len());
        let mut rest = encoded_agent;
        while let Some(at) = rest.find('%') {
            agent_id.push_str(&rest[..at]);
            match rest.get(at..at + 3) {
                Some("%25") => agent_id.push('%'),
                Some("%3A") => agent_id.push(':'),
                _ => return Err(refused()),
            }
            rest = &rest[at + 3..];
        }
        agent_id.push_str(rest);
        let id = ChannelId::checked(&agent_id, thread_id).map_err(|_| refused())?;
        if id.key != key {
            return Err(refused());
        }
        Ok(id)
    }

    /// The channel key of an agent (and thread): the agent id with `%` and `:` percent-encoded,
    /// then `:` and the thread id as it is. The first `:` always ends the agent part, so two
    /// different (agent, thread) pairs never share a key.
    pub fn key_of(agent_id: &str, thread_id: Option<&str>) -> String {
        let mut key = String::with_capacity(agent_id.len() + thread_id.map_or(0, |t| t.len() + 1));
        for c in agent_id.chars() {
            match c {
                '%' => key.push_str("%25"),
                ':' => key.push_str("%3A"),
                c => key.push(c),
            }
        }
        if let Some(thread) = thread_id.filter(|t| !t.is_empty()) {
            key.push(':');
            key.push_str(thread);
        }
        key
    }
}

/// Why a viewer is not admitted. Answered with HTTP 503 before the upgrade when possible,
/// else with close code 1013 (1001 when the registry is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitError {
    /// `close()` was called.
    Closed,
    /// The channel has `max_viewers_per_agent` viewers.
    TooManyViewers,
    /// The registry holds `max_agents` channels.
    TooManyAgents,
    /// The registry holds `max_viewers_total` viewers.
    TooManyViewersTotal,
}

impl std::fmt::Display for AdmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdmitError::Closed => "the stream registry is closed",
            AdmitError::TooManyViewers => "too many viewers for this agent",
            AdmitError::TooManyAgents => "too many agents are being streamed",
            AdmitError::TooManyViewersTotal => "too many viewers",
        })
    }
}
