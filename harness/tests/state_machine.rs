//! proptest state-machine tests on the simulated world: a sequence of
//! steps (requests of every kind, pipelined or not, waits, reconnections,
//! signals to the daemon, crashes of workers) is run by one client against
//! a whole daemon, and every invariant of the harness is checked. A failing
//! sequence shrinks to a minimal one.
//!
//! The client is the model: it knows what each request must be answered
//! (and in which order), and the checker knows what the daemon must do with
//! its workers and its resources whatever the sequence.

use std::time::Duration;

use forkd_harness::run_scenario;
use forkd_harness::scenario::{BatchItem, Framing, Req, Scenario, Step, WorkerCall};
use forkd_os::Signal;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};

fn message() -> impl Strategy<Value = String> {
    prop_oneof![Just("hi".to_string()), Just("ünïcödé \"q\"\n".to_string()), "[a-z]{0,12}"]
}

fn worker() -> impl Strategy<Value = String> {
    prop_oneof![Just("alpha".to_string()), Just("beta".to_string()), Just("nobody".to_string())]
}

fn call() -> impl Strategy<Value = WorkerCall> {
    prop_oneof![
        proptest::option::of(worker()).prop_map(WorkerCall::Pause),
        proptest::option::of(worker()).prop_map(WorkerCall::Resume),
        (worker(), message()).prop_map(|(w, m)| WorkerCall::Send(w, m)),
        proptest::option::of(worker()).prop_map(WorkerCall::Status),
        Just(WorkerCall::List),
        worker().prop_map(WorkerCall::Restart),
    ]
}

fn batch_item() -> impl Strategy<Value = BatchItem> {
    prop_oneof![
        message().prop_map(BatchItem::Echo),
        message().prop_map(BatchItem::Notify),
        Just(BatchItem::NotAnObject),
        Just(BatchItem::UnknownMethod),
    ]
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        4 => message().prop_map(Req::Echo),
        1 => message().prop_map(Req::Notify),
        1 => Just(Req::Info),
        2 => proptest::collection::vec(batch_item(), 1..4).prop_map(Req::Batch),
        1 => Just(Req::UnknownMethod),
        1 => Just(Req::BadParams),
        1 => Just(Req::InvalidRequest),
        1 => Just(Req::ParseError),
        3 => call().prop_map(Req::Worker),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => proptest::collection::vec(req(), 1..4).prop_map(Step::Send),
        4 => Just(Step::Await),
        1 => (0u64..30).prop_map(|ms| Step::Sleep(Duration::from_millis(ms))),
        1 => prop_oneof![Just(Framing::Ndjson), Just(Framing::Http)].prop_map(Step::Connect),
        1 => prop_oneof![Just(Signal::Hup), Just(Signal::Usr1), Just(Signal::Chld), Just(Signal::Usr2)]
            .prop_map(Step::Signal),
        1 => (0u8..4).prop_map(Step::KillWorker),
    ]
}

fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x5EED),
        ..Config::default()
    };
    TestRunner::new(config)
}

/// Runs `steps` in the machine's world; the failures, if any.
fn judge(steps: &[Step]) -> Result<(), TestCaseError> {
    let r = run_scenario(Scenario::machine(1, steps.to_vec()), false);
    if r.passed() {
        Ok(())
    } else {
        Err(TestCaseError::fail(r.failures.join("; ")))
    }
}

#[test]
fn any_sequence_of_steps_keeps_every_invariant() {
    let mut runner = runner(48);
    let result = runner.run(&proptest::collection::vec(step(), 0..24), |steps| judge(&steps));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// With a bug planted, the state machine finds it, and shrinks the
/// sequence that shows it to a handful of steps (for the seed of this test,
/// four sends, the last one pipelined behind the others).
#[cfg(feature = "planted")]
#[test]
fn a_planted_bug_shrinks_to_a_minimal_sequence() {
    use forkd_core::planted::{self, Bug};
    use proptest::test_runner::TestError;
    planted::plant(&[Bug::DropPipelined]);
    let mut runner = runner(64);
    let result = runner.run(&proptest::collection::vec(step(), 0..24), |steps| judge(&steps));
    planted::plant(&[]);
    match result {
        Err(TestError::Fail(why, minimal)) => {
            // A local minimum: no single step can go, and no step can be
            // made simpler, without the failure going too.
            assert!(minimal.len() <= 6, "shrunk to {} steps only: {minimal:?} ({why})", minimal.len());
            eprintln!("minimal sequence: {minimal:?}\nbecause: {why}");
        }
        other => panic!("the planted bug was not found: {other:?}"),
    }
}
