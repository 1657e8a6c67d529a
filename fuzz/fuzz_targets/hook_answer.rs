#![no_main]
//! See `fulgur_host::fuzzing::hook_answer`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulgur_host::fuzzing::hook_answer(data);
});
