//! `proxy.toml` loading and validation from any text: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        sfmc_proxy::fuzzing::config(text);
    }
});
