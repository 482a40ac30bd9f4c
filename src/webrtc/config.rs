//! The WebRTC settings a deployer gives (`webrtc` in the registry options): where the UDP
//! socket listens, which addresses are offered to viewers, the ICE servers handed to them, and
//! the bounds on peers. Owns every WebRTC default and range, and the checks of what is given.
//! Must not bind or send anything: `endpoint` does.

use std::net::IpAddr;
use std::time::Duration;

/// Default address of the UDP socket and its host candidate: loopback, so that nothing is
/// reachable from elsewhere until the deployer names the interface viewers reach.
pub const DEFAULT_HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
/// Default number of WebRTC peers a registry serves at once.
pub const DEFAULT_MAX_PEERS: u32 = 200;
/// Most peers a registry may be configured for.
pub const MAX_MAX_PEERS: u32 = 10_000;
/// Default time a peer has from its offer to a working connection (ICE and DTLS).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 10_000;
/// Bounds of `connectTimeoutMs`.
pub const CONNECT_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 1_000..=120_000;
/// Most ICE servers handed to viewers, and URLs per server.
pub const MAX_ICE_SERVERS: usize = 8;
/// Longest ICE server URL, user name or credential.
const MAX_ICE_STRING: usize = 512;

/// One STUN or TURN server for viewers (as `RTCIceServer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN credential.
    pub credential: Option<String>,
}

/// A registry's WebRTC settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebRtcConfig {
    /// Address the UDP socket binds and offers as its host candidate.
    pub host: IpAddr,
    /// UDP port (0: one the system picks).
    pub port: u16,
    /// The public address packets to `host` arrive through (1:1 NAT), offered as a
    /// server-reflexive candidate on the same port.
    pub public_address: Option<IpAddr>,
    /// STUN/TURN servers handed to viewers in `session-meta`.
    pub ice_servers: Vec<IceServer>,
    /// Peers served at once; an offer beyond is refused.
    pub max_peers: u32,
    /// Time from an offer to a connected peer before the peer is given up.
    pub connect_timeout: Duration,
    /// Transport-wide congestion control: estimate the path's bandwidth from the viewer's
    /// TWCC feedback and pace packets to it. Off by default: pacing a keyframe at a
    /// few Mbit/s delays it by hundreds of milliseconds, and the encoder's rate is shared by
    /// every viewer of the channel, so an estimate could not change it for one of them.
    pub bandwidth_estimation: bool,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            host: DEFAULT_HOST,
            port: 0,
            public_address: None,
            ice_servers: Vec::new(),
            max_peers: DEFAULT_MAX_PEERS,
            connect_timeout: Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS.into()),
            bandwidth_estimation: false,
        }
    }
}

/// What a deployer may give, before checks (the napi face fills it from JS).
#[derive(Debug, Default, Clone)]
pub struct WebRtcOptions {
    pub host: Option<String>,
    pub port: Option<f64>,
    pub public_address: Option<String>,
    pub ice_servers: Option<Vec<IceServer>>,
    pub max_peers: Option<f64>,
    pub connect_timeout_ms: Option<f64>,
    pub bandwidth_estimation: Option<bool>,
}

fn whole(name: &str, value: f64, range: std::ops::RangeInclusive<u32>) -> Result<u32, String> {
    if value.fract() != 0.0 || value < f64::from(*range.start()) || value > f64::from(*range.end())
    {
        return Err(format!(
            "webrtc.{name} must be a whole number from {} to {}",
            range.start(),
            range.end()
        ));
    }
    Ok(value as u32)
}

fn address(name: &str, text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| format!("webrtc.{name} must be an IP address"))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!(
            "webrtc.{name} must be the address viewers reach, not {ip}"
        ));
    }
    Ok(ip)
}

fn check_ice_server(server: &IceServer) -> Result<(), String> {
    if server.urls.is_empty() || server.urls.len() > MAX_ICE_SERVERS {
        return Err(format!(
            "webrtc.iceServers[].urls must hold 1 to {MAX_ICE_SERVERS} URLs"
        ));
    }
    for url in &server.urls {
        let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        if !scheme_ok || url.len() > MAX_ICE_STRING {
            return Err(
                "webrtc.iceServers[].urls must be stun:, stuns:, turn: or turns: URLs".to_string(),
            );
        }
    }
    let long = |v: &Option<String>| v.as_ref().is_some_and(|s| s.len() > MAX_ICE_STRING);
    if long(&server.username) || long(&server.credential) {
        return Err(format!(
            "webrtc.iceServers[] username and credential are at most {MAX_ICE_STRING} bytes"
        ));
    }
    Ok(())
}

impl WebRtcOptions {
    /// The checked settings; the error names the option.
    pub fn into_config(self) -> Result<WebRtcConfig, String> {
        let mut config = WebRtcConfig::default();
        if let Some(host) = &self.host {
            config.host = address("host", host)?;
        }
        if let Some(port) = self.port {
            config.port = whole("port", port, 0..=65_535)? as u16;
        }
        if let Some(public) = &self.public_address {
            let public = address("publicAddress", public)?;
            if public.is_ipv4() != config.host.is_ipv4() {
                return Err(
                    "webrtc.publicAddress and webrtc.host must be of one IP version".into(),
                );
            }
            config.public_address = Some(public);
        }
        if let Some(servers) = self.ice_servers {
            if servers.len() > MAX_ICE_SERVERS {
                return Err(format!(
                    "webrtc.iceServers holds at most {MAX_ICE_SERVERS} servers"
                ));
            }
            servers.iter().try_for_each(check_ice_server)?;
            config.ice_servers = servers;
        }
        if let Some(max) = self.max_peers {
            config.max_peers = whole("maxPeers", max, 1..=MAX_MAX_PEERS)?;
        }
        if let Some(ms) = self.connect_timeout_ms {
            let ms = whole("connectTimeoutMs", ms, CONNECT_TIMEOUT_RANGE_MS)?;
            config.connect_timeout = Duration::from_millis(ms.into());
        }
        if let Some(on) = self.bandwidth_estimation {
            config.bandwidth_estimation = on;
        }
        Ok(config)
    }
}

impl WebRtcConfig {
    /// What a viewer is told in `session-meta`: the ICE servers to create its peer
    /// connection with.
    pub fn client_json(&self) -> serde_json::Value {
        let servers: Vec<serde_json::Value> = self
            .ice_servers
            .iter()
            .map(|server| {
                let mut entry = serde_json::json!({ "urls": server.urls });
                if let Some(username) = &server.username {
                    entry["username"] = username.clone().into();
                }
                if let Some(credential) = &server.credential {
                    entry["credential"] = credential.clone().into();
                }
                entry
            })
            .collect();
        serde_json::json!({ "iceServers": servers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bind_loopback_on_a_system_port() {
        let config = WebRtcOptions::default().into_config().unwrap();
        assert_eq!(config, WebRtcConfig::default());
        assert!(config.host.is_loopback());
        assert_eq!(config.port, 0);
    }

    #[test]
    fn rejects_what_no_viewer_could_reach() {
        let bad = |options: WebRtcOptions| options.into_config().unwrap_err();
        let host = |h: &str| WebRtcOptions {
            host: Some(h.into()),
            ..Default::default()
        };
        assert!(bad(host("0.0.0.0")).contains("webrtc.host"));
        assert!(bad(host("example.com")).contains("IP address"));
        assert!(bad(WebRtcOptions {
            port: Some(70_000.0),
            ..Default::default()
        })
        .contains("webrtc.port"));
        assert!(bad(WebRtcOptions {
            public_address: Some("::1".into()),
            ..Default::default()
        })
        .contains("one IP version"));
        let server = |url: &str| WebRtcOptions {
            ice_servers: Some(vec![IceServer {
                urls: vec![url.into()],
                username: None,
                credential: None,
            }]),
            ..Default::default()
        };
        assert!(bad(server("http://stun.example")).contains("stun:"));
        assert!(server("turn:turn.example:3478").into_config().is_ok());
    }

    #[test]
    fn viewers_get_the_ice_servers_as_rtc_ice_server_objects() {
        let config = WebRtcOptions {
            ice_servers: Some(vec![IceServer {
                urls: vec!["turn:t.example:3478".into()],
                username: Some("u".into()),
                credential: Some("c".into()),
            }]),
            ..Default::default()
        }
        .into_config()
        .unwrap();
        assert_eq!(
            config.client_json(),
            serde_json::json!({"iceServers":[{"urls":["turn:t.example:3478"],"username":"u","credential":"c"}]})
        );
    }
}
