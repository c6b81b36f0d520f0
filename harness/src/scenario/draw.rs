//! Drawing a scenario from its seed: the swarm's weights, the daemon's
//! configuration, each client's script, the rogue connections, the chaos.

use super::*;

/// Names the scenario's workers get.
const WORKER_NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Scenario {
    /// The scenario of `seed`.
    pub fn from_seed(seed: u64) -> Scenario {
        let mut r = Rng::derive(seed, "scenario");
        let faults = swarm_faults(&mut r);
        let restart = restart_policy(&mut r);
        let n_clients = r.range(2, 32) as usize;
        let max_connections = *r.pick(&[2usize, 4, 8, 16, 64, 64, 64, 64]);
        // The security choices come from a generator of their own, so that
        // the seed's other choices stay what they were.
        let mut sr = Rng::derive(seed, "security");
        let idle_timeout = ms(*r.pick(&[300, 800, 2000]));
        let daemon = DaemonPlan {
            socket_buffer: *r.pick(&[7usize, 64, 256, 1024, 4096]),
            idle_timeout,
            max_connections,
            max_request: *r.pick(&[512usize, 2048, 8192]),
            restart,
            tcp: sr.chance(50).then(|| 7000 + sr.below(1000) as u16),
            max_batch: *sr.pick(&[4usize, 6, 8]),
            // Past the idle timeout on some seeds: a trickle keeps its
            // connection from going idle, not its request from being late.
            request_timeout: ms(*sr.pick(&[200, 500, 1000, 2500])),
        };
        let workers = worker_plans(&mut r);
        let names: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
        let phase = ms(r.range(1000, 12000));
        let mix = Mix::swarm(&mut r);
        let rogues = Rogues::swarm(&mut sr, &daemon);
        let mut clients = (0..n_clients)
            .map(|i| {
                let mut cr = Rng::new(r.fork());
                let mut sec = Rng::new(sr.fork());
                let start = ms(cr.below(phase.as_millis() as u64 / 2));
                let mut steps = client_script(&mut cr, &mix, &names, &daemon, phase);
                rogue_connections(&mut sec, &rogues, &mix, &names, &daemon, &mut steps);
                ClientPlan { id: i as u32 + 1, start, steps, seed: cr.fork(), last: false, uid: None }
            })
            .collect::<Vec<_>>();
        // Strangers: clients of other users on the unix socket.
        if daemon.tcp.is_none() && sr.chance(rogues.stranger) {
            for k in 0..sr.range(1, 3) {
                let id = clients.len() as u32 + 1;
                let steps = stranger_script(&mut sr, &names, &daemon);
                let start = ms(sr.below(phase.as_millis() as u64 / 2));
                clients.push(ClientPlan { id, start, steps, seed: sr.fork(), last: false, uid: Some(1000 + k as u32) });
            }
        }
        let n_clients = clients.len();
        let chaos = chaos_plan(&mut r, phase);
        let stop = *r.pick(&[StopBy::Shutdown, StopBy::Shutdown, StopBy::Term, StopBy::Int]);
        let last = last_client(n_clients as u32 + 1, stop, r.fork());
        let stop_storm = stop_storm(&mut r);
        Scenario {
            seed,
            world_seed: crate::rng::derive(seed, "world"),
            faults,
            strict_liveness: max_connections > n_clients + 1,
            daemon,
            workers,
            clients,
            chaos,
            last,
            stop,
            stop_storm,
            max_steps: 3_000_000,
        }
    }
}

impl Scenario {
    /// A few lines saying what the scenario is, for a replay.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "seed {} (world seed {})\nfaults: {:?}\ndaemon: {:?}\n",
            self.seed, self.world_seed, self.faults, self.daemon
        );
        for w in &self.workers {
            s += &format!(
                "worker {}: looptime {:?}, forever {}, {} instance(s), {}% faulty\n",
                w.name, w.looptime, w.forever, w.instances, w.faulty
            );
        }
        for c in &self.clients {
            s += &format!("client {}: starts at {:?}, {} steps\n", c.id, c.start, c.steps.len());
        }
        for (at, what) in &self.chaos {
            s += &format!("chaos at {at:?}: {what:?}\n");
        }
        s += &format!(
            "stop by {:?}{}, strict liveness {}",
            self.stop,
            if self.stop_storm.is_empty() { String::new() } else { format!(" then {:?}", self.stop_storm) },
            self.strict_liveness
        );
        s
    }

    /// A scenario for the state machine: one client runs `steps` (after
    /// connecting), against a daemon with two healthy workers, a pool and a
    /// single one, with no chaos process and no faults but the scheduling.
    pub fn machine(seed: u64, steps: Vec<Step>) -> Scenario {
        let mut r = Rng::derive(seed, "machine");
        let mut restart = RestartPolicy::default();
        restart.backoff_initial = ms(5);
        restart.backoff_max = ms(50);
        restart.stable_after = ms(200);
        restart.intensity = 50;
        restart.period = ms(1000);
        restart.on_failure = OnFailure::StopDaemon;
        restart.hang_timeout = Some(ms(2000));
        restart.stop_timeout = ms(50);
        let daemon = DaemonPlan {
            socket_buffer: 64,
            idle_timeout: ms(1000),
            max_connections: 8,
            max_request: 4096,
            restart,
            tcp: None,
            max_batch: 1000,
            request_timeout: ms(10_000),
        };
        let workers = vec![
            WorkerPlan {
                name: "alpha".into(),
                looptime: ms(5),
                forever: true,
                instances: 1,
                seed: r.fork(),
                faulty: 0,
            },
            WorkerPlan {
                name: "beta".into(),
                looptime: ms(20),
                forever: true,
                instances: 2,
                seed: r.fork(),
                faulty: 0,
            },
        ];
        let mut all = vec![Step::Connect(Framing::Ndjson)];
        all.extend(steps);
        all.push(Step::Await);
        all.push(Step::Close);
        let client = ClientPlan { id: 1, start: Duration::ZERO, steps: all, seed: r.fork(), last: false, uid: None };
        Scenario {
            seed,
            world_seed: crate::rng::derive(seed, "world"),
            faults: Faults::default(),
            daemon,
            workers,
            clients: vec![client],
            chaos: Vec::new(),
            last: last_client(2, StopBy::Shutdown, r.fork()),
            stop: StopBy::Shutdown,
            strict_liveness: true,
            stop_storm: Vec::new(),
            max_steps: 3_000_000,
        }
    }
}

/// Each kind of fault on or off, at a rate of its own.
/// How the daemon restarts its workers: small, varied bounds, so that
/// backoffs, intensity and hang detection all come into play.
fn restart_policy(r: &mut Rng) -> RestartPolicy {
    // Drawn in this order, field by field: a seed replays its policy.
    let mut p = RestartPolicy::default();
    p.backoff_initial = ms(r.range(1, 10));
    p.backoff_max = ms(*r.pick(&[20, 50, 100, 200]));
    p.stable_after = ms(*r.pick(&[50, 200, 1000]));
    p.intensity = r.range(3, 8) as u32;
    p.period = ms(*r.pick(&[200, 500, 2000]));
    p.on_failure = if r.chance(70) { OnFailure::StopDaemon } else { OnFailure::KeepRunning };
    // Above the worker's heartbeat interval (1 s), or an idle or
    // paused worker would be taken for a hung one.
    p.hang_timeout = if r.chance(50) { Some(ms(r.range(1500, 3000))) } else { None };
    p.stop_timeout = ms(*r.pick(&[20, 50, 200, 500]));
    p
}

/// Up to three workers, forever or not, some pools, some prone to faults.
fn worker_plans(r: &mut Rng) -> Vec<WorkerPlan> {
    let n_workers = r.weighted(&[15, 40, 30, 15]);
    let faulty = *r.pick(&[0u64, 5, 20, 50]);
    (0..n_workers)
        .map(|i| WorkerPlan {
            name: WORKER_NAMES[i].to_string(),
            looptime: ms(*r.pick(&[1, 5, 20, 100])),
            forever: r.chance(80),
            instances: if r.chance(25) { r.range(2, 3) as u32 } else { 1 },
            seed: r.fork(),
            faulty: if r.chance(30) { 0 } else { faulty },
        })
        .collect()
}

/// Signals sent to the daemon while it stops, on some seeds.
fn stop_storm(r: &mut Rng) -> Vec<Signal> {
    if r.chance(30) {
        let mix = [Signal::Term, Signal::Int, Signal::Chld, Signal::Hup, Signal::Usr1, Signal::Usr2];
        (0..r.range(1, 20)).map(|_| *r.pick(&mix)).collect()
    } else {
        Vec::new()
    }
}

fn swarm_faults(r: &mut Rng) -> Faults {
    let rate = |r: &mut Rng, max: u32| -> u32 {
        if r.chance(40) {
            (*r.pick(&[500u32, 2_000, 10_000, 50_000, 100_000])).min(max)
        } else {
            0
        }
    };
    Faults {
        spawn_fails: rate(r, 100_000),
        poll_interrupted: rate(r, 50_000),
        short_read: rate(r, 100_000),
        short_write: rate(r, 100_000),
        accept_emfile: rate(r, 100_000),
        shm_fails: rate(r, 100_000),
    }
}

/// How often each kind of request comes, per seed.
struct Mix {
    /// Weights: echo, notify, info, batch, unknown, bad params, invalid,
    /// parse error, too large, worker call.
    weights: [u64; 10],
    http: u64,
    pipeline: u64,
    flood: u64,
    mid_request: u64,
}

impl Mix {
    fn swarm(r: &mut Rng) -> Mix {
        let mut weights = [0u64; 10];
        for (i, w) in weights.iter_mut().enumerate() {
            // Echo always weighs something: it is what answers are checked on.
            *w = if i == 0 {
                r.range(5, 20)
            } else if r.chance(70) {
                r.range(1, 8)
            } else {
                0
            };
        }
        Mix {
            weights,
            http: *r.pick(&[0, 20, 50]),
            pipeline: *r.pick(&[10, 40, 80]),
            flood: *r.pick(&[0, 0, 10, 30]),
            mid_request: *r.pick(&[0, 10, 25]),
        }
    }
}

fn message(r: &mut Rng) -> String {
    const WORDS: [&str; 8] = ["ping", "héllo", "\"quoted\"", "tab\there", "line\nbreak", "∑", "{json}", "back\\slash"];
    let n = r.range(1, 4);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(WORDS[r.below(WORDS.len() as u64) as usize]);
        s.push(' ');
    }
    if r.chance(10) {
        s.push_str(&"x".repeat(r.range(50, 300) as usize));
    }
    s
}

fn worker_name(r: &mut Rng, names: &[String]) -> String {
    if names.is_empty() || r.chance(10) {
        "nobody".to_string()
    } else {
        r.pick(names).clone()
    }
}

fn request(r: &mut Rng, mix: &Mix, names: &[String], framing: Framing) -> Req {
    match r.weighted(&mix.weights) {
        0 => Req::Echo(message(r)),
        1 => Req::Notify(message(r)),
        2 => Req::Info,
        3 => {
            let n = r.range(1, 5);
            Req::Batch(
                (0..n)
                    .map(|_| match r.weighted(&[6, 2, 1, 1, mix.weights[9], mix.weights[9] / 2]) {
                        0 => BatchItem::Echo(message(r)),
                        1 => BatchItem::Notify(message(r)),
                        2 => BatchItem::NotAnObject,
                        3 => BatchItem::UnknownMethod,
                        4 => BatchItem::Worker(worker_call(r, names)),
                        _ => BatchItem::NotifyWorker(worker_call(r, names)),
                    })
                    .collect(),
            )
        }
        4 => Req::UnknownMethod,
        5 => Req::BadParams,
        6 => Req::InvalidRequest,
        7 => {
            if framing == Framing::Http && r.chance(50) {
                Req::BadHead
            } else {
                Req::ParseError
            }
        }
        8 => Req::TooLarge,
        _ => Req::Worker(worker_call(r, names)),
    }
}

fn worker_call(r: &mut Rng, names: &[String]) -> WorkerCall {
    let name = |r: &mut Rng| if r.chance(25) { None } else { Some(worker_name(r, names)) };
    match r.weighted(&[3, 3, 3, 2, 2, 1, 1]) {
        0 => WorkerCall::Pause(name(r)),
        1 => WorkerCall::Resume(name(r)),
        2 => WorkerCall::Send(worker_name(r, names), message(r)),
        3 => WorkerCall::Status(name(r)),
        4 => WorkerCall::List,
        5 => WorkerCall::Restart(worker_name(r, names)),
        _ => {
            let batch = r.chance(50).then(|| r.range(1, u64::from(super::MAX_RELOAD_BATCH)) as u32);
            WorkerCall::Reload(name(r), batch)
        }
    }
}

/// A client's script: a few connections, each a few rounds of requests.
fn client_script(r: &mut Rng, mix: &Mix, names: &[String], daemon: &DaemonPlan, phase: Duration) -> Vec<Step> {
    let mut steps = Vec::new();
    // Pauses stay well within the idle timeout: a connection closed for
    // idleness would take requests written meanwhile with it.
    let think = (daemon.idle_timeout.as_millis() as u64 / 4).min(phase.as_millis() as u64 / 8).max(1);
    for _ in 0..r.range(1, 10) {
        let framing = if r.chance(mix.http) { Framing::Http } else { Framing::Ndjson };
        steps.push(Step::Connect(framing));
        if r.chance(mix.flood) {
            let hold = ms(r.range(10, think * 4));
            steps.push(Step::Flood { requests: r.range(20, 200) as u32, hold });
            continue;
        }
        let mut ended = false;
        for _ in 0..r.range(1, 10) {
            let n = if r.chance(mix.pipeline) { r.range(2, 8) } else { 1 };
            let mut reqs = Vec::new();
            for _ in 0..n {
                let req = request(r, mix, names, framing);
                let fatal = req.is_fatal(framing);
                reqs.push(req);
                if fatal {
                    ended = true;
                    break;
                }
            }
            steps.push(Step::Send(reqs));
            if r.chance(85) || ended {
                steps.push(Step::Await);
            }
            if ended {
                break;
            }
            if r.chance(40) {
                steps.push(Step::Sleep(ms(r.range(0, think))));
            }
        }
        if !ended && r.chance(mix.mid_request) {
            steps.push(Step::CloseMidRequest(Req::Echo(message(r))));
        } else {
            if !ended && r.chance(80) {
                steps.push(Step::Await);
            }
            steps.push(Step::Close);
        }
        if r.chance(50) {
            steps.push(Step::Sleep(ms(r.range(0, think))));
        }
    }
    steps
}

/// How often each kind of refused client comes, per seed.
struct Rogues {
    /// Percent of clients that open refused connections besides their own.
    rate: u64,
    /// Weights: without the token (tcp only), forged, over the batch
    /// bound, trickling.
    weights: [u64; 4],
    /// Percent of unix seeds with clients of other users.
    stranger: u64,
}

impl Rogues {
    fn swarm(r: &mut Rng, daemon: &DaemonPlan) -> Rogues {
        let mut weights = [0u64; 4];
        for w in &mut weights {
            *w = if r.chance(60) { r.range(1, 5) } else { 0 };
        }
        if daemon.tcp.is_none() {
            weights[0] = 0;
        }
        if weights.iter().all(|w| *w == 0) {
            weights[r.range(1, 3) as usize] = 1;
        }
        Rogues { rate: *r.pick(&[0, 20, 40, 70]), weights, stranger: *r.pick(&[0, 30, 60]) }
    }
}

/// Adds a few refused connections to a client's script, each between two
/// of its own (every connection ends with a close, and a `Connect` closes
/// the one before).
fn rogue_connections(
    r: &mut Rng,
    rogues: &Rogues,
    mix: &Mix,
    names: &[String],
    daemon: &DaemonPlan,
    steps: &mut Vec<Step>,
) {
    if !r.chance(rogues.rate) {
        return;
    }
    for _ in 0..r.range(1, 3) {
        let framing = if r.chance(50) { Framing::Http } else { Framing::Ndjson };
        let mut conn = Vec::new();
        match r.weighted(&rogues.weights) {
            0 => {
                let bad = if r.chance(50) { BadToken::Missing } else { BadToken::Wrong };
                conn.push(Step::ConnectWithout(framing, bad));
                let reqs: Vec<Req> = (0..r.range(1, 5)).map(|_| refused_call(r, names)).collect();
                if r.chance(50) {
                    conn.push(Step::Send(reqs));
                    conn.push(Step::Await);
                } else {
                    for req in reqs {
                        conn.push(Step::Send(vec![req]));
                        conn.push(Step::Await);
                    }
                }
            }
            1 => {
                conn.push(Step::Connect(Framing::Http));
                let mut reqs = Vec::new();
                if r.chance(50) {
                    reqs.push(Req::Echo(message(r)));
                }
                let forgery =
                    *r.pick(&[Forgery::TextPlain, Forgery::Form, Forgery::ForeignHost, Forgery::ForeignOrigin]);
                reqs.push(Req::Forged(forgery));
                conn.push(Step::Send(reqs));
                conn.push(Step::Await);
            }
            2 => {
                conn.push(Step::Connect(framing));
                let over = if r.chance(50) { Req::OverBatch } else { Req::OverMulticall };
                let mut reqs = vec![over];
                if r.chance(50) {
                    reqs.push(request(r, mix, names, framing));
                    reqs.retain(|q| !q.is_fatal(framing) || matches!(q, Req::OverBatch | Req::OverMulticall));
                }
                conn.push(Step::Send(reqs));
                conn.push(Step::Await);
            }
            _ => {
                conn.push(Step::Connect(framing));
                conn.push(Step::Trickle(Req::Echo(format!("slow {}", "s".repeat(r.range(80, 120) as usize)))));
            }
        }
        conn.push(Step::Close);
        let _ = daemon;
        let at: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Step::Connect(_)))
            .map(|(i, _)| i)
            .chain([steps.len()])
            .collect();
        let i = *r.pick(&at);
        steps.splice(i..i, conn);
    }
}

/// A call that would act if it ran: a refused connection must not run it.
fn refused_call(r: &mut Rng, names: &[String]) -> Req {
    match r.weighted(&[3, 3, 2, 2, 1]) {
        0 => Req::Echo(message(r)),
        1 => Req::Shutdown,
        2 => Req::Worker(WorkerCall::Pause(None)),
        3 => Req::Worker(WorkerCall::Restart(worker_name(r, names))),
        _ => Req::Info,
    }
}

/// A client of another user: a few connections, each closed unanswered.
fn stranger_script(r: &mut Rng, names: &[String], daemon: &DaemonPlan) -> Vec<Step> {
    let think = (daemon.idle_timeout.as_millis() as u64 / 4).max(1);
    let mut steps = Vec::new();
    for _ in 0..r.range(1, 3) {
        let framing = if r.chance(50) { Framing::Http } else { Framing::Ndjson };
        steps.push(Step::Stranger(framing, refused_call(r, names)));
        steps.push(Step::Sleep(ms(r.range(0, think))));
    }
    steps
}

fn chaos_plan(r: &mut Rng, phase: Duration) -> Vec<(Duration, Chaos)> {
    let level = r.weighted(&[20, 50, 30]);
    let n = [0, r.range(1, 10), r.range(10, 100)][level];
    let weights = [r.range(0, 5), r.range(0, 3), r.range(0, 4), r.range(0, 2), r.range(0, 2), r.range(1, 3)];
    let mut plan: Vec<(Duration, Chaos)> = (0..n)
        .map(|_| {
            let at = ms(r.below(phase.as_millis() as u64));
            let harmless = [Signal::Hup, Signal::Usr1, Signal::Chld, Signal::Usr2, Signal::Winch];
            let what = match r.weighted(&weights) {
                0 => Chaos::Signal(*r.pick(&harmless)),
                1 => Chaos::Storm((0..r.range(3, 40)).map(|_| *r.pick(&harmless)).collect()),
                2 => Chaos::KillWorker,
                3 => Chaos::KillAll,
                4 => Chaos::TermWorker,
                _ => Chaos::ProbePidLock,
            };
            (at, what)
        })
        .collect();
    // Now and then the daemon is stopped in the middle of everything, by one
    // signal or a storm of them.
    if r.chance(8) {
        let sig = if r.chance(50) { Signal::Term } else { Signal::Int };
        let at = ms(r.below(phase.as_millis() as u64));
        if r.chance(50) {
            plan.push((at, Chaos::Signal(sig)));
        } else {
            let mix = [Signal::Term, Signal::Int, Signal::Chld, Signal::Hup, Signal::Usr1];
            plan.push((at, Chaos::Storm((0..r.range(5, 30)).map(|_| *r.pick(&mix)).collect())));
        }
    }
    // A second daemon, started while the first runs, must be refused.
    if r.chance(15) {
        plan.push((ms(r.below(phase.as_millis() as u64)), Chaos::SecondDaemon));
    }
    // The daemon crashes.
    if r.chance(10) {
        plan.push((ms(r.below(phase.as_millis() as u64)), Chaos::KillDaemon));
    }
    plan.sort_by_key(|(at, _)| *at);
    plan
}

/// The liveness client: echoes, pipelined and batched, must be answered;
/// then it may stop the daemon.
fn last_client(id: u32, stop: StopBy, seed: u64) -> ClientPlan {
    let mut steps = vec![
        Step::Connect(Framing::Ndjson),
        Step::Send(vec![Req::Echo("last one".into())]),
        Step::Await,
        Step::Send(vec![
            Req::Echo("pipelined 1".into()),
            Req::Echo("pipelined 2".into()),
            Req::Batch(vec![BatchItem::Echo("in a batch".into()), BatchItem::Notify("quiet".into())]),
            Req::Info,
        ]),
        Step::Await,
        Step::Send(vec![Req::Worker(WorkerCall::Status(None)), Req::Worker(WorkerCall::List)]),
        Step::Await,
    ];
    if stop == StopBy::Shutdown {
        steps.push(Step::Send(vec![Req::Shutdown]));
        steps.push(Step::Await);
    }
    steps.push(Step::Close);
    ClientPlan { id, start: Duration::ZERO, steps, seed, last: true, uid: None }
}
