//! Metrics through the `metrics` facade (feature `metrics`): what the README's "Metrics"
//! table lists. Without the feature every function here is empty and compiles away.

use std::time::Duration;

use crate::{error::StoreErrorKind, store::BreakerState};

/// A load (the first extraction of a request with a session cookie), by outcome: `hit`,
/// `miss`, `invalid` (a cookie that did not verify), `corrupt` (stored data dropped or
/// discarded), `bound_elsewhere`, `error`, `migrated` (an actix-session session moved over,
/// or followed through its forward); with the store's latency when it was asked.
pub(crate) fn load(outcome: &'static str, latency: Option<Duration>) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::counter!("session_loads_total", "outcome" => outcome).increment(1);
        if let Some(latency) = latency {
            ::metrics::histogram!("session_store_latency_seconds", "op" => "load")
                .record(latency.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (outcome, latency);
}

/// A save to a server-side store, by kind (`create`, `update`, `renew`, `empty`, `delete`,
/// `keep`) and outcome (`ok`, `error`), with its latency.
pub(crate) fn save(kind: &'static str, ok: bool, latency: Duration) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if ok { "ok" } else { "error" };
        ::metrics::counter!("session_saves_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        ::metrics::histogram!("session_store_latency_seconds", "op" => "save")
            .record(latency.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, ok, latency);
}

/// A touch sent while the handler runs (`touch_after`), whose answer nobody waits for.
pub(crate) fn touch() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("session_saves_total", "kind" => "touch", "outcome" => "sent").increment(1);
}

/// A store error, by kind.
pub(crate) fn store_error(kind: StoreErrorKind) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("session_store_errors_total", "kind" => kind_label(kind)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = kind;
}

#[cfg(feature = "metrics")]
fn kind_label(kind: StoreErrorKind) -> &'static str {
    match kind {
        StoreErrorKind::Unavailable => "unavailable",
        StoreErrorKind::Timeout => "timeout",
        StoreErrorKind::Backend => "backend",
        StoreErrorKind::IdCollision => "id_collision",
        StoreErrorKind::Full => "full",
        StoreErrorKind::CircuitOpen => "circuit_open",
        StoreErrorKind::Unsupported => "unsupported",
        StoreErrorKind::NotReplicated => "not_replicated",
        _ => "other",
    }
}

/// A store operation tried again (`op`: `load`, `update`, `create`, `empty`, `delete`).
pub(crate) fn retry(op: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("session_store_retries_total", "op" => op).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = op;
}

/// The circuit breaker changed state.
pub(crate) fn breaker(state: BreakerState) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!("session_store_breaker_state").set(state.gauge());
    #[cfg(not(feature = "metrics"))]
    let _ = state;
}

/// A batch of requests' commands sent to Redis in one write (`requests`: how many).
pub(crate) fn batch(requests: usize) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!("session_store_batch_size").record(requests as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = requests;
}

/// The local cache: a load served from it (`hit`), sent to Redis with tracking on (`miss`)
/// or off (`bypass`); an entry dropped because Redis said it changed (`invalidation`), to
/// make room or at its time to live (`eviction`); the whole cache dropped (`flush`).
pub(crate) fn cache_event(event: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("session_cache_events_total", "event" => event).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = event;
}

/// Whether the local cache's tracking connection is up (1) or not (0).
pub(crate) fn cache_tracking(on: bool) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!("session_cache_tracking").set(if on { 1.0 } else { 0.0 });
    #[cfg(not(feature = "metrics"))]
    let _ = on;
}
