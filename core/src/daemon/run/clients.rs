//! The control socket's connections: who is admitted, reading, dispatching
//! and writing, the deadlines of idle connections and of late requests.

use super::*;

/// At most this many connections accepted in one turn, so that a flood of
/// connections cannot starve the ones already open.
pub(super) const ACCEPTS_PER_TURN: usize = 64;

/// At most this many reads from one connection in one turn.
pub(super) const READS_PER_TURN: usize = 16;

/// An answer this large (a scrape, or `worker.list`, of a thousand
/// workers) was built from many allocations: once it is sent, the
/// allocator is asked to give the freed memory back (`Os::trim_memory`).
pub(super) const LARGE_ANSWER: usize = 64 * 1024;

/// How long the listener is left alone after `accept` failed for lack of
/// descriptors or memory, unless a connection closes first.
pub(super) const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How long a new connection has to show the token before a newer one may
/// take its slot when all are taken: long enough for any client that sends
/// it first thing, so that a burst of connections cannot push out the ones
/// just before it.
pub(super) const EVICT_GRACE: Duration = Duration::from_secs(1);

pub(super) struct Client {
    pub(super) fd: Fd,
    pub(super) conn: Conn,
    pub(super) last_active: Instant,
    pub(super) eof: bool,
    /// When the request now arriving was first seen, and how many requests
    /// the connection had taken whole then.
    pub(super) request_since: Option<(Instant, u64)>,
    /// Since when answers have waited for a client that does not read
    /// them: the socket takes no more, and the client has not made room.
    pub(super) stalled_since: Option<Instant>,
    pub(super) connected_at: Instant,
}

impl Client {
    /// Notes whether a request is arriving, and since when.
    pub(super) fn track_request(&mut self, now: Instant) {
        let taken = self.conn.requests_taken();
        self.request_since = match (self.conn.in_request(), self.request_since) {
            (false, _) => None,
            (true, Some((since, at))) if at == taken => Some((since, at)),
            (true, _) => Some((now, taken)),
        };
    }
}

/// Writes what a connection has to send, as much as the socket takes.
pub(super) fn flush<O: Os>(os: &mut O, client: &mut Client, now: Instant) -> io::Result<()> {
    while !client.conn.output().is_empty() {
        match os.write(client.fd, client.conn.output()) {
            Ok(n) => {
                client.conn.consume(n);
                client.last_active = now;
                client.stalled_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                client.stalled_since.get_or_insert(now);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    client.stalled_since = None;
    Ok(())
}

impl Loop<'_> {
    /// Gives the memory of large answers back once they are all sent.
    pub(super) fn trim_after_large_answers<O: Os>(&mut self, os: &mut O) {
        if self.trim_pending && self.clients.values().all(|c| c.conn.output().is_empty()) {
            self.trim_pending = false;
            os.trim_memory();
        }
    }

    pub(super) fn accept<O: Os>(&mut self, os: &mut O, listener: Fd) {
        for _ in 0..ACCEPTS_PER_TURN {
            let now = os.now();
            let full = self.clients.len() >= self.config.max_connections;
            if full && self.evictable(now).is_none() {
                break;
            }
            match os.accept(listener) {
                Ok(fd) => {
                    if full {
                        self.evict_unauthenticated(os, now);
                    }
                    let Some(access) = self.admit(os, fd) else {
                        self.ctl.stats.connections_refused += 1;
                        os.close(fd);
                        continue;
                    };
                    self.ctl.stats.connections_accepted += 1;
                    let id = self.next_client;
                    self.next_client += 1;
                    let limits = Limits {
                        max_request: self.config.max_request,
                        socket_buffer: self.config.socket_buffer,
                        max_batch: self.config.max_batch,
                        ..Limits::default()
                    };
                    let now = os.now();
                    let conn = Conn::with_access(limits, access);
                    let client = Client {
                        fd,
                        conn,
                        last_active: now,
                        eof: false,
                        request_since: None,
                        stalled_since: None,
                        connected_at: now,
                    };
                    self.clients.insert(id, client);
                    self.publish(Event::ClientConnect { conn: id });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {
                    // The peer gave up: the loop tries again next turn.
                    log::debug!("accept: {e}");
                    break;
                }
                Err(e) => {
                    // Out of descriptors or memory: the connection stays
                    // queued and the listener readable, so polling it again
                    // at once would spin. The loop tries again after a
                    // pause, or as soon as a connection closes.
                    log::warn!("accept: {e}");
                    self.accept_paused = Some(os.now() + ACCEPT_RETRY);
                    break;
                }
            }
        }
    }

    /// All slots are taken and a new connection was accepted: the oldest
    /// connection that has not shown the token makes room for it, so that
    /// clients without the token cannot hold every slot against those with
    /// it.
    pub(super) fn evict_unauthenticated<O: Os>(&mut self, os: &mut O, now: Instant) {
        let Some(id) = self.evictable(now) else { return };
        let Some(client) = self.clients.get_mut(&id) else { return };
        log::warn!("closing connection of {}: all slots are taken, and it has not shown the token", client.conn.peer());
        // One try at telling it why; the slot is freed whatever the socket
        // takes.
        client.conn.handle_eviction();
        let _ = flush(os, client, now);
        self.close_client(os, id);
    }

    /// The connection a new one may push out when all slots are taken: the
    /// oldest that has not shown the token within [`EVICT_GRACE`].
    pub(super) fn evictable(&self, now: Instant) -> Option<u64> {
        self.clients
            .iter()
            .filter(|(_, c)| !c.conn.is_authenticated() && now >= c.connected_at + EVICT_GRACE)
            .min_by_key(|(id, c)| (c.connected_at, **id))
            .map(|(id, _)| *id)
    }

    /// When a connection that has not shown the token becomes one that a
    /// new connection may push out, while all slots are taken: the loop
    /// then polls the listener again. Only future instants: once it can be
    /// pushed out, the listener's readiness is what the loop waits for.
    pub(super) fn next_evictable(&self, now: Instant) -> Option<Instant> {
        if self.clients.len() < self.config.max_connections {
            return None;
        }
        self.clients
            .values()
            .filter(|c| !c.conn.is_authenticated())
            .map(|c| c.connected_at + EVICT_GRACE)
            .filter(|at| *at > now)
            .min()
    }

    /// Who a new connection's peer is and what it may do: a unix peer must
    /// be the daemon's own user, root, or an allowed uid or gid (anyone
    /// else is refused and logged); a tcp peer must present the token.
    pub(super) fn admit<O: Os>(&mut self, os: &mut O, fd: Fd) -> Option<Access> {
        let config = self.config;
        match os.peer(fd) {
            Ok(Peer::Unix { pid, uid, gid }) => {
                let allowed = uid == 0
                    || uid == os.uid()
                    || config.allowed_uids.contains(&uid)
                    || config.allowed_gids.contains(&gid);
                if !allowed {
                    log::warn!("refused unix peer pid {pid} uid {uid} gid {gid}: not an allowed user or group");
                    return None;
                }
                Some(Access { policy: Rc::clone(&self.unix_policy), peer: format!("pid {pid} uid {uid}") })
            }
            // Without a token, tcp is served only when the configuration
            // opted out of it: a tcp socket a unix configuration did not
            // expect is refused rather than served open.
            Ok(Peer::Tcp(addr)) if self.tcp_policy.token.is_none() && !config.tcp_without_token => {
                log::warn!("refused {addr}: a tcp connection, and this daemon has no token to check");
                None
            }
            Ok(Peer::Tcp(addr)) => Some(Access { policy: Rc::clone(&self.tcp_policy), peer: addr.to_string() }),
            Err(e) => match config.address {
                // Without credentials a unix peer cannot be told from a
                // stranger: refused, as the check would.
                Address::Unix(_) => {
                    log::warn!("refused unix peer: its credentials cannot be read: {e}");
                    None
                }
                Address::Tcp(_) => {
                    Some(Access { policy: Rc::clone(&self.tcp_policy), peer: "an unknown tcp peer".into() })
                }
            },
        }
    }

    pub(super) fn serve<O: Os>(&mut self, os: &mut O, id: u64, ready: Ready) {
        let now = os.now();
        let open = self.clients.len();
        let Some(client) = self.clients.get_mut(&id) else { return };
        if ready.is_empty() && client.conn.output().is_empty() {
            return;
        }
        let mut broken = false;
        if ready.intersects(Ready::READ | Ready::HUP | Ready::ERROR) && !client.eof {
            for _ in 0..READS_PER_TURN {
                if !client.conn.wants_read() {
                    break;
                }
                match os.read(client.fd, &mut self.read_buf) {
                    Ok(0) => {
                        client.eof = true;
                        client.conn.handle_eof();
                        break;
                    }
                    Ok(n) => {
                        client.last_active = now;
                        self.ctl.current_conn = id;
                        let registry = &mut self.registry;
                        let ctl = &mut self.ctl;
                        client.conn.handle_bytes(&self.read_buf[..n], &mut |method, params| {
                            dispatch(os, registry, ctl, method, params, open)
                        });
                        if client.conn.output().len() >= LARGE_ANSWER {
                            self.trim_pending = true;
                        }
                        if n < self.read_buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
        }
        if broken {
            self.close_client(os, id);
        } else {
            self.pump(os, id);
        }
    }

    /// Writes a connection's output, lets it dispatch the requests it held
    /// back while its output or owed answers were full, and again, until the
    /// socket takes no more or nothing is left; closes it when it is done.
    pub(super) fn pump<O: Os>(&mut self, os: &mut O, id: u64) {
        let now = os.now();
        let open = self.clients.len();
        let Some(client) = self.clients.get_mut(&id) else { return };
        let mut broken = false;
        for _ in 0..READS_PER_TURN {
            if flush(os, client, now).is_err() {
                broken = true;
                break;
            }
            let before = client.conn.output().len();
            self.ctl.current_conn = id;
            let registry = &mut self.registry;
            let ctl = &mut self.ctl;
            client.conn.resume(&mut |method, params| dispatch(os, registry, ctl, method, params, open));
            if client.conn.output().len() == before {
                break;
            }
        }
        client.track_request(now);
        if broken || client.conn.should_close() {
            self.close_client(os, id);
        }
    }

    pub(super) fn close_client<O: Os>(&mut self, os: &mut O, id: u64) {
        if let Some(c) = self.clients.remove(&id) {
            os.close(c.fd);
            // A descriptor is free: an `accept` that lacked one may succeed.
            self.accept_paused = None;
            self.ctl.routes.retain(|_, conn| *conn != id);
            self.publish(Event::ClientHangup { conn: id });
        }
    }

    pub(super) fn deliver_completions<O: Os>(&mut self, os: &mut O) {
        loop {
            let done = std::mem::take(&mut self.ctl.completions);
            if done.is_empty() {
                break;
            }
            for (defer, result) in done {
                super::events::deferred_done(&mut self.ctl, defer, result.is_ok(), os.now());
                let Some(conn_id) = self.ctl.routes.remove(&defer) else { continue };
                let Some(client) = self.clients.get_mut(&conn_id) else { continue };
                client.conn.complete(defer, result);
                self.pump(os, conn_id);
            }
        }
    }

    /// Closes connections idle past the idle timeout, times out requests
    /// that began to arrive longer than the request timeout ago (a client
    /// that sends a byte now and then keeps its connection from going
    /// idle, but not its request from being late), and closes connections
    /// whose answers have waited that long for a client that does not read
    /// them (it holds a slot, and memory, that others need).
    pub(super) fn expire_idle<O: Os>(&mut self, os: &mut O) {
        let now = os.now();
        let idle = self.config.idle_timeout;
        let timeout = self.config.request_timeout;
        let late: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.request_since.is_some_and(|(since, _)| now >= since + timeout))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(client) = self.clients.get_mut(&id) {
                client.conn.handle_request_timeout();
                client.request_since = None;
            }
            self.pump(os, id);
        }
        let stalled: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.stalled_since.is_some_and(|since| now >= since + timeout))
            .map(|(id, _)| *id)
            .collect();
        for id in stalled {
            log::warn!("closing connection {id}: its answers have not been read for {timeout:?}");
            self.close_client(os, id);
        }
        let expired: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| now >= c.last_active + idle && c.conn.pending_deferred() == 0 && !c.conn.is_subscriber())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            log::debug!("closing idle connection {id}");
            self.close_client(os, id);
        }
    }
}
