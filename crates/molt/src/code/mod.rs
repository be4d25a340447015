//! The code server: the one owner of a node's module table, with at most two
//! versions per module — current and old — as in Erlang's `code_server`.
//!
//! The public calls prepare in the caller (read the file, check it, open the
//! library: [`loader`]) and the table's lock is held only to commit. A
//! [`Version`] is shared by the table and by the tasks of the processes
//! running it; it keeps the library open, and it is closed when the last of
//! them lets go — after every future of its code is gone (rule 3). Each
//! version keeps the serials of the processes running it, so purge never
//! scans the node's process table, and a flag that closes that list for
//! good once its purge starts. The table also knows where each version's
//! code is mapped, so a closure handed to the core is attributed to the
//! version whose code it is, wherever it was spawned from.

mod build;
mod error;
mod loader;
mod shapes;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use molt_abi::module::ModuleShapes;
use molt_abi::{NodeId, Pid};

pub use build::{BuildOptions, build_module};
pub use error::{BuildError, LoadError, PurgeError, ShapeChange};
pub(crate) use loader::Library;

/// How long a hard purge waits for the processes it killed to end, unless
/// the node is configured otherwise.
pub(crate) const PURGE_WAIT: Duration = Duration::from_secs(10);

/// One loaded build of a module.
pub(crate) struct Version {
    library: Option<Library>,
    pub(crate) hash: String,
    file: PathBuf,
    loaded_at: SystemTime,
    node: (NodeId, u32),
    /// The processes running this version, and whether it is purging.
    members: Mutex<Members>,
    /// Signalled when a process leaves this version or answers an upgrade
    /// a load waits for.
    members_changed: Condvar,
    /// What the shape check said when this version was loaded.
    warnings: Vec<String>,
    unloads: Arc<Mutex<Vec<UnloadedVersion>>>,
    /// Where the code server keeps this version's address range, removed
    /// when the version is dropped.
    ranges: Arc<CodeRanges>,
    /// Blocking work of this version's code that is running (each holds a
    /// share of the version): a purge does not wait for it, the work closes
    /// the version when it returns if it is the last share.
    blocking: AtomicUsize,
}

/// A share of a version held by blocking work of its code while it runs
/// (`Process::blocking`): the version stays open until the work returns,
/// but a purge does not wait for it.
pub(crate) struct BlockingShare(Arc<Version>);

impl BlockingShare {
    pub(crate) fn new(version: Arc<Version>) -> BlockingShare {
        version.blocking.fetch_add(1, Ordering::AcqRel);
        BlockingShare(version)
    }
}

impl Drop for BlockingShare {
    fn drop(&mut self) {
        self.0.blocking.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a soft purge leaves a version alone.
enum PurgeRefusal {
    /// Processes run it.
    InUse,
    /// A hard purge of it is under way.
    Purging,
}

#[derive(Default)]
struct Members {
    /// Serials of the processes running this version.
    serials: HashSet<u64>,
    /// Set when a hard purge starts; from then on no process is added.
    purging: bool,
    /// While a load waits for this version's processes to answer their
    /// upgrade: how each answered.
    watch: Option<HashMap<u64, UpgradeOutcome>>,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version").field("module", &self.module()).field("version", &self.declared()).finish()
    }
}

impl Version {
    pub(crate) fn library(&self) -> &Library {
        self.library.as_ref().expect("a version's library is open until it is dropped")
    }

    pub(crate) fn module(&self) -> &str {
        &self.library().name
    }

    pub(crate) fn declared(&self) -> &str {
        &self.library().version
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists the process `serial` as running this version; false (and not
    /// listed) if the version is being purged.
    #[must_use = "a refused process must not run the version's code"]
    pub(crate) fn try_add_process(&self, serial: u64) -> bool {
        let mut members = self.members();
        if members.purging {
            return false;
        }
        members.serials.insert(serial);
        true
    }

    pub(crate) fn remove_process(&self, serial: u64) {
        self.members().serials.remove(&serial);
        self.members_changed.notify_all();
    }

    /// Records how the process `serial`, running this version, answered
    /// an upgrade, if a load is waiting for it.
    pub(crate) fn record_upgrade(&self, serial: u64, outcome: UpgradeOutcome) {
        if let Some(watch) = &mut self.members().watch {
            watch.insert(serial, outcome);
        }
        self.members_changed.notify_all();
    }

    /// Starts recording how this version's processes answer an upgrade.
    fn watch_upgrades(&self) {
        self.members().watch = Some(HashMap::new());
    }

    /// Waits until every process in `pids` answered its upgrade or left
    /// this version, or `bound` passes; how each did. Stops recording.
    pub(crate) fn await_upgrades(&self, pids: &[Pid], bound: Duration) -> Vec<ProcessUpgrade> {
        let deadline = Instant::now() + bound;
        let mut members = self.members();
        loop {
            let answered = |members: &Members, pid: &Pid| {
                let recorded = members.watch.as_ref().and_then(|watch| watch.get(&pid.serial));
                match recorded {
                    Some(outcome) => Some(outcome.clone()),
                    None if !members.serials.contains(&pid.serial) => Some(UpgradeOutcome::Ended),
                    None => None,
                }
            };
            let now = Instant::now();
            if now >= deadline || pids.iter().all(|pid| answered(&members, pid).is_some()) {
                let upgrades = pids
                    .iter()
                    .map(|pid| ProcessUpgrade {
                        pid: *pid,
                        outcome: answered(&members, pid).unwrap_or(UpgradeOutcome::Stayed),
                    })
                    .collect();
                members.watch = None;
                return upgrades;
            }
            members = self.members_changed.wait_timeout(members, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Closes the list of processes for good: nothing new starts in this
    /// version from now on.
    fn start_purging(&self) {
        self.members().purging = true;
    }

    /// For a soft purge: closes the list of processes for good if it is
    /// empty and no hard purge has it; otherwise the reason it cannot.
    fn close_if_unused(&self) -> Result<(), PurgeRefusal> {
        let mut members = self.members();
        if members.purging {
            return Err(PurgeRefusal::Purging);
        }
        if !members.serials.is_empty() {
            return Err(PurgeRefusal::InUse);
        }
        members.purging = true;
        Ok(())
    }

    /// The processes running this version.
    pub(crate) fn pids(&self) -> Vec<Pid> {
        let mut serials: Vec<u64> = self.members().serials.iter().copied().collect();
        serials.sort_unstable();
        serials.into_iter().map(|serial| Pid { node: self.node.0, creation: self.node.1, serial }).collect()
    }

    pub(crate) fn info(&self) -> VersionInfo {
        VersionInfo {
            version: self.declared().to_owned(),
            hash: self.hash.clone(),
            loaded_at: self.loaded_at,
            file: self.file.clone(),
            copy: self.library().copy.clone(),
            entries: self.library().entry_names().map(str::to_owned).collect(),
            processes: self.pids(),
            shapes: self.library().shapes.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

impl Version {
    /// Waits until no process runs this version, within the purge bound;
    /// the ones still running it if not.
    pub(crate) fn wait_unused(&self, bound: Duration) -> Result<(), Vec<Pid>> {
        if wait_for(bound, || self.members().serials.is_empty()) { Ok(()) } else { Err(self.pids()) }
    }
}

/// Waits, yielding the thread, until `done` holds or the purge bound passes;
/// whether it held. The processes waited for end on scheduler threads, so
/// this runs on the caller's (never a scheduler) thread.
fn wait_for(bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let wait = Instant::now() + bound;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= wait {
            return false;
        }
        std::thread::yield_now();
    }
}

impl Version {
    /// Closes the library and records what the platform did with it. A
    /// version whose pages may still be mapped keeps its address range as a
    /// tombstone: a closure of its code, spawned late (by a thread of its
    /// own), is refused rather than taken for host code.
    fn close(&mut self) -> Option<UnloadedVersion> {
        let library = self.library.take()?;
        let (module, version, start) = (library.name.clone(), library.version.clone(), library.mapped.start);
        let still_mapped = library.close();
        if still_mapped == Some(false) {
            self.ranges.remove(start);
        }
        let record = UnloadedVersion { module, version, hash: self.hash.clone(), still_mapped };
        self.unloads.lock().unwrap_or_else(|e| e.into_inner()).push(record.clone());
        Some(record)
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        self.close();
    }
}

/// A version as `Node::modules` lists it.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// The module's declared version string.
    pub version: String,
    /// The BLAKE3 hash of the file it was loaded from, in hex.
    pub hash: String,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Its private copy, as `/proc/self/maps` names it: an unnamed file
    /// (`/tmp/#123 (deleted)`) or memory file (`/memfd:… (deleted)`).
    pub copy: String,
    /// Its entries.
    pub entries: Vec<String>,
    /// The processes running it.
    pub processes: Vec<Pid>,
    /// The shapes of its entries' states and of its declared messages, and
    /// the versions its `migrate` converts state from.
    pub shapes: ModuleShapes,
    /// What the load-time shape check warned about (a message type whose
    /// shape changed from the version before under the same name).
    pub warnings: Vec<String>,
}

/// What a load did: the version now current and, if the load waited for
/// them ([`LoadOptions::await_upgrades`]), how the processes of the version
/// before answered their upgrade.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The version loaded.
    pub version: VersionInfo,
    /// One per process that ran the version before, in pid order; empty
    /// unless the load waited.
    pub upgrades: Vec<ProcessUpgrade>,
}

/// How one process answered the upgrade a load offered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessUpgrade {
    /// The process.
    pub pid: Pid,
    /// What it did.
    pub outcome: UpgradeOutcome,
}

/// What a process did with an upgrade.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeOutcome {
    /// It hot-called into the new version, its state migrated.
    Moved,
    /// Its hot call failed; it runs its old version with its old state, and
    /// got [`UpgradeFailed`](molt_abi::UpgradeFailed) with this reason.
    Failed {
        /// Why.
        reason: String,
    },
    /// It had not hot-called by the deadline: it still runs the old version.
    Stayed,
    /// It ended (or left the old version otherwise) before it answered.
    Ended,
}

/// A module as `Node::modules` lists it.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The module's name.
    pub name: String,
    /// The version new spawns and hot calls run.
    pub current: Option<VersionInfo>,
    /// The version before it, while processes may still run it.
    pub old: Option<VersionInfo>,
}

/// A version that was purged and closed.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnloadedVersion {
    /// The module.
    pub module: String,
    /// Its declared version.
    pub version: String,
    /// Its file's hash.
    pub hash: String,
    /// Whether any page of it was still mapped after `dlclose`
    /// (`/proc/self/maps`); `None` where that cannot be read. molt never
    /// relies on it: a purged version's code is never run again either way.
    pub still_mapped: Option<bool>,
}

/// What a hard purge did.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeReport {
    /// The module.
    pub module: String,
    /// The purged version, if there was an old version.
    pub version: Option<String>,
    /// The processes killed because they ran it.
    pub killed: Vec<Pid>,
    /// Whether its pages stayed mapped after it was closed; see
    /// [`UnloadedVersion::still_mapped`]. `None` also when something of the
    /// node still held the version once the purge's wait was over (never a
    /// process: those have ended): it is closed when that lets go, and then
    /// appears in [`Node::unloaded`](crate::Node::unloaded).
    pub still_mapped: Option<bool>,
}

/// How to load a module file.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The module's name; by default the file's name without `lib` and the
    /// extension (`libpingpong.so` is `pingpong`).
    pub name: Option<String>,
    /// Purge (hard) an old version first instead of refusing with
    /// [`LoadError::NotPurged`] (Erlang's `code:load_binary`).
    pub purge_first: bool,
    /// Send every process running the module an
    /// [`Upgrade`](molt_abi::Upgrade) message.
    pub notify: bool,
    /// Refuse a version that changes the shape of a declared message type
    /// under the same name ([`LoadError::MessageShapeChanged`]) instead of
    /// loading it with a warning.
    pub refuse_changed_messages: bool,
    /// Wait up to this long for the processes of the version before to
    /// answer their upgrade, and report how each did
    /// ([`Loaded::upgrades`]). Blocks the calling thread: call it from
    /// outside the node's processes.
    pub await_upgrades: Option<Duration>,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            name: None,
            purge_first: false,
            notify: true,
            refuse_changed_messages: false,
            await_upgrades: None,
        }
    }
}

#[derive(Default)]
struct Slot {
    current: Option<Arc<Version>>,
    old: Option<Arc<Version>>,
}

/// Where the code of each open version of a node is mapped.
#[derive(Default)]
struct CodeRanges {
    /// (first address, end address, version), one per open version.
    ranges: RwLock<Vec<(usize, usize, Weak<Version>)>>,
    /// How many there are: a node that never loaded a module skips the lock.
    count: AtomicU64,
}

impl CodeRanges {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<(usize, usize, Weak<Version>)>> {
        self.ranges.write().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, version: &Arc<Version>) {
        let mapped = version.library().mapped.clone();
        let mut ranges = self.write();
        ranges.push((mapped.start, mapped.end, Arc::downgrade(version)));
        self.count.store(ranges.len() as u64, Ordering::Release);
    }

    fn remove(&self, start: usize) {
        let mut ranges = self.write();
        ranges.retain(|(first, _, _)| *first != start);
        self.count.store(ranges.len() as u64, Ordering::Release);
    }
}

/// The module table of one node.
pub(crate) struct CodeServer {
    modules: Mutex<HashMap<String, Slot>>,
    unloads: Arc<Mutex<Vec<UnloadedVersion>>>,
    ranges: Arc<CodeRanges>,
    /// How long a hard purge waits for what it ended.
    pub(crate) purge_wait: Duration,
}

impl std::fmt::Debug for CodeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeServer").finish_non_exhaustive()
    }
}

/// The module name a file's name suggests.
fn name_of(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    stem.strip_prefix("lib").map(str::to_owned).unwrap_or(stem)
}

impl CodeServer {
    pub(crate) fn new(purge_wait: Duration) -> CodeServer {
        CodeServer {
            purge_wait,
            modules: Mutex::new(HashMap::new()),
            unloads: Arc::new(Mutex::new(Vec::new())),
            ranges: Arc::new(CodeRanges::default()),
        }
    }

    /// The version whose code lies at `address`: `Ok(None)` for code that is
    /// no module's of this node (the host's), an error if it lies in a
    /// version that is already being closed.
    pub(crate) fn owner_of(&self, address: usize) -> Result<Option<Arc<Version>>, molt_abi::ExitReason> {
        if self.ranges.count.load(Ordering::Acquire) == 0 {
            return Ok(None);
        }
        let ranges = self.ranges.ranges.read().unwrap_or_else(|e| e.into_inner());
        let Some((_, _, version)) = ranges.iter().find(|(first, end, _)| (*first..*end).contains(&address)) else {
            return Ok(None);
        };
        version.upgrade().map(Some).ok_or_else(|| {
            molt_abi::ExitReason::Error("the closure's module version was being unloaded when it was spawned".into())
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.modules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current version of `module`.
    pub(crate) fn current(&self, module: &str) -> Option<Arc<Version>> {
        self.table().get(module).and_then(|slot| slot.current.clone())
    }

    /// Prepares a version from `path` (no lock held).
    pub(crate) fn prepare(
        &self,
        path: &Path,
        options: &LoadOptions,
        node: (NodeId, u32),
    ) -> Result<Version, LoadError> {
        let expected = options.name.clone().unwrap_or_else(|| name_of(path));
        let (library, hash) = loader::load(path, &expected)?;
        Ok(Version {
            library: Some(library),
            hash,
            file: path.to_owned(),
            loaded_at: SystemTime::now(),
            node,
            members: Mutex::new(Members::default()),
            members_changed: Condvar::new(),
            warnings: Vec::new(),
            unloads: self.unloads.clone(),
            ranges: self.ranges.clone(),
            blocking: AtomicUsize::new(0),
        })
    }

    /// Makes `version` current; the current one becomes old. Refuses if an
    /// old version exists, or if the shape check against the current
    /// version refuses. Returns the new current and the now-old version.
    pub(crate) fn commit(
        &self,
        mut version: Version,
        options: &LoadOptions,
    ) -> Result<(Arc<Version>, Option<Arc<Version>>), LoadError> {
        let mut table = self.table();
        let slot = table.entry(version.module().to_owned()).or_default();
        if let Some(old) = &slot.old {
            // OTP: code:load_file/1 returns {error, not_purged}.
            return Err(LoadError::NotPurged { module: version.module().to_owned(), old: old.declared().to_owned() });
        }
        let before = slot.current.as_ref().map(|current| current.library());
        let after = version.library();
        let warnings = shapes::compare(
            &after.name,
            before.map(|before| (before.version.as_str(), &before.shapes)),
            (&after.version, &after.shapes),
            options.refuse_changed_messages,
        )?;
        for warning in &warnings {
            tracing::warn!(module = after.name, version = after.version, "{warning}");
        }
        version.warnings = warnings;
        if let (Some(current), Some(_)) = (&slot.current, options.await_upgrades) {
            current.watch_upgrades();
        }
        let version = Arc::new(version);
        self.ranges.add(&version);
        slot.old = slot.current.replace(version.clone());
        Ok((version, slot.old.clone()))
    }

    /// Soft purge: drops the old version unless a process runs it.
    pub(crate) fn soft_purge(&self, module: &str) -> Result<Option<UnloadedVersion>, PurgeError> {
        let old = {
            let mut table = self.table();
            let slot = table.get_mut(module).ok_or_else(|| PurgeError::NoModule { module: module.to_owned() })?;
            let Some(old) = &slot.old else { return Ok(None) };
            match old.close_if_unused() {
                Ok(()) => {}
                // OTP: code:soft_purge/1 returns false and kills nobody.
                Err(PurgeRefusal::InUse) => {
                    return Err(PurgeError::InUse {
                        module: module.to_owned(),
                        version: old.declared().to_owned(),
                        processes: old.pids(),
                    });
                }
                Err(PurgeRefusal::Purging) => {
                    return Err(PurgeError::Purging { module: module.to_owned(), version: old.declared().to_owned() });
                }
            }
            slot.old.take().expect("checked above")
        };
        Ok(self.release(old))
    }

    /// Starts a hard purge of the old version: from now on it starts no
    /// process. It stays in the table (so no third version can be loaded)
    /// until [`finish_purge`](Self::finish_purge).
    pub(crate) fn start_purge(&self, module: &str) -> Result<Option<Arc<Version>>, PurgeError> {
        let mut table = self.table();
        let slot = table.get_mut(module).ok_or_else(|| PurgeError::NoModule { module: module.to_owned() })?;
        let Some(old) = slot.old.clone() else { return Ok(None) };
        old.start_purging();
        Ok(Some(old))
    }

    /// Ends a hard purge once no process runs `old`: takes it out of the
    /// table and closes it.
    pub(crate) fn finish_purge(&self, module: &str, old: Arc<Version>) -> Option<UnloadedVersion> {
        {
            let mut table = self.table();
            if let Some(slot) = table.get_mut(module)
                && slot.old.as_ref().is_some_and(|o| Arc::ptr_eq(o, &old))
            {
                slot.old = None;
            }
        }
        self.release(old)
    }

    /// Lets go of a version taken out of the table; if nothing else holds
    /// it, it is closed now and its unload record returned.
    pub(crate) fn release(&self, version: Arc<Version>) -> Option<UnloadedVersion> {
        // The last tasks of its processes may still be dropping their share
        // (blocking work of its code is not waited for).
        wait_for(self.purge_wait, || Arc::strong_count(&version) <= 1 + version.blocking.load(Ordering::Acquire));
        // Closed here if this is the last share; otherwise by whoever lets go
        // last (its record then appears in `unloaded` later).
        Arc::try_unwrap(version).ok().and_then(|mut version| version.close())
    }

    pub(crate) fn modules(&self) -> Vec<ModuleInfo> {
        let table = self.table();
        let mut modules: Vec<ModuleInfo> = table
            .iter()
            .map(|(name, slot)| ModuleInfo {
                name: name.clone(),
                current: slot.current.as_ref().map(|v| v.info()),
                old: slot.old.as_ref().map(|v| v.info()),
            })
            .collect();
        modules.sort_by(|a, b| a.name.cmp(&b.name));
        modules
    }

    pub(crate) fn unloaded(&self) -> Vec<UnloadedVersion> {
        self.unloads.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
