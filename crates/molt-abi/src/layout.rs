//! The layout fingerprint of the C contract: a hash of the size, alignment
//! and field offsets of every `#[repr(C)]` type and table that crosses the
//! boundary, computed by the compiler for this very build. The ABI version
//! says which contract a module means; the fingerprint says whether it was
//! compiled with the same one (a field added to a table without a version
//! bump changes it), and the core compares it from the module file's bytes
//! before any of the module's code runs.

use std::mem::{align_of, offset_of, size_of};

use async_ffi::{FfiContext, FfiFuture, FfiPoll};

use crate::contract::{
    BlockingJob, HotCallStatus, Outgoing, ProcessStart, ProcessVTable, ReceiveRequest, ReceiveStatus, RegisterStatus,
    SpawnOptions, SpawnStatus, Str,
};
use crate::module::{DescriptorHeader, EntryDescriptor, ModuleDescriptor, Sink};
use crate::{MonitorRef, NodeId, Pid, Process, Tag, TimerRef};

/// Size and alignment of a type, then the offset of each named field.
macro_rules! shape {
    ($type:ty $(; $($field:ident),+)?) => {
        &[size_of::<$type>() as u64, align_of::<$type>() as u64 $($(, offset_of!($type, $field) as u64)+)?]
    };
}

const SHAPES: &[&[u64]] = &[
    shape!(ProcessVTable; abi_version, release, self_pid, now, send, send_named, receive, sleep_until, spawn,
        link, unlink, monitor, demonitor, exit, kill, trap_exit, register, unregister, whereis, send_after,
        send_after_named, cancel_timer, hot_call, spawn_entry, set_exit_reason, blocking, retain, wake, nsend_on,
        whereis_on, monitor_node, demonitor_node, spawn_entry_on),
    shape!(BlockingJob; env, run, drop_env),
    shape!(ReceiveRequest; tags, tag_count, matcher, env, cursor, deadline),
    shape!(ProcessStart; env, start, drop_env, code),
    shape!(SpawnOptions; link, monitor),
    shape!(Outgoing; tag, shape, bytes, len, env, encode),
    shape!(Str; ptr, len),
    shape!(ReceiveStatus),
    shape!(RegisterStatus),
    shape!(SpawnStatus),
    shape!(HotCallStatus),
    shape!(Pid; node, creation, serial),
    shape!(NodeId),
    shape!(MonitorRef; id, target),
    shape!(TimerRef; id, slot, scheduler),
    shape!(Tag),
    shape!(Process),
    shape!(DescriptorHeader; magic, abi_version, panic_unwinds, layout, target, rustc, sdk, name, version),
    shape!(ModuleDescriptor; header, entries, entry_count, migrate, shapes),
    shape!(EntryDescriptor; name, start),
    shape!(Sink; env, write),
    shape!(FfiFuture<()>),
    shape!(FfiPoll<()>),
    shape!(FfiContext<'static>),
];

/// FNV-1a over every number of every shape, with the count of each.
const fn fingerprint(shapes: &[&[u64]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < shapes.len() {
        let shape = shapes[i];
        let mut j = 0;
        hash = mix(hash, shape.len() as u64);
        while j < shape.len() {
            hash = mix(hash, shape[j]);
            j += 1;
        }
        i += 1;
    }
    hash
}

const fn mix(mut hash: u64, value: u64) -> u64 {
    let bytes = value.to_le_bytes();
    let mut k = 0;
    while k < 8 {
        hash ^= bytes[k] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        k += 1;
    }
    hash
}

/// This build's layout fingerprint; see the module docs.
pub const LAYOUT_FINGERPRINT: u64 = fingerprint(SHAPES);
