//! A Cookie header: every value of the session cookie verified as the middleware does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = actix_redis_session::__fuzz::cookie_header(data);
});
