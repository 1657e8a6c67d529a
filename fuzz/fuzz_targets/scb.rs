#![no_main]
//! Static channel backups and recovery secrets (`fulgur_engine::recovery`,
//! `fulgur_engine::codex32`): `recoverchannel`'s hex backups, the `emergency.recover` file
//! (sealed, and the list inside it) and `--recover`'s codex32 or hex secret. None may panic;
//! a backup that reads writes back to the same bytes; a file sealed from what was read
//! opens to it again.

use fulgur_engine::codex32;
use fulgur_engine::recovery::{Scb, decode_list, open, seal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(scb) = Scb::decode(data) {
        assert_eq!(scb.encode().as_deref(), Ok(data));
    }
    if let Ok(list) = decode_list(data) {
        assert_eq!(
            list.channels.len(),
            usize::from(u16::from_be_bytes([data[4], data[5]]))
        );
        let key = [7u8; 32];
        let file = seal(&key, [1; 12], &list).expect("what was read seals");
        assert_eq!(open(&key, &file).as_ref(), Ok(&list));
    }
    let _ = open(&[0u8; 32], data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = codex32::decode("cl", text) {
            assert!(c.payload.len() <= 93 * 5 / 8);
        }
        let _ = codex32::recover_secret(text);
    }
});
