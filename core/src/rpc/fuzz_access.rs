//! The fuzz targets' way into the RPC layer's private parts.
//!
//! The HTTP head parser is private to the RPC layer: nothing outside it has
//! a reason to parse heads. The fuzz target must reach it anyway, so this
//! module, compiled only with the `fuzzing` feature, runs the checks that
//! need its private types and exposes nothing else. It must never grow an
//! accessor that hands a private type out: what the targets learn of the
//! internals stays in here.

use super::http::{self, MAX_HEAD};

/// Parses `data` as a request head and checks what a parsed head must
/// satisfy; see [`crate::fuzzing::http_head`].
pub(crate) fn http_head(data: &[u8]) {
    let Ok(Some(head)) = http::parse_head(data) else {
        return;
    };
    assert!(head.len <= data.len(), "head of {} bytes in an input of {}", head.len, data.len());
    assert!(head.len <= MAX_HEAD, "head of {} bytes accepted over MAX_HEAD", head.len);
    assert!(!(head.chunked && head.content_length.is_some()), "a head with both framings was accepted");
    // The head ends where it says: what follows it (a body, the next
    // request) cannot change how it reads.
    assert_eq!(
        http::parse_head(&data[..head.len]),
        Ok(Some(head.clone())),
        "the head alone parses differently from the head with what follows"
    );
    assert!(
        !matches!(&head.content_type, Some(ct) if ct.bytes().any(|b| b.is_ascii_uppercase())),
        "content type not lowercased: {:?}",
        head.content_type
    );
}
