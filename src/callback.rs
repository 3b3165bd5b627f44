//! Running the application's callbacks (`on_store_failure`, `on_session_load_error`,
//! `on_binding_mismatch`).

/// Runs an application's callback; a panic in it is caught and logged, so that it cannot
/// take the request (or the worker) down.
pub(crate) fn run_callback(name: &'static str, callback: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback)).is_err() {
        tracing::error!(callback = name, "a session callback panicked");
    }
}
