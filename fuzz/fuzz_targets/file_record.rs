//! A session file of the file store, raw and with a valid checksum; what parses round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = actix_redis_session::__fuzz::file_record(data);
});
