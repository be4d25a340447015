//! The C contract of a module: the [`ModuleDescriptor`] every module library
//! exports, its entries, its `migrate` hook, and the build facts the core
//! checks before it runs any of the module's code.
//!
//! A descriptor is a `static` in the module, read by the core through the
//! exported symbol [`DESCRIPTOR_SYMBOL`]. Its first two fields are fixed for
//! every ABI version — `magic`, then `abi_version` — so the core can tell a
//! foreign library or another ABI apart before it reads anything else.
//! Everything it points at is immutable data of the module, valid while the
//! library is loaded.

use std::ffi::c_void;

use async_ffi::FfiFuture;

use crate::Process;
use crate::contract::Str;

/// The exported symbol that holds a module's [`ModuleDescriptor`].
pub const DESCRIPTOR_SYMBOL: &str = "MOLT_MODULE_DESCRIPTOR";

/// The first eight bytes of every descriptor: "moltmod" and a zero byte.
pub const DESCRIPTOR_MAGIC: u64 = u64::from_le_bytes(*b"moltmod\0");

/// The version of `molt-abi` (the SDK contract) this build carries.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The target triple this build of `molt-abi` was compiled for.
pub const BUILD_TARGET: &str = env!("MOLT_BUILD_TARGET");

/// The compiler this build of `molt-abi` was compiled with (`rustc --version`).
pub const BUILD_RUSTC: &str = env!("MOLT_BUILD_RUSTC");

/// What a library was built with; the core loads only modules whose facts
/// equal its own.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BuildInfo {
    /// [`BUILD_TARGET`] of the module's build.
    pub target: Str,
    /// [`BUILD_RUSTC`] of the module's build.
    pub rustc: Str,
    /// [`SDK_VERSION`] of the module's build.
    pub sdk: Str,
}

impl BuildInfo {
    /// The facts of this very build.
    pub const fn here() -> BuildInfo {
        BuildInfo { target: Str::of(BUILD_TARGET), rustc: Str::of(BUILD_RUSTC), sdk: Str::of(SDK_VERSION) }
    }
}

/// Starts an entry: turns the process and its start argument or state
/// (postcard bytes, borrowed for the call) into the body's future. Never runs
/// user code itself, so it cannot panic.
pub type EntryStart = unsafe extern "C" fn(process: Process, state: *const u8, len: usize) -> FfiFuture<()>;

/// One entry of a module: a function a process can run (`pingpong:server`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EntryDescriptor {
    /// The entry's name.
    pub name: Str,
    /// Starts it.
    pub start: EntryStart,
}

/// What `migrate` did.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateStatus {
    /// The new state was written to the sink.
    Migrated = 0,
    /// The hook refused; the reason was written to the sink.
    Failed = 1,
    /// The hook panicked; the panic's message was written to the sink.
    Panicked = 2,
}

/// Where `migrate` writes its output (the new state, or a reason): the core
/// passes a sink and copies the bytes during the call.
#[repr(C)]
#[derive(Debug)]
pub struct Sink {
    /// The core's buffer.
    pub env: *mut c_void,
    /// Appends `len` bytes at `ptr` to the buffer.
    pub write: unsafe extern "C" fn(env: *mut c_void, ptr: *const u8, len: usize),
}

impl Sink {
    /// A sink that appends to `buffer`, for the duration of a call.
    pub fn of(buffer: &mut Vec<u8>) -> Sink {
        unsafe extern "C" fn write(env: *mut c_void, ptr: *const u8, len: usize) {
            // SAFETY: `env` is the `&mut Vec<u8>` given to `of`, alive and
            // unaliased for the call the sink was made for; `ptr` and `len`
            // describe the writer's live bytes.
            let (buffer, bytes) = unsafe { (&mut *env.cast::<Vec<u8>>(), std::slice::from_raw_parts(ptr, len)) };
            buffer.extend_from_slice(bytes);
        }
        Sink { env: std::ptr::from_mut(buffer).cast(), write }
    }

    /// Writes `bytes` into the sink.
    ///
    /// # Safety
    /// The sink must be one handed to this call by its maker (see `of`).
    pub unsafe fn put(&self, bytes: &[u8]) {
        // SAFETY: guaranteed by the caller; `bytes` is valid for the call.
        unsafe { (self.write)(self.env, bytes.as_ptr(), bytes.len()) }
    }
}

/// A module's `migrate` (Erlang's `code_change`): turns the state of the
/// version `old_version` (postcard bytes) into this version's state. Must not
/// unwind.
pub type Migrate = unsafe extern "C" fn(old_version: Str, state: *const u8, len: usize, out: Sink) -> MigrateStatus;

/// Everything the core needs to know about a module library.
#[repr(C)]
#[derive(Debug)]
pub struct ModuleDescriptor {
    /// [`DESCRIPTOR_MAGIC`].
    pub magic: u64,
    /// The contract version the module was built against:
    /// [`ABI_VERSION`](crate::contract::ABI_VERSION).
    pub abi_version: u32,
    /// What the module was built with.
    pub build: BuildInfo,
    /// The module's name, which must match the name it is loaded under.
    pub name: Str,
    /// The module's declared version string.
    pub version: Str,
    /// The entries, `entry_count` of them.
    pub entries: *const EntryDescriptor,
    /// How many entries there are.
    pub entry_count: usize,
    /// The migrate hook.
    pub migrate: Migrate,
}

// SAFETY: a descriptor is immutable once built, and every pointer in it
// points at immutable `'static` data of the library that holds it.
unsafe impl Sync for ModuleDescriptor {}

impl ModuleDescriptor {
    /// The entries.
    ///
    /// # Safety
    /// `entries` and `entry_count` must describe a live array, as they do in
    /// a descriptor read from a loaded module.
    pub unsafe fn entries(&self) -> &[EntryDescriptor] {
        if self.entry_count == 0 {
            return &[];
        }
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(self.entries, self.entry_count) }
    }
}
