//! The partition harness: a TCP proxy per replica and per peer (Redis, the API), which the test
//! can cut and heal the way a network does.
//!
//! - [`NetProxy::blackhole`]: a partition. Connections stay open and nothing passes either way;
//!   new connections are accepted (the SYN got through before the cut, or a middlebox answers
//!   it) and pass nothing either. Bytes already read are kept, not dropped, and pass after
//!   [`NetProxy::heal`], as TCP retransmits them once the path is back. So a client learns of a
//!   partition only from its own timeouts, as in production.
//! - [`NetProxy::hold_replies`]: only the peer's answers are held (the request goes through):
//!   the moment between sending a request and reading its reply, made as long as the test wants.
//!   [`NetProxy::requests_while_holding`] tells the test that a request went through meanwhile.
//! - [`NetProxy::refuse`]: the peer is down: open connections are reset, new ones closed at once.
//! - [`NetProxy::blackhole_at_request_with`]: a partition that falls just as the client sends a
//!   request holding given bytes (a state write's `checkpoint_in_utc`): that request is the
//!   first thing held, so the cut lands mid-commit.
//! - [`NetProxy::heal_new_connections`]: the path is back, except for the connections that were
//!   open when the partition fell: they stay held until [`NetProxy::release_old_connections`],
//!   as a connection the client gave up on, whose retransmissions (TCP backs off exponentially)
//!   arrive after newer traffic.
//!
//! Every mode ends with [`NetProxy::heal`]. The proxy stops (its connections closed) when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// What passes through the proxy now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Everything passes.
    Pass,
    /// Nothing passes; connections stay open.
    Blackhole,
    /// Requests pass; answers are held.
    HoldReplies,
    /// Connections are closed.
    Refuse,
}

/// Which way bytes flow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// From the client (the collector) to the peer.
    Request,
    /// From the peer back to the client.
    Reply,
}

impl Mode {
    fn lets_through(self, way: Way) -> bool {
        match self {
            Mode::Pass => true,
            Mode::HoldReplies => way == Way::Request,
            Mode::Blackhole | Mode::Refuse => false,
        }
    }
}

/// A running proxy from a loopback port to `target`.
pub struct NetProxy {
    address: SocketAddr,
    /// The mode and the counters, shared with the acceptor and every connection.
    shared: Shared,
    acceptor: JoinHandle<()>,
}

impl NetProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> NetProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Shared::new(target);
        let acceptor = tokio::spawn(shared.clone().accept_forever(listener));
        NetProxy {
            address,
            shared,
            acceptor,
        }
    }

    /// `127.0.0.1:PORT`, for the client's config.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// A partition: nothing passes, connections stay open, until [`Self::heal`].
    pub fn blackhole(&self) {
        self.shared.open_at_cut.store(
            self.shared.accepted.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        self.shared.mode.send_replace(Mode::Blackhole);
    }

    /// Requests pass, answers are held until [`Self::heal`].
    pub fn hold_replies(&self) {
        self.shared.held_requests.send_replace(0);
        self.shared.mode.send_replace(Mode::HoldReplies);
    }

    /// Waits until at least `n` request bytes went through since [`Self::hold_replies`].
    pub async fn requests_while_holding(&self, n: u64) {
        let mut seen = self.shared.held_requests.subscribe();
        seen.wait_for(|&bytes| bytes >= n).await.unwrap();
    }

    /// The peer is down: open connections are reset, new ones closed, until [`Self::heal`].
    pub fn refuse(&self) {
        self.shared.mode.send_replace(Mode::Refuse);
        self.shared.close_all();
    }

    /// Arms a partition that falls at the first request holding `bytes` (within one read of
    /// the proxy's, so a short marker): that request and everything after it are held, as by
    /// [`Self::blackhole`].
    pub fn blackhole_at_request_with(&self, bytes: &[u8]) {
        *self.shared.trip.lock().unwrap() = Some(bytes.to_vec());
    }

    /// Waits until the mode is `mode` (an armed partition has fallen).
    pub async fn reached(&self, mode: Mode) {
        let mut now = self.shared.mode.subscribe();
        now.wait_for(|m| *m == mode).await.unwrap();
    }

    /// Heals, except for the connections that were open when the partition fell: they stay
    /// held (both ways) until [`Self::release_old_connections`].
    pub fn heal_new_connections(&self) {
        self.shared
            .held_below
            .send_replace(self.shared.open_at_cut.load(Ordering::SeqCst));
        self.shared.mode.send_replace(Mode::Pass);
    }

    /// Lets the connections held by [`Self::heal_new_connections`] pass, held bytes first.
    pub fn release_old_connections(&self) {
        self.shared.held_below.send_replace(0);
    }

    /// Everything passes again, held bytes first.
    pub fn heal(&self) {
        self.shared.mode.send_replace(Mode::Pass);
    }

    /// The mode now.
    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }
}

impl Drop for NetProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.shared.close_all();
    }
}

/// What the acceptor and the connections share.
#[derive(Clone)]
struct Shared {
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    held_requests: watch::Sender<u64>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    trip: Trip,
    accepted: Arc<AtomicU64>,
    held_below: watch::Sender<u64>,
    open_at_cut: Arc<AtomicU64>,
}

/// An armed partition's marker, shared by the proxy and its connections.
type Trip = Arc<Mutex<Option<Vec<u8>>>>;

impl Shared {
    fn new(target: SocketAddr) -> Shared {
        Shared {
            target,
            mode: watch::channel(Mode::Pass).0,
            held_requests: watch::channel(0).0,
            connections: Arc::default(),
            trip: Trip::default(),
            accepted: Arc::default(),
            held_below: watch::channel(0).0,
            open_at_cut: Arc::default(),
        }
    }

    /// Resets every open connection (they are aborted, their sockets dropped).
    fn close_all(&self) {
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    async fn accept_forever(self, listener: TcpListener) {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            if *self.mode.borrow() == Mode::Refuse {
                drop(client);
                continue;
            }
            let number = self.accepted.fetch_add(1, Ordering::SeqCst);
            let task = tokio::spawn(self.clone().connect(client, number));
            let mut connections = self.connections.lock().unwrap();
            connections.retain(|c| !c.is_finished());
            connections.push(task.abort_handle());
        }
    }

    /// Connects to the target (a refused target closes the client) and pumps both ways until
    /// either side closes.
    async fn connect(self, client: TcpStream, number: u64) {
        let Ok(peer) = TcpStream::connect(self.target).await else {
            return;
        };
        let (client_read, client_write) = client.into_split();
        let (peer_read, peer_write) = peer.into_split();
        let requests = self
            .clone()
            .pump(client_read, peer_write, Way::Request, number);
        let replies = self.pump(peer_read, client_write, Way::Reply, number);
        // One side closing ends the connection, as a proxy that relays the FIN and stops would.
        tokio::select! {
            _ = requests => {}
            _ = replies => {}
        }
    }

    /// Makes an armed partition fall if `request` holds its marker (once).
    fn trip_at(&self, request: &[u8]) {
        let mut trip = self.trip.lock().unwrap();
        let holds = |m: &Vec<u8>| request.windows(m.len()).any(|w| w == m.as_slice());
        if trip.as_ref().is_some_and(holds) {
            *trip = None;
            self.open_at_cut
                .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
            self.mode.send_replace(Mode::Blackhole);
        }
    }

    /// Copies one way, holding each chunk read until the mode lets it through.
    async fn pump(
        self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        way: Way,
        number: u64,
    ) {
        let mut mode = self.mode.subscribe();
        let mut held_below = self.held_below.subscribe();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if way == Way::Request {
                self.trip_at(&buf[..n]);
            }
            if way == Way::Request && *mode.borrow() == Mode::HoldReplies {
                self.held_requests.send_modify(|seen| *seen += n as u64);
            }
            if mode.wait_for(|m| m.lets_through(way)).await.is_err() {
                return;
            }
            if held_below.wait_for(|&b| number >= b).await.is_err() {
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}

/// The harness itself against a tiny echo server: bytes pass; a blackhole holds them (the
/// connection stays open) and heal delivers them; held replies let the request through; an
/// armed partition falls at its marker; a partial heal holds the connections open at the cut
/// until released; refuse closes.
#[tokio::test]
async fn the_partition_proxy_cuts_holds_and_heals() {
    use crate::support::Wait;
    use std::time::Duration;
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_address = echo.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = received.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    let proxy = NetProxy::start(echo_address).await;
    let mut c = TcpStream::connect(proxy.address()).await.unwrap();
    let mut buf = [0u8; 16];
    c.write_all(b"one").await.unwrap();
    c.read_exact(&mut buf[..3]).await.unwrap();
    assert_eq!(&buf[..3], b"one");

    proxy.blackhole();
    c.write_all(b"two").await.unwrap();
    let cut = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
    assert!(cut.is_err(), "a byte passed the blackhole: {cut:?}");
    assert_eq!(
        *received.lock().unwrap(),
        b"one",
        "the peer got bytes through the blackhole"
    );
    proxy.heal();
    c.read_exact(&mut buf[..3]).await.unwrap();
    assert_eq!(&buf[..3], b"two", "the held bytes pass after heal");

    proxy.hold_replies();
    c.write_all(b"three").await.unwrap();
    proxy.requests_while_holding(5).await;
    let held = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
    assert!(held.is_err(), "a reply passed while held: {held:?}");
    Wait::new("the request to pass", Duration::from_secs(5))
        .every(Duration::from_millis(10))
        .until(|| received.lock().unwrap().ends_with(b"three"))
        .await;
    proxy.heal();
    c.read_exact(&mut buf[..5]).await.unwrap();
    assert_eq!(&buf[..5], b"three");

    proxy.blackhole_at_request_with(b"five");
    c.write_all(b"four").await.unwrap();
    c.read_exact(&mut buf[..4]).await.unwrap();
    assert_eq!(
        &buf[..4],
        b"four",
        "another request passes an armed partition"
    );
    c.write_all(b"fivefive").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), proxy.reached(Mode::Blackhole))
        .await
        .expect("the large request made the partition fall");
    let cut = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
    assert!(cut.is_err(), "a byte passed the fallen partition: {cut:?}");
    assert!(!received.lock().unwrap().ends_with(b"fivefive"));
    proxy.heal();
    c.read_exact(&mut buf[..8]).await.unwrap();
    assert_eq!(
        &buf[..8],
        b"fivefive",
        "the request that tripped it passes after heal"
    );

    // A connection open at the cut stays held while one made during the cut passes;
    // released, its bytes pass.
    proxy.blackhole();
    c.write_all(b"six").await.unwrap();
    let mut fresh = TcpStream::connect(proxy.address()).await.unwrap();
    fresh.write_all(b"new").await.unwrap();
    proxy.heal_new_connections();
    fresh.read_exact(&mut buf[..3]).await.unwrap();
    assert_eq!(&buf[..3], b"new", "a connection made during the cut passes");
    let old = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
    assert!(
        old.is_err(),
        "the old connection passed before its release: {old:?}"
    );
    proxy.release_old_connections();
    c.read_exact(&mut buf[..3]).await.unwrap();
    assert_eq!(
        &buf[..3],
        b"six",
        "the old connection's bytes pass after the release"
    );

    proxy.refuse();
    let closed = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
    let mut again = TcpStream::connect(proxy.address()).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), again.read(&mut buf)).await;
    assert!(
        matches!(refused, Ok(Ok(0) | Err(_))),
        "a new connection was not closed: {refused:?}"
    );
    assert_eq!(proxy.mode(), Mode::Refuse);
}
