#![no_main]
//! See `fulgur_host::fuzzing::zbase32`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulgur_host::fuzzing::zbase32(data);
});
