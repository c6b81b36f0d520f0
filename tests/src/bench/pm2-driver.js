// The bench's hands on PM2: one long-lived node process that holds a
// connection to PM2's daemon (the "God" process) through PM2's own API and
// answers the bench's commands, one per line on stdin, with one line on
// stdout that starts with "@@ " (PM2 prints messages of its own there).
//
//   start N    N instances of /bin/sleep 100000 (fork mode, no interpreter)
//   list       the process list (what `pm2 jlist` asks): how many online
//   status ID  the pid and status of process ID
//   kill       what `pm2 kill` does: delete every process, stop the daemon
//
// PM2_HOME comes from the environment. When stdin closes (the bench is
// done, or died) before `kill`, the driver kills the daemon and its
// processes outright and exits, so that no PM2 outlives the bench.
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const pm2 = require('pm2');

const reply = (o) => process.stdout.write('@@ ' + JSON.stringify(o) + '\n');
const fail = (what, err) => reply({ error: what + ': ' + (err && err.message ? err.message : String(err)) });

function godPid() {
  try {
    return parseInt(fs.readFileSync(path.join(process.env.PM2_HOME, 'pm2.pid'), 'utf8'), 10) || 0;
  } catch (_) {
    return 0;
  }
}

function list(cb) {
  pm2.list((err, procs) => (err ? cb(err) : cb(null, procs || [])));
}

// Once the daemon is killed, nothing may reach PM2 again: its client
// would start a new daemon.
let killed = false;

// SIGKILL to the daemon and to every process it wrote a pid file for.
function killAll() {
  const dir = path.join(process.env.PM2_HOME, 'pids');
  let pids = [];
  try {
    pids = fs.readdirSync(dir).map((f) => parseInt(fs.readFileSync(path.join(dir, f), 'utf8'), 10));
  } catch (_) {}
  for (const pid of [godPid(), ...pids]) {
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (_) {}
    }
  }
}

const commands = {
  start(n, done) {
    const app = {
      name: 'idle',
      script: '/bin/sleep',
      args: ['100000'],
      interpreter: 'none',
      exec_mode: 'fork',
      instances: n,
      autorestart: true,
      out_file: '/dev/null',
      error_file: '/dev/null',
    };
    pm2.start(app, (err) => (err ? fail('start', err) : reply({ ok: true }), done()));
  },
  list(_, done) {
    list((err, procs) => {
      if (err) fail('list', err);
      else reply({ online: procs.filter((p) => p.pm2_env && p.pm2_env.status === 'online').length, all: procs.length });
      done();
    });
  },
  status(id, done) {
    list((err, procs) => {
      const p = err ? null : procs.find((p) => p.pm_id === id);
      if (err) fail('status', err);
      else if (!p) reply({ error: 'no process ' + id });
      else reply({ pid: p.pid || 0, status: p.pm2_env ? p.pm2_env.status : '' });
      done();
    });
  },
  kill(_, done) {
    killed = true;
    pm2.killDaemon((err) => (err ? fail('kill', err) : reply({ ok: true }), done()));
  },
};

pm2.connect((err) => {
  if (err) {
    fail('connect', err);
    process.exit(1);
  }
  reply({ ready: true, god: godPid() });
  // One command at a time: the next line is read once this one answered.
  const queue = [];
  let busy = false;
  const next = () => {
    busy = false;
    const line = queue.shift();
    if (line !== undefined) run(line);
  };
  const run = (line) => {
    busy = true;
    const [name, arg] = line.trim().split(/\s+/);
    const cmd = commands[name];
    if (killed) {
      reply({ error: 'the daemon is killed' });
      return next();
    }
    if (!cmd) {
      reply({ error: 'unknown command ' + JSON.stringify(name) });
      return next();
    }
    cmd(parseInt(arg || '0', 10), next);
  };
  const input = readline.createInterface({ input: process.stdin });
  input.on('line', (line) => (busy ? queue.push(line) : run(line)));
  const leave = () => {
    if (!killed) killAll();
    process.exit(0);
  };
  input.on('close', leave);
  // The bench asks for SIGTERM when it dies (PR_SET_PDEATHSIG).
  process.on('SIGTERM', leave);
});
