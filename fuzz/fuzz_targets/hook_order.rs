#![no_main]
//! See `fulgur_host::fuzzing::hook_order`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulgur_host::fuzzing::hook_order(data);
});
