//! The load-time shape check: a new version against the current one.
//!
//! An entry whose state changed shape needs a `migrate` that declares it
//! converts from the current version, or every process that hot-calls
//! into the new version would fail its upgrade (the runtime check in the
//! hot call still rolls such a process back; this catches it before any
//! process is asked). A message type whose shape changed under the same
//! tag is a warning — the two versions' processes would refuse each
//! other's messages of it — or, with `LoadOptions::refuse_changed_messages`,
//! a refusal.

use molt_abi::module::ModuleShapes;

use super::{LoadError, ShapeChange};

/// Compares `new` (version `to`) with `current` (version `from`) of
/// `module`: the warnings, or the refusal.
pub(crate) fn compare(
    module: &str,
    (from, current): (&str, &ModuleShapes),
    (to, new): (&str, &ModuleShapes),
    refuse_changed_messages: bool,
) -> Result<Vec<String>, LoadError> {
    for entry in &new.entries {
        let Some(old) = current.entries.iter().find(|old| old.entry == entry.entry) else { continue };
        if !old.state.shape.fits(entry.state.shape) && !new.migrates_from.iter().any(|v| v == from) {
            return Err(LoadError::StateShapeChanged(Box::new(ShapeChange {
                module: module.to_owned(),
                what: entry.entry.clone(),
                from: from.to_owned(),
                to: to.to_owned(),
                old: old.state.clone(),
                new: entry.state.clone(),
            })));
        }
    }
    let mut warnings = Vec::new();
    for message in &new.messages {
        let Some(old) = current.messages.iter().find(|old| old.tag == message.tag) else { continue };
        if old.shape.shape.fits(message.shape.shape) {
            continue;
        }
        if refuse_changed_messages {
            return Err(LoadError::MessageShapeChanged(Box::new(ShapeChange {
                module: module.to_owned(),
                what: message.name.clone(),
                from: from.to_owned(),
                to: to.to_owned(),
                old: old.shape.clone(),
                new: message.shape.clone(),
            })));
        }
        warnings.push(format!(
            "message {} changes shape under the same name from {} (version {from}) to {} (version {to}): \
             processes of the two versions take each other's {} as a ReceiveError::Decode unless they \
             receive both shapes",
            message.name, old.shape, message.shape, message.name
        ));
    }
    Ok(warnings)
}
