#![no_main]
//! See `fulgur_host::fuzzing::plugin_messages`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulgur_host::fuzzing::plugin_messages(data);
});
