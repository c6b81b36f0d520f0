//! A client that subscribed to the daemon's event stream: one event per
//! line, for as long as the daemon runs.

use std::io::BufRead;

use super::*;

/// The daemon's events, as [`Client::subscribe`] yields them: each an
/// object with its `type`, `seq`, `time` and fields (see the event stream
/// in `docs/architecture.md`). The iterator ends when the daemon closes
/// the connection; the last event is `stream.dropped` when the daemon
/// dropped a subscriber that did not keep up.
#[derive(Debug)]
pub struct Events {
    client: Client,
}

impl Client {
    /// Subscribes to the daemon's events (`daemon.subscribe`). The
    /// connection takes no more calls; the read timeout is lifted, since
    /// an event may be long in coming.
    pub fn subscribe(mut self) -> Result<Events, ClientError> {
        self.call(forkd_core::rpc::SUBSCRIBE, Value::Null)?;
        let address = self.address.clone();
        let lifted = match self.reader.get_ref() {
            Stream::Unix(s) => s.set_read_timeout(None),
            Stream::Tcp(s) => s.set_read_timeout(None),
        };
        lifted.map_err(|e| ClientError::Io(address, e))?;
        Ok(Events { client: self })
    }
}

impl Iterator for Events {
    type Item = Result<Value, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = String::new();
        match self.client.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_str::<Value>(&line)
                    .map(|v| v.get("params").cloned().unwrap_or(v))
                    .map_err(|e| ClientError::BadAnswer(format!("{e}: {}", line.trim_end()))),
            ),
            Err(e) => Some(Err(ClientError::Io(self.client.address.clone(), e))),
        }
    }
}
