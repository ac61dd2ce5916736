//! The SOAP injector on arbitrary bytes: scanned whole and as every prefix,
//! an envelope is refused, waits, or is edited only inside its plan's ranges.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sfmc_proxy::fuzzing::soap_inject(data));
