//! The lifetime policy in one place: the sliding idle timeout, "remember me", the absolute
//! timeout and `touch_after`, for every store. Times are unix milliseconds.

use std::time::Duration;

use crate::{
    config::{SessionConfig, MAX_LIFETIME},
    record::millis,
};

/// A "remember me" lifetime as a handler asks for it: from one second to
/// [`MAX_LIFETIME`].
pub(crate) fn requested(lifetime: Duration) -> Duration {
    lifetime.clamp(Duration::from_secs(1), MAX_LIFETIME)
}

/// A "remember me" lifetime from a cookie, cut to the policy's
/// [`remember_max`](crate::RedisSessionBuilder::remember_max): a cookie issued before the
/// policy was shortened gets no more than the policy allows now.
/// None at all when [`allow_remember_me`](crate::RedisSessionBuilder::allow_remember_me) is
/// off.
pub(crate) fn remembered(config: &SessionConfig, lifetime: Option<Duration>) -> Option<Duration> {
    lifetime
        .filter(|_| config.allow_remember)
        .map(|r| r.min(config.remember_max))
}

/// How long the session lives without a request: its "remember me" lifetime, or the idle
/// timeout.
pub(crate) fn idle(config: &SessionConfig, remember: Option<Duration>) -> Duration {
    remember.unwrap_or(config.idle_timeout)
}

/// The TTL a load gives the record, if it moves it: the idle lifetime, or none with
/// `touch_after` (the TTL then moves only when a touch is due).
pub(crate) fn on_load(config: &SessionConfig, remember: Option<Duration>) -> Option<Duration> {
    config.touch_after.is_zero().then(|| idle(config, remember))
}

/// The TTL a write gives the record at `now`: the idle lifetime, cut so that the record
/// never outlives the absolute timeout counted from `created`.
pub(crate) fn ttl(
    config: &SessionConfig,
    remember: Option<Duration>,
    created: Option<u64>,
    now: u64,
) -> Duration {
    let ttl = idle(config, remember);
    match (config.absolute_timeout, created) {
        (Some(absolute), Some(created)) => {
            let end = created.saturating_add(millis(absolute));
            ttl.min(Duration::from_millis(end.saturating_sub(now).max(1)))
        }
        _ => ttl,
    }
}

/// Whether a session created at `created` has reached the absolute timeout at `now`.
pub(crate) fn past_absolute(config: &SessionConfig, created: u64, now: u64) -> bool {
    config
        .absolute_timeout
        .is_some_and(|absolute| now.saturating_sub(created) >= millis(absolute))
}

/// Whether a session last touched at `touched` has been idle for its whole lifetime at `now`
/// (the cookie store, which has no TTL to do it).
pub(crate) fn idle_expired(
    config: &SessionConfig,
    remember: Option<Duration>,
    touched: u64,
    now: u64,
) -> bool {
    now.saturating_sub(touched) >= millis(idle(config, remember))
}

/// Whether the idle timeout must move at `now`, last moved at `touched` (unknown: yes):
/// once per `touch_after` (`default` when that is zero), and at least twice per lifetime, so
/// that a session used more often than its lifetime never expires.
pub(crate) fn touch_due(
    config: &SessionConfig,
    remember: Option<Duration>,
    touched: Option<u64>,
    default: Duration,
    now: u64,
) -> bool {
    let every = if config.touch_after.is_zero() {
        default
    } else {
        config.touch_after
    };
    let interval = millis(every.min(idle(config, remember) / 2));
    touched.is_none_or(|touched| now.saturating_sub(touched) >= interval)
}

/// The longest time to live a session record of this configuration can be given: the idle
/// timeout, or the longest "remember me" lifetime if that is allowed. A user's index lives
/// that long after its last change, so that it outlives every session in it.
pub(crate) fn longest(config: &SessionConfig) -> Duration {
    if config.allow_remember {
        config.idle_timeout.max(config.remember_max)
    } else {
        config.idle_timeout
    }
}
