#![no_main]
//! See `fulgur_host::fuzzing::runes`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulgur_host::fuzzing::runes(data);
});
