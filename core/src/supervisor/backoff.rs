//! Restarting an instance that exited: at once the first time, then after
//! an exponential backoff with jitter, capped; or never again, once it
//! has started too often within the policy's period (it is failed).

use std::time::Duration;

use forkd_os::Instant;

use super::{Action, InstanceState, OnFailure, Supervisor};

impl Supervisor {
    pub(super) fn schedule_restart(&mut self, id: usize, now: Instant) {
        let policy = self.policy.clone();
        let jitter = self.rng.next_u64();
        let inst = &mut self.instances[id];
        while inst.starts.front().is_some_and(|t| now.saturating_duration_since(*t) > policy.period) {
            inst.starts.pop_front();
        }
        if inst.starts.len() as u32 >= policy.intensity {
            inst.state = InstanceState::Failed;
            let name = &self.specs[inst.worker].name;
            if policy.on_failure == OnFailure::StopDaemon {
                self.actions.push_back(Action::StopDaemon(format!(
                    "worker {name} failed: {} starts within {:?}",
                    policy.intensity, policy.period
                )));
            }
            return;
        }
        let stable = inst.started_at.is_some_and(|t| now.saturating_duration_since(t) >= policy.stable_after);
        if stable {
            inst.backoff = Duration::ZERO;
        }
        // The first restart is immediate; later ones back off, with up to
        // half the backoff added as jitter so that a pool does not restart in
        // lockstep.
        let delay = if inst.backoff.is_zero() {
            Duration::ZERO
        } else {
            let half = inst.backoff.as_nanos() as u64 / 2;
            inst.backoff + Duration::from_nanos(if half == 0 { 0 } else { jitter % half })
        };
        inst.backoff =
            if inst.backoff.is_zero() { policy.backoff_initial } else { (inst.backoff * 2).min(policy.backoff_max) };
        inst.restarts += 1;
        inst.state = InstanceState::Waiting { at: now + delay };
        if delay.is_zero() {
            self.actions.push_back(Action::Spawn(id));
        }
    }
}
