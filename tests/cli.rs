//! What a user sees at the command line: help, version, bad input, a port already taken.

mod common;

use std::process::Command;

use common::Server;

fn sockloop(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sockloop"))
        .args(args)
        .output()
        .expect("run sockloop")
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let out = sockloop(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--mode",
        "--addr",
        "--backlog",
        "--reuse-port",
        "--threads",
        "--max-conns",
        "--idle-timeout",
        "--header-timeout",
        "--shutdown-timeout",
        "--body",
        "--content-type",
        "--splice",
        "--stats",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    for default in [
        "[default: 1024]",
        "[default: 10000]",
        "[default: 60]",
        "[default: 1]",
    ] {
        assert!(help.contains(default), "--help lacks {default}:\n{help}");
    }
}

#[test]
fn version_prints_the_crate_version() {
    let out = sockloop(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_bad_flag_value_is_explained_and_exits_2() {
    for args in [
        &["--mode", "gopher"][..],
        &["--addr", "localhost"],
        &["--backlog", "-3"],
        &["--idle-timeout", "1e19"],
        &["--shutdown-timeout", "NaN"],
        &["--nope"],
    ] {
        let out = sockloop(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} printed nothing");
    }
}

#[test]
fn a_port_in_use_is_one_line_and_exit_1() {
    let holder = Server::start(&["--mode", "echo"]);
    let addr = holder.addr.to_string();
    let out = sockloop(&["--mode", "echo", "--addr", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_missing_body_file_is_one_line_and_exit_1() {
    let out = sockloop(&[
        "--mode",
        "http",
        "--addr",
        "127.0.0.1:0",
        "--body",
        "/nonexistent/page.html",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/page.html"), "{stderr}");
}

#[test]
fn ipv6_loopback_is_served() {
    use std::io::{Read, Write};
    let server = Server::start(&["--mode", "echo", "--addr", "[::1]:0"]);
    assert!(server.addr.is_ipv6(), "{}", server.addr);
    let mut stream = server.connect();
    stream.write_all(b"over IPv6").unwrap();
    let mut reply = [0u8; 9];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"over IPv6");
}
