//! The shapes of types without a static of their own (hand-written
//! `Message` impls, generic derived types), remembered by type in one
//! lock-free table: every send and receive of such a type looks its shape
//! up here.
//!
//! Open addressing over a fixed array of slots, keyed by the 64 bits of
//! the type's `TypeId` hash; a slot is claimed once, its shape written,
//! then its key published. Past the table's size (or while a slot is being
//! written) a type's shape is traced again each time: correct, only slower.

use std::any::TypeId;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;

use super::Shape;

const SLOTS: usize = 1024;
/// A slot nobody has claimed.
const EMPTY: u64 = 0;
/// A slot claimed and being written.
const WRITING: u64 = u64::MAX;

static KEYS: [AtomicU64; SLOTS] = [const { AtomicU64::new(EMPTY) }; SLOTS];
static SHAPES: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// Keeps the last 64 bits a `TypeId` hashes to (it writes its own hash).
#[derive(Default)]
struct Keep(u64);

impl Hasher for Keep {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = self.0.rotate_left(29) ^ value;
    }
}

fn key_of<T: 'static>() -> u64 {
    let mut keep = Keep::default();
    TypeId::of::<T>().hash(&mut keep);
    match keep.finish() {
        EMPTY | WRITING => 1,
        key => key,
    }
}

pub(super) fn shape_of<T: DeserializeOwned + 'static>() -> Shape {
    let key = key_of::<T>();
    let first = (key as usize) % SLOTS;
    for probe in 0..SLOTS {
        let slot = (first + probe) % SLOTS;
        match KEYS[slot].load(Ordering::Acquire) {
            found if found == key => return Shape(SHAPES[slot].load(Ordering::Relaxed)),
            EMPTY => {
                if KEYS[slot].compare_exchange(EMPTY, WRITING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let shape = Shape::of_uncached::<T>();
                    SHAPES[slot].store(shape.0, Ordering::Relaxed);
                    KEYS[slot].store(key, Ordering::Release);
                    return shape;
                }
                // Another type took it meanwhile: it may be this one.
                if KEYS[slot].load(Ordering::Acquire) == key {
                    return Shape(SHAPES[slot].load(Ordering::Relaxed));
                }
            }
            _ => {}
        }
    }
    Shape::of_uncached::<T>()
}
