//! The loader: turns a file into a [`Library`] of a module version the code
//! server can commit, checking everything that can be checked before any
//! code of the file runs.
//!
//! In order, each step failing with its own [`LoadError`]:
//! 1. the file is read whole, then inspected as data: an ELF shared object
//!    for this machine whose segments all lie inside the file (a truncated
//!    library is refused here, not found out by a `SIGBUS` later), exporting
//!    [`DESCRIPTOR_SYMBOL`], whose [`DescriptorHeader`] — plain bytes in the
//!    file — carries molt's magic, the ABI version, the layout fingerprint of
//!    every contract type, the target, compiler, SDK version and panic
//!    strategy it was built with, and its name: all compared here, so a
//!    misbuilt module runs none of its code (not even its initialisers);
//! 2. the bytes are written to a private copy: an unnamed file
//!    (`O_TMPFILE`), or a sealed anonymous memory file where the file system
//!    cannot make one — either way no other process or user can replace,
//!    redirect or find it in any directory, and it leaves nothing behind
//!    when the node ends, however it ends. Each load is its own file, so the
//!    dynamic loader never hands back a library it already loaded (the
//!    seed's "load doesn't really load");
//! 3. the copy is opened (`dlopen` of `/proc/self/fd/N`, which runs the
//!    library's initialisers), the descriptor in memory is checked to be the
//!    one inspected, and the entries and `migrate` are taken from it. Where
//!    the library's segments were mapped is recorded, so the core can tell
//!    which version a code address belongs to.
//!
//! # Safety
//! Loading a library runs its initialisers, and calling what it exports
//! trusts the declarations it makes; molt trusts a file that passed the
//! checks above to be a module built by `molt-module`. Every function
//! pointer taken from a library lives in the [`Library`] that owns the
//! handle, so none can outlive it.
//!
//! # Platform-specific behaviour
//! Linux only (ELF, `O_TMPFILE` or `memfd_create`, `/proc`). Closing a library (`dlclose`)
//! may not unmap it: glibc keeps a library that registered a thread-local
//! destructor on a thread that is still running, and musl never unmaps.
//! Purge is therefore logical first — the version is gone from the table and
//! none of its code runs — and whether its pages left the address space is
//! measured afterwards from `/proc/self/maps` ([`still_mapped`]) and
//! reported, never relied upon.

#![allow(unsafe_code)]

use std::io::Write;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use async_ffi::FfiFuture;
use molt_abi::Process;
use molt_abi::contract::{ABI_VERSION, Str};
use molt_abi::module::{
    DESCRIPTOR_MAGIC, DESCRIPTOR_SYMBOL, DescriptorHeader, ENTRY_STARTED, EntryDescriptor, EntryStart,
    LAYOUT_FINGERPRINT, Migrate, MigrateStatus, ModuleDescriptor, ModuleShapes, Shapes, Sink,
};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::error::LoadError;

/// A loaded module library: the handle and everything taken from it.
pub(crate) struct Library {
    /// Declared in the descriptor, copied.
    pub(crate) name: String,
    pub(crate) version: String,
    entries: Vec<(String, EntryStart)>,
    /// `None` only while the library is being opened.
    migrate: Option<Migrate>,
    /// What the module declared about its types' shapes.
    pub(crate) shapes: ModuleShapes,
    /// The addresses the library's segments were mapped at.
    pub(crate) mapped: Range<usize>,
    /// The private copy's name, as `/proc/self/maps` shows it.
    pub(crate) copy: String,
    /// The private copy, open for as long as the library is loaded: the
    /// dynamic loader knows the library by the path it was opened from
    /// (`/proc/self/fd/N`), and would hand it back for the next copy opened
    /// through a reused descriptor number instead of loading that one.
    copy_file: Option<std::fs::File>,
    /// Dropped last: the pointers above are only used while it is open.
    handle: Option<libloading::Library>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library").field("name", &self.name).field("version", &self.version).finish()
    }
}

/// What step 1 found in the file.
struct Inspected {
    header: DescriptorHeader,
    /// The descriptor's address in the file's own address space.
    descriptor_address: u64,
    /// The span of the loadable segments in that address space.
    span: Range<u64>,
    /// The executable segments' file-backed parts, in that address space.
    code: Vec<Range<u64>>,
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
    let not_in_data = || LoadError::NotAModule {
        path: path.to_owned(),
        reason: format!("its {DESCRIPTOR_SYMBOL} is not in the file's data"),
    };
    // Magic and ABI version first: they are where they are in every ABI
    // version, and say whether the rest can be read as this version's header.
    let start = read_at_address(&file, bytes, symbol.address(), 12).ok_or_else(not_in_data)?;
    let magic = u64::from_le_bytes(start[..8].try_into().expect("8 bytes"));
    if magic != DESCRIPTOR_MAGIC {
        return Err(LoadError::NotAModule {
            path: path.to_owned(),
            reason: "its descriptor does not start with molt's magic".into(),
        });
    }
    let abi_version = u32::from_le_bytes(start[8..12].try_into().expect("4 bytes"));
    if abi_version != ABI_VERSION {
        return Err(LoadError::AbiMismatch { path: path.to_owned(), expected: ABI_VERSION, found: abi_version });
    }
    let size = std::mem::size_of::<DescriptorHeader>();
    let raw = read_at_address(&file, bytes, symbol.address(), size as u64).ok_or_else(not_in_data)?;
    // SAFETY: `raw` holds `size_of::<DescriptorHeader>()` bytes, read without
    // alignment; every field of the header is an integer or an array of
    // bytes, for which any bit pattern is a valid value.
    let header = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<DescriptorHeader>()) };
    let (mut first, mut end) = (u64::MAX, 0);
    for segment in file.segments() {
        first = first.min(segment.address());
        end = end.max(segment.address().saturating_add(segment.size()));
    }
    let span = first..end;
    let code = file
        .segments()
        .filter(|segment| {
            use object::elf::PF_X;
            matches!(segment.flags(), object::SegmentFlags::Elf { p_flags, .. } if (p_flags & PF_X) == PF_X)
        })
        .map(|segment| segment.address()..segment.address().saturating_add(segment.file_range().1))
        .collect();
    if span.start >= span.end {
        return Err(not_a_library("it has no loadable segment".into()));
    }
    Ok(Inspected { header, descriptor_address: symbol.address(), span, code })
}

/// Step 1's comparisons: the header against this node's own build.
fn check_header(path: &Path, header: &DescriptorHeader, expected_name: &str) -> Result<(), LoadError> {
    if header.layout != LAYOUT_FINGERPRINT {
        return Err(LoadError::LayoutMismatch {
            path: path.to_owned(),
            expected: LAYOUT_FINGERPRINT,
            found: header.layout,
        });
    }
    let unreadable = |what: &str| LoadError::NotAModule {
        path: path.to_owned(),
        reason: format!("the {what} in its descriptor is not a UTF-8 string"),
    };
    let facts = [
        ("target", molt_abi::module::BUILD_TARGET, header.target.get().ok_or_else(|| unreadable("target"))?),
        ("compiler", molt_abi::module::BUILD_RUSTC, header.rustc.get().ok_or_else(|| unreadable("compiler"))?),
        ("molt SDK version", molt_abi::module::SDK_VERSION, header.sdk.get().ok_or_else(|| unreadable("SDK version"))?),
    ];
    for (what, expected, found) in facts {
        if expected != found {
            return Err(LoadError::BuildMismatch {
                path: path.to_owned(),
                what,
                expected: expected.to_owned(),
                found: found.to_owned(),
            });
        }
    }
    if header.panic_unwinds != 1 {
        return Err(LoadError::AbortsOnPanic { path: path.to_owned() });
    }
    let name = header.name.get().ok_or_else(|| unreadable("name"))?;
    let version = header.version.get().ok_or_else(|| unreadable("version"))?;
    if name.is_empty() || version.is_empty() {
        return Err(LoadError::NotAModule {
            path: path.to_owned(),
            reason: "its descriptor has an empty name or version".into(),
        });
    }
    if name != expected_name {
        return Err(LoadError::WrongName {
            path: path.to_owned(),
            expected: expected_name.to_owned(),
            found: name.to_owned(),
        });
    }
    Ok(())
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
    // Every sum checked: the addresses are the file's, and may be anything.
    let end = address.checked_add(len)?;
    let segment = file.segments().find(|s| {
        let (_, file_size) = s.file_range();
        s.address() <= address && s.address().checked_add(file_size).is_some_and(|limit| end <= limit)
    })?;
    let (offset, _) = segment.file_range();
    let start = usize::try_from(offset.checked_add(address - segment.address())?).ok()?;
    bytes.get(start..start.checked_add(usize::try_from(len).ok()?)?)
}

/// Numbers the private copies of this OS process, so no two (of any node)
/// share a name in `/proc/self/maps`.
static COPIES: AtomicU64 = AtomicU64::new(1);

/// Loads the module file at `path` as module `expected_name`, from a
/// private copy.
pub(crate) fn load(path: &Path, expected_name: &str) -> Result<(Library, String), LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
    let inspected = inspect(path, &bytes)?;
    check_header(path, &inspected.header, expected_name)?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let serial = COPIES.fetch_add(1, Ordering::Relaxed);
    let copy_name = format!("molt-{expected_name}-{}-{}-{serial}", &hash[..16], std::process::id());
    let (copy, shown) =
        private_copy(&copy_name, &bytes).map_err(|source| LoadError::Copy { name: copy_name.clone(), source })?;
    let library = open(path, copy, shown, &inspected)?;
    Ok((library, hash))
}

/// Step 2: a private copy of `bytes`: an unnamed file in the temp
/// directory (`O_TMPFILE`: it has no name that anybody could take over,
/// replace, redirect or find, and it vanishes with its last descriptor or
/// mapping, however the node ends), or, where the file system cannot make
/// one, an anonymous memory file (`memfd_create`) sealed against any change.
/// Returns the file and the name `/proc/self/maps` shows for it.
fn private_copy(name: &str, bytes: &[u8]) -> std::io::Result<(std::fs::File, String)> {
    let file = match unnamed_file(bytes) {
        Ok(file) => file,
        Err(_) => memory_file(name, bytes)?,
    };
    let shown = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    Ok((file, shown.to_string_lossy().into_owned()))
}

fn unnamed_file(bytes: &[u8]) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    let fd = rustix::fs::open(std::env::temp_dir(), flags, Mode::RUSR | Mode::WUSR)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    Ok(file)
}

fn memory_file(name: &str, bytes: &[u8]) -> std::io::Result<std::fs::File> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    rustix::fs::fcntl_add_seals(&file, SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL)?;
    Ok(file)
}

/// Step 3: open the private copy and read its descriptor.
fn open(path: &Path, copy: std::fs::File, copy_name: String, inspected: &Inspected) -> Result<Library, LoadError> {
    let through = format!("/proc/self/fd/{}", copy.as_raw_fd());
    // RTLD_NOW: every symbol the library needs is bound here, so a missing
    // one is a load error (not a crash on first use) and the first calls
    // into new code do not pay for lazy binding. RTLD_LOCAL: its symbols
    // never resolve another version's.
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: the copy is a sealed private file whose bytes passed `inspect`
    // and `check_header`: an ELF shared object for this machine, exporting
    // molt's descriptor, built against this very contract (ABI version and
    // layout fingerprint), target, compiler and SDK, unwinding on panic.
    // Opening it runs its initialisers (see the module docs for what molt
    // trusts).
    let handle = unsafe { libloading::os::unix::Library::open(Some(&through), flags) }
        .map(libloading::Library::from)
        .map_err(|error| LoadError::Open { path: path.to_owned(), reason: error.to_string() })?;
    // From here on the library is closed by `Library`'s drop on every path,
    // which keeps the copy's descriptor number taken if it stays mapped.
    let mut library = Library {
        name: String::new(),
        version: String::new(),
        entries: Vec::new(),
        migrate: None,
        shapes: ModuleShapes::default(),
        mapped: 0..0,
        copy: copy_name,
        copy_file: Some(copy),
        handle: Some(handle),
    };
    let handle = library.handle.as_ref().expect("just opened");
    // SAFETY: the symbol is a `static ModuleDescriptor` (checked above from
    // the file); taking its address reads nothing.
    let symbol = unsafe { handle.get::<*const ModuleDescriptor>(DESCRIPTOR_SYMBOL.as_bytes()) }
        .map_err(|error| LoadError::NotAModule { path: path.to_owned(), reason: error.to_string() })?;
    let address: *const ModuleDescriptor = *symbol;
    let changed = |what: &str| LoadError::NotAModule {
        path: path.to_owned(),
        reason: format!("its descriptor in memory is not the one in the file ({what})"),
    };
    // Where the file's address space landed: the descriptor's address in
    // memory minus its address in the file.
    let bias = (address as usize).wrapping_sub(inspected.descriptor_address as usize);
    let mapped = bias.wrapping_add(inspected.span.start as usize)..bias.wrapping_add(inspected.span.end as usize);
    let inside = |start: usize, len: usize| {
        start.checked_add(len).is_some_and(|end| mapped.contains(&start) && end <= mapped.end)
    };
    if !inside(address as usize, std::mem::size_of::<ModuleDescriptor>()) || !address.is_aligned() {
        return Err(changed("not inside the library"));
    }
    // SAFETY: the address is an aligned descriptor-sized place inside the
    // open library (checked just above), the static the file declares;
    // `handle` keeps it mapped while `descriptor` is used (this function).
    let descriptor = unsafe { &*address };
    let (in_memory, in_file) = (&descriptor.header, &inspected.header);
    if in_memory.magic != in_file.magic
        || in_memory.abi_version != in_file.abi_version
        || in_memory.layout != in_file.layout
        || in_memory.panic_unwinds != in_file.panic_unwinds
        || in_memory.name.get() != in_file.name.get()
        || in_memory.version.get() != in_file.version.get()
    {
        return Err(changed("another header"));
    }
    // What the descriptor points at must lie inside the library: a
    // hand-made descriptor gets a clear error, not a wild read.
    let count = descriptor.entry_count;
    let table = descriptor.entries;
    let table_fits = count <= usize::from(u16::MAX)
        && table.is_aligned()
        && count.checked_mul(std::mem::size_of::<EntryDescriptor>()).is_some_and(|len| inside(table as usize, len));
    if (count > 0 && !table_fits) || !inside(descriptor.migrate as usize, 1) || !inside(descriptor.shapes as usize, 1) {
        return Err(changed("its entries, migrate or shapes lie outside the library"));
    }
    // SAFETY: `count` descriptors at `table`, aligned and inside the open
    // library (checked above): the SDK's immutable static array.
    let listed = unsafe { descriptor.entries() };
    let mut entries = Vec::with_capacity(listed.len());
    for entry in listed {
        let (name, len) = (entry.name.ptr as usize, entry.name.len);
        if (len > 0 && !inside(name, len)) || !inside(entry.start as usize, 1) {
            return Err(changed("an entry lies outside the library"));
        }
        // SAFETY: `len` bytes inside the open library (checked above), an
        // immutable string of the SDK's; `as_str` checks they are UTF-8.
        entries.push((unsafe { entry.name.as_str() }.to_owned(), entry.start));
    }
    library.name = in_file.name.get().unwrap_or_default().to_owned();
    library.version = in_file.version.get().unwrap_or_default().to_owned();
    library.entries = entries;
    library.migrate = Some(descriptor.migrate);
    library.mapped = mapped;
    prefault(bias, &inspected.code);
    library.shapes = shapes_of(descriptor.shapes, &library)
        .map_err(|reason| LoadError::NotAModule { path: path.to_owned(), reason })?;
    Ok(library)
}

/// Asks the module for its shapes (on a pool thread: the module's code may
/// register thread-exit destructors, see `scheduler.rs`), and checks they
/// describe its entries.
fn shapes_of(shapes: Shapes, library: &Library) -> Result<ModuleShapes, String> {
    let described = crate::scheduler::on_a_pool_thread(move || {
        let mut out = Vec::new();
        // SAFETY: `shapes` lies inside the library (checked by the caller),
        // which stays open until this returns: `library`, which holds it,
        // lives in the caller's frame, and the caller waits for this call.
        // It is the SDK's function of that type; the sink is ours for the
        // call; it catches its own panics.
        let status = unsafe { shapes(Sink::of(&mut out)) };
        (status, out)
    });
    let (status, out) = described.map_err(|error| format!("no thread could ask it for its shapes: {error}"))?;
    if status != 0 {
        return Err(format!("its shapes could not be described: {}", String::from_utf8_lossy(&out)));
    }
    let decoded: ModuleShapes =
        postcard::from_bytes(&out).map_err(|error| format!("its shapes did not decode: {error}"))?;
    let described = decoded.entries.iter().map(|entry| entry.entry.as_str());
    if !described.eq(library.entry_names()) {
        return Err("its shapes do not describe its entries".into());
    }
    Ok(decoded)
}

/// Maps the pages of the library's code now, in a few calls, rather than
/// one page fault at a time when a hot call first runs the new version.
fn prefault(bias: usize, code: &[Range<u64>]) {
    // 4 KiB: where pages are larger, `madvise` refuses an unaligned start
    // and nothing is prefaulted, which costs only speed. (rustix's
    // `page_size` reads the auxiliary vector and the vDSO, which crashed
    // the code-loading tests under valgrind.)
    const PAGE: usize = 4096;
    for range in code {
        let start = bias.wrapping_add(range.start as usize) & !(PAGE - 1);
        let end = bias.wrapping_add(range.end as usize);
        // SAFETY: the range is the library's own executable segment, mapped
        // by `dlopen` (readable, file-backed), rounded down to its first
        // page; populating it only maps pages, it changes no memory. A
        // kernel without MADV_POPULATE_READ refuses, which costs nothing.
        let _ = unsafe {
            rustix::mm::madvise(
                start as *mut std::ffi::c_void,
                end.saturating_sub(start),
                rustix::mm::Advice::LinuxPopulateRead,
            )
        };
    }
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

    /// The shape of `entry`'s state, as the module described it.
    pub(crate) fn state_shape(&self, entry: &str) -> Option<&molt_abi::TracedShape> {
        self.shapes.entries.iter().find(|described| described.entry == entry).map(|described| &described.state)
    }

    pub(crate) fn has_entry(&self, entry: &str) -> bool {
        self.entries.iter().any(|(name, _)| name == entry)
    }

    /// Starts `entry` for `process` with `state`: `None` if there is no such
    /// entry, the reason if the state does not decode as the entry's. The
    /// future runs the library's code: its owner must keep this library open
    /// until the future is dropped.
    pub(crate) fn start(&self, entry: &str, process: Process, state: &[u8]) -> Option<Result<FfiFuture<()>, String>> {
        let start = self.entries.iter().find(|(name, _)| name == entry)?.1;
        let mut body = std::mem::MaybeUninit::<FfiFuture<()>>::uninit();
        let mut error = Vec::new();
        // SAFETY: `start` comes from this open library's descriptor; the
        // state, the place for the body and the sink's buffer are valid for
        // the call; it catches its own panics; the caller keeps the library
        // open for the future's life (see above).
        let status = unsafe { start(process, state.as_ptr(), state.len(), body.as_mut_ptr(), Sink::of(&mut error)) };
        Some(if status == ENTRY_STARTED {
            // SAFETY: the entry's start wrote the body when it returned
            // `ENTRY_STARTED` (the contract of `EntryStart`).
            Ok(unsafe { body.assume_init() })
        } else {
            Err(String::from_utf8_lossy(&error).into_owned())
        })
    }

    /// Runs the library's `migrate` on `state` of `old_version`: the new
    /// state and whether it is the old one passed on undecoded, or why there
    /// is none (for the `UpgradeFailed` report).
    pub(crate) fn migrate(&self, old_version: &str, state: &[u8]) -> Result<(Vec<u8>, bool), String> {
        let Some(migrate) = self.migrate else { return Err("it has no migrate".into()) };
        let mut out = Vec::new();
        // SAFETY: `migrate` comes from this open library; the strings, the
        // state and the sink's buffer are valid for the call; the SDK's hook
        // catches panics, so nothing unwinds into the core.
        let status = unsafe { migrate(Str::new(old_version), state.as_ptr(), state.len(), Sink::of(&mut out)) };
        let said = String::from_utf8_lossy(&out).into_owned();
        // A status is validated, never trusted to be a `MigrateStatus`.
        match MigrateStatus::from_u8(status) {
            Some(MigrateStatus::Migrated) => Ok((out, false)),
            Some(MigrateStatus::PassedOn) => Ok((out, true)),
            Some(MigrateStatus::Failed) => Err(format!("its migrate failed: {said}")),
            Some(MigrateStatus::Panicked) => Err(format!("its migrate panicked: {said}")),
            None => Err(format!("its migrate returned {status}, which is no migrate status")),
        }
    }

    /// Closes the library (every future of it must be gone) and reports
    /// whether any of its pages are still mapped. Its private copy goes
    /// with its last mapping.
    pub(crate) fn close(mut self) -> Option<bool> {
        self.shut()
    }

    fn shut(&mut self) -> Option<bool> {
        let handle = self.handle.take()?;
        let _ = handle.close();
        let mapped = still_mapped(&self.copy);
        if mapped != Some(false) {
            // Perhaps still known to the dynamic loader by its
            // `/proc/self/fd/N` path: keep that descriptor number taken for
            // good, so no later copy is opened under the same path.
            std::mem::forget(self.copy_file.take());
        }
        mapped
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Whether any page of the private copy `/proc/self/maps` shows as `copy`
/// is still in this process's address space; `None` where that cannot be
/// read. (The name is unique while the copy's descriptor is open, as it is
/// when this is asked.)
pub(crate) fn still_mapped(copy: &str) -> Option<bool> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    Some(maps.lines().any(|line| line.ends_with(copy)))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    /// Where the file system makes no unnamed file, the copy is a memory
    /// file that nothing can change once written.
    #[test]
    fn the_memory_file_copy_is_sealed() {
        let mut copy = super::memory_file("molt-loader-test", b"the module's bytes").unwrap();
        let seals = rustix::fs::fcntl_get_seals(&copy).unwrap();
        use rustix::fs::SealFlags;
        assert!(seals.contains(SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL));
        assert!(copy.write_all(b"more").is_err(), "a sealed copy refuses writes");
        assert_eq!(
            std::fs::read(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&copy))).unwrap(),
            b"the module's bytes"
        );
    }

    /// The unnamed copy has no name in any directory.
    #[test]
    fn the_unnamed_copy_has_no_name() {
        let (_copy, shown) = super::private_copy("molt-loader-test", b"bytes").unwrap();
        assert!(shown.ends_with(" (deleted)"), "{shown}");
        assert!(!std::path::Path::new(shown.trim_end_matches(" (deleted)")).exists());
    }
}
