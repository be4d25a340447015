//! The SDK of a molt module: a `cdylib` crate that depends on this crate
//! (and never on the core) and declares itself with [`module!`].
//!
//! The README's "Modules" section has a complete module (a counter that
//! migrates its state from version 1), compiled as a doc test of this crate;
//! `examples/pingpong` is one in two versions.
//!
//! A process in a module uses the same [`Process`] as one compiled into the
//! host. What a module must not do, because its code is unloaded when its
//! version is purged: spawn threads that outlive its processes, or hand out
//! `'static` references or raw pointers to its own data. `thread_local!`
//! values with destructors and spawned threads keep the library mapped after
//! its purge (memory, not danger). Timers, sleeping and receive timeouts are
//! services of the core: use `Process::sleep` and `receive_timeout`, not a
//! runtime of the module's own. A module's panics print nothing (its panic
//! hook records where they happened instead, and the message and place
//! become the process's exit reason); README "How the boundary holds" lists
//! what a module can still do to its node.

#![deny(unsafe_op_in_unsafe_fn)]

pub use molt_abi::{
    DecodeError, Down, Exit, ExitReason, IntoExitReason, Message, MonitorRef, Never, Pid, Process, ReceiveError,
    RegisterError, Shape, SpawnError, Tag, TimerRef, TracedShape, Upgrade, UpgradeFailed,
};

/// The old version's state, handed to `migrate`.
#[derive(Debug, Clone, Copy)]
pub struct OldState<'a> {
    bytes: &'a [u8],
    /// Set once the state is decoded: a migrate that never decodes it and
    /// returns the same bytes passed it on (see `MigrateStatus::PassedOn`).
    decoded: &'a std::cell::Cell<bool>,
}

impl<'a> OldState<'a> {
    /// Decodes the old state as `T` (the old version's state type, which the
    /// new version keeps a copy of).
    ///
    /// # Errors
    /// When the bytes are not a `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, MigrateError> {
        self.decoded.set(true);
        postcard::from_bytes(self.bytes).map_err(|error| {
            MigrateError(format!("the old state did not decode as {}: {error}", std::any::type_name::<T>()))
        })
    }

    /// The old state's postcard bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Why a migration failed: the process keeps running its old version with
/// its old state, and this reason is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MigrateError(pub String);

impl MigrateError {
    /// A reason from anything printable.
    pub fn new(reason: impl std::fmt::Display) -> MigrateError {
        MigrateError(reason.to_string())
    }
}

/// What `migrate` returns: the new state's bytes (see [`encode`]).
pub type MigrateResult = Result<Vec<u8>, MigrateError>;

/// Encodes a new state for [`MigrateResult`].
///
/// # Errors
/// When the value's `Serialize` implementation fails.
pub fn encode<T: serde::Serialize>(state: &T) -> MigrateResult {
    postcard::to_allocvec(state).map_err(|error| MigrateError(format!("the new state did not encode: {error}")))
}

/// Declares the module: its name and version string (any constant `&str`
/// expression: a literal, a constant of the crate, or
/// `env!("CARGO_PKG_VERSION")`, so two versions of a module can share one
/// call), the entries a process can run (async functions `fn(Process,
/// State) -> impl IntoExitReason`, whose `State` is decoded from the start
/// argument or hot-call state), optionally the message types it declares
/// (their shapes are compared with the current version's at load),
/// optionally its `migrate` (`fn(&str, OldState) -> MigrateResult`; without
/// one, state passes to the new version unchanged) and the versions whose
/// state that `migrate` converts (`migrates_from`: a load that changes an
/// entry's state shape is refused unless it names the current version).
///
/// ```ignore
/// molt_module::module! {
///     name: "counter",
///     version: env!("CARGO_PKG_VERSION"),
///     entries: [counter],
///     messages: [Bump, Read],
///     migrate: migrate,
///     migrates_from: ["1.0.0"],
/// }
/// ```
#[macro_export]
macro_rules! module {
    (
        name: $name:expr,
        version: $version:expr,
        entries: [$($entry:ident),+ $(,)?]
        $(, messages: [$($message:ty),* $(,)?])?
        $(, migrate: $migrate:ident)?
        $(, migrates_from: [$($from:expr),* $(,)?])?
        $(, abi_version: $abi:expr)?
        $(, sdk_version: $sdk:expr)?
        $(,)?
    ) => {
        // Evaluated where the macro is called, so a constant of the crate
        // (`VERSION`) or `env!("CARGO_PKG_VERSION")` works as well as a
        // literal, and the message types are named as the caller names them.
        #[doc(hidden)]
        const __MOLT_MODULE_NAME: &str = $name;
        #[doc(hidden)]
        const __MOLT_MODULE_VERSION: &str = $version;
        #[doc(hidden)]
        fn __molt_module_shapes() -> $crate::__private::ModuleShapes {
            $crate::__private::ModuleShapes {
                entries: ::std::vec![$($crate::__private::entry_shape(stringify!($entry), $entry)),+],
                messages: ::std::vec![$($($crate::__private::message_shape::<$message>(stringify!($message))),*)?],
                migrates_from: ::std::vec![$($(::std::string::String::from($from)),*)?],
            }
        }

        #[doc(hidden)]
        mod __molt_module {
            $(
                pub(super) unsafe extern "C" fn $entry(
                    process: $crate::Process,
                    state: *const u8,
                    len: usize,
                    body: *mut $crate::__private::FfiFuture<()>,
                    error: $crate::__private::Sink,
                ) -> u8 {
                    // SAFETY: the core passes `len` live bytes, a place for the
                    // body and its own sink for this call, and starts the future
                    // as the body of `process`, which it keeps alive while it
                    // polls or drops the body.
                    unsafe { $crate::__private::start_entry(process, state, len, body, error, super::$entry) }
                }
            )+

            static ENTRIES: &[$crate::__private::EntryDescriptor] = &[$(
                $crate::__private::EntryDescriptor {
                    name: $crate::__private::Str::of(stringify!($entry)),
                    start: $entry,
                },
            )+];

            unsafe extern "C" fn migrate(
                old_version: $crate::__private::Str,
                state: *const u8,
                len: usize,
                out: $crate::__private::Sink,
            ) -> u8 {
                #[allow(unused_variables)]
                let hook = $crate::__private::keep_state;
                $(let hook = super::$migrate;)?
                // SAFETY: the core passes a live version string, `len` live
                // state bytes and its own sink, all for this call.
                unsafe { $crate::__private::run_migrate(hook, old_version, state, len, out) }
            }

            unsafe extern "C" fn shapes(out: $crate::__private::Sink) -> u8 {
                // SAFETY: the core passes its own sink for this call.
                unsafe { $crate::__private::write_shapes(out, super::__molt_module_shapes) }
            }

            #[unsafe(no_mangle)]
            pub static MOLT_MODULE_DESCRIPTOR: $crate::__private::ModuleDescriptor =
                $crate::__private::ModuleDescriptor {
                    header: $crate::__private::DescriptorHeader::here(
                        super::__MOLT_MODULE_NAME,
                        super::__MOLT_MODULE_VERSION,
                        $crate::__private::pick_abi(&[$($abi)?]),
                        $crate::__private::pick_sdk(&[$($sdk)?]),
                    ),
                    entries: ENTRIES.as_ptr(),
                    entry_count: ENTRIES.len(),
                    migrate,
                    shapes,
                };
        }
    };
}

#[doc(hidden)]
pub mod __private;

/// The README's programs (a host and a module), compiled and run as doc tests
/// so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
