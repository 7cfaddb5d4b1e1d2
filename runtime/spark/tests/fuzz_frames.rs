//! Garbage, truncated and oversize frames from arbitrary bytes: the daemon never crashes,
//! answers what it can with E1003, and leaks no connection.

mod common;
use common::*;
use proptest::prelude::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Sends `bytes`, half-closes, and drains whatever the daemon answers until it closes.
fn send_garbage(socket: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn arbitrary_bytes_never_crash_the_daemon_nor_leak_connections() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--max-frame".into(), "65536".into()],
            ..Default::default()
        },
    );
    let baseline = open_fds(d.pid());
    let strategy = (
        prop_oneof![
            Just(b"VS\x01\x00".to_vec()),
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 0..4)
        ],
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |(prefix, body)| {
            let mut bytes = prefix;
            bytes.extend_from_slice(&body);
            let answer = send_garbage(&d.socket, &bytes);
            // Every answer the daemon gives is a well-formed frame; errors carry E1003.
            let mut r = &answer[..];
            while let Some(payload) = veritas_vocab::ipc::read_frame(&mut r, u32::MAX).unwrap() {
                let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                if let Some(e) = v["outcome"].get("error") {
                    prop_assert_eq!(&e["code"], "E1003");
                }
            }
            prop_assert!(d.exited().is_none(), "daemon died; log:\n{}", d.log_text());
            Ok(())
        })
        .unwrap();
    // Oversize announcements (above the 65536-byte limit) and half frames, many times over.
    for i in 0..200u32 {
        if i % 3 == 0 {
            let answer = send_garbage(
                &d.socket,
                veritas_vocab::ipc::encode_header(65_537 + i).as_ref(),
            );
            let payload = veritas_vocab::ipc::read_frame(&mut &answer[..], u32::MAX)
                .unwrap()
                .expect("an E1003 answer to an oversize frame");
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(v["outcome"]["error"]["code"], "E1003", "{v}");
            assert!(
                v["outcome"]["error"]["detail"]
                    .as_str()
                    .unwrap()
                    .contains("exceeds the maximum of 65536"),
                "{v}"
            );
        } else {
            send_garbage(&d.socket, &i.to_le_bytes().repeat(3));
        }
    }
    wait_for(
        "descriptors back to baseline",
        Duration::from_secs(20),
        || (open_fds(d.pid()) <= baseline + 2).then_some(()),
    );
    assert!(d.cli(&["health"]).status.success());
}
