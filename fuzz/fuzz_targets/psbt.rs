#![no_main]
//! See `fulgur_host::fuzzing::psbt`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulgur_host::fuzzing::psbt(data);
});
