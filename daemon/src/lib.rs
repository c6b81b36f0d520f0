//! forkd: build multi-process Unix daemons.
