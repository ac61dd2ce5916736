//! SFMC's `/v2/token` answer parser: any status and body, never a panic.
//! The first two bytes are the status (big-endian), the rest the body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [high, low, body @ ..] => (u16::from_be_bytes([*high, *low]) % 600, body),
        _ => return,
    };
    sfmc_proxy::fuzzing::token_response(status, body);
});
