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
        let version = if n < 4 { 1 } else { 2 };
        assert!(stdout.contains(&format!("sending a ping with value {n}\n")), "ping {n} missing:\n{stdout}");
        let pong = format!("got a pong with value {n} from version {version}\n");
        assert!(stdout.contains(&pong), "{pong:?} missing:\n{stdout}");
    }
    assert!(stdout.contains("UPGRADE at value 4"), "{stdout}");
    assert!(stdout.contains("(version 2): hello from version 2 after 4 pongs — the new code is running"), "{stdout}");
    assert!(
        stdout.contains("DONE: 10 pings, 10 pongs, 0 lost, in order; answered 4 by version 1, 6 by version 2"),
        "{stdout}"
    );
}

#[test]
fn demo_json_is_one_summary_object() {
    let output = molt(&["demo", "--json", "--pings", "100000", "--upgrades", "3"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(summary["pings"], 100_000);
    assert_eq!(summary["pongs"], 100_000);
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["in_order"], true);
    let by_version = summary["answers_by_version"].as_object().expect("answers by version");
    let total: u64 = by_version.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(total, 100_000);
    assert!(by_version["1"].as_u64().unwrap() > 0 && by_version["2"].as_u64().unwrap() > 0, "{by_version:?}");
    assert!(summary["seconds"].as_f64().is_some_and(|s| s > 0.0));
}

#[test]
fn a_bad_argument_is_a_clear_error() {
    let output = molt(&["demo", "--pings", "many"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("invalid value 'many'") && stderr.contains("--pings"), "{stderr}");
}
