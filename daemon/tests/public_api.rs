//! The public surface: every type forkd exports is `Debug`, as the Rust
//! API Guidelines ask.

#[test]
fn every_public_type_is_debug() {
    fn debug<T: std::fmt::Debug>() {}
    debug::<forkd::Builder>();
    debug::<forkd::Daemon>();
    debug::<forkd::BuildError>();
    debug::<forkd::Client>();
    debug::<forkd::ClientError>();
    debug::<forkd::ConnectOptions>();
    debug::<forkd::TokenFileError>();
    debug::<forkd::TokenSource>();
    debug::<forkd::WorkerOptions>();
    debug::<forkd::Config>();
    debug::<forkd::Ctl>();
    debug::<forkd::Info>();
    debug::<forkd::StartError>();
    debug::<forkd::Stopped>();
    debug::<forkd::Event>();
    debug::<forkd::Topic>();
    debug::<forkd::WorkerEventKind>();
    debug::<forkd::Args>();
    debug::<forkd::DateTime>();
    debug::<forkd::DeferId>();
    debug::<forkd::Method<forkd::Ctl>>();
    debug::<forkd::ParamType>();
    debug::<forkd::Reply>();
    debug::<forkd::RpcError>();
    debug::<forkd::OnFailure>();
    debug::<forkd::Restart>();
    debug::<forkd::RestartPolicy>();
    debug::<forkd::ChannelError>();
    debug::<forkd::Context<'static>>();
    debug::<forkd::WorkerEvent>();
    debug::<forkd::Address>();
    debug::<forkd::Instant>();
    debug::<forkd::Pid>();
    debug::<forkd::Signal>();
}
