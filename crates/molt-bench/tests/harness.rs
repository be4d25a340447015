//! The benchmark harness run as a real child process on tiny sizes: every
//! workload prints one well-formed JSON line, with the Erlang side where
//! `erl` is installed.

use std::process::Command;

fn bench(args: &[&str]) -> (Vec<serde_json::Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_molt-bench")).args(args).output().expect("molt-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let lines = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}")))
        .collect();
    (lines, stderr)
}

#[test]
fn every_workload_prints_one_json_line() {
    let (lines, _) = bench(&["--runs", "1", "--n", "200", "--no-erlang"]);
    let names: Vec<&str> = lines.iter().map(|l| l["workload"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "round_trips",
            "one_way",
            "round_trips_contended",
            "one_way_contended",
            "spawn",
            "memory",
            "selective_receive",
            "spawn_link_kill",
            "monitor_demonitor",
            "big_message",
            "big_message_1m",
            "big_bytes",
            "timers_pending",
            "burst_memory",
            "parallel_pairs",
            "ring",
            "fairness",
            "big_bang",
            "spawn_cpu",
            "load",
            "purge_100k",
            "pingpong_upgrades",
            "hot_call",
            "load_shapes_50",
            "remote_round_trips",
            "remote_one_way",
            "remote_bulk",
            "remote_latency_under_bulk",
            "detect_sigkill"
        ]
    );
    for line in &lines {
        assert_eq!(line["n"], 200);
        if line["workload"] == "load_shapes_50" {
            // A difference of two load times: on a tiny run, noise may
            // outweigh it either way.
            assert!(line["molt"]["seconds"].is_number(), "{line}");
            assert!(line["molt"]["baseline_seconds"].as_f64().is_some_and(|s| s > 0.0), "{line}");
            continue;
        }
        assert!(line["molt"]["seconds"].as_f64().is_some_and(|s| s > 0.0), "{line}");
        assert!(line["molt"]["rate"].as_f64().is_some_and(|r| r > 0.0), "{line}");
        // A baseline comes with molt's share of its speed.
        let baseline = line["molt"]["baseline_seconds"].as_f64();
        assert_eq!(baseline.is_some(), line["of_baseline"].as_f64().is_some_and(|r| r > 0.0), "{line}");
        assert!(line["erlang"].is_null() && line["ratio"].is_null(), "{line}");
        assert!(line["cpu"].as_str().is_some_and(|cpu| cpu.contains("cores")), "{line}");
    }
    assert!(lines[5]["molt"]["bytes_per_process"].is_number(), "{}", lines[5]);
}

#[test]
fn erlang_is_compared_where_it_is_installed() {
    let erl_installed = Command::new("erl").arg("-version").output().is_ok_and(|o| o.status.success());
    let (lines, stderr) = bench(&["--runs", "1", "--n", "1000", "--only", "round_trips"]);
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    if erl_installed {
        assert!(line["erlang"]["seconds"].as_f64().is_some_and(|s| s > 0.0), "{line}");
        assert!(line["ratio"].as_f64().is_some_and(|r| r > 0.0), "{line}");
        let spread = &line["ratio_spread"];
        assert!(spread[0].as_f64().is_some_and(|low| low <= line["ratio"].as_f64().unwrap()), "{line}");
    } else {
        assert!(line["erlang"].is_null() && line["ratio"].is_null(), "{line}");
        assert!(stderr.contains("no Erlang comparison"), "{stderr}");
    }
}

/// The distribution workloads' Erlang side starts a peer node (`peer`,
/// under `-name`): it works where `erl` is installed.
#[test]
fn a_distribution_workload_runs_two_erlang_nodes_where_erlang_is_installed() {
    let erl_installed = Command::new("erl").arg("-version").output().is_ok_and(|o| o.status.success());
    if !erl_installed {
        return;
    }
    let (lines, _) = bench(&["--runs", "1", "--n", "1000", "--only", "remote_round_trips"]);
    assert!(lines[0]["erlang"]["seconds"].as_f64().is_some_and(|s| s > 0.0), "{}", lines[0]);
}
