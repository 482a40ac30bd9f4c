//! The relay settings a deployer gives (`relay.nats` in the registry options): which NATS
//! servers, how to authenticate and secure the connection, the subject prefix, and the
//! relay's timings. Owns every relay default and range and the checks of what is given.
//! Must not connect: `relay::Relay` does.

use std::path::PathBuf;
use std::time::Duration;

/// Subject prefix when none is given.
pub const DEFAULT_SUBJECT_PREFIX: &str = "browser-stream";
/// Most NATS server URLs.
pub const MAX_SERVERS: usize = 16;
/// How long an instance waits for an owner to answer "who has this agent's browser".
pub const DEFAULT_OWNER_TIMEOUT_MS: u32 = 1_000;
/// Bounds of `ownerTimeoutMs`.
pub const OWNER_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 100..=30_000;
/// How often a subscribing instance renews its lease on a channel with the owner.
pub const DEFAULT_LEASE_INTERVAL_MS: u32 = 2_000;
/// Bounds of `leaseIntervalMs`.
pub const LEASE_INTERVAL_RANGE_MS: std::ops::RangeInclusive<u32> = 200..=60_000;
/// Leases missed before the owner drops a subscriber (and a subscriber its owner).
pub const LEASE_MISSES: u32 = 3;
/// How long an instance without an owner for a channel waits before asking again.
pub const DEFAULT_RETRY_MS: u32 = 2_000;

/// How the relay authenticates to NATS (at most one way).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum RelayAuth {
    /// No credentials.
    #[default]
    None,
    /// A server token.
    Token(String),
    /// User and password.
    UserPassword(String, String),
    /// An NKey seed.
    NKey(String),
    /// A `.creds` file (JWT and NKey seed), read at connect.
    CredsFile(PathBuf),
}

// Credentials never reach a log line, not even through a debug print of the config.
impl std::fmt::Debug for RelayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RelayAuth::None => "None",
            RelayAuth::Token(_) => "Token(…)",
            RelayAuth::UserPassword(..) => "UserPassword(…)",
            RelayAuth::NKey(_) => "NKey(…)",
            RelayAuth::CredsFile(_) => "CredsFile(…)",
        })
    }
}

/// TLS to the NATS servers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayTls {
    /// Refuse a server that does not offer TLS.
    pub required: bool,
    /// PEM file of the CA certificates to trust (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// PEM files of a client certificate and its key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A registry's relay settings, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// `nats://host:port` (or `tls://`) URLs.
    pub servers: Vec<String>,
    /// Connection name shown by the NATS server (`name`).
    pub name: Option<String>,
    pub auth: RelayAuth,
    pub tls: RelayTls,
    /// First tokens of every subject this registry uses.
    pub subject_prefix: String,
    /// How long an owner may take to answer.
    pub owner_timeout: Duration,
    /// How often a subscriber renews its lease; the owner drops it after `LEASE_MISSES`.
    pub lease_interval: Duration,
    /// How long a channel without an owner waits before asking again.
    pub retry: Duration,
}

// Server URLs may carry `user:password@`: a debug print shows how many, not which.
impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("servers", &self.servers.len())
            .field("name", &self.name)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("subject_prefix", &self.subject_prefix)
            .field("owner_timeout", &self.owner_timeout)
            .field("lease_interval", &self.lease_interval)
            .field("retry", &self.retry)
            .finish()
    }
}

/// What a deployer may give, before checks (the napi face fills it from JS). No `Debug`: it
/// holds the credentials as given.
#[derive(Default, Clone)]
pub struct RelayOptions {
    pub servers: Vec<String>,
    pub name: Option<String>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub nkey: Option<String>,
    pub creds_file: Option<String>,
    pub tls_required: Option<bool>,
    pub tls_ca_file: Option<String>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub subject_prefix: Option<String>,
    pub owner_timeout_ms: Option<f64>,
    pub lease_interval_ms: Option<f64>,
}

fn millis(
    name: &str,
    value: Option<f64>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Duration, String> {
    let Some(value) = value else {
        return Ok(Duration::from_millis(default.into()));
    };
    if value.fract() != 0.0 || value < f64::from(*range.start()) || value > f64::from(*range.end())
    {
        return Err(format!(
            "relay.nats.{name} must be an integer from {} to {}",
            range.start(),
            range.end()
        ));
    }
    Ok(Duration::from_millis(value as u64))
}

/// Whether `prefix` is one or more NATS subject tokens we may put in front of ours: letters,
/// digits, `-` and `_`, dot-separated, no wildcards, no empty token.
fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 64
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl RelayOptions {
    /// Checks every field; the message names the field at fault.
    pub fn into_config(self) -> Result<RelayConfig, String> {
        if self.servers.is_empty() || self.servers.len() > MAX_SERVERS {
            return Err(format!(
                "relay.nats.servers must hold 1 to {MAX_SERVERS} server URLs"
            ));
        }
        for server in &self.servers {
            if server.parse::<async_nats::ServerAddr>().is_err() {
                // The URL itself is not echoed: it may carry credentials.
                return Err(
                    "relay.nats.servers holds something that is not a NATS server URL (nats://host:port)"
                        .into(),
                );
            }
        }
        if self
            .name
            .as_ref()
            .is_some_and(|n| n.is_empty() || n.len() > 128)
        {
            return Err("relay.nats.name must be 1 to 128 characters".into());
        }
        let given = [
            self.token.is_some(),
            self.user.is_some() || self.password.is_some(),
            self.nkey.is_some(),
            self.creds_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(
                "relay.nats takes one of token, user and password, nkey or credsFile".into(),
            );
        }
        let auth = match (
            self.token,
            self.user,
            self.password,
            self.nkey,
            self.creds_file,
        ) {
            (Some(token), ..) => RelayAuth::Token(token),
            (_, Some(user), Some(password), ..) => RelayAuth::UserPassword(user, password),
            (_, Some(_), None, ..) | (_, None, Some(_), ..) => {
                return Err("relay.nats.user and relay.nats.password go together".into())
            }
            (_, _, _, Some(seed), _) => RelayAuth::NKey(seed),
            (_, _, _, _, Some(file)) => RelayAuth::CredsFile(PathBuf::from(file)),
            _ => RelayAuth::None,
        };
        let client_cert = match (self.tls_cert_file, self.tls_key_file) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            _ => return Err("relay.nats.tls.certFile and tls.keyFile go together".into()),
        };
        let tls = RelayTls {
            required: self.tls_required.unwrap_or(false),
            ca_file: self.tls_ca_file.map(PathBuf::from),
            client_cert,
        };
        let subject_prefix = self
            .subject_prefix
            .unwrap_or_else(|| DEFAULT_SUBJECT_PREFIX.to_string());
        if !valid_prefix(&subject_prefix) {
            return Err(
                "relay.nats.subjectPrefix must be dot-separated tokens of letters, digits, - and _ (at most 64 characters)"
                    .into(),
            );
        }
        Ok(RelayConfig {
            servers: self.servers,
            name: self.name,
            auth,
            tls,
            subject_prefix,
            owner_timeout: millis(
                "ownerTimeoutMs",
                self.owner_timeout_ms,
                DEFAULT_OWNER_TIMEOUT_MS,
                OWNER_TIMEOUT_RANGE_MS,
            )?,
            lease_interval: millis(
                "leaseIntervalMs",
                self.lease_interval_ms,
                DEFAULT_LEASE_INTERVAL_MS,
                LEASE_INTERVAL_RANGE_MS,
            )?,
            retry: Duration::from_millis(DEFAULT_RETRY_MS.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(servers: &[&str]) -> RelayOptions {
        RelayOptions {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            ..RelayOptions::default()
        }
    }

    #[test]
    fn defaults_and_one_server() {
        let config = options(&["nats://127.0.0.1:4222"]).into_config().unwrap();
        assert_eq!(config.subject_prefix, DEFAULT_SUBJECT_PREFIX);
        assert_eq!(config.auth, RelayAuth::None);
        assert_eq!(config.owner_timeout, Duration::from_millis(1000));
        assert_eq!(config.lease_interval, Duration::from_millis(2000));
    }

    #[test]
    fn refusals_name_the_field_and_never_echo_secrets() {
        let no_server = options(&[]).into_config().unwrap_err();
        assert!(no_server.contains("servers"), "{no_server}");
        let bad_url = options(&["not a url with s3cret"])
            .into_config()
            .unwrap_err();
        assert!(!bad_url.contains("s3cret"), "{bad_url}");
        let mut two = options(&["nats://a:4222"]);
        two.token = Some("t".into());
        two.nkey = Some("SU…".into());
        assert!(two.into_config().unwrap_err().contains("one of"));
        let mut half = options(&["nats://a:4222"]);
        half.user = Some("u".into());
        assert!(half.into_config().unwrap_err().contains("go together"));
        for prefix in ["", "a..b", "a.*", "a.>", "with space"] {
            let mut bad = options(&["nats://a:4222"]);
            bad.subject_prefix = Some(prefix.into());
            assert!(bad.into_config().is_err(), "{prefix:?} accepted");
        }
        let mut slow = options(&["nats://a:4222"]);
        slow.owner_timeout_ms = Some(50.0);
        assert!(slow.into_config().unwrap_err().contains("ownerTimeoutMs"));
    }

    #[test]
    fn credentials_stay_out_of_debug_prints() {
        let mut with_token = options(&["nats://user:s3cret@a:4222"]);
        with_token.token = Some("s3cret".into());
        let config = with_token.into_config().unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
