#![no_main]
//! See `fulgur_host::fuzzing::rpc_requests`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulgur_host::fuzzing::rpc_requests(data);
});
