//! The IPC frame decoder on arbitrary bytes, read as a stream of frames the way the daemon reads
//! its socket: it must return (never panic, never allocate past the frame limit), and every
//! request or response it accepts must survive a re-encode unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use veritas_vocab::ipc::{decode, encode, read_frame, FrameError, Request, Response};

// Small, so inputs reach the oversize path; the daemon's limit is DEFAULT_MAX_FRAME.
const MAX: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let mut stream = Cursor::new(data);
    loop {
        match read_frame(&mut stream, MAX) {
            Ok(None) => break,
            Ok(Some(payload)) => {
                assert!(payload.len() <= MAX as usize);
                if let Ok(req) = decode::<Request>(&payload) {
                    let again = encode(&req);
                    let back: Request = decode(&again[veritas_vocab::ipc::HEADER_LEN..]).unwrap();
                    assert_eq!(back, req);
                }
                if let Ok(resp) = decode::<Response>(&payload) {
                    let again = encode(&resp);
                    let back: Response = decode(&again[veritas_vocab::ipc::HEADER_LEN..]).unwrap();
                    assert_eq!(back, resp);
                }
            }
            Err(e) => {
                // Rendering the error must not panic either; a bad frame ends the stream.
                assert!(!e.to_string().is_empty());
                let _ = matches!(e, FrameError::Truncated);
                break;
            }
        }
    }
});
