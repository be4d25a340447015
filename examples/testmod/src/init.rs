//! With the `init-effect` feature: a module initialiser, run by the dynamic
//! loader when the library is opened, that leaves a marker file in the temp
//! directory named after the loading process and this build. The boundary
//! tests look for it to tell whether any code of a refused file ran.

/// This build's marker: which refused or accepted build left it.
pub const BUILD: &str = if cfg!(feature = "wrong-sdk") {
    "wrong-sdk"
} else if cfg!(feature = "skewed-layout") {
    "skewed-layout"
} else {
    "accepted"
};

/// The marker file a load of this build leaves in process `pid`.
pub fn marker(pid: u32, build: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("molt-testmod-init-{pid}-{build}"))
}

extern "C" fn leave_marker() {
    let _ = std::fs::write(marker(std::process::id(), BUILD), b"the initialiser ran");
}

#[used]
#[unsafe(link_section = ".init_array")]
static LEAVE_MARKER: extern "C" fn() = leave_marker;
