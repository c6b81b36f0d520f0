//! The invariants of rolling reloads, judged from the trace: the daemon's
//! notes (`reload W started: batch B`, `reload W.I new: pid P`, `worker
//! W.I replaced: pid O by pid N`, `reload W ended`), the workers' own state
//! notes (`worker W.I: looping`) and the processes' exits.
//!
//! - a worker never runs more processes than its size, plus the batch of
//!   a rollout under way;
//! - during a rollout, never fewer of its processes are up (looping or
//!   paused) than its size (or fewer, if fewer were up when it began) minus
//!   the batch, less the processes that went down on their own meanwhile
//!   (crashed, killed, hung): what a fault takes is not the rollout's doing;
//! - an old process is asked to stop only once its replacement is up.

use super::{secs, Daemon, Facts};
use crate::scenario::Scenario;

/// Takes a daemon's note about a rollout; `false` if it is not one.
pub(super) fn note(d: &mut Daemon, t: u64, text: &str) -> bool {
    if let Some(rest) = text.strip_prefix("reload ") {
        if let Some((name, batch)) = rest.split_once(" started: batch ") {
            d.rollouts.push((name.to_string(), batch.parse().unwrap_or(1), t, None));
        } else if let Some(name) = rest.strip_suffix(" ended") {
            if let Some(r) = d.rollouts.iter_mut().rev().find(|r| r.0 == name && r.3.is_none()) {
                r.3 = Some(t);
            }
        } else if let Some((_, pid)) = rest.split_once(" new: pid ") {
            d.joining.extend(pid.parse::<i32>().ok());
        }
        return true;
    }
    if let Some((_, pids)) = text.strip_prefix("worker ").and_then(|r| r.split_once(" replaced: pid ")) {
        if let Some((old, new)) = pids.split_once(" by pid ") {
            if let (Ok(old), Ok(new)) = (old.parse::<i32>(), new.parse::<i32>()) {
                d.replaced.insert(old, (t, new));
            }
        }
        return true;
    }
    false
}

/// Whether a reload stopped process `pid`: an old one it replaced, or a
/// new one it gave up on.
pub(super) fn reload_stopped(d: &Daemon, pid: i32) -> bool {
    let promoted = d.replaced.values().any(|(_, new)| *new == pid);
    d.replaced.contains_key(&pid) || (d.joining.contains(&pid) && !promoted)
}

/// Whether the exit of worker process `pid` at `t` is no restart owed: a
/// reload stopped it, or another process holds its place (a reload's new
/// one, spawned beside it, took over).
pub(super) fn exit_planned(f: &Facts, d: &Daemon, pid: i32, t: u64) -> bool {
    if reload_stopped(d, pid) {
        return true;
    }
    let Some((name, inst, _)) = d.workers.get(&pid) else { return false };
    d.workers.iter().any(|(other, (n, i, start))| {
        *other != pid && n == name && i == inst && *start <= t && f.exits.get(other).is_none_or(|(e, _)| *e > t)
    })
}

/// When process `pid` was up: from its first `looping` or `paused` note
/// to its first `spindown` or `exited` note after, or its exit.
fn up_span(f: &Facts, pid: i32) -> Option<(u64, u64)> {
    let states = f.states.get(&pid)?;
    let from = states.iter().find(|(_, s)| s == "looping" || s == "paused")?.0;
    let down = states.iter().find(|(t, s)| *t >= from && (s == "spindown" || s == "exited")).map(|(t, _)| *t);
    let exit = f.exits.get(&pid).map(|(t, _)| *t);
    Some((from, down.into_iter().chain(exit).min().unwrap_or(u64::MAX)))
}

/// The rollouts' invariants for daemon `d`.
pub(super) fn judge(sc: &Scenario, f: &Facts, d: &Daemon, out: &mut Vec<String>) {
    let end = d.stop_t().unwrap_or(u64::MAX).min(d.end());
    for w in &sc.workers {
        let size = w.instances as usize;
        let pids: Vec<i32> = d.workers.iter().filter(|(_, (n, _, _))| *n == w.name).map(|(p, _)| *p).collect();
        let rollouts: Vec<(u32, u64, u64)> =
            d.rollouts.iter().filter(|r| r.0 == w.name).map(|(_, b, s, e)| (*b, *s, e.unwrap_or(u64::MAX))).collect();
        // Processes at once: counted at each start.
        for &p in &pids {
            let start = d.workers[&p].2;
            if start >= end {
                continue;
            }
            let alive = pids
                .iter()
                .filter(|q| d.workers[q].2 <= start && f.exits.get(q).is_none_or(|(e, _)| *e > start))
                .count();
            let batch = rollouts.iter().filter(|(_, s, e)| *s <= start && start <= *e).map(|(b, _, _)| *b).max();
            let allowed = size + batch.unwrap_or(0) as usize;
            if alive > allowed {
                out.push(format!(
                    "at {}: worker {} runs {alive} processes, over its {size} plus the reload's {}",
                    secs(start),
                    w.name,
                    batch.unwrap_or(0)
                ));
            }
        }
        let spans: Vec<(i32, (u64, u64))> = pids.iter().filter_map(|&p| Some((p, up_span(f, p)?))).collect();
        for &(batch, began, ended) in &rollouts {
            judge_capacity(d, (&w.name, size, batch), &spans, (began, ended.min(end)), out);
        }
    }
    // Ready first: an old process is asked to stop only once its
    // replacement is up.
    for (old, (t, new)) in &d.replaced {
        let up = up_span(f, *new).is_some_and(|(from, _)| from <= *t);
        if !up {
            out.push(format!("at {}: worker process {old} was replaced by {new} before {new} was up", secs(*t)));
        }
    }
}

/// Never fewer than size minus batch up during one rollout, faults aside.
fn judge_capacity(
    d: &Daemon,
    (name, size, batch): (&str, usize, u32),
    spans: &[(i32, (u64, u64))],
    (began, ended): (u64, u64),
    out: &mut Vec<String>,
) {
    let up = |t: u64| spans.iter().filter(|(_, (from, to))| *from <= t && t < *to).count();
    let base = up(began).min(size);
    let mut moments: Vec<u64> =
        spans.iter().flat_map(|(_, (a, b))| [*a, *b]).filter(|t| began < *t && *t <= ended).collect();
    moments.sort_unstable();
    moments.dedup();
    for t in moments {
        // Went down on their own: any but an old process it replaced.
        let faults = spans.iter().filter(|(p, (_, to))| began < *to && *to <= t && !d.replaced.contains_key(p)).count();
        let floor = base.saturating_sub(batch as usize + faults);
        let now = up(t);
        if now < floor {
            out.push(format!(
                "at {}: worker {name} had {now} processes up during a reload, under {floor} ({base} up at its start, \
                 batch {batch}, {faults} down by faults)",
                secs(t)
            ));
            return;
        }
    }
}
