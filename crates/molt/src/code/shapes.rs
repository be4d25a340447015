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

use molt_abi::Shape;
use molt_abi::module::ModuleShapes;

use super::{LoadError, ShapeChange};

/// Checks `new` (version `to` of `module`) and compares it with `current`
/// (version `from`), if there is one: the warnings, or the refusal.
pub(crate) fn compare(
    module: &str,
    current: Option<(&str, &ModuleShapes)>,
    (to, new): (&str, &ModuleShapes),
    refuse_changed_messages: bool,
) -> Result<Vec<String>, LoadError> {
    // A shape that could not be traced is never taken to differ: say so.
    let mut warnings = Vec::new();
    for entry in new.entries.iter().filter(|entry| entry.state.shape == Shape::UNKNOWN) {
        warnings.push(format!(
            "the state of entry {} could not be traced ({}), so molt cannot check it across versions",
            entry.entry, entry.state.description
        ));
    }
    for message in new.messages.iter().filter(|message| message.shape.shape == Shape::UNKNOWN) {
        warnings.push(format!(
            "message {} could not be traced ({}), so molt cannot check its shape: receivers decode it unchecked",
            message.name, message.shape.description
        ));
    }
    let Some((from, current)) = current else { return Ok(warnings) };
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
