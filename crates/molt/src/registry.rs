//! The node's registry of process names (Erlang `register/2`, `whereis/1`).
//!
//! Owned by the node; a name and the process's own `name` field change
//! together under the registry lock, with the process's signal lock taken
//! inside it (never the other way round), so a name always belongs to a
//! live process or is about to be removed by that process's exit.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use molt_abi::{Pid, RegisterError};

use crate::node::NodeInner;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    names: Mutex<HashMap<Box<str>, Pid>>,
}

impl Registry {
    fn names(&self) -> MutexGuard<'_, HashMap<Box<str>, Pid>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NodeInner {
    pub(crate) fn register(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        if name.is_empty() {
            return Err(RegisterError::BadName);
        }
        let mut names = self.registry.names();
        if let Some(&holder) = names.get(name) {
            // A holder that is already ending gives its name up.
            let holder_alive = self.process(holder).is_some_and(|ctx| ctx.signals().alive);
            if holder_alive {
                return Err(RegisterError::NameTaken { name: name.to_owned(), holder });
            }
        }
        let ctx = self.process(pid).ok_or(RegisterError::Noproc { pid })?;
        let mut signals = ctx.signals();
        if !signals.alive {
            return Err(RegisterError::Noproc { pid });
        }
        if signals.relations_ref().is_some_and(|r| r.name.is_some()) {
            return Err(RegisterError::AlreadyRegistered { pid });
        }
        signals.relations().name = Some(name.into());
        names.insert(name.into(), pid);
        Ok(())
    }

    pub(crate) fn unregister(&self, name: &str) -> bool {
        let mut names = self.registry.names();
        let Some(pid) = names.remove(name) else {
            return false;
        };
        if let Some(ctx) = self.process(pid) {
            ctx.signals().relations().name = None;
        }
        true
    }

    pub(crate) fn whereis(&self, name: &str) -> Option<Pid> {
        self.registry.names().get(name).copied()
    }

    /// Called by an ending process for the name it held.
    pub(crate) fn unregister_exited(&self, name: &str, pid: Pid) {
        let mut names = self.registry.names();
        if names.get(name) == Some(&pid) {
            names.remove(name);
        }
    }
}
