//! Bad module input gets a clear error and touches nothing: a missing,
//! empty, truncated or text file, a library that is no molt module, and
//! modules built for another ABI, another SDK or under another name. A
//! process running the module answers the same before and after all of it.

mod support;

use std::path::{Path, PathBuf};

use molt::LoadError;
use support::modules::{Counter, ask, testmod};
use support::{node, run};

/// A scratch file named like the module, so only its content is wrong.
fn scratch(test: &str, content: &[u8]) -> PathBuf {
    let dir = support::modules::workspace().join("target").join("molt-test-modules").join("bad").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("libtestmod.so");
    std::fs::write(&path, content).unwrap();
    path
}

fn refused(node: &molt::Node, path: &Path) -> (LoadError, String) {
    let error = node.load(path).expect_err("the load is refused");
    let message = error.to_string();
    (error, message)
}

#[test]
fn every_bad_file_is_refused_with_a_clear_error_and_nothing_changes() {
    let node = node("bad-modules");
    node.load(testmod("")).unwrap();
    let echo = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let before = run(&node, move |mut p| async move { ask(&mut p, echo, 0).await }).unwrap();
    let modules_before = node.modules();

    let missing = support::modules::workspace().join("target/no/such/libtestmod.so");
    let (error, message) = refused(&node, &missing);
    assert!(matches!(error, LoadError::Read { .. }), "{error:?}");
    assert!(message.contains("cannot read module file") && message.contains("check the path"), "{message}");

    let (error, message) = refused(&node, &scratch("empty", b""));
    assert!(matches!(error, LoadError::NotALibrary { .. }), "{error:?}");
    assert!(message.contains("the file is empty"), "{message}");

    let (error, message) = refused(&node, &scratch("text", b"this is not a shared library\n"));
    assert!(matches!(error, LoadError::NotALibrary { .. }), "{error:?}");
    assert!(message.contains("is not a shared library") && message.contains("cdylib"), "{message}");

    let whole = std::fs::read(testmod("")).unwrap();
    let (error, message) = refused(&node, &scratch("truncated", &whole[..whole.len() / 2]));
    match &error {
        LoadError::Truncated { needed, found, .. } => {
            assert_eq!(*found, (whole.len() / 2) as u64);
            assert!(needed > found);
        }
        other => panic!("expected truncated, got {other:?}"),
    }
    assert!(message.contains("is truncated"), "{message}");

    let (error, message) = refused(&node, &testmod("not-a-module"));
    assert!(matches!(error, LoadError::NotAModule { .. }), "{error:?}");
    assert!(
        message.contains("exports no MOLT_MODULE_DESCRIPTOR") && message.contains("molt_module::module!"),
        "{message}"
    );

    let (error, message) = refused(&node, &testmod("wrong-abi"));
    match error {
        LoadError::AbiMismatch { expected, found, .. } => assert_eq!((expected, found), (molt::ABI_VERSION, 999)),
        other => panic!("expected an ABI mismatch, got {other:?}"),
    }
    assert!(message.contains("molt ABI version 999") && message.contains("rebuild it"), "{message}");

    let (error, message) = refused(&node, &testmod("wrong-sdk"));
    match error {
        LoadError::BuildMismatch { what, found, .. } => {
            assert_eq!((what, found.as_str()), ("molt SDK version", "0.0.0-other"))
        }
        other => panic!("expected a build mismatch, got {other:?}"),
    }
    assert!(message.contains("molt SDK version \"0.0.0-other\""), "{message}");

    let (error, message) = refused(&node, &testmod("wrong-name"));
    match error {
        LoadError::WrongName { expected, found, .. } => {
            assert_eq!((expected.as_str(), found.as_str()), ("testmod", "other"))
        }
        other => panic!("expected a wrong name, got {other:?}"),
    }
    assert!(message.contains("declares module \"other\""), "{message}");

    // Nothing of any of that touched the module table or the running process.
    assert_eq!(node.modules(), modules_before);
    assert!(node.unloaded().is_empty());
    let after = run(&node, move |mut p| async move { ask(&mut p, echo, 1).await }).unwrap();
    assert_eq!(before, (0, "1".to_owned(), 0));
    assert_eq!(after, (1, "1".to_owned(), 1));
}

/// A file whose descriptor symbol points at an address no segment holds (a
/// sum that overflows) is refused with an error, not a panic.
#[test]
fn a_descriptor_address_past_every_segment_is_refused() {
    use object::{Object, ObjectSection, ObjectSymbol};
    let mut bytes = std::fs::read(testmod("")).unwrap();
    let (index, dynsym) = {
        let file = object::File::parse(&*bytes).unwrap();
        let symbol = file.dynamic_symbols().find(|s| s.name() == Ok("MOLT_MODULE_DESCRIPTOR")).unwrap();
        let dynsym = file.section_by_name(".dynsym").unwrap().file_range().unwrap().0 as usize;
        (symbol.index().0, dynsym)
    };
    // An ELF64 symbol is 24 bytes; its value is at offset 8.
    let value = dynsym + index * 24 + 8;
    bytes[value..value + 8].copy_from_slice(&0xFFFF_FFFF_FFFF_FFF8u64.to_le_bytes());
    let node = node("bad-descriptor-address");
    let (error, message) = refused(&node, &scratch("descriptor-address", &bytes));
    assert!(matches!(error, LoadError::NotAModule { .. }), "{error:?}");
    assert!(message.contains("not in the file's data"), "{message}");
    assert!(node.modules().is_empty());
    node.shutdown();
}
