//! With the `many-messages` feature: version 1 declaring 50 message types
//! more (structs of several fields and a nested enum), for the benchmark of
//! what a load spends on shapes.

use molt_module::Pid;
use serde::{Deserialize, Serialize};

use crate::{Note, echo, migrate};

/// What every message carries, to give the tracer an enum to walk.
#[derive(Debug, Serialize, Deserialize)]
pub enum Kind {
    /// Nothing more.
    Plain,
    /// A number.
    Numbered(u8),
    /// A point.
    Located {
        /// Across.
        x: f64,
        /// Down.
        y: f64,
    },
}

macro_rules! many {
    ($($name:ident),* $(,)?) => {
        $(
            /// One of the fifty.
            #[derive(Debug, Serialize, Deserialize, molt_module::Message)]
            pub struct $name {
                /// An id.
                pub id: u64,
                /// A label.
                pub label: String,
                /// Some tags.
                pub tags: Vec<Option<i32>>,
                /// A kind.
                pub kind: Kind,
            }
        )*

        molt_module::module! {
            name: "testmod",
            version: crate::VERSION,
            entries: [echo],
            messages: [Note, (Pid, u64), $($name),*],
            migrate: migrate,
        }
    };
}

many! {
    M00, M01, M02, M03, M04, M05, M06, M07, M08, M09, M10, M11, M12, M13, M14, M15, M16, M17, M18, M19, M20, M21,
    M22, M23, M24, M25, M26, M27, M28, M29, M30, M31, M32, M33, M34, M35, M36, M37, M38, M39, M40, M41, M42, M43,
    M44, M45, M46, M47, M48, M49,
}
