//! The C contract of a module: the [`ModuleDescriptor`] every module library
//! exports, its entries, its `migrate` hook, and the build facts the core
//! checks before it runs any of the module's code.
//!
//! A descriptor is a `static` in the module, read by the core through the
//! exported symbol [`DESCRIPTOR_SYMBOL`]. It starts with a
//! [`DescriptorHeader`] of plain data whose first two fields are fixed for
//! every ABI version — `magic`, then `abi_version` — so the core can tell a
//! foreign library or another ABI apart, then compare the layout
//! fingerprint, target, compiler, SDK version, panic strategy and name, all
//! from the file's bytes before `dlopen` runs any of the file's code.
//! Everything the rest of the descriptor points at is immutable data of the
//! module, valid while the library is loaded.

use std::ffi::c_void;

use async_ffi::FfiFuture;

use crate::contract::Str;
pub use crate::layout::LAYOUT_FINGERPRINT;
use crate::{Process, Tag, TracedShape};

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

/// Whether this build unwinds on panic (`panic = "unwind"`, the default):
/// the core loads only modules that do, because a panic in an
/// abort-on-panic module would end the whole node.
pub const PANIC_UNWINDS: bool = cfg!(panic = "unwind");

/// A string stored inline, so it can be read from a module file as plain
/// data before any of the file's code runs (a pointer in a file is only
/// filled in by the dynamic loader).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FixedStr<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> FixedStr<N> {
    /// `s` stored inline; a string longer than `N` bytes is a compile-time
    /// error where this runs in a `const`.
    pub const fn of(s: &str) -> FixedStr<N> {
        let src = s.as_bytes();
        assert!(src.len() <= N && src.len() <= u16::MAX as usize, "string too long for its descriptor field");
        let mut bytes = [0u8; N];
        let mut i = 0;
        while i < src.len() {
            bytes[i] = src[i];
            i += 1;
        }
        FixedStr { len: src.len() as u16, bytes }
    }

    /// The string, or `None` if the stored length or bytes are not a valid
    /// UTF-8 string (as read from a damaged or foreign file).
    pub fn get(&self) -> Option<&str> {
        let bytes = self.bytes.get(..usize::from(self.len))?;
        std::str::from_utf8(bytes).ok()
    }
}

impl<const N: usize> std::fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.get(), f)
    }
}

/// The part of a descriptor that is plain data (integers and inline
/// strings, no pointer): the core reads it from the file and checks every
/// field before it opens the library, so a misbuilt module runs none of its
/// code. Every bit pattern of it is a valid value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DescriptorHeader {
    /// [`DESCRIPTOR_MAGIC`].
    pub magic: u64,
    /// The contract version the module was built against:
    /// [`ABI_VERSION`](crate::contract::ABI_VERSION). `magic` and this field
    /// come first in every ABI version.
    pub abi_version: u32,
    /// 1 if the module unwinds on panic ([`PANIC_UNWINDS`]).
    pub panic_unwinds: u8,
    /// The size, alignment and field offsets of every type of the contract
    /// as the module was compiled: [`LAYOUT_FINGERPRINT`].
    pub layout: u64,
    /// [`BUILD_TARGET`] of the module's build.
    pub target: FixedStr<64>,
    /// [`BUILD_RUSTC`] of the module's build.
    pub rustc: FixedStr<128>,
    /// [`SDK_VERSION`] of the module's build.
    pub sdk: FixedStr<32>,
    /// The module's name, which must match the name it is loaded under.
    pub name: FixedStr<64>,
    /// The module's declared version string.
    pub version: FixedStr<64>,
}

impl DescriptorHeader {
    /// The header of a module `name` at `version` built right here (the
    /// `abi_version` and `sdk` overrides exist for molt's own tests of
    /// refused builds).
    pub const fn here(name: &str, version: &str, abi_version: u32, sdk: &str) -> DescriptorHeader {
        DescriptorHeader {
            magic: DESCRIPTOR_MAGIC,
            abi_version,
            panic_unwinds: PANIC_UNWINDS as u8,
            layout: LAYOUT_FINGERPRINT,
            target: FixedStr::of(BUILD_TARGET),
            rustc: FixedStr::of(BUILD_RUSTC),
            sdk: FixedStr::of(sdk),
            name: FixedStr::of(name),
            version: FixedStr::of(version),
        }
    }
}

/// What an [`EntryStart`] returns when it started the body.
pub const ENTRY_STARTED: u8 = 0;

/// Starts an entry: decodes the start argument or state (postcard bytes,
/// borrowed for the call) as the entry's state type, and, if it decodes,
/// writes the body's future to `body` and returns [`ENTRY_STARTED`];
/// otherwise writes why to `error`, leaves `body` untouched and returns
/// anything else. Decoding is done before anything starts so that a hot
/// call whose state does not fit the new version can go back to the old
/// one. Catches its own panics (a state type's `Deserialize` is user code).
pub type EntryStart =
    unsafe extern "C" fn(process: Process, state: *const u8, len: usize, body: *mut FfiFuture<()>, error: Sink) -> u8;

/// One entry of a module: a function a process can run (`pingpong:server`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EntryDescriptor {
    /// The entry's name.
    pub name: Str,
    /// Starts it.
    pub start: EntryStart,
}

/// What `migrate` did. The hook returns it as a `u8`, which the core
/// validates with [`MigrateStatus::from_u8`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateStatus {
    /// The new state was written to the sink.
    Migrated = 0,
    /// The hook refused; the reason was written to the sink.
    Failed = 1,
    /// The hook panicked; the panic's message was written to the sink.
    Panicked = 2,
    /// The hook handed the old state on as it was, without decoding it (no
    /// migrate, or one that returned `old.bytes()`): the state, unchanged,
    /// was written to the sink. The core refuses it for an entry whose
    /// state changed shape.
    PassedOn = 3,
}

impl MigrateStatus {
    /// The status a hook returned, if it is one.
    pub fn from_u8(value: u8) -> Option<MigrateStatus> {
        match value {
            0 => Some(MigrateStatus::Migrated),
            1 => Some(MigrateStatus::Failed),
            2 => Some(MigrateStatus::Panicked),
            3 => Some(MigrateStatus::PassedOn),
            _ => None,
        }
    }
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

/// A buffer a [`Sink`] appends to.
pub trait SinkBuffer {
    /// Appends `bytes`.
    fn append(&mut self, bytes: &[u8]);
}

impl SinkBuffer for Vec<u8> {
    fn append(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl SinkBuffer for crate::Payload {
    fn append(&mut self, bytes: &[u8]) {
        // A large block (a byte payload) gets exactly the room it needs,
        // not the next power of two.
        if bytes.len() >= 4096 && bytes.len() > self.capacity() - self.len() {
            self.reserve_exact(bytes.len());
        }
        self.extend_from_slice(bytes);
    }
}

impl Sink {
    /// A sink that appends to `buffer`, for the duration of a call.
    pub fn of<B: SinkBuffer>(buffer: &mut B) -> Sink {
        unsafe extern "C" fn write<B: SinkBuffer>(env: *mut c_void, ptr: *const u8, len: usize) {
            // SAFETY: `env` is the `&mut B` given to `of`, alive and
            // unaliased for the call the sink was made for; `ptr` and `len`
            // describe the writer's live bytes.
            let (buffer, bytes) = unsafe { (&mut *env.cast::<B>(), crate::contract::borrowed(ptr, len)) };
            buffer.append(bytes);
        }
        Sink { env: std::ptr::from_mut(buffer).cast(), write: write::<B> }
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
/// unwind. Returns a [`MigrateStatus`] as `u8`.
pub type Migrate = unsafe extern "C" fn(old_version: Str, state: *const u8, len: usize, out: Sink) -> u8;

/// Writes the module's [`ModuleShapes`] (postcard-encoded) to the sink and
/// returns 0, or writes why it could not and returns anything else. Runs the
/// tracer over the module's types (user code: it catches its own panics).
pub type Shapes = unsafe extern "C" fn(out: Sink) -> u8;

/// The shapes a module declares: its entries' states, its messages, and the
/// versions its `migrate` converts state from. The core compares them with
/// the current version's at load.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModuleShapes {
    /// The state type of each entry, in the order of the entries.
    pub entries: Vec<EntryShape>,
    /// The message types the module declares.
    pub messages: Vec<MessageShape>,
    /// The versions whose state `migrate` declares it converts.
    pub migrates_from: Vec<String>,
}

/// The shape of one entry's state type.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryShape {
    /// The entry.
    pub entry: String,
    /// Its state type's shape ([`Shape::UNKNOWN`](crate::Shape::UNKNOWN) and
    /// the reason as description if it could not be traced).
    pub state: TracedShape,
}

/// The shape of one declared message type.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageShape {
    /// The type as the module names it.
    pub name: String,
    /// Its tag.
    pub tag: Tag,
    /// Its shape: the one its envelopes carry.
    pub shape: TracedShape,
}

/// Everything the core needs to know about a module library.
#[repr(C)]
#[derive(Debug)]
pub struct ModuleDescriptor {
    /// What the core checks before it opens the library.
    pub header: DescriptorHeader,
    /// The entries, `entry_count` of them.
    pub entries: *const EntryDescriptor,
    /// How many entries there are.
    pub entry_count: usize,
    /// The migrate hook.
    pub migrate: Migrate,
    /// Describes the module's shapes.
    pub shapes: Shapes,
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
        // SAFETY: guaranteed by the caller.
        unsafe { crate::contract::borrowed(self.entries, self.entry_count) }
    }
}
