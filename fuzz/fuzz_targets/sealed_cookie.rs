//! A cookie-store value, and the plaintext format inside one (parsed, sealed again, opened).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = actix_redis_session::__fuzz::sealed_cookie(data);
});
