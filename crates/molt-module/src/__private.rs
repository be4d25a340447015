//! What the [`module!`](crate::module) macro expands to calls; not an API.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use async_ffi::FfiFuture;
pub use molt_abi::contract::Str;
use molt_abi::contract::borrowed;
pub use molt_abi::module::{
    DescriptorHeader, EntryDescriptor, EntryShape, MessageShape, MigrateStatus, ModuleDescriptor, ModuleShapes, Sink,
};

use molt_abi::{IntoExitReason, Message, Process, Shape, TracedShape};

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
    let decoded = catch_unwind(AssertUnwindSafe(|| postcard::take_from_bytes::<S>(bytes)));
    let state = match decoded {
        Ok(Ok((state, []))) => state,
        Ok(Ok((_, rest))) => {
            let why = format!(
                "the state did not decode as {}: {} bytes were left over (a state of another shape)",
                std::any::type_name::<S>(),
                rest.len()
            );
            // SAFETY: `error` is the core's sink for this call.
            unsafe { error.put(why.as_bytes()) };
            return 1;
        }
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

/// `T`'s traced shape, or an unknown one that says why.
fn traced_or_unknown<T: serde::de::DeserializeOwned>() -> TracedShape {
    Shape::trace::<T>()
        .unwrap_or_else(|why| TracedShape { shape: Shape::UNKNOWN, description: format!("not traced: {why}") })
}

/// The shape of the state type of `entry` (the function), for the core.
pub fn entry_shape<S, F, Fut>(name: &str, _entry: F) -> EntryShape
where
    S: serde::de::DeserializeOwned,
    F: FnOnce(Process, S) -> Fut,
{
    EntryShape { entry: name.to_owned(), state: traced_or_unknown::<S>() }
}

/// The shape of a declared message type, for the core.
pub fn message_shape<M: Message>(name: &str) -> MessageShape {
    let traced = traced_or_unknown::<M>();
    MessageShape { name: name.to_owned(), tag: M::TAG, shape: TracedShape { shape: M::shape(), ..traced } }
}

/// Writes the module's shapes for the core, catching panics (tracing runs
/// the types' `Deserialize`).
///
/// # Safety
/// `out` must be a sink the core made for this call.
pub unsafe fn write_shapes(out: Sink, shapes: fn() -> ModuleShapes) -> u8 {
    molt_abi::install_module_panic_hook();
    let encoded = catch_unwind(AssertUnwindSafe(|| postcard::to_allocvec(&shapes())));
    let (status, written) = match encoded {
        Ok(Ok(bytes)) => (0, bytes),
        Ok(Err(error)) => (1, format!("its shapes did not encode: {error}").into_bytes()),
        Err(panic) => (1, format!("tracing its shapes panicked: {}", molt_abi::panic_message(panic)).into_bytes()),
    };
    // SAFETY: `out` is the core's sink for this call.
    unsafe { out.put(&written) };
    status
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
    let decoded = std::cell::Cell::new(false);
    let outcome = catch_unwind(AssertUnwindSafe(|| hook(old_version, OldState { bytes, decoded: &decoded })));
    let (status, written) = match outcome {
        Ok(Ok(new_state)) if !decoded.get() && new_state == bytes => (MigrateStatus::PassedOn, new_state),
        Ok(Ok(new_state)) => (MigrateStatus::Migrated, new_state),
        Ok(Err(error)) => (MigrateStatus::Failed, error.0.into_bytes()),
        Err(panic) => (MigrateStatus::Panicked, molt_abi::panic_message(panic).into_bytes()),
    };
    // SAFETY: `out` is the core's sink for this call.
    unsafe { out.put(&written) };
    status as u8
}
