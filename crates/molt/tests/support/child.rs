//! Crash scenarios in a child process: the test binary runs itself again
//! for one test, so a crash of the scenario (a SIGSEGV, an abort, a hang)
//! fails that test instead of taking the whole suite down.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Set in the child to the name of the test it runs.
const CHILD: &str = "MOLT_TEST_CHILD";

/// How long a child may run before it counts as hung.
const CHILD_BOUND: Duration = Duration::from_secs(150);

/// Runs `scenario` in a child process when called from the test `test` (its
/// exact name), with `env` set there; fails the test if the child crashes,
/// fails or does not end within the bound. In the child itself, runs it.
pub fn in_child(test: &str, env: &[(&str, &str)], scenario: impl FnOnce()) {
    if std::env::var(CHILD).as_deref() == Ok(test) {
        scenario();
        println!("{}", done_line(test));
        return;
    }
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command.args([test, "--exact", "--nocapture", "--test-threads=1"]).env(CHILD, test);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the child starts");
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let Ok(output) = finished.recv_timeout(CHILD_BOUND) else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("the scenario {test} did not end within {CHILD_BOUND:?} in its child process {pid}");
    };
    let output = output.expect("the child's output");
    let said = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the scenario {test} failed in its child process: {}\n{said}", output.status);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&done_line(test)),
        "the scenario {test} did not run to its end in the child process:\n{said}"
    );
}

fn done_line(test: &str) -> String {
    format!("molt scenario done: {test}")
}

/// Ends a scenario's child process at once, as done (for a scenario that
/// leaves a thread no shutdown can stop).
pub fn done_and_exit(test: &str) -> ! {
    println!("{}", done_line(test));
    std::process::exit(0)
}
