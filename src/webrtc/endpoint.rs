//! The one UDP socket every WebRTC peer of a registry shares, and the routing of what arrives
//! on it: a datagram from a known address goes to that address's peer; a STUN request from a
//! new address goes to the peer whose ICE user name it carries (the peer's own check of the
//! request's integrity then decides whether that address is used). Bounded: a peer keeps at
//! most `MAX_ADDRESSES_PER_PEER` addresses, and its inbox holds `PEER_INBOX` datagrams (more
//! are dropped, as a congested network would).
//! Must not parse media or touch a peer's state: peers own their `Rtc`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use str0m::ice::StunMessage;
use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::WebRtcConfig;
use crate::sync::lock;

/// Datagrams waiting for one peer before more are dropped.
pub(super) const PEER_INBOX: usize = 512;
/// Remote addresses one peer may be reached from (its candidates, as they change).
const MAX_ADDRESSES_PER_PEER: usize = 8;
/// Largest datagram read; WebRTC keeps packets under the path MTU.
const RECEIVE_BUFFER: usize = 2048;
/// Socket buffers asked for, so a keyframe to many peers at once is not dropped by the kernel
/// (it caps the request at `net.core.{r,w}mem_max`).
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;

/// One datagram for a peer.
#[derive(Debug)]
pub(super) struct Datagram {
    pub(super) at: Instant,
    pub(super) source: SocketAddr,
    pub(super) data: Vec<u8>,
}

#[derive(Clone)]
struct Route {
    peer: u64,
    inbox: mpsc::Sender<Datagram>,
}

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, Route>,
    by_address: HashMap<SocketAddr, Route>,
}

/// Counters of the endpoint (`stats().webrtc`).
#[derive(Debug, Default)]
pub(super) struct EndpointCounters {
    pub(super) datagrams_in: AtomicU64,
    pub(super) datagrams_out: AtomicU64,
    /// Datagrams from no known peer, or not STUN from a new address.
    pub(super) datagrams_unrouted: AtomicU64,
    /// Datagrams dropped because a peer's inbox was full.
    pub(super) datagrams_dropped: AtomicU64,
    /// Sends the socket refused (the datagram is lost; NACK or a keyframe repairs it).
    pub(super) send_errors: AtomicU64,
}

/// The registry's UDP socket and its routes.
pub(super) struct Endpoint {
    socket: UdpSocket,
    /// The bound address (what packets to us are addressed to).
    pub(super) local: SocketAddr,
    routes: Mutex<Routes>,
    pub(super) counters: EndpointCounters,
    stop: CancellationToken,
}

fn set_buffer(socket: &std::net::UdpSocket, option: libc::c_int) {
    use std::os::fd::AsRawFd;
    let value = SOCKET_BUFFER_BYTES;
    // SAFETY: a valid socket fd and a c_int option value of the right size. A refusal only
    // leaves the system's default size, so its result is not needed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Endpoint {
    /// Binds `config.host:config.port` and starts reading it on `runtime`.
    pub(super) fn bind(config: &WebRtcConfig, runtime: &Handle) -> io::Result<Arc<Endpoint>> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(config.host, config.port))?;
        socket.set_nonblocking(true)?;
        set_buffer(&socket, libc::SO_RCVBUF);
        set_buffer(&socket, libc::SO_SNDBUF);
        let local = socket.local_addr()?;
        let socket = {
            let _entered = runtime.enter();
            UdpSocket::from_std(socket)?
        };
        let endpoint = Arc::new(Endpoint {
            socket,
            local,
            routes: Mutex::new(Routes::default()),
            counters: EndpointCounters::default(),
            stop: CancellationToken::new(),
        });
        runtime.spawn(endpoint.clone().receive());
        Ok(endpoint)
    }

    /// Routes STUN requests naming `ufrag` (and then their addresses) to `inbox`.
    pub(super) fn add_peer(&self, peer: u64, ufrag: String, inbox: mpsc::Sender<Datagram>) {
        lock(&self.routes)
            .by_ufrag
            .insert(ufrag, Route { peer, inbox });
    }

    /// Forgets every route to `peer`.
    pub(super) fn remove_peer(&self, peer: u64) {
        let mut routes = lock(&self.routes);
        routes.by_ufrag.retain(|_, route| route.peer != peer);
        routes.by_address.retain(|_, route| route.peer != peer);
    }

    /// Sends one datagram; a failure is counted, not returned (UDP loses packets anyway).
    pub(super) async fn send(&self, to: SocketAddr, data: &[u8]) {
        match self.socket.send_to(data, to).await {
            Ok(_) => {
                self.counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stops reading; peers end on their own (their viewers are closed).
    pub(super) fn close(&self) {
        self.stop.cancel();
    }

    /// The peer a datagram from `source` belongs to, learning `source` from a STUN request.
    fn route(&self, source: SocketAddr, data: &[u8]) -> Option<Route> {
        let mut routes = lock(&self.routes);
        if let Some(route) = routes.by_address.get(&source) {
            return Some(route.clone());
        }
        // Only a STUN binding request (first two bits zero) may introduce an address.
        if data.first().is_none_or(|b| b & 0xC0 != 0) {
            return None;
        }
        let message = StunMessage::parse(data).ok()?;
        let (ours, _theirs) = message.split_username()?;
        let route = routes.by_ufrag.get(ours)?.clone();
        let known = routes
            .by_address
            .values()
            .filter(|r| r.peer == route.peer)
            .count();
        if known < MAX_ADDRESSES_PER_PEER {
            routes.by_address.insert(source, route.clone());
        }
        Some(route)
    }

    async fn receive(self: Arc<Self>) {
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        loop {
            let received = tokio::select! {
                _ = self.stop.cancelled() => return,
                received = self.socket.recv_from(&mut buffer) => received,
            };
            let (len, source) = match received {
                Ok(received) => received,
                // An ICMP error reported on the socket, or a datagram larger than the buffer:
                // nothing to deliver, the socket goes on.
                Err(_) => continue,
            };
            self.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
            let data = &buffer[..len];
            let Some(route) = self.route(source, data) else {
                self.counters
                    .datagrams_unrouted
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let datagram = Datagram {
                at: Instant::now(),
                source,
                data: data.to_vec(),
            };
            if route.inbox.try_send(datagram).is_err() {
                self.counters
                    .datagrams_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A STUN binding request with `USERNAME`, `PRIORITY` and a `MESSAGE-INTEGRITY` of zeros
    /// (the parser wants those; only the peer's `Rtc`, which knows the password, checks it).
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06];
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        attr.extend_from_slice(&[0x00, 0x24, 0x00, 4, 0x6e, 0x00, 0x1e, 0xff]);
        attr.extend_from_slice(&[0x00, 0x08, 0x00, 20]);
        attr.extend_from_slice(&[0; 20]);
        let mut message = vec![0x00, 0x01];
        message.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        message.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        message.extend_from_slice(&[7; 12]);
        message.extend_from_slice(&attr);
        message
    }

    async fn next(inbox: &mut mpsc::Receiver<Datagram>) -> Option<Datagram> {
        tokio::time::timeout(Duration::from_secs(2), inbox.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routes_by_ice_user_name_then_by_address_and_forgets_removed_peers() {
        let endpoint = Endpoint::bind(&WebRtcConfig::default(), &Handle::current()).unwrap();
        let (tx, mut inbox) = mpsc::channel(PEER_INBOX);
        endpoint.add_peer(1, "ours".into(), tx);
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rtp = [0x80u8, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];

        // Media from an address no STUN request introduced: not routed.
        client.send_to(&rtp, endpoint.local).await.unwrap();
        // A request for another user name: not routed either.
        client
            .send_to(&binding_request("theirs:x"), endpoint.local)
            .await
            .unwrap();
        // The peer's user name: routed, and the address learned.
        let request = binding_request("ours:remote");
        client.send_to(&request, endpoint.local).await.unwrap();
        let got = next(&mut inbox)
            .await
            .expect("the request reaches the peer");
        assert_eq!(got.data, request);
        assert_eq!(got.source, client.local_addr().unwrap());
        client.send_to(&rtp, endpoint.local).await.unwrap();
        assert_eq!(next(&mut inbox).await.expect("media now routed").data, rtp);
        assert_eq!(
            endpoint.counters.datagrams_unrouted.load(Ordering::Relaxed),
            2
        );

        // At most MAX_ADDRESSES_PER_PEER addresses are remembered for a peer.
        let mut others = Vec::new();
        for _ in 0..MAX_ADDRESSES_PER_PEER + 3 {
            let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            other.send_to(&request, endpoint.local).await.unwrap();
            assert!(next(&mut inbox).await.is_some());
            others.push(other);
        }
        let learned = lock(&endpoint.routes).by_address.len();
        assert_eq!(learned, MAX_ADDRESSES_PER_PEER);

        endpoint.remove_peer(1);
        assert!(lock(&endpoint.routes).by_address.is_empty());
        assert!(lock(&endpoint.routes).by_ufrag.is_empty());
        endpoint.close();
    }
}
