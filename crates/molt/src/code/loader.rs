//! The loader: turns a file into a [`Library`] of a module version the code
//! server can commit, checking everything that can be checked before any
//! code of the file runs.
//!
//! In order, each step failing with its own [`LoadError`]:
//! 1. the file is read whole, then inspected as data: an ELF shared object
//!    for this machine whose segments all lie inside the file (a truncated
//!    library is refused here, not found out by a `SIGBUS` later), exporting
//!    [`DESCRIPTOR_SYMBOL`], whose first bytes carry the magic and the ABI
//!    version molt expects;
//! 2. the bytes are written to a private copy named by their hash and a
//!    counter, so the dynamic loader never hands back a library it already
//!    loaded (the seed's "load doesn't really load");
//! 3. the copy is opened (`dlopen`, which runs the library's own
//!    initialisers — the one piece of module code that runs before the
//!    checks below) and the descriptor is read in place: build facts
//!    (target, compiler, SDK version), name and entries are compared and
//!    copied.
//!
//! # Safety
//! Loading a library runs its initialisers, and calling what it exports
//! trusts the declarations it makes; molt trusts a file that passed the
//! checks above to be a module built by `molt-module`. Every function
//! pointer taken from a library lives in the [`Library`] that owns the
//! handle, so none can outlive it.
//!
//! # Platform-specific behaviour
//! Closing a library (`dlclose`) may not unmap it: glibc keeps a library
//! whose thread-local destructors ran, and musl never unmaps. Purge is
//! therefore logical first — the version is gone from the table and none of
//! its code runs — and whether its pages left the address space is measured
//! afterwards from `/proc/self/maps` ([`still_mapped`]) and reported, never
//! relied upon.

#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

use async_ffi::FfiFuture;
use molt_abi::Process;
use molt_abi::contract::{ABI_VERSION, Str};
use molt_abi::module::{
    BuildInfo, DESCRIPTOR_MAGIC, DESCRIPTOR_SYMBOL, EntryStart, Migrate, MigrateStatus, ModuleDescriptor, Sink,
};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::error::LoadError;

/// A loaded module library: the handle and everything taken from it.
pub(crate) struct Library {
    /// Declared in the descriptor, copied.
    pub(crate) name: String,
    pub(crate) version: String,
    entries: Vec<(String, EntryStart)>,
    migrate: Migrate,
    /// The private copy the library was opened from.
    pub(crate) copy: PathBuf,
    /// Dropped last: the pointers above are only used while it is open.
    handle: Option<libloading::Library>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library").field("name", &self.name).field("version", &self.version).finish()
    }
}

/// The facts checked before `dlopen`, read from the file as data.
struct Inspected {
    abi_version: u32,
}

fn host_architecture() -> Option<object::Architecture> {
    if cfg!(target_arch = "x86_64") {
        Some(object::Architecture::X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(object::Architecture::Aarch64)
    } else {
        None
    }
}

/// Step 1: the file as data.
fn inspect(path: &Path, bytes: &[u8]) -> Result<Inspected, LoadError> {
    let not_a_library = |reason: String| LoadError::NotALibrary { path: path.to_owned(), reason };
    if bytes.is_empty() {
        return Err(not_a_library("the file is empty".into()));
    }
    truncation(path, bytes)?;
    let file =
        object::File::parse(bytes).map_err(|e| not_a_library(format!("not an object file this machine runs ({e})")))?;
    if file.format() != object::BinaryFormat::Elf {
        return Err(not_a_library(format!("a {:?} file, not ELF", file.format())));
    }
    if Some(file.architecture()) != host_architecture() {
        return Err(LoadError::WrongTarget {
            path: path.to_owned(),
            expected: molt_abi::module::BUILD_TARGET.to_owned(),
            found: format!("{:?}", file.architecture()),
        });
    }
    if file.kind() != object::ObjectKind::Dynamic {
        return Err(not_a_library(format!("a {:?} object, not a shared library", file.kind())));
    }
    let len = bytes.len() as u64;
    for segment in file.segments() {
        let (offset, size) = segment.file_range();
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(LoadError::Truncated {
                path: path.to_owned(),
                needed: offset.saturating_add(size),
                found: len,
            });
        }
    }
    for section in file.sections() {
        if let Some((offset, size)) = section.file_range()
            && offset.checked_add(size).is_none_or(|end| end > len)
        {
            return Err(LoadError::Truncated {
                path: path.to_owned(),
                needed: offset.saturating_add(size),
                found: len,
            });
        }
    }
    let symbol = file.dynamic_symbols().find(|s| s.name() == Ok(DESCRIPTOR_SYMBOL)).ok_or_else(|| {
        LoadError::NotAModule { path: path.to_owned(), reason: format!("it exports no {DESCRIPTOR_SYMBOL}") }
    })?;
    let header = read_at_address(&file, bytes, symbol.address(), 12).ok_or_else(|| LoadError::NotAModule {
        path: path.to_owned(),
        reason: format!("its {DESCRIPTOR_SYMBOL} is not in the file's data"),
    })?;
    let magic = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
    if magic != DESCRIPTOR_MAGIC {
        return Err(LoadError::NotAModule {
            path: path.to_owned(),
            reason: "its descriptor does not start with molt's magic".into(),
        });
    }
    let abi_version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if abi_version != ABI_VERSION {
        return Err(LoadError::AbiMismatch { path: path.to_owned(), expected: ABI_VERSION, found: abi_version });
    }
    Ok(Inspected { abi_version })
}

/// A 64-bit ELF file whose header tables reach past its end is truncated
/// (the section headers come last, so a cut file loses them first).
fn truncation(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    use object::read::elf::FileHeader;
    let Ok(header) = object::elf::FileHeader64::<object::Endianness>::parse(bytes) else { return Ok(()) };
    let Ok(endian) = header.endian() else { return Ok(()) };
    let table_end = |offset: u64, count: u16, size: u16| offset.saturating_add(u64::from(count) * u64::from(size));
    let needed = table_end(header.e_phoff(endian), header.e_phnum.get(endian), header.e_phentsize(endian))
        .max(table_end(header.e_shoff(endian), header.e_shnum.get(endian), header.e_shentsize(endian)));
    let found = bytes.len() as u64;
    if needed > found {
        return Err(LoadError::Truncated { path: path.to_owned(), needed, found });
    }
    Ok(())
}

/// `len` bytes of the file's initialised data at a virtual address, found
/// through the loadable segments (sections with address 0, such as debug
/// information, would mislead).
fn read_at_address<'a>(file: &object::File<'_>, bytes: &'a [u8], address: u64, len: u64) -> Option<&'a [u8]> {
    let segment = file.segments().find(|s| {
        let (_, file_size) = s.file_range();
        s.address() <= address && address + len <= s.address() + file_size
    })?;
    let (offset, _) = segment.file_range();
    let start = usize::try_from(offset + (address - segment.address())).ok()?;
    bytes.get(start..start + usize::try_from(len).ok()?)
}

/// Loads the module file at `path` from a private copy in `copies`.
pub(crate) fn load(path: &Path, copies: &Path, serial: u64) -> Result<(Library, String), LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
    let inspected = inspect(path, &bytes)?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    std::fs::create_dir_all(copies).map_err(|source| LoadError::Copy { path: copies.to_owned(), source })?;
    let copy = copies.join(format!("{}-{serial}.so", &hash[..16]));
    std::fs::write(&copy, &bytes).map_err(|source| LoadError::Copy { path: copy.clone(), source })?;
    let opened = open(path, &copy, inspected.abi_version);
    if opened.is_err() {
        let _ = std::fs::remove_file(&copy);
    }
    opened.map(|library| (library, hash))
}

/// Step 3: open the private copy and read its descriptor.
fn open(path: &Path, copy: &Path, abi_version: u32) -> Result<Library, LoadError> {
    // RTLD_NOW: every symbol the library needs is bound here, so a missing
    // one is a load error (not a crash on first use) and the first calls
    // into new code do not pay for lazy binding. RTLD_LOCAL: its symbols
    // never resolve another version's.
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: `copy` is a private file that passed `inspect`: an ELF shared
    // object for this machine exporting molt's descriptor with the expected
    // magic and ABI version. Opening it runs its initialisers (see the
    // module docs for what molt trusts).
    let handle = unsafe { libloading::os::unix::Library::open(Some(copy), flags) }
        .map(libloading::Library::from)
        .map_err(|error| LoadError::Open { path: path.to_owned(), reason: error.to_string() })?;
    // SAFETY: the symbol is a `static ModuleDescriptor` (the magic checked
    // in `inspect` says the file was made by `molt-module`); taking its
    // address reads nothing.
    let symbol = unsafe { handle.get::<*const ModuleDescriptor>(DESCRIPTOR_SYMBOL.as_bytes()) }
        .map_err(|error| LoadError::NotAModule { path: path.to_owned(), reason: error.to_string() })?;
    let address: *const ModuleDescriptor = *symbol;
    // SAFETY: the address is the descriptor static inside the open library,
    // which `handle` keeps mapped while `descriptor` is used (this function).
    let descriptor = unsafe { &*address };
    if descriptor.magic != DESCRIPTOR_MAGIC || descriptor.abi_version != abi_version {
        return Err(LoadError::NotAModule {
            path: path.to_owned(),
            reason: "its descriptor changed between file and memory".into(),
        });
    }
    check_build(path, &descriptor.build)?;
    // SAFETY: the descriptor's strings and entry array are immutable statics
    // of the open library (the SDK builds them so).
    let (name, version, entries) = unsafe {
        let entries: Vec<(String, EntryStart)> =
            descriptor.entries().iter().map(|e| (e.name.as_str().to_owned(), e.start)).collect();
        (descriptor.name.as_str().to_owned(), descriptor.version.as_str().to_owned(), entries)
    };
    if name.is_empty() || version.is_empty() {
        return Err(LoadError::NotAModule {
            path: path.to_owned(),
            reason: "its descriptor has an empty name or version".into(),
        });
    }
    Ok(Library { name, version, entries, migrate: descriptor.migrate, copy: copy.to_owned(), handle: Some(handle) })
}

fn check_build(path: &Path, build: &BuildInfo) -> Result<(), LoadError> {
    let ours = BuildInfo::here();
    // SAFETY: both are `Str`s of immutable statics: ours of the core, theirs
    // of the open library.
    let pairs = unsafe {
        [
            ("target", ours.target.as_str(), build.target.as_str()),
            ("compiler", ours.rustc.as_str(), build.rustc.as_str()),
            ("molt SDK version", ours.sdk.as_str(), build.sdk.as_str()),
        ]
    };
    for (what, expected, found) in pairs {
        if expected != found {
            return Err(LoadError::BuildMismatch {
                path: path.to_owned(),
                what,
                expected: expected.to_owned(),
                found: found.to_owned(),
            });
        }
    }
    Ok(())
}

impl Library {
    /// The names of the entries.
    pub(crate) fn entry_names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_str())
    }

    /// The index of `entry` among the entries (0 if there is none).
    pub(crate) fn entry_index(&self, entry: &str) -> u16 {
        let index = self.entries.iter().position(|(name, _)| name == entry).unwrap_or(0);
        u16::try_from(index).unwrap_or(0)
    }

    /// The name of the entry at `index`.
    pub(crate) fn entry_name(&self, index: u16) -> &str {
        self.entries.get(usize::from(index)).map_or("(a closure)", |(name, _)| name.as_str())
    }

    pub(crate) fn has_entry(&self, entry: &str) -> bool {
        self.entries.iter().any(|(name, _)| name == entry)
    }

    /// Starts `entry` for `process` with `state`; `None` if there is no such
    /// entry. The future runs the library's code: its owner must keep this
    /// library open until the future is dropped.
    pub(crate) fn start(&self, entry: &str, process: Process, state: &[u8]) -> Option<FfiFuture<()>> {
        let start = self.entries.iter().find(|(name, _)| name == entry)?.1;
        // SAFETY: `start` comes from this open library's descriptor; it copies
        // the state during the call and does not run user code; the caller
        // keeps the library open for the future's life (see above).
        Some(unsafe { start(process, state.as_ptr(), state.len()) })
    }

    /// Runs the library's `migrate` on `state` of `old_version`.
    pub(crate) fn migrate(&self, old_version: &str, state: &[u8]) -> Result<Vec<u8>, (MigrateStatus, String)> {
        let mut out = Vec::new();
        // SAFETY: `migrate` comes from this open library; the strings, the
        // state and the sink's buffer are valid for the call; the SDK's hook
        // catches panics, so nothing unwinds into the core.
        let status = unsafe { (self.migrate)(Str::new(old_version), state.as_ptr(), state.len(), Sink::of(&mut out)) };
        match status {
            MigrateStatus::Migrated => Ok(out),
            failed => Err((failed, String::from_utf8_lossy(&out).into_owned())),
        }
    }

    /// Closes the library (every future of it must be gone), deletes the
    /// private copy, and reports whether its pages are still mapped.
    pub(crate) fn close(mut self) -> Option<bool> {
        if let Some(handle) = self.handle.take() {
            let _ = handle.close();
        }
        let mapped = still_mapped(&self.copy);
        let _ = std::fs::remove_file(&self.copy);
        mapped
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        if self.handle.is_some() {
            // Dropping the handle closes the library (libloading's `Drop`).
            drop(self.handle.take());
            let _ = std::fs::remove_file(&self.copy);
        }
    }
}

/// Whether any page of the file at `path` is still in this process's
/// address space (`/proc/self/maps`); `None` where that cannot be read.
pub(crate) fn still_mapped(path: &Path) -> Option<bool> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let needle = path.to_string_lossy();
    Some(maps.lines().any(|line| line.contains(needle.as_ref())))
}
