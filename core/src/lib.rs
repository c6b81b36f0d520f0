//! forkd-core: the daemon logic, generic over the `Os` trait.
