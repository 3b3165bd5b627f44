//! A stored value: opened (AES-GCM, gzip, plain), decoded; what decodes round-trips in every form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = actix_redis_session::__fuzz::stored_value(data);
});
