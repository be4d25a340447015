//! `molt demo` run as a real child process.

use std::process::Command;

fn molt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_molt")).args(args).output().expect("the molt binary runs")
}

#[test]
fn demo_tells_every_ping_and_pong_and_sums_up() {
    let output = molt(&["demo"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    for n in 0..10 {
        assert!(stdout.contains(&format!("sending a ping with value {n}\n")), "ping {n} missing:\n{stdout}");
        assert!(stdout.contains(&format!("got a pong with value {n}\n")), "pong {n} missing:\n{stdout}");
    }
    assert!(stdout.contains("DONE: 10 pings, 10 pongs, 0 lost, in order"), "{stdout}");
}

#[test]
fn demo_json_is_one_summary_object() {
    let output = molt(&["demo", "--json", "--pings", "100000"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(summary["pings"], 100_000);
    assert_eq!(summary["pongs"], 100_000);
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["in_order"], true);
    assert!(summary["seconds"].as_f64().is_some_and(|s| s > 0.0));
}

#[test]
fn a_bad_argument_is_a_clear_error() {
    let output = molt(&["demo", "--pings", "many"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("invalid value 'many'") && stderr.contains("--pings"), "{stderr}");
}
