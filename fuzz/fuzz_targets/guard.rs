//! The inbound guard (`guard::check`) on fuzzed Host, Origin and
//! Sec-Fetch-Site header bytes and request target: a decision, never a panic.
#![no_main]
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    strict: bool,
    host: Option<&'a [u8]>,
    origin: Option<&'a [u8]>,
    sec_fetch_site: Option<&'a [u8]>,
    uri: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    sfmc_proxy::fuzzing::guard(
        input.strict,
        input.host,
        input.origin,
        input.sec_fetch_site,
        input.uri,
    );
});
