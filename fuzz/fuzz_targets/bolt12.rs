#![no_main]
//! BOLT 12 offers, invoice requests and invoices through `decode`
//! (`fulgur_host::fuzzing::bolt12`, reading with `fulgur_engine::bolt12`): byte 0 says
//! whether the rest is an offer's, invoice request's or invoice's TLV stream, or the string
//! as given. None may panic; what reads writes back to the same bytes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fulgur_host::fuzzing::bolt12(data);
});
