//! The local `/v2/token` request parser (JSON or form): a map or a refusal,
//! never a panic. The first byte picks the Content-Type.
#![no_main]
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 5] = [
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("Application/X-WWW-Form-Urlencoded ; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    sfmc_proxy::fuzzing::broker_request(content_type, body);
});
