//! What the [`module!`](crate::module) macro expands to calls; not an API.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use async_ffi::FfiFuture;
pub use molt_abi::contract::Str;
pub use molt_abi::module::{DescriptorHeader, EntryDescriptor, MigrateStatus, ModuleDescriptor, Sink};

use molt_abi::{ExitReason, IntoExitReason, Process};

use crate::{MigrateResult, OldState};

/// The declared ABI version: the real one unless a test overrides it.
pub const fn pick_abi(overridden: &[u32]) -> u32 {
    match overridden {
        [abi] => *abi,
        _ => molt_abi::contract::ABI_VERSION,
    }
}

/// The declared SDK version: the real one unless a test overrides it.
pub const fn pick_sdk(overridden: &[&'static str]) -> &'static str {
    match overridden {
        [sdk] => sdk,
        _ => molt_abi::module::SDK_VERSION,
    }
}

/// Copies bytes the core lends for one call.
///
/// # Safety
/// `ptr` must point at `len` readable bytes (or `len` be 0).
pub unsafe fn copy(ptr: *const u8, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
}

/// The body of a process running an entry: decodes the state at the first
/// poll, then runs the entry. Installs the module's panic hook first (see
/// [`molt_abi::install_module_panic_hook`]).
///
/// # Safety
/// As for [`molt_abi::body_future`]: the future is the body of `process`,
/// polled and dropped only by the core.
pub unsafe fn start_entry<S, F, Fut>(process: Process, state: Vec<u8>, entry: F) -> FfiFuture<()>
where
    S: serde::de::DeserializeOwned + Send + 'static,
    F: FnOnce(Process, S) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoExitReason,
{
    molt_abi::install_module_panic_hook();
    let body = move |process| async move {
        match postcard::from_bytes::<S>(&state) {
            Ok(state) => entry(process, state).await.into_exit_reason(),
            Err(error) => ExitReason::Error(format!(
                "the entry's state did not decode as {}: {error}",
                std::any::type_name::<S>()
            )),
        }
    };
    // SAFETY: forwarded from the caller.
    unsafe { molt_abi::body_future(process, body) }
}

/// The migrate hook of a module that declares none: the state passes on
/// unchanged.
pub fn keep_state(_from: &str, old: OldState<'_>) -> MigrateResult {
    Ok(old.bytes().to_vec())
}

/// Runs a module's migrate hook for the core, catching its panics.
///
/// # Safety
/// `old_version` and `state`/`len` must be live for the call, and `out` a
/// sink the core made for it.
pub unsafe fn run_migrate(
    hook: fn(&str, OldState<'_>) -> MigrateResult,
    old_version: Str,
    state: *const u8,
    len: usize,
    out: Sink,
) -> u8 {
    molt_abi::install_module_panic_hook();
    // SAFETY: guaranteed by the caller.
    let (old_version, bytes) =
        unsafe { (old_version.as_str(), if len == 0 { &[][..] } else { std::slice::from_raw_parts(state, len) }) };
    let outcome = catch_unwind(AssertUnwindSafe(|| hook(old_version, OldState { bytes })));
    let (status, written) = match outcome {
        Ok(Ok(new_state)) => (MigrateStatus::Migrated, new_state),
        Ok(Err(error)) => (MigrateStatus::Failed, error.0.into_bytes()),
        Err(panic) => (MigrateStatus::Panicked, molt_abi::panic_message(panic).into_bytes()),
    };
    // SAFETY: `out` is the core's sink for this call.
    unsafe { out.put(&written) };
    status as u8
}
