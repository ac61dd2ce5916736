//! SFMC's HTTP/1.1 response to the proxy's own upstream client: head, then
//! body by its framing. The first byte's low bit says whether the request
//! was a HEAD, the second how many bytes arrive at a time; the rest is what
//! SFMC sent.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head_request, step, wire) = match data {
        [flags, step, wire @ ..] => (flags & 1 == 1, usize::from(*step).max(1), wire),
        _ => return,
    };
    sfmc_proxy::fuzzing::upstream_response(head_request, step, wire);
});
