//! What the [`module!`](crate::module) macro expands to calls; not an API.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use async_ffi::FfiFuture;
pub use molt_abi::contract::Str;
use molt_abi::contract::borrowed;
pub use molt_abi::module::{DescriptorHeader, EntryDescriptor, MigrateStatus, ModuleDescriptor, Sink};

use molt_abi::{IntoExitReason, Process};

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

/// An entry's start, for the core (see [`molt_abi::module::EntryStart`]):
/// decodes the state now — so a state that does not fit is refused before
/// anything starts — then packs the body. Installs the module's panic hook
/// first (see [`molt_abi::install_module_panic_hook`]).
///
/// # Safety
/// `state` must point at `len` readable bytes (or `len` be 0), `body` at a
/// place for one future, and `error` be a sink the core made for this call;
/// the future is the body of `process`, polled and dropped only by the core
/// (as for [`molt_abi::body_future`]).
pub unsafe fn start_entry<S, F, Fut>(
    process: Process,
    state: *const u8,
    len: usize,
    body: *mut FfiFuture<()>,
    error: Sink,
    entry: F,
) -> u8
where
    S: serde::de::DeserializeOwned + Send + 'static,
    F: FnOnce(Process, S) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoExitReason,
{
    molt_abi::install_module_panic_hook();
    // SAFETY: guaranteed by the caller.
    let bytes = unsafe { borrowed(state, len) };
    let decoded = catch_unwind(AssertUnwindSafe(|| postcard::from_bytes::<S>(bytes)));
    let state = match decoded {
        Ok(Ok(state)) => state,
        Ok(Err(decode)) => {
            let why = format!("the state did not decode as {}: {decode}", std::any::type_name::<S>());
            // SAFETY: `error` is the core's sink for this call.
            unsafe { error.put(why.as_bytes()) };
            return 1;
        }
        Err(panic) => {
            let why = format!("decoding the state panicked: {}", molt_abi::panic_message(panic));
            // SAFETY: as above.
            unsafe { error.put(why.as_bytes()) };
            return 1;
        }
    };
    let start = move |process| async move { entry(process, state).await.into_exit_reason() };
    // SAFETY: forwarded from the caller; `body` is a place for the future,
    // written once.
    unsafe { body.write(molt_abi::body_future(process, start)) };
    molt_abi::module::ENTRY_STARTED
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
    let (old_version, bytes) = unsafe { (old_version.as_str(), borrowed(state, len)) };
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
