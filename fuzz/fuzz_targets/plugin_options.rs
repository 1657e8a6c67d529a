#![no_main]
//! See `fulgur_host::fuzzing::plugin_options`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulgur_host::fuzzing::plugin_options(data);
});
